"""`localstore status` tells the truth: edits that cannot sync, and a sync stopped by an error.

A file that cannot be taken (YAML that does not parse or is over max_yaml_bytes, a broken meta)
keeps its last good revision in the index. That revision is what sync pushes and compares, so
sync, status and verify all said "in sync" while the edit in the file never left the device.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli
from sync.errors import AuthRevokedError, OfflineError

from .conftest import Device, converge

EXIT_ATTENTION = 3


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


def _with_small_yaml_limit(tmp_path: Path, name: str) -> None:
    config = tmp_path / name / "config"
    config.mkdir(parents=True)
    (config / "config.yaml").write_text("max_yaml_bytes: 1024\n", encoding="utf-8")


def _break_two_files(dev: Device) -> tuple[str, str]:
    """An editor grows one file past max_yaml_bytes and leaves a typo in the other."""
    over = dev.store.save("s/over", "name: small\nv: 1\n").id
    broken = dev.store.save("s/broken", "name: small\nv: 1\n").id
    dev.sync()
    root = dev.home / "blueprints" / "s"
    (root / "over.blueprint.yaml").write_text("name: small\nv: 2\nnote: " + "x" * 1100 + "\n")
    (root / "broken.blueprint.yaml").write_text("name: small\nv: [2\n")
    dev.store.reconcile()
    return over, broken


def test_flagged_edits_need_attention_in_the_status_api_and_verify(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    _with_small_yaml_limit(tmp_path, "a")
    a, b = make_device("a"), make_device("b")
    over, broken = _break_two_files(a)
    converge(a, b)

    status = a.engine.status()
    assert (status.pending, status.conflicts, status.quarantined) == (0, 0, 0)
    assert status.flagged == 2 and status.needs_attention
    report = a.engine.verify()
    assert not report.clean
    flagged = {d["path"]: d for d in report.differences if d["kind"] == "flagged"}
    assert set(flagged) == {"s/over.blueprint.yaml", "s/broken.blueprint.yaml"}
    assert flagged["s/over.blueprint.yaml"]["id"] == over
    assert "over the limit" in flagged["s/over.blueprint.yaml"]["detail"]
    assert flagged["s/broken.blueprint.yaml"]["id"] == broken
    assert b.engine.verify().clean  # the other device holds what the server has

    # Fixed on disk: nothing needs attention any more, and the edit syncs.
    (a.home / "blueprints/s/broken.blueprint.yaml").write_text("name: small\nv: 2\n")
    (a.home / "blueprints/s/over.blueprint.yaml").write_text("name: small\nv: 3\n")
    a.store.reconcile()
    converge(a, b)
    assert a.engine.status().flagged == 0 and not a.engine.status().needs_attention
    assert a.engine.verify().clean
    assert b.text(broken) == "name: small\nv: 2\n"


def test_status_lists_flagged_files_and_exits_3(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    _with_small_yaml_limit(tmp_path, "a")
    a = make_device("a")
    _break_two_files(a)
    result = run(a.home, "--json", "status")
    assert result.exit_code == EXIT_ATTENTION, result.output
    data = json.loads(result.stdout)
    assert data["pending"] == 0 and data["flagged"] == 2
    assert [f["path"] for f in data["flagged_files"]] == [
        "s/broken.blueprint.yaml",
        "s/over.blueprint.yaml",
    ]
    human = run(a.home, "status")
    assert human.exit_code == EXIT_ATTENTION
    assert "cannot be read" in human.output
    assert "s/over.blueprint.yaml: YAML is" in human.output
    assert "s/broken.blueprint.yaml: YAML does not parse" in human.output


def test_status_of_a_clean_home_exits_0(make_device: Callable[..., Device]) -> None:
    a = make_device("a")
    a.store.save("s/x", "v: 1\n")
    a.sync()
    result = run(a.home, "--json", "status")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["flagged_files"] == []


def test_status_exits_1_when_sync_stopped_on_an_error_not_when_offline(
    make_device: Callable[..., Device],
) -> None:
    a = make_device("a")
    a.store.save("s/x", "v: 1\n")
    a.remote.fail_next(exc=OfflineError("push_changes: network is unreachable"))
    with pytest.raises(OfflineError):
        a.sync()
    offline = run(a.home, "status")
    assert offline.exit_code == 0, offline.output  # retried by itself; nothing to do
    assert "state: offline" in offline.output
    a.remote.fail_next(
        exc=AuthRevokedError("refresh the cloud session: the session is no longer valid")
    )
    with pytest.raises(AuthRevokedError):
        a.sync()
    stopped = run(a.home, "status")
    assert stopped.exit_code == 1, stopped.output
    assert "state: error" in stopped.stdout
    assert stopped.stderr.startswith("error: sync is stopped: refresh the cloud session")
    assert "log in again with `localstore login`" in stopped.stderr
    a.sync()
    assert run(a.home, "status").exit_code == 0


def test_the_flagged_count_reads_an_index_not_every_row(
    make_device: Callable[..., Device],
) -> None:
    """status() of an idle synced home reads no blueprint rows; counting flags must not either."""
    from sync._local import _FLAGGED_WHERE

    a = make_device("a")
    a.store.save("w/x", "n: 1\n")
    a.sync()
    with a.store.index.read() as cur:
        sql = f"EXPLAIN QUERY PLAN SELECT count(*) FROM blueprints WHERE {_FLAGGED_WHERE}"
        plan = " ".join(str(r[-1]) for r in cur.execute(sql).fetchall())
    assert "SEARCH" in plan and "sync_flagged" in plan, plan


def test_status_with_the_blueprints_folder_away_shows_it_and_needs_attention(
    tmp_path: Path,
) -> None:
    """The open refused the missing folder, so status exited 1 with the refusal instead of
    showing the status; it reads the index read-only now and says what to do."""
    home = tmp_path / "home"
    assert run(home, "init").exit_code == 0
    saved = CliRunner().invoke(cli, ["--home", str(home), "save", "team/deploy"], "name: d\n")
    assert saved.exit_code == 0, saved.output
    (home / "blueprints").rename(tmp_path / "elsewhere")
    result = run(home, "status")
    assert result.exit_code == EXIT_ATTENTION, result.output
    assert "pending uploads:" in result.output
    assert "is missing" in result.output
    assert ".localstore-confirm-empty" in result.output
    data = json.loads(run(home, "--json", "status").output)
    assert "is missing" in data["problem"]
    assert ".localstore-confirm-empty" in data["hint"]
    assert not (home / "blueprints").exists()
