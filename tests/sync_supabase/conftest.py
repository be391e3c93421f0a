"""Fixtures for SupabaseRemote on the local stack: one LocalCloud per xdist worker, fresh users and
homes per test, a fault proxy, and the real keychain (run under scripts/_in_keyring_session).

Every remote, proxy and store a test makes is closed by its fixture; users are unique per test, so
tests never see each other's rows.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import keyring
import psycopg
import pytest
from supabase_auth._sync import gotrue_client

from localstore.config import Settings, load_settings
from localstore.credentials import unusable_reason
from sync import _supabase_http, _supabase_login
from sync.localcloud.cluster import PostgresNotFoundError, find_bindir
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import SupabaseRemote, login, remote_from_settings

from .faultproxy import FaultProxy

PASSWORD = "correct-horse-battery"
STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"
# Short timeouts: a black-holed request must fail fast enough for many schedules per test.
FAST_TIMEOUT_S = 2.0


def _require_environment() -> None:
    try:
        find_bindir()
    except PostgresNotFoundError as exc:
        pytest.fail(f"the Supabase remote tests need PostgreSQL: {exc}")
    reason = unusable_reason(keyring.get_keyring())
    if reason:
        pytest.fail(
            f"the Supabase remote tests need the OS keychain ({reason}); run them with "
            "dbus-run-session -- bash scripts/_in_keyring_session .venv/bin/python -m pytest ..."
        )


@pytest.fixture(scope="session")
def cloud() -> Iterator[LocalCloud]:
    """This worker's local Supabase-compatible stack."""
    _require_environment()
    with LocalCloud() as lc:
        yield lc


def new_email() -> str:
    """A unique e-mail address (users are fresh per test)."""
    return f"sr-{uuid.uuid4().hex[:12]}@example.test"


@dataclass
class Homes:
    """Makes homes logged in to a cloud; closes their remotes and logs out at the end."""

    base: Path
    remotes: list[SupabaseRemote] = field(default_factory=list)
    settings: list[Settings] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def home(self, label: str = "dev") -> Settings:
        path = self.base / f"{label}-{uuid.uuid4().hex[:8]}"
        settings = load_settings(home=path, environ={})
        with self.lock:
            self.settings.append(settings)
        return settings

    def login(
        self, settings: Settings, url: str, anon_key: str, email: str, *, signup: bool = True
    ) -> None:
        login(settings, url, anon_key, email, PASSWORD, signup=signup)

    def remote(self, settings: Settings, **kwargs: object) -> SupabaseRemote:
        remote = remote_from_settings(settings, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.remotes.append(remote)
        return remote

    def device(
        self,
        cloud_url: str,
        anon_key: str,
        email: str,
        *,
        label: str = "dev",
        **kwargs: object,
    ) -> tuple[Settings, SupabaseRemote]:
        settings = self.home(label)
        self.login(settings, cloud_url, anon_key, email)
        return settings, self.remote(settings, **kwargs)

    def close(self) -> None:
        # Keychain items are left behind on purpose: the keyring of a test session is a throw-away
        # one (scripts/_in_keyring_session), and deleting them costs ~0.3 s of D-Bus per home.
        for remote in self.remotes:
            remote.close()


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[Homes]:
    """Homes and remotes for one test, all closed afterwards."""
    h = Homes(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def proxy(cloud: LocalCloud) -> Iterator[FaultProxy]:
    """A fault proxy in front of the gateway."""
    with FaultProxy(cloud.port) as p:
        yield p


MakeDevice = Callable[..., tuple[Settings, SupabaseRemote]]


def expire_token(remote: SupabaseRemote, cloud: LocalCloud) -> None:
    """Fault injection: make the client send an access token that expired long ago."""
    now = int(time.time())
    claims = {
        "sub": remote.user_id,
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now - 7200,
        "exp": now - 3600,
    }
    token = jwt.encode(claims, cloud.jwt_secret, algorithm="HS256")
    remote._client.options.headers["Authorization"] = f"Bearer {token}"
    remote._client._postgrest = None


class _ShiftedTime:
    """A ``time`` module whose wall clock reads ``shift`` seconds off the real one."""

    def __init__(self, shift: float) -> None:
        self._shift = shift

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    def time(self) -> float:
        return time.time() + self._shift


def shift_client_clock(monkeypatch: pytest.MonkeyPatch, shift: float) -> None:
    """Fault injection: this machine's wall clock reads ``shift`` seconds off the server's (a
    dual boot's RTC kept in local time, NTP off), for the client's modules only: ours and
    supabase_auth's client. The gateway runs in this process and keeps the real clock."""
    shifted = _ShiftedTime(shift)
    # Where the client reads the wall clock: the server's clock (ServerClock, Retry-After dates)
    # and logout's expiry test.
    monkeypatch.setattr(_supabase_http, "time", shifted)
    monkeypatch.setattr(_supabase_login, "time", shifted)
    monkeypatch.setattr(gotrue_client, "time", shifted)


# What poison_meta writes under "n", as SQL: the table takes each (a superuser, or a client
# using the table's grants, bypasses push_changes), none of them can the Python client read.
_POISON_SQL = {
    "huge_integer": "'1e5000'",
    "deep": "repeat('[', 2000) || repeat(']', 2000)",
    "infinite": "repeat('9', 400) || '.5'",
}


def poison_meta(cloud: LocalCloud, row_id: str, kind: str) -> None:
    """Set ``meta.n`` of row ``row_id`` to a poison of tests.sync_contract.contract.POISONS,
    with a superuser's UPDATE (the row's seq moves, as for any write)."""
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        done = conn.execute(
            "update public.blueprints set meta = jsonb_set(meta, '{n}', "
            f"({_POISON_SQL[kind]})::jsonb) where id = %s",
            (row_id,),
        )
        assert done.rowcount == 1
