"""Hypothesis settings for the merge tests: modest by default, long under LOCALSTORE_STRESS=1.

The profile is registered, not loaded, so other components' Hypothesis settings stay untouched;
tests here opt in with ``@settings(settings.get_profile("localstore-merge"))``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"

settings.register_profile(
    "localstore-merge",
    max_examples=1000 if STRESS else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
