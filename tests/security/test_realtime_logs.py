"""The anon key travels in the realtime websocket's URL (``?apikey=...``); no log line carries it.
Nor does any log line of those libraries carry a hostile server's control characters as they came.

The realtime library and websockets log that URL, or an error quoting it, at some level: the
request line at DEBUG (websockets), and a failed connect at ERROR with the exception's text
(realtime), which for a redirect the client cannot follow is the whole URL. The realtime client
connects for real here, to a hostile server on 127.0.0.1 (tests/security/hostile_server.py)
that answers the upgrade with such a redirect, and every record down to DEBUG is captured, as an
embedding app logging at DEBUG, and the daemon's log, would write them.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore.config import Settings
from sync import supabase_remote as sr
from sync._shown import GUARDED_LOGGERS, guard_realtime_logs, without_credentials
from sync.daemon import configure_logging

from .hostile_server import HostileCloud, HostileRealtime, fake_jwt, session_body

ANON_KEY = "anon-" + fake_jwt("anon")
REFRESH = "v2kq3gk3ovqp"


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


def _subscribe(settings: Settings, cloud: HostileCloud) -> dict[str, object]:
    """Sign in, then subscribe to realtime; return the remote's realtime state."""
    access = fake_jwt(cloud.user_id)
    cloud.answers[("POST", "/auth/v1/token")] = (200, session_body(access, REFRESH, cloud.user_id))
    sr.login(settings, cloud.url, ANON_KEY, "a@example.com", "pw-123456")
    remote = sr.remote_from_settings(settings, timeout_s=2.0)
    try:
        remote.subscribe(lambda: None)
        return dict(remote.realtime_state)
    finally:
        remote.close()


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


# -- a server's control characters -------------------------------------------------------------

# A newline that starts a forged log line, a window title (OSC), a bidi override, a C1 CSI
# (clears the screen on terminals that take 8-bit controls): under the 123 bytes a close frame's
# reason may hold.
HOSTILE = "denied\n2026-01-01 00:00:00 ERROR sync: forged\x1b]0;owned\x07\u202eexe.\x9b2J"
SHOWN = "denied\\x0a2026-01-01 00:00:00 ERROR sync: forged\\x1b]0;owned\\x07\\u202eexe.\\x9b2J"


def _join_refused(join: dict[str, object]) -> str:
    """The server's answer to the channel join: an error whose reason is HOSTILE."""
    return json.dumps(
        {
            "topic": join["topic"],
            "event": "phx_reply",
            "payload": {"status": "error", "response": {"reason": HOSTILE}},
            "ref": join.get("ref"),
            "join_ref": join.get("join_ref"),
        }
    )


def _hidden(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")]


@pytest.mark.parametrize(
    ("reply", "logger", "line"),
    [
        # The library quotes the join's error payload (a dict: repr escapes its strings).
        (_join_refused, "realtime._async.channel", "join push error for channel"),
        # It quotes a close frame's reason as it came, at ERROR (DEBUG in the daemon's log).
        (None, "realtime._async.client", f"closed with code: 1011, reason: {SHOWN}"),
    ],
    ids=["join-refused", "closed"],
)
def test_no_realtime_log_record_carries_a_servers_control_characters(
    settings: Settings,
    cloud: HostileCloud,
    caplog: pytest.LogCaptureFixture,
    reply: Callable[[dict[str, object]], str] | None,
    logger: str,
    line: str,
) -> None:
    """The realtime client really connects (redirected to a websocket server that refuses the
    join, or closes with a hostile reason); every record of the guarded loggers, down to DEBUG,
    is one line without control or format characters."""
    with HostileRealtime(reply=reply, close_code=1011, close_reason=HOSTILE) as rt:
        cloud.answers[("GET", "/realtime/v1/websocket")] = rt.redirect_answer()
        with caplog.at_level(logging.DEBUG):
            state = _subscribe(settings, cloud)
    assert state.get("subscribed") is False, state
    seen = [(r, r.getMessage()) for r in caplog.records if r.name in GUARDED_LOGGERS]
    # The server's text reached the log: not a test that passes because nothing was logged.
    assert any(r.name == logger and line in m and "forged" in m for r, m in seen), seen
    for record, message in seen:
        assert _hidden(message) == [], (record.name, message)
        # A traceback keeps its line breaks, and only those.
        assert [c for c in _hidden(record.exc_text or "") if c != "\n"] == [], record.name


def test_the_daemon_log_carries_no_servers_control_characters(
    settings: Settings, cloud: HostileCloud, daemon_log: Path
) -> None:
    with HostileRealtime(reply=None, close_code=1011, close_reason=HOSTILE) as rt:
        cloud.answers[("GET", "/realtime/v1/websocket")] = rt.redirect_answer()
        _subscribe(settings, cloud)
    text = daemon_log.read_text(encoding="utf-8")
    assert SHOWN in text
    assert not any(line.startswith("2026-01-01") for line in text.splitlines())  # no forged line
    assert [c for c in _hidden(text) if c != "\n"] == []


def test_a_traceback_on_a_guarded_logger_keeps_its_lines_and_loses_the_servers_controls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A library's ``logger.exception`` (realtime's timer does one) whose error quotes the server:
    the message is one line; the traceback keeps its own line breaks (frames) and escapes the
    rest, the newline in the error's message too."""
    guard_realtime_logs()  # (as the realtime hints do when built; once per process)
    sr_logs = logging.getLogger("realtime._async.timer")
    with caplog.at_level(logging.DEBUG, logger="realtime._async.timer"):
        try:
            raise ValueError(HOSTILE)
        except ValueError as exc:
            sr_logs.exception(f"Error in AsyncTimer callback: {exc}")
    (record,) = [r for r in caplog.records if r.name == "realtime._async.timer"]
    assert record.getMessage() == f"Error in AsyncTimer callback: {SHOWN}"
    text = record.exc_text
    assert text is not None and text.endswith(f"\nValueError: {SHOWN}"), text
    assert text.startswith("Traceback (most recent call last):\n  File ")
    assert [c for c in _hidden(text) if c != "\n"] == []
    assert not any(line.startswith("2026-01-01") for line in text.splitlines())


def test_a_message_the_client_cannot_read_is_one_short_warning_without_its_text(
    settings: Settings, cloud: HostileCloud, caplog: pytest.LogCaptureFixture
) -> None:
    """realtime-py logged a frame it could not validate (a change of a row whose meta holds a
    5,000-digit number, say) at ERROR with the whole frame: the blueprint's content in the log,
    up to the row's 10 MiB on one line, past the daemon log's rotation size."""
    marker = "blueprint-content-" + "x" * 5000

    def unreadable(join: dict[str, object]) -> str:
        return json.dumps({"topic": join["topic"], "what": marker})

    with HostileRealtime(reply=unreadable, close_code=1011, close_reason="bye") as rt:
        cloud.answers[("GET", "/realtime/v1/websocket")] = rt.redirect_answer()
        with caplog.at_level(logging.INFO):
            _subscribe(settings, cloud)
    shown = [(r.levelname, r.getMessage()) for r in caplog.records if r.name in GUARDED_LOGGERS]
    assert not [m for _, m in shown if "blueprint-content-" in m], shown
    dropped = [(lvl, m) for lvl, m in shown if "could not read" in m]
    assert [lvl for lvl, _ in dropped] == ["WARNING"], shown
    assert len(dropped[0][1]) < 300, dropped
