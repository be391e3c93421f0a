"""`localstore status` says what needs attention in the same lines whether a daemon answers or
the CLI reads the index, and the daemon's own `status` carries them in its ``hint`` (session 18).

Real daemon subprocesses and real CLI processes on a home with held blueprints (the app's
validator refuses one; another was edited while the app was closed) and a file that never
parsed. The daemon's `status` op said only how to log in: a client of the control API had the
counts and nothing saying what to do about them, unlike an app's EmbeddedSync.status().
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localstore.store import BlueprintStore
from sync._local import attention_hints, first_hint, status_hint
from sync.errors import NotLoggedInError
from sync.localcloud.stack import LocalCloud
from tests.conftest import run_cli

from .conftest import eventually, home_settings, log_in, new_email, write_external


def _no_debug(doc: Mapping[str, Any]) -> list[str]:
    return ["debug must be off"] if doc.get("debug") else []


def _home_needing_attention(home: Path) -> None:
    """Two held blueprints (one the app's rules refuse, one edited with the app closed, judged
    by none) and one file that cannot be read as a blueprint (no index row)."""
    with BlueprintStore(home_settings(home), validator=_no_debug) as app:
        app.save("a/bad", "debug: true\n")
    write_external(home / "blueprints", "a/edited.blueprint.yaml", "debug: false\n")
    write_external(home / "blueprints", "a/broken.blueprint.yaml", "steps: [\n")


def _status(home: Path) -> tuple[list[str], dict[str, Any]]:
    """`localstore status`: its human lines after the cursor's (the attention lines), and its
    --json; both exit 3 (something needs attention)."""
    human = run_cli(home, "status")
    assert human.returncode == 3, human.stdout + human.stderr
    lines = human.stdout.splitlines()
    cursor = next(i for i, line in enumerate(lines) if line.startswith("cursor: "))
    to_sync = [line for line in lines if line.startswith("  to sync: ")]
    done = run_cli(home, "--json", "status")
    assert done.returncode == 3, done.stderr
    return to_sync + lines[cursor + 1 :], json.loads(done.stdout)


def _same_both_ways(without: tuple[list[str], dict[str, Any]], daemon: Any) -> dict[str, Any]:
    """``daemon``'s answer to `localstore status` says what ``without`` (no daemon) said; the
    daemon's own status op has the same hint. Returns the daemon's --json."""
    lines, data = _status(daemon.home)
    assert data["daemon"] is True and without[1]["daemon"] is False
    assert lines == without[0]
    assert len(lines) >= 2 and lines[-2:] == list(attention_hints(data).values())
    for key in ("hint", "held", "flagged", "conflicts", "quarantined", "logged_in"):
        assert data.get(key) == without[1].get(key), key
    # The daemon adds what only it knows (its validator, the session's identity, its realtime
    # channel); nothing else.
    assert set(data) - set(without[1]) <= {"validator", "identity", "realtime"}
    assert set(without[1]) - set(data) == set()
    sync = daemon.client().status()["sync"]
    assert sync["hint"] == data["hint"]  # (it was only the login's, or None)
    return data


def test_status_says_the_same_attention_lines_with_a_daemon_that_is_not_logged_in(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    _home_needing_attention(home)
    without = _status(home)
    lines, data = without
    assert data["held"] == 2 and data["flagged"] == 1 and data["logged_in"] is False
    assert lines[0] == f"  to sync: {NotLoggedInError.hint}"
    assert data["hint"] == "; ".join([NotLoggedInError.hint, *attention_hints(data).values()])

    d = spawn_daemon(home)
    d.wait_ready()
    _same_both_ways(without, d)
    assert d.stop() == 0


def test_status_says_the_same_attention_lines_with_a_daemon_that_syncs(
    cloud: LocalCloud, spawn_daemon: Any, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    log_in(home_settings(home), cloud, new_email())
    _home_needing_attention(home)
    without = _status(home)
    lines, data = without
    assert data["held"] == 2 and data["flagged"] == 1 and data["logged_in"] is True
    assert data["hint"] == "; ".join(attention_hints(data).values())
    assert not any(line.startswith("  to sync: ") for line in lines)

    d = spawn_daemon(home)
    d.wait_ready()
    c = d.client()
    assert eventually(lambda: c.status()["sync"]["logged_in"] is True, 30), d.output()
    c.sync(wait=True)  # (a cycle ran: nothing but the held ones is left to push)
    _same_both_ways(without, d)
    assert d.stop() == 0


def test_first_hint_takes_back_what_status_hint_put_first() -> None:
    counts = {"held": 2, "conflicts": 1}
    lines = list(attention_hints(counts).values())
    login = NotLoggedInError.hint
    assert first_hint({**counts, "hint": status_hint(counts, login)}) == login
    assert first_hint({**counts, "hint": status_hint(counts)}) is None
    assert first_hint({**counts, "hint": login}) == login  # an older daemon's: the login's only
    assert first_hint({**counts, "hint": None}) is None and first_hint(counts) is None
    assert first_hint({"hint": login}) == login
    assert status_hint(counts, login) == "; ".join([login, *lines])
