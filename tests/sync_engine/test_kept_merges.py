"""Merges kept in STATE/merges/ for a conflict that refused them: when they go (sync._kept_merges).

Nothing removed them before, whatever became of their conflict: a daemon's home collected one per
such conflict for good."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from localstore.cli import cli
from sync import _state as st
from sync._kept_merges import KEPT_MERGE_DAYS, kept_merge_path, sweep_kept_merges

from .conftest import Device, close_device, converge
from .test_cli_conflicts import _conflicted, _merge_tool
from .test_index_recovery import _check_fix, _damage_pages

MARKED = "name: flow\n<<<<<<< mine\nsteps: 5\n=======\nsteps: 4\n>>>>>>> theirs\n"
PAST = KEPT_MERGE_DAYS + 1


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=False)


def _keep_a_merge(b: Device, tmp_path: Path) -> Path:
    """A merge tool leaves conflict markers in MERGED: conflict #1 stays open, the merge kept."""
    env = _merge_tool(tmp_path, f"open(merged, 'w', encoding='utf-8').write({MARKED!r})\n")
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 1, result.output
    kept = Path(json.loads(result.stderr)["error"]["kept"])
    assert kept == kept_merge_path(b.store.paths.state, 1)
    assert kept.read_text(encoding="utf-8") == MARKED
    return kept


def _age(path: Path, days: int) -> None:
    """Set the file's last change ``days`` back (its age is what the rules read)."""
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def _clock() -> tuple[list[datetime], Callable[[], datetime]]:
    when = [datetime.now(UTC)]
    return when, lambda: when[0]


def test_a_kept_merge_taken_with_take_file_is_removed(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """Fixed and taken (`--take FILE`, the command the error names): its text is the
    blueprint's now, and the file stayed in the state folder for good."""
    _, b, ident = _conflicted(make_device)
    kept = _keep_a_merge(b, tmp_path)
    kept.write_text("name: flow\nsteps: 45\n", encoding="utf-8")
    result = run(b.home, "conflicts", "resolve", "1", "--take", str(kept))
    assert result.exit_code == 0, result.output
    assert b.store.load(ident).content == "name: flow\nsteps: 45\n"
    assert not kept.exists()


def test_a_refused_take_of_the_kept_merge_keeps_it(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """Taken while it still holds what the store refuses: the conflict stays open, so does the
    file (the person's merge work)."""
    _, b, _ = _conflicted(make_device)
    kept = _keep_a_merge(b, tmp_path)
    kept.write_text("name: [unclosed\n", encoding="utf-8")
    assert run(b.home, "conflicts", "resolve", "1", "--take", str(kept)).exit_code != 0
    assert kept.read_text(encoding="utf-8") == "name: [unclosed\n"


def test_a_kept_merge_goes_when_its_conflict_was_resolved_otherwise_long_ago(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """Resolved another way (`--take remote` here): the kept merge stays for the retention of
    resolved conflict records after both the resolution and its last change, then a sync cycle
    removes it."""
    when, now = _clock()
    _, b, _ = _conflicted(lambda name: make_device(name, now=now))
    kept = _keep_a_merge(b, tmp_path)
    assert run(b.home, "conflicts", "resolve", "1", "--take", "remote").exit_code == 0
    _age(kept, PAST)
    b.sync()
    assert kept.exists()  # the resolution is recent: the person may still want it
    when[0] += timedelta(days=PAST)
    edited = (when[0] - timedelta(days=1)).timestamp()
    os.utime(kept, (edited, edited))
    b.sync()
    assert kept.exists()  # edited a day ago: that edit is recent
    _age(kept, PAST)
    b.sync()
    assert not kept.exists()


def test_an_open_conflicts_kept_merge_is_never_removed(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    when, now = _clock()
    _, b, _ = _conflicted(lambda name: make_device(name, now=now))
    kept = _keep_a_merge(b, tmp_path)
    _age(kept, 10 * PAST)
    when[0] += timedelta(days=10 * PAST)
    b.sync()
    assert kept.read_text(encoding="utf-8") == MARKED
    assert len(json.loads(run(b.home, "--json", "conflicts").output)) == 1


def _record(b: Device, *, above: int = 0) -> int:
    """A conflict record in b's index, numbered as the engine numbers them."""
    with b.store.index.write() as cur:
        return st.add_conflict(
            cur,
            blueprint_id="x",
            path="x",
            copy_id=None,
            copy_path=None,
            reason="content",
            base=None,
            local="a: 1\n",
            remote="a: 2\n",
            base_rev=None,
            remote_rev=None,
            above=above,
        )


def test_the_sweep_takes_orphans_and_stale_temps_and_leaves_other_files(
    make_device: Callable[..., Device],
) -> None:
    """A kept merge (the last or an earlier one) whose record this index dropped past the
    retention goes by its own age; one numbered below this index's first conflict (its record
    lost with an index rebuilt since) never goes; a temp its write left (a kill) once stale; a
    file the person put there is not ours."""
    b = make_device("b")
    b.sync()  # (the sync tables)
    state = b.store.paths.state
    assert _record(b, above=76) == 77 and _record(b) == 78
    later = (datetime.now(UTC) + timedelta(days=PAST)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with b.store.index.write() as cur:
        st.resolve_conflict(cur, 77, "local")
        assert st.prune_resolved_conflicts(cur, now=later) == 1
    folder = kept_merge_path(state, 77).parent
    folder.mkdir(parents=True)
    orphan, fresh, lost = (kept_merge_path(state, n) for n in (77, 78, 5))
    earlier = folder / "conflict-77.merged.2.yaml"
    temp = folder / ".conflict-79.merged.yaml.0123abcd.lstmp"
    mine = folder / "notes.txt"
    for path in (orphan, earlier, fresh, lost, temp, mine):
        path.write_text("x: 1\n", encoding="utf-8")
    for path in (orphan, earlier, lost, temp, mine):
        _age(path, PAST)
    removed = sweep_kept_merges(b.store, now=datetime.now(UTC))
    assert sorted(removed) == sorted([orphan, earlier, temp])
    assert fresh.exists() and lost.exists() and mine.exists()


def test_a_failed_write_of_a_later_merge_leaves_the_kept_one_whole(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """The kept merge was overwritten in place: a second attempt whose write failed half way (a
    full disk; here the file-size limit, EFBIG) had already cut the first one, the merge the
    person was told to carry on from."""
    _, b, _ = _conflicted(make_device)
    kept = _keep_a_merge(b, tmp_path)
    limit = 4 * 1024 * 1024
    body = (
        "import resource\n"
        "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # (the CLI's limit, not ours)\n"
        # (More than the limit, on one line: the marker check reads it as the CLI would.)
        f"open(merged, 'w', encoding='utf-8').write({MARKED!r} + '# ' + 'x' * {limit} + '\\n')\n"
    )

    def limited() -> None:  # (in the CLI's child process, before exec)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    env = {**os.environ, **_merge_tool(tmp_path, body), "PYTHONPATH": os.getcwd()}
    argv = [sys.executable, "-m", "localstore", "--home", str(b.home)]
    done = subprocess.run(
        [*argv, "conflicts", "resolve", "1", "--tool"],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limited,
        check=False,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert kept.read_text(encoding="utf-8") == MARKED
    assert os.listdir(kept.parent) == [kept.name]  # (no temp left behind)


def test_a_kept_merge_outlives_a_rebuilt_index_that_numbers_conflicts_from_one_again(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """Conflict numbers come from the index. A damaged index rebuilt by `check --fix` (real
    damage, the real rebuild) knows no conflict, and numbered the next one #1 again: its kept
    merge replaced conflict-1.merged.yaml, the merge of the old #1, the only copy of that work.
    And the sweep took such an orphan by its own age, though nothing says its conflict was ever
    settled: the record went with the index, not with a resolution."""
    when, now = _clock()
    a, b, _ = _conflicted(lambda name: make_device(name, now=now))
    old = _keep_a_merge(b, tmp_path)
    close_device(b)
    data = b.home / "data"
    for side in ("index.db-wal", "index.db-shm"):
        (data / side).unlink(missing_ok=True)
    _damage_pages(data / "index.db")
    assert "index-rebuilt" in [f["kind"] for f in _check_fix(b.home)]

    b = make_device("b", now=now)  # the same home, on the rebuilt index
    converge(a, b)
    a.store.save("c/flow", "name: flow\nsteps: 6\n")
    b.store.save("c/flow", "name: flow\nsteps: 7\n")
    a.sync()
    b.sync()
    (conflict,) = json.loads(run(b.home, "--json", "conflicts").output)
    assert conflict["cid"] > 1  # numbered past the kept merge of the old #1
    env = _merge_tool(tmp_path, "open(merged, 'w', encoding='utf-8').write('x: [\\n')\n")
    result = run(b.home, "--json", "conflicts", "resolve", str(conflict["cid"]), "--tool", env=env)
    assert result.exit_code == 1, result.output
    new = Path(json.loads(result.stderr)["error"]["kept"])
    assert new != old and new.read_text(encoding="utf-8") == "x: [\n"
    assert old.read_text(encoding="utf-8") == MARKED

    # Its conflict is unknown to this index, resolved or not: the sweep leaves it, however old.
    _age(old, 10 * PAST)
    when[0] += timedelta(days=10 * PAST)
    b.sync()
    assert old.read_text(encoding="utf-8") == MARKED


def test_a_second_failed_merge_keeps_the_first_one_beside_it(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """The error says to fix the kept merge and take it; a person who fixed part of it and ran
    the tool again (which starts from the local side, not from that file) lost the fixes when
    that attempt failed too: its merge was written over the file. Both are kept now, under the
    sweep's rules, and `--take` of the earlier one removes it as it does the last one."""
    _, b, ident = _conflicted(make_device)
    kept = _keep_a_merge(b, tmp_path)
    fixing = MARKED.replace("<<<<<<< mine\n", "<<<<<<< mine\n# checked the 5 steps\n")
    kept.write_text(fixing, encoding="utf-8")
    env = _merge_tool(tmp_path, "open(merged, 'w', encoding='utf-8').write('x: [\\n')\n")
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 1, result.output
    error = json.loads(result.stderr)["error"]
    assert Path(error["kept"]) == kept and kept.read_text(encoding="utf-8") == "x: [\n"
    earlier = Path(error["earlier"])
    assert earlier.read_text(encoding="utf-8") == fixing
    assert str(earlier) in error["message"]
    # The same merge again moves nothing (no copy per identical attempt).
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=env)
    assert "earlier" not in json.loads(result.stderr)["error"]
    assert sorted(os.listdir(kept.parent)) == sorted([kept.name, earlier.name])

    earlier.write_text("name: flow\nsteps: 45\n", encoding="utf-8")
    assert run(b.home, "conflicts", "resolve", "1", "--take", str(earlier)).exit_code == 0
    assert b.store.load(ident).content == "name: flow\nsteps: 45\n"
    assert not earlier.exists() and kept.exists()  # (the other goes by the sweep's rules)
