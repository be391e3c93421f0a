"""A process killed while the refresh token rotates does not log the home out.

GoTrue rotates the refresh token on every refresh. A process that dies after the server rotated
but before the new session reached the keychain leaves the keychain holding the token it was
rotated from. GoTrue (since v2.105.0) answers that token, the parent of the session's active one,
with the active token instead of treating it as stolen (supabase/auth ``RefreshTokenGrant``), so
the next process goes on with it. docs/credentials.md, "The cloud session across a crash".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from localstore.config import Settings
from localstore.credentials import CredentialStore
from localstore.index import Index
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import session_credential_name

from .conftest import Homes, new_email

WORKER = Path(__file__).with_name("rotation_crash_worker.py")


def _stored_token(settings: Settings) -> str:
    index = Index(settings.paths.index_db)
    try:
        raw = CredentialStore(index, settings).find(session_credential_name(settings))
    finally:
        index.close()
    assert raw is not None
    return str(json.loads(raw)["refresh_token"])


def _active_child(cloud: LocalCloud, parent: str) -> str | None:
    """The server's unrevoked token rotated from ``parent`` (None if there is none)."""
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select token from auth.refresh_tokens where parent = %s and not revoked", (parent,)
        ).fetchone()
    return None if row is None else str(row[0])


def _killed_while_refreshing(settings: Settings, point: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(WORKER), str(settings.home), point],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize("point", ["answer", "store", "keychain"])
def test_a_process_killed_after_the_server_rotated_the_token_does_not_log_the_home_out(
    cloud: LocalCloud, homes: Homes, point: str
) -> None:
    settings = homes.home()
    homes.login(settings, cloud.url, cloud.anon_key, new_email())
    before = _stored_token(settings)
    _killed_while_refreshing(settings, point)
    # The window was hit: the server rotated, the keychain still holds the old token.
    rotated = _active_child(cloud, before)
    assert rotated is not None
    assert _stored_token(settings) == before
    # The next process starts from the keychain and goes on with the server's active token.
    remote = homes.remote(settings)
    remote.refresh_auth()
    assert remote.server_info().protocol >= 1
    assert _stored_token(settings) == rotated  # handed back, not forked
    remote.refresh_auth()  # and the session keeps rotating normally
    assert _stored_token(settings) not in (before, rotated)
    assert remote.server_info().protocol >= 1


def test_a_process_killed_while_the_keychain_refused_its_refreshed_sessions_does_not_log_out(
    cloud: LocalCloud, homes: Homes
) -> None:
    """The keychain refused every rotated session (locked), the process kept refreshing with
    the one in memory and was killed. Each refresh rotated the chain one further from what the
    keychain holds: two rotations behind, the stored token is taken as stolen and the session
    revoked. While a rotated session is unsaved, refreshes start from the stored token: the
    server hands the same active token back and the chain stays one rotation ahead."""
    settings = homes.home()
    homes.login(settings, cloud.url, cloud.anon_key, new_email())
    before = _stored_token(settings)
    _killed_while_refreshing(settings, "refused")
    assert _stored_token(settings) == before
    rotated = _active_child(cloud, before)
    assert rotated is not None  # the keychain's token is the parent of the active one
    remote = homes.remote(settings)
    remote.refresh_auth()
    assert remote.server_info().protocol >= 1
    assert _stored_token(settings) == rotated
