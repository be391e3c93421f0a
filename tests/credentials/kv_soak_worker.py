"""Subprocess worker for the app-data key soak (tests/credentials/test_kv_soak.py; not a test module).

argv: role home profile seconds. Repeats one role's step for ``seconds`` (at least once), each
round on a fresh KVStore (its data-key cache cold, as a new process's is), then prints one JSON
line: rounds done, LocalStoreErrors raised, keys a rotation called missing, and the items this
worker saved and still expects (key -> value).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from localstore.config import load_settings
from localstore.credentials import CredentialStore
from localstore.errors import LocalStoreError
from localstore.index import Index
from localstore.kv import KVStore

# Purged items live this long: a few purges of each worker's round find some expired.
PURGE_TTL_S = 0.05


def step(kv: KVStore, role: str, i: int, out: dict[str, Any]) -> None:
    """One round of ``role``; what it leaves behind goes in ``out['expect']``."""
    tag = f"{role}-{os.getpid()}-{i}"
    if role == "rotate":
        report = kv.rotate_data_key()
        if report.missing_keys or report.unreadable:
            out["missing"].append([list(report.missing_keys), report.unreadable])
    elif role == "write":
        kv.save(tag, {"i": i}, encrypt=True)
        out["expect"][tag] = {"i": i}
        present = kv.keys()
        for key in present:
            kv.load(key, default=None)  # (a purge or delete may take it meanwhile)
    elif role == "purge":
        for n in range(2):
            kv.save(f"{tag}-{n}", {"i": i}, encrypt=True, ttl=PURGE_TTL_S)
        kv.purge_expired()
    elif role == "delete":
        kv.save(tag, {"i": i}, encrypt=True)
        out["expect"][tag] = {"i": i}
        before = f"{role}-{os.getpid()}-{i - 1}"
        if kv.delete(before) != (i > 0):
            out["errors"].append(f"delete({before!r}) did not find the item saved before")
        out["expect"].pop(before, None)
    elif role == "recover":
        kv.recover_keys()
    else:
        raise SystemExit(f"unknown role {role!r}")


def main() -> None:
    role, home, profile, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    settings = load_settings(home=home, environ={}, profile=profile)
    index = Index(settings.paths.index_db)
    creds = CredentialStore(index, settings)
    out: dict[str, Any] = {"role": role, "rounds": 0, "errors": [], "missing": [], "expect": {}}
    until = time.monotonic() + seconds
    try:
        while out["rounds"] == 0 or time.monotonic() < until:
            kv = KVStore(index, credentials=creds, hot_items=0)
            try:
                step(kv, role, out["rounds"], out)
            except LocalStoreError as exc:
                out["errors"].append(f"{type(exc).__name__}: {exc}")
            finally:
                kv.close()
            out["rounds"] += 1
    finally:
        index.close()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
