"""Hypothesis settings for the sync contract tests: modest by default, long under LOCALSTORE_STRESS=1.

Profiles are registered, not loaded, so other components' Hypothesis settings stay untouched; tests
here opt in with ``@settings(SYNC_PROFILE)``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"

settings.register_profile(
    "localstore-sync",
    max_examples=400 if STRESS else 40,
    stateful_step_count=60 if STRESS else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
