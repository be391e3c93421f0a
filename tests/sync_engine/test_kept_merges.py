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
from sync._kept_merges import KEPT_MERGE_DAYS, kept_merge_path, sweep_kept_merges

from .conftest import Device
from .test_cli_conflicts import _conflicted, _merge_tool

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


def test_the_sweep_takes_orphans_and_stale_temps_and_leaves_other_files(
    make_device: Callable[..., Device],
) -> None:
    """A kept merge whose record is gone (dropped past the retention, or lost with a rebuilt
    index) goes by its own age; a temp its write left (a kill) once stale; a file the person put
    there is not ours."""
    b = make_device("b")
    b.sync()  # (the sync tables)
    folder = kept_merge_path(b.store.paths.state, 77).parent
    folder.mkdir(parents=True)
    orphan, fresh = (
        kept_merge_path(b.store.paths.state, 77),
        kept_merge_path(b.store.paths.state, 78),
    )
    temp = folder / ".conflict-79.merged.yaml.0123abcd.lstmp"
    mine = folder / "notes.txt"
    for path in (orphan, fresh, temp, mine):
        path.write_text("x: 1\n", encoding="utf-8")
    for path in (orphan, temp, mine):
        _age(path, PAST)
    removed = sweep_kept_merges(b.store, now=datetime.now(UTC))
    assert sorted(removed) == sorted([orphan, temp])
    assert fresh.exists() and mine.exists()


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
