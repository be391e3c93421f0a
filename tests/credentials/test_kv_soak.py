"""Soak: real processes rotating, saving, reading, purging, deleting and recovering data keys at once.

Six processes (``kv_soak_worker.py``: rotate, rotate, write, purge, delete, recover) share one home
and the real keychain (the session's gnome-keyring) for LOCALSTORE_KV_SOAK_S seconds each: 3 by
default, 120 under LOCALSTORE_STRESS=1. No timing is injected: this finds the interleavings the
deterministic tests in test_kv_race.py do not replay yet (it found the ones they do). None may
raise, no rotation may call a key missing, and afterwards every item reads back with its value
and every key an item uses is in the keychain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localstore.config import Settings
from localstore.credentials import CredentialStore
from localstore.index import Index
from localstore.kv import KVStore

from .test_kv_race import _kids_in_keychain, _used_kids

pytestmark = [pytest.mark.keychain, pytest.mark.usefixtures("secret_service")]

STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"
SECONDS = float(os.environ.get("LOCALSTORE_KV_SOAK_S") or (120 if STRESS else 3))
ROLES = ("rotate", "rotate", "write", "purge", "delete", "recover")
WORKER = Path(__file__).with_name("kv_soak_worker.py")
BASE_ITEMS = 100


def _run_workers(settings: Settings) -> list[dict[str, Any]]:
    """Run one worker per role at once; return each one's report."""
    args = [str(settings.home), settings.profile, str(SECONDS)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), role, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ROLES
    ]
    try:
        # (Generous: six interpreters starting on two busy cores, then SECONDS each.)
        outputs = [p.communicate(timeout=SECONDS + 120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [json.loads(out) for out, _err in outputs]


def test_processes_rotating_saving_purging_and_deleting_at_once_lose_nothing(
    settings: Settings, index: Index, creds: CredentialStore
) -> None:
    with KVStore(index, credentials=creds, hot_items=0) as kv:
        base = {f"base-{i}": {"n": i} for i in range(BASE_ITEMS)}
        for key, value in base.items():
            kv.save(key, value, encrypt=True)

        reports = _run_workers(settings)

        trouble = [r for r in reports if r["errors"] or r["missing"] or r["rounds"] < 1]
        assert trouble == []
        expected = dict(base)
        for report in reports:
            expected.update(report["expect"])
        for key, value in expected.items():
            assert kv.load(key) == value, key
        present = kv.keys()
        for key in present:  # what a purge has not taken yet reads too
            kv.load(key)
        assert _used_kids(index) <= _kids_in_keychain(creds)
        assert kv.rotate_data_key().missing_keys == ()
