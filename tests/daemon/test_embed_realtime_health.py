"""An app's in-process sync reports the realtime channel's health, as the daemon's status does.

The daemon's ``status`` carried ``realtime`` (docs/daemon.md, "Realtime health"), but
``EmbeddedSync.status()`` did not: an app could not tell that other devices' changes now arrive
only at the next poll. It has the daemon's shape, and None while sync is off or the remote has
no realtime.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore.store import BlueprintStore
from sync._realtime import RealtimeHints
from sync.embed import start_sync
from sync.localcloud.stack import LocalCloud
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.supabase_remote import login
from tests.sync_supabase.faultproxy import FaultProxy

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import PASSWORD, eventually, home_settings, new_email

WAIT = 30.0
LONG_WAIT_S = 3600.0


@pytest.fixture
def proxy(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the stack, and realtime's backoff after a failed join made an
    hour (production: up to 5 min), so that the channel stays down while the test reads it."""
    monkeypatch.setattr(RealtimeHints, "_backoff_s", lambda _self, _failures: LONG_WAIT_S)
    with FaultProxy(cloud.port) as p:
        yield p


def test_an_apps_status_carries_the_realtime_channel_up_then_down_then_none_once_stopped(
    cloud: LocalCloud, proxy: FaultProxy, tmp_path: Path
) -> None:
    settings = home_settings(tmp_path / "h")
    login(settings, proxy.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
    store = BlueprintStore(settings)
    try:
        embedded = start_sync(store, watch=False, poll_interval_s=LONG_WAIT_S)
        try:
            assert eventually(
                lambda: (embedded.status()["realtime"] or {}).get("state") == "subscribed", WAIT
            ), embedded.status()
            assert embedded.status()["realtime"] == {
                "state": "subscribed",
                "problem": None,
                "retry_in_s": 0.0,
                "failures": 0,
                "stats": {"subscribes": 1, "rebuilds": 0, "events": 0},
            }

            proxy.refuse()  # fault injection: the network goes, the open channel drops
            proxy.reset_all()
            assert eventually(
                lambda: embedded.status()["realtime"]["retry_in_s"] >= LONG_WAIT_S / 2, WAIT
            ), embedded.status()["realtime"]
            realtime = embedded.status()["realtime"]
            assert realtime["state"] == "down" and realtime["problem"], realtime
            assert realtime["failures"] >= 1 and realtime["stats"]["subscribes"] == 1
        finally:
            embedded.stop()
        assert embedded.status()["realtime"] is None  # sync is off
    finally:
        store.close()


def test_an_apps_status_has_no_realtime_with_a_remote_without_one(
    stores: StoreOpener, tmp_path: Path
) -> None:
    store = stores(home=tmp_path / "h")
    handle = start_sync(store, remote=MemoryRemote(MemoryServer()), poll_interval_s=3600)
    try:
        status = handle.status()
        assert status["running"] is True
        assert "realtime" in status and status["realtime"] is None
    finally:
        handle.stop()
    assert handle.status()["realtime"] is None
