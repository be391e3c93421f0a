"""A remote opened on a revoked session says "log in again", not "deploy the grants".

Opening the client refreshes an expired access token; when the refresh token was revoked (a
global sign-out, a password change) that refresh fails, the client drops the session and the
next call goes out with the anon key. The server then answers 42501 "permission denied", which
`doctor` showed with a hint about grants and row-level security.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from sync.errors import AuthRevokedError
from sync.localcloud.stack import LocalCloud

from .conftest import Homes, _require_environment, new_email

TTL_S = 2


@pytest.fixture(scope="module")
def short_cloud() -> Iterator[LocalCloud]:
    """A stack whose access tokens expire after TTL_S seconds."""
    _require_environment()
    with LocalCloud(access_token_ttl=TTL_S) as lc:
        yield lc


def test_a_revoked_session_found_at_open_says_log_in_again(
    short_cloud: LocalCloud, homes: Homes
) -> None:
    settings = homes.home()
    homes.login(settings, short_cloud.url, short_cloud.anon_key, new_email())
    with homes.remote(settings) as remote:
        user_id = remote.user_id
        assert remote.server_info().protocol >= 1
    with psycopg.connect(short_cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute("delete from auth.sessions where user_id = %s", (user_id,))
    time.sleep(TTL_S + 1.5)  # the stored access token has expired: opening must refresh it
    remote = homes.remote(settings)
    with pytest.raises(AuthRevokedError) as caught:
        remote.server_info()
    err = caught.value
    assert err.action == "tell_user"
    assert "localstore login" in err.hint
    assert str(err).count("log in again") == 1, str(err)  # said once, not in message and hint
