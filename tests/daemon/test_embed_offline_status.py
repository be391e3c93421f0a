"""An app's in-process sync going offline never shows one reason with another reason's hint.

The follower thread recorded why sync is off (``offline``) and then, in a second step, what to
do about it, neither under the mutex ``status()`` reads both under: a status read in between
(an app's UI timer) paired the new reason with the old reason's hint, e.g. "the cloud project
is misconfigured" with "run localstore login", though the person had just logged in.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import sync.embed
import sync.supabase_remote
from sync.errors import NotLoggedInError, RemoteConfigError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.session_marker import touch

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .conftest import eventually
from .test_embed_engine_start_failure import _Revocable

WAIT = 20.0
MISCONFIGURED = RemoteConfigError("the cloud project is misconfigured", hint="fix the project")


def test_status_never_pairs_an_offline_reason_with_another_reasons_hint(
    stores: StoreOpener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = MemoryServer()
    opened: list[MemoryRemote] = []

    def factory(_settings: Any) -> MemoryRemote:
        # The first session works; the one after the new login finds the project misconfigured.
        if opened:
            raise MISCONFIGURED
        opened.append(_Revocable(server))
        return opened[0]

    monkeypatch.setattr(sync.supabase_remote, "remote_from_settings", factory)
    store = stores(home=tmp_path / "h")
    handle = store.start_sync(poll_interval_s=3600)

    # Fault injection: hold the follower thread as it works out the hint of the second reason.
    hinting, release = threading.Event(), threading.Event()
    offline_hint = sync.embed.offline_hint

    def held_offline_hint(reason: str, exc: BaseException) -> str:
        if exc is MISCONFIGURED:
            hinting.set()
            release.wait(WAIT)
        return offline_hint(reason, exc)

    monkeypatch.setattr(sync.embed, "offline_hint", held_offline_hint)
    opened[0].revoked = True  # type: ignore[attr-defined]
    touch(store.settings)  # logout, then a new login: the follower detaches, then attaches
    try:
        assert hinting.wait(WAIT)
        status = handle.status()
    finally:
        release.set()
    pairs = {
        "not logged in": NotLoggedInError.hint,
        MISCONFIGURED.message: MISCONFIGURED.hint,
    }
    assert status["detail"] in pairs, status
    assert status["hint"].startswith(pairs[status["detail"]]), status
    assert eventually(lambda: handle.status()["hint"].startswith(MISCONFIGURED.hint), WAIT)
    handle.stop()
