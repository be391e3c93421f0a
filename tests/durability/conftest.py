"""The durability recorder as a fixture (tests/durability_recorder.py)."""

from __future__ import annotations

import sys

import pytest

from tests.durability_recorder import DurabilityRecorder


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> DurabilityRecorder:
    """A DurabilityRecorder installed for the test (undone with the monkeypatch)."""
    if sys.platform != "linux":
        pytest.skip("the recorder names descriptors through /proc (Linux)")
    rec = DurabilityRecorder(monkeypatch)
    rec.install()
    return rec
