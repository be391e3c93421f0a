"""Devices for end-to-end tests: a home with a BlueprintStore, a SupabaseRemote and a SyncEngine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import localstore
from localstore.files import META_SUFFIX, TEMP_SUFFIX, YAML_SUFFIX
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from sync.errors import SyncError
from sync.supabase_remote import SupabaseRemote, login, remote_from_settings

from .conftest import PASSWORD


@dataclass
class Device:
    """One replica: a store in its own home, its remote and its engine."""

    name: str
    store: BlueprintStore
    remote: SupabaseRemote
    engine: SyncEngine

    def sync(self) -> Exception | None:
        """One sync cycle; return the SyncError it raised (faults are expected), else None."""
        try:
            self.engine.sync_once()
        except SyncError as exc:
            return exc
        return None

    def snapshot(self) -> dict[str, bytes]:
        """Every blueprint file (yaml and meta) under the root, by relative path."""
        root = self.store.root
        out: dict[str, bytes] = {}
        for p in sorted(root.rglob("*")):
            if not p.is_file() or p.name.endswith(TEMP_SUFFIX):
                continue
            if p.name.endswith((YAML_SUFFIX, META_SUFFIX)):
                out[p.relative_to(root).as_posix()] = p.read_bytes()
        return out

    def close(self) -> None:
        self.engine.stop()
        self.engine.join(10)
        self.remote.close()
        self.store.close()


def open_device(
    base: Path,
    name: str,
    url: str,
    anon_key: str,
    email: str,
    *,
    login_url: str | None = None,
    timeout_s: float = 5.0,
    poll_interval_s: float = 3600.0,
) -> Device:
    """A fresh home logged in as ``email`` (signed up if new) syncing through ``url``."""
    home = base / name
    store = localstore.open(home=home, device_name=name, cloud_url=url, cloud_anon_key=anon_key)
    try:
        login(store.settings, login_url or url, anon_key, email, PASSWORD, signup=True)
        remote = remote_from_settings(store.settings, timeout_s=timeout_s)
    except BaseException:
        store.close()
        raise
    engine = SyncEngine(
        store, remote, poll_interval_s=poll_interval_s, backoff_base_s=0.05, backoff_cap_s=0.5
    )
    return Device(name, store, remote, engine)


@contextmanager
def device_pair(
    base: Path, anon_key: str, email: str, url_a: str, url_b: str
) -> Iterator[tuple[Device, Device]]:
    """Devices "a" and "b" of one user (``open_device``), syncing through ``url_a`` and
    ``url_b``; both closed after."""
    a = open_device(base, "a", url_a, anon_key, email)
    try:
        b = open_device(base, "b", url_b, anon_key, email)
    except BaseException:
        a.close()
        raise
    try:
        yield a, b
    finally:
        b.close()
        a.close()
