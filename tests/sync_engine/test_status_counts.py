"""Status tells the whole truth wherever it is read: the CLI, a daemon that is not logged in, the
engine's status when the index itself fails.

- A daemon without a session answered the status op with its state only, not the documented
  SyncStatus fields (pending, conflicts, flagged, ...): clients printed "pending uploads: None".
- A blueprint file dropped into the folder that never parsed has no index row, so no count had it:
  `status` said all was well (exit 0) while only `localstore check` showed it.
- A damaged index or a permission error under the sync loop was logged as an "unexpected failure"
  with a traceback, and the status did not say what to do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner, Result

import localstore
from localstore.cli import cli
from localstore.config import load_settings
from localstore.errors import PermissionDeniedError
from localstore.index import Index, map_apsw_error
from sync._local import SyncStatus
from sync.control import ControlClient
from sync.daemon import Daemon
from sync.errors import NotLoggedInError
from sync.remote import Remote
from tests.conftest import eventually
from tests.daemon.conftest import run_on_thread

from .conftest import Device

EXIT_ATTENTION = 3
BROKEN = "name: new\nsteps: [1, 2\n"


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def _not_logged_in(settings: object) -> Remote:
    raise NotLoggedInError("no cloud session is stored for this home")


@pytest.fixture
def offline_daemon(tmp_path: Path) -> Iterator[Path]:
    """A daemon on its own thread whose home is not logged in; yields the home."""
    home = tmp_path / "home"
    with localstore.open(home=home) as store:
        store.save("d/x", "v: 1\n")
    daemon = Daemon(
        load_settings(home=home, environ={}),
        remote_factory=_not_logged_in,
        install_signals=False,
    )
    running = run_on_thread(daemon)
    try:
        yield home
    finally:
        daemon.stop()
        running.thread.join(30)
    assert not running.thread.is_alive() and not running.errors


def test_an_offline_daemon_reports_the_documented_counts(offline_daemon: Path) -> None:
    home = offline_daemon
    with ControlClient.connect(home) as client:
        sync = client.status()["sync"]
    assert sync["state"] == "offline" and sync["logged_in"] is False
    assert sync["detail"] == "not logged in"
    for field in SyncStatus.__dataclass_fields__:
        assert field in sync, field
    assert (sync["pending"], sync["conflicts"], sync["quarantined"], sync["flagged"]) == (
        1,
        0,
        0,
        0,
    )

    result = run(home, "status")
    assert result.exit_code == 0, result.output
    assert "pending uploads: 1" in result.stdout and "None" not in result.stdout
    assert "state: offline (daemon: not logged in)" in result.stdout


def test_a_new_file_that_never_parsed_needs_attention_in_status(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home) as store:
        store.save("d/x", "v: 1\n")
    (home / "blueprints" / "d" / "new.blueprint.yaml").write_text(BROKEN, encoding="utf-8")

    result = run(home, "--json", "status")
    assert result.exit_code == EXIT_ATTENTION, result.output
    data = json.loads(result.stdout)
    assert data["flagged"] == 1
    [flagged] = data["flagged_files"]
    assert flagged["path"] == "d/new.blueprint.yaml" and flagged["id"] == ""
    assert flagged["reason"].startswith("YAML does not parse")

    human = run(home, "status")
    assert human.exit_code == EXIT_ATTENTION
    assert "d/new.blueprint.yaml: YAML does not parse" in human.stdout

    # Fixed: it is taken, and nothing needs attention any more.
    (home / "blueprints" / "d" / "new.blueprint.yaml").write_text("v: 2\n", encoding="utf-8")
    fixed = run(home, "--json", "status")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["flagged_files"] == []


def test_a_new_file_with_a_broken_meta_needs_attention_in_status(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "init")
    (home / "blueprints" / "n.blueprint.yaml").write_text("v: 1\n", encoding="utf-8")
    (home / "blueprints" / "n.blueprint.meta.json").write_text("{not json", encoding="utf-8")
    result = run(home, "--json", "status")
    assert result.exit_code == EXIT_ATTENTION, result.output
    [flagged] = json.loads(result.stdout)["flagged_files"]
    assert flagged["path"] == "n.blueprint.yaml"
    assert flagged["reason"].startswith("invalid meta file")


def test_the_daemon_counts_a_new_file_that_never_parsed(offline_daemon: Path) -> None:
    home = offline_daemon
    broken = home / "blueprints" / "d" / "new.blueprint.yaml"
    broken.write_text(BROKEN, encoding="utf-8")

    def flagged() -> int:
        with ControlClient.connect(home) as client:
            return int(client.status()["sync"]["flagged"])

    assert eventually(lambda: flagged() == 1, 20.0)
    result = run(home, "status")
    assert result.exit_code == EXIT_ATTENTION, result.output
    assert "d/new.blueprint.yaml: YAML does not parse" in result.stdout
    broken.unlink()  # (no index row changes: the count must still follow the folder)
    assert eventually(lambda: flagged() == 0, 20.0)


# -- the engine's loop on an index that fails -------------------------------------------------------


def _damaged(*_: object, **__: object) -> None:
    cause = apsw.CorruptError("database disk image is malformed")
    raise map_apsw_error(cause, "start a write") from cause


def _denied(*_: object, **__: object) -> None:
    raise PermissionDeniedError("cannot write /home/u/data/index.db: Permission denied")


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (_damaged, ("the index is damaged", "localstore check --fix")),
        (_denied, ("permission denied", "read and write access")),
    ],
    ids=["damaged", "permission"],
)
def test_an_index_that_fails_is_a_condition_not_a_bug(
    make_device: Callable[..., Device],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Callable[..., None],
    words: tuple[str, ...],
) -> None:
    a = make_device("a", backoff_base_s=0.02, backoff_cap_s=0.05, poll_interval_s=3600.0)
    a.store.save("k/x", "v: 1\n")
    failures: list[SyncStatus] = []
    unsubscribe = a.engine.subscribe_status(
        lambda s: failures.append(s) if s.state == "error" else None
    )
    with caplog.at_level(logging.DEBUG, logger="sync.engine"):
        monkeypatch.setattr(Index, "write", fault)  # the fault: every index write fails
        a.engine.start()
        assert eventually(lambda: len(failures) >= 2, 20.0)
        monkeypatch.undo()
    unsubscribe()
    loud = [
        r.getMessage()
        for r in caplog.records
        if r.name == "sync.engine" and (r.exc_info or "unexpected" in r.getMessage())
    ]
    assert loud == []
    last_error = failures[-1].last_error or ""
    for w in words:
        assert w in last_error, last_error
    a.engine.request_sync()
    assert eventually(lambda: a.engine.status().state == "idle", 20.0)


@pytest.mark.parametrize(
    ("yaml", "meta", "kind"),
    [
        ("v: 1\n".encode("utf-16"), None, "invalid-yaml"),
        (BROKEN.encode(), b"{not json", "invalid-meta"),  # (both bad: the meta is read first)
    ],
    ids=["utf16", "both-bad"],
)
def test_status_gives_a_new_file_the_reason_check_gives_it(
    tmp_path: Path, yaml: bytes, meta: bytes | None, kind: str
) -> None:
    """status judged a new file on its own (the YAML before the meta, the reason without its
    hint), so status and check gave one file two reasons, and status's said nothing to do."""
    home = tmp_path / "home"
    with localstore.open(home=home) as store:
        store.abspath("n.blueprint.yaml").write_bytes(yaml)
        if meta is not None:
            store.abspath("n.blueprint.meta.json").write_bytes(meta)
        (problem,) = store.check().problems
    assert problem["kind"] == kind
    [flagged] = json.loads(run(home, "--json", "status").stdout)["flagged_files"]
    assert flagged["path"] == "n.blueprint.yaml"
    said = problem["detail"]
    assert flagged["reason"] == (said if kind == "invalid-yaml" else f"invalid meta file: {said}")
    assert flagged["reason"].endswith(")")  # (the hint: what to do with the file)
