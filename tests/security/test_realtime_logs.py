"""The anon key travels in the realtime websocket's URL (``?apikey=...``); no log line carries it.

The realtime library and websockets log that URL, or an error quoting it, at some level: the
request line at DEBUG (websockets), and a failed connect at ERROR with the exception's text
(realtime), which for a redirect the client cannot follow is the whole URL. The realtime client
connects for real here, to a hostile server on 127.0.0.1 (tests/security/hostile_server.py)
that answers the upgrade with such a redirect, and every record down to DEBUG is captured, as an
embedding app logging at DEBUG, and the daemon's log, would write them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from localstore.config import Settings, load_settings
from sync import supabase_remote as sr
from sync._shown import without_credentials
from sync.daemon import configure_logging

from .hostile_server import HostileCloud, fake_jwt, session_body

ANON_KEY = "anon-" + fake_jwt("anon")
REFRESH = "v2kq3gk3ovqp"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # As tests/security/test_secrets_in_errors.py: the encrypted file, not a keychain.
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("LOCALSTORE_KEYCHAIN_FILE_FALLBACK", "1")
    monkeypatch.setenv("LOCALSTORE_KEYCHAIN_PASSPHRASE", "file-passphrase-secret")
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def cloud() -> Iterator[HostileCloud]:
    with HostileCloud() as c:
        yield c


@pytest.fixture
def daemon_log(tmp_path: Path) -> Iterator[Path]:
    """The daemon's logging set up as `localstore daemon --log-level debug` does, removed after."""
    root = logging.getLogger()
    level = root.level
    handlers = configure_logging(tmp_path / "state", level="DEBUG", stderr=False)
    try:
        yield tmp_path / "state" / "daemon.log"
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(level)


def _redirected_realtime(settings: Settings, cloud: HostileCloud) -> list[str]:
    """Sign in, then subscribe to realtime, which the server answers with a redirect the client
    refuses; return the remote's realtime state (shown by status displays)."""
    access = fake_jwt(cloud.user_id)
    cloud.answers[("POST", "/auth/v1/token")] = (200, session_body(access, REFRESH, cloud.user_id))
    sr.login(settings, cloud.url, ANON_KEY, "a@example.com", "pw-123456")
    # A fragment: the client joins it to its own URL, query (the key) and all, and refuses the
    # result with an InvalidURI quoting it.
    cloud.answers[("GET", "/realtime/v1/websocket")] = (302, {}, {"Location": "#moved"})
    remote = sr.remote_from_settings(settings, timeout_s=2.0)
    try:
        remote.subscribe(lambda: None)
        state = remote.realtime_state
    finally:
        remote.close()
    assert state.get("subscribed") is False, state
    return [str(v) for v in state.values()]


def test_no_log_record_of_a_refused_realtime_connect_carries_the_anon_key(
    settings: Settings, cloud: HostileCloud, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        state = _redirected_realtime(settings, cloud)
    seen = [r for r in caplog.records if r.name.startswith(("realtime", "websockets"))]
    assert any("apikey=" in r.getMessage() for r in seen), "the URL was not logged at all"
    for record in caplog.records:
        assert ANON_KEY not in record.getMessage(), (record.name, record.getMessage()[:300])
    for value in state:
        assert ANON_KEY not in value


def test_the_daemon_log_at_debug_carries_no_anon_key(
    settings: Settings, cloud: HostileCloud, daemon_log: Path
) -> None:
    _redirected_realtime(settings, cloud)
    text = daemon_log.read_text(encoding="utf-8")
    assert "apikey=" in text or "realtime" in text
    assert ANON_KEY not in text


def test_ordinary_names_in_the_daemon_log_are_not_taken_for_keys(daemon_log: Path) -> None:
    """A JWT starts a word, with "eyJ" as written; matched anywhere and in any case, names of
    blueprints lost their end in every log line that quoted them."""
    jwt = fake_jwt("someone")
    names = (
        "eyjafjallajokull.blueprint.yaml",
        "greyjoys_castle.blueprint.yaml",
        "monkeyjungle.corp.internal",
    )
    for name in names:
        assert without_credentials(f"saved {name}") == f"saved {name}"
    # Words after "bearer" in a sentence are not a token (a token is one long run).
    for line in ("missing bearer token", "the Bearer scheme is required"):
        assert without_credentials(line) == line
    assert without_credentials("Bearer sk-0123456789abcdef") == "Bearer ***"
    # Keys and tokens are still taken out, wherever a word starts.
    for shape in (jwt, f"Bearer {jwt}", f"apikey={jwt}", f'"{jwt}"', f"({jwt})", f"key:{jwt}"):
        assert jwt not in without_credentials(shape), shape
    logging.getLogger("sync.test").info("saved %s, token %s", names[0], jwt)
    text = daemon_log.read_text(encoding="utf-8")
    assert f"saved {names[0]}, token ***" in text


def test_a_record_that_cannot_be_formatted_is_logged_not_raised(daemon_log: Path) -> None:
    """A logging call whose arguments do not fit its format (a library's bug) raised from the
    daemon's filter into the code that logged; logging itself reports such a record and goes
    on. It is written, redacted, instead."""
    jwt = fake_jwt("someone")
    logging.getLogger("realtime.test").warning("connect to %s failed: %s", f"wss://x/?apikey={jwt}")
    text = daemon_log.read_text(encoding="utf-8")
    assert "connect to %s failed: %s" in text and "cannot be formatted" in text
    assert jwt not in text
