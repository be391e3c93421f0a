"""What daemon.log says about a network that comes and goes (a laptop changing networks daily for
months): one WARNING per outage and one line with its length when it ends, not two ERROR lines of
the realtime library for every dropped or refused connection and an INFO line per retry."""

from __future__ import annotations

import logging
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.control import ControlClient
from sync.daemon import configure_logging
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import login
from tests.sync_supabase.faultproxy import FaultProxy

from .conftest import PASSWORD, DaemonProc, eventually, home_settings, new_email, write_external


def _counters(c: ControlClient) -> dict[str, int]:
    counters: dict[str, int] = c.request("metrics")["counters"]
    return counters


def test_an_outage_is_one_warning_and_its_end_one_line(
    cloud: LocalCloud, spawn_daemon: Callable[..., DaemonProc], tmp_path: Path
) -> None:
    home = tmp_path / "h"
    with FaultProxy(cloud.port) as proxy:
        login(home_settings(home), proxy.url, cloud.anon_key, new_email(), PASSWORD, signup=True)
        d = spawn_daemon(home, "--log-level", "INFO")
        d.wait_ready()
        c = d.client()
        log_path = home / "state" / "daemon.log"
        assert eventually(lambda: _counters(c)["sync_cycles"] >= 1, 30)
        time.sleep(1.5)  # realtime has subscribed (its first hint pulled)
        proxy.refuse()  # the laptop leaves the Wi-Fi
        proxy.reset_all()
        write_external(home / "blueprints", "a.blueprint.yaml", "title: A\nsteps: []\n")
        # The engine retries the upload (backoff), realtime its connection.
        assert eventually(lambda: _counters(c)["sync_failures"] >= 3, 30), _counters(c)
        proxy.heal()
        cycles = _counters(c)["sync_cycles"]
        assert eventually(lambda: _counters(c)["sync_cycles"] > cycles, 30)
        assert eventually(lambda: "realtime reconnected after" in log_path.read_text(), 30)
        assert d.stop(signal.SIGTERM) == 0
    text = log_path.read_text()
    assert " ERROR " not in text and "Traceback" not in text, text
    assert "retrying in" not in text, text  # the engine's INFO per retry
    assert len(re.findall(r"WARNING sync\._realtime: realtime is down \(", text)) == 1, text
    assert len(re.findall(r"INFO sync\._realtime: realtime reconnected after \d+ s", text)) == 1
    assert len(re.findall(r"WARNING sync\.engine: sync: the cloud cannot be reached", text)) == 1
    assert (
        len(re.findall(r"INFO sync\.engine: sync: the cloud answers again, after \d+ s", text)) == 1
    )


def _library_record(name: str, level: int, msg: str) -> logging.LogRecord:
    # As the realtime library makes them: f-strings, no args.
    return logging.getLogger(name).makeRecord(name, level, "client.py", 1, msg, (), None)


@pytest.mark.parametrize("as_json", [False, True])
def test_the_realtime_librarys_reconnect_errors_are_debug_but_auth_refusals_stay_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """The records the realtime library emits for a dropped or refused connection (seen in
    daemon.log: two ERRORs per reconnect), fed through the daemon's handlers."""
    root = logging.getLogger()
    level = root.level
    handlers = configure_logging(tmp_path, level="INFO", as_json=as_json, stderr=True)
    # (configure_logging's stderr handler took sys.stderr before capsys swapped it: point it at
    # the captured one.)
    handlers[1].setStream(sys.stderr)  # type: ignore[attr-defined]
    client = "realtime._async.client"
    noise = [
        "WebSocket connection closed with code: 1006, reason: ",
        "Auto-reconnect disabled, terminating connection",
        "Connection attempt failed: [Errno 104] Connect call failed ('127.0.0.1', 38985)",
        "Connection failed permanently after 1 attempts. Error: did not receive a valid HTTP "
        "response",
    ]
    kept = [
        (client, "Connection attempt failed: server rejected WebSocket connection: HTTP 401"),
        (
            client,
            "Connection failed permanently after 1 attempts. Error: server rejected "
            "WebSocket connection: HTTP 403",
        ),
        ("realtime._async.channel", "join push error for channel realtime:x: {'reason': 'bad'}"),
        ("sync.engine", "sync: something real failed"),
    ]
    try:
        for msg in noise:
            root.handle(_library_record(client, logging.ERROR, msg))
        for name, msg in kept:
            root.handle(_library_record(name, logging.ERROR, msg))
        for h in handlers:
            h.flush()
        for out in ((tmp_path / "daemon.log").read_text(), capsys.readouterr().err):
            for msg in noise:
                assert msg not in out
            for _name, msg in kept:
                assert msg in out, out
            assert out.count("ERROR" if not as_json else '"level": "error"') == len(kept)
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(level)
