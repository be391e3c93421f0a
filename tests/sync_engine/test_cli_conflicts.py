"""`localstore status` and `localstore conflicts` (list, show, resolve --take/--tool) on real homes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from localstore.cli import cli
from sync import _local as sync_local

from .conftest import Device, converge

BASE = "name: flow\nsteps: 3\n"


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], env=env, catch_exceptions=False)


def _conflicted(make_device: Callable[..., Device]) -> tuple[Device, Device, str]:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("c/flow", BASE).id
    converge(a, b)
    a.store.save("c/flow", "name: flow\nsteps: 4\n")
    b.store.save("c/flow", "name: flow\nsteps: 5\n")
    a.sync()
    b.sync()
    return a, b, ident


def test_status_shows_pending_conflicts_and_cursor(make_device: Callable[..., Device]) -> None:
    _, b, _ = _conflicted(make_device)
    b.store.save("c/other", "x: 1\n")
    result = run(b.home, "--json", "status")
    assert result.exit_code == 3, result.output  # an open conflict needs attention
    data = json.loads(result.output)
    assert data["pending"] == 1 and data["conflicts"] == 1 and data["quarantined"] == 0
    assert data["daemon"] is False and data["cursor"] > 0 and data["last_synced_at"]
    human = run(b.home, "status")
    assert "pending uploads: 1" in human.output and "conflicts: 1" in human.output


def test_conflicts_list_and_show(make_device: Callable[..., Device]) -> None:
    _, b, ident = _conflicted(make_device)
    listed = json.loads(run(b.home, "--json", "conflicts").output)
    assert [(c["cid"], c["id"]) for c in listed] == [(1, ident)]
    assert "(conflict b " in listed[0]["copy_path"]
    shown = run(b.home, "conflicts", "show", "1")
    assert shown.exit_code == 0
    assert "-steps: 5\n+steps: 4" in shown.output  # local vs remote
    assert "--- base" in shown.output
    data = json.loads(run(b.home, "--json", "conflicts", "show", "1").output)
    assert data["base"] == BASE and data["local"].endswith("steps: 5\n")
    missing = run(b.home, "conflicts", "show", "9")
    assert missing.exit_code == 4 and "no conflict #9" in missing.output  # 4: not found


def test_resolve_take_local_pushes_it_and_removes_the_copy(
    make_device: Callable[..., Device],
) -> None:
    a, b, ident = _conflicted(make_device)
    result = run(b.home, "conflicts", "resolve", "1", "--take", "local")
    assert result.exit_code == 0, result.output
    assert b.store.load(ident).content == "name: flow\nsteps: 5\n"
    assert len(b.store.list()) == 1
    converge(a, b)
    assert a.store.load(ident).content == "name: flow\nsteps: 5\n" and len(a.store.list()) == 1
    again = run(b.home, "conflicts", "resolve", "1", "--take", "remote")
    assert again.exit_code == 1 and "already resolved" in again.output
    assert json.loads(run(b.home, "--json", "conflicts").output) == []
    assert len(json.loads(run(b.home, "--json", "conflicts", "list", "--all").output)) == 1


def test_resolve_take_remote_and_take_file(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    a, b, ident = _conflicted(make_device)
    assert run(b.home, "conflicts", "resolve", "1", "--take", "remote").exit_code == 0
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n" and len(b.store.list()) == 1
    a.store.save("c/flow", "name: flow\nsteps: 6\n")
    b.store.save("c/flow", "name: flow\nsteps: 7\n")
    a.sync()
    b.sync()
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text("name: flow\nsteps: 67\n", encoding="utf-8")
    assert run(b.home, "conflicts", "resolve", "2", "--take", str(chosen)).exit_code == 0
    assert b.store.load(ident).content == "name: flow\nsteps: 67\n"
    bad = run(b.home, "conflicts", "resolve", "2", "--take", str(tmp_path / "nope.yaml"))
    assert bad.exit_code == 2


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("steps: caf\u00e9\n".encode("latin-1"), "YAML is not UTF-8 (invalid continuation byte"),
        ("steps: 8\n".encode("utf-16"), "YAML is UTF-16 (it starts with a UTF-16 byte order mark)"),
        ("steps: 8\n".encode("utf-16-le"), "YAML looks like UTF-16 (a NUL byte every other byte)"),
    ],
    ids=["latin-1", "utf-16", "utf-16-le"],
)
def test_take_file_that_is_not_utf8_says_so_as_save_does(
    make_device: Callable[..., Device], tmp_path: Path, content: bytes, said: str
) -> None:
    """It was "cannot read FILE: 'utf-8' codec can't decode byte 0xe9 in position 10: invalid
    continuation byte (give a UTF-8 YAML file)", and UTF-16 without a byte order mark "a control
    character"; `save -f` says the same bytes in its own words."""
    _, b, ident = _conflicted(make_device)
    before = b.store.load(ident).content
    chosen = tmp_path / "chosen.yaml"
    chosen.write_bytes(content)
    done = run(b.home, "conflicts", "resolve", "1", "--take", str(chosen))
    assert done.exit_code == 1, done.output
    assert said in done.stderr and done.stderr.endswith(" (save it as UTF-8)\n"), done.stderr
    saved = run(b.home, "save", "c/other", "-f", str(chosen))
    assert saved.stderr == done.stderr
    assert json.loads(run(b.home, "--json", "conflicts").output)[0]["cid"] == 1  # still open
    assert b.store.load(ident).content == before


def test_resolve_with_the_configured_merge_tool(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    _, b, ident = _conflicted(make_device)
    tool = tmp_path / "tool.py"
    tool.write_text(
        "import sys\n"
        "base, local, remote, merged = sys.argv[1:5]\n"
        "texts = [open(p).read() for p in (base, local, remote)]\n"
        "open(merged, 'w').write('name: flow\\nsteps: 45\\n# saw %d chars\\n' % sum(map(len, texts)))\n",
        encoding="utf-8",
    )
    env = {"LOCALSTORE_MERGE_TOOL": f"{sys.executable} {tool} %BASE %LOCAL %REMOTE %MERGED"}
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 0, result.output
    assert b.store.load(ident).content.startswith("name: flow\nsteps: 45\n# saw ")
    again = run(b.home, "conflicts", "resolve", "1", "--tool", env=env)
    assert again.exit_code == 1 and "already resolved" in again.output


def test_merge_tool_starts_from_the_copy_as_edited_since_like_take_local(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """%LOCAL and %MERGED hold the conflict copy's current text, as `--take local` keeps it.

    They held the text recorded at conflict time: a tool that saves MERGED as it opened (the
    user accepts their side) silently dropped the edits made to the copy since.
    """
    _, b, ident = _conflicted(make_device)
    (record,) = b.engine.conflicts()
    assert record.copy_id is not None
    edited = "name: flow\nsteps: 5\nnote: edited in the copy\n"
    b.store.save(record.copy_path or "", edited, id=record.copy_id)
    seen = tmp_path / "seen-local.yaml"
    tool = tmp_path / "keep.py"  # notes what LOCAL held; adds a line to MERGED as it opened
    tool.write_text(
        "import shutil, sys\n"
        "shutil.copyfile(sys.argv[1], sys.argv[3])\n"
        "open(sys.argv[2], 'a').write('merged: yes\\n')\n",
        encoding="utf-8",
    )
    env = {"LOCALSTORE_MERGE_TOOL": f"{sys.executable} {tool} %LOCAL %MERGED {seen}"}
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 0, result.output
    assert seen.read_text(encoding="utf-8") == edited
    assert b.store.load(ident).content == edited + "merged: yes\n"
    assert len(b.store.list()) == 1  # the copy is gone, its edit kept


def test_merge_tool_failure_keeps_the_conflict_open(make_device: Callable[..., Device]) -> None:
    _, b, _ = _conflicted(make_device)
    failing = {"LOCALSTORE_MERGE_TOOL": f"{sys.executable} -c 'raise SystemExit(1)' %MERGED"}
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=failing)
    assert result.exit_code == 3
    assert len(json.loads(run(b.home, "--json", "conflicts").output)) == 1
    unset = run(b.home, "conflicts", "resolve", "1", "--tool", env={"LOCALSTORE_MERGE_TOOL": ""})
    assert unset.exit_code == 1 and "merge_tool" in unset.output
    usage = run(b.home, "conflicts", "resolve", "1")
    assert usage.exit_code == 2


def test_status_falls_back_to_the_index_without_a_live_daemon(
    make_device: Callable[..., Device],
) -> None:
    a = make_device("a")
    a.store.save("s/x", "v: 1\n")
    state = a.home / "state" / "daemon.json"
    state.write_text(json.dumps({"pid": 2**22 + 12345, "port": 1, "token": "t"}), encoding="utf-8")
    data = json.loads(run(a.home, "--json", "status").output)
    assert data["daemon"] is False and data["pending"] == 1
    assert "daemon_not_answering" not in data  # (none runs: nothing to report)
    # A live pid whose control port does not answer: a note on stderr, the local status on stdout.
    state.write_text(json.dumps({"pid": os.getpid(), "port": 1, "token": "t"}), encoding="utf-8")
    result = run(a.home, "--json", "status")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["daemon"] is False


def test_status_says_when_a_running_daemon_does_not_answer(
    make_device: Callable[..., Device],
) -> None:
    """A daemon that runs (its pid alive and holding the home's lock) but does not answer was
    shown as the index's state alone ("idle (local index)"), like a healthy home with no
    daemon; only a note on stderr told of it."""
    from localstore.index import CORE_MIGRATIONS
    from sync.embed import HomeLock

    a = make_device("a")
    a.store.save("s/x", "v: 1\n")
    lock = HomeLock.for_settings(a.store.settings)  # (this process plays the hung daemon)
    assert lock.acquire()
    try:
        state = a.home / "state" / "daemon.json"
        # (As this version's daemon writes it: with the core schema it writes, else status
        # names it an older daemon to restart, a finding of its own.)
        fake = {"pid": os.getpid(), "port": 1, "token": "t", "core_schema": len(CORE_MIGRATIONS)}
        state.write_text(json.dumps(fake), "utf-8")
        result = run(a.home, "--json", "status")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["daemon"] is False and data["pending"] == 1
        assert data["daemon_not_answering"]
        human = run(a.home, "status")
        assert "the daemon runs but did not answer" in human.stdout.splitlines()[0]
    finally:
        lock.release()
    data = json.loads(run(a.home, "--json", "status").stdout)
    assert "daemon_not_answering" not in data  # (none runs now: nothing to report)


def test_a_missing_conflict_is_not_found_exit_4(tmp_path: Path) -> None:
    """Exit 4 = not found, as for a missing blueprint, revision, bundle or credential."""
    home = tmp_path / "home"
    assert run(home, "init").exit_code == 0
    for args in (("conflicts", "show", "99"), ("conflicts", "resolve", "99", "--take", "local")):
        result = run(home, *args)
        assert result.exit_code == 4, (args, result.output)
        assert result.stderr == "error: there is no conflict #99 (see `localstore conflicts`)\n"


@pytest.mark.parametrize("how", ["--take", "--tool"])
def test_resolve_with_a_mistyped_home_makes_no_home(tmp_path: Path, how: str) -> None:
    """A resolve in a home that does not exist says so, as list and show do; it made a new
    empty home there (index, folders) and then reported the conflict as not found."""
    home = tmp_path / "typo"
    args = ("--take", "local") if how == "--take" else ("--tool",)
    result = run(home, "conflicts", "resolve", "1", *args)
    assert result.exit_code == 4, result.output
    assert f"no LocalStore home at {home}" in result.stderr
    assert not home.exists()


def test_resolve_take_local_keeps_the_local_meta_too(
    make_device: Callable[..., Device],
) -> None:
    """A conflict can be in the meta alone (both sides changed the description): `--take local`
    wrote only the copy's YAML into the blueprint and deleted the copy, so the local description
    (the very thing the person chose) was gone from the blueprint and from every device."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("c/flow", BASE, description="first", tags=["x"]).id
    converge(a, b)
    a.store.save("c/flow", description="theirs")
    b.store.save("c/flow", description="mine", tags=["x", "local-tag"])
    a.sync()
    report = b.sync()
    assert report.conflicts == 1
    result = run(b.home, "conflicts", "resolve", "1", "--take", "local")
    assert result.exit_code == 0, result.output
    meta = b.store.load(ident).meta
    assert meta.description == "mine" and list(meta.tags) == ["x", "local-tag"]
    assert meta.name == "flow" and meta.id == ident
    assert len(b.store.list()) == 1
    converge(a, b)
    assert a.store.load(ident).meta.description == "mine"
    assert len(a.store.list()) == 1


def test_take_local_strips_only_the_copys_own_conflict_suffix() -> None:
    from sync._local import _strip_copy_suffix

    stamp = "2026-11-22T19-29-54Z"
    assert _strip_copy_suffix(f"flow (conflict b {stamp})") == "flow"
    # A copy of a copy: the blueprint it came from was itself a conflict copy.
    twice = f"flow (conflict b {stamp}) (conflict my (old) laptop {stamp})"
    assert _strip_copy_suffix(twice) == f"flow (conflict b {stamp})"
    assert _strip_copy_suffix("renamed by the person") == "renamed by the person"


def _merge_tool(tmp_path: Path, body: str) -> dict[str, str]:
    """A merge tool (a Python script run on %BASE %LOCAL %REMOTE %MERGED) doing ``body``."""
    tool = tmp_path / "merge tool.py"  # (a space in the path: the template quotes it)
    tool.write_text("import sys\nbase, local, remote, merged = sys.argv[1:5]\n" + body, "utf-8")
    return {"LOCALSTORE_MERGE_TOOL": f"{sys.executable} '{tool}' %BASE %LOCAL %REMOTE %MERGED"}


def test_a_merge_the_store_refuses_is_kept_for_take_file(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """The merge tool exits 0 with a MERGED that is not a valid blueprint (a conflict marker left
    in, a typo): the error was the YAML's, and the temp folder with the person's merge went with
    it. It is kept, named in the error with the command that takes it once fixed."""
    _, b, ident = _conflicted(make_device)
    merged = "name: flow\n<<<<<<< mine\nsteps: 5\n=======\nsteps: 4\n>>>>>>> theirs\nnote: hours\n"
    env = _merge_tool(tmp_path, f"open(merged, 'w', encoding='utf-8').write({merged!r})\n")
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert "still holds conflict markers" in error["message"]
    kept = Path(error["kept"])
    assert kept.read_text(encoding="utf-8") == merged
    assert f"localstore conflicts resolve 1 --take {shlex.quote(str(kept))}" in error["hint"]
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"  # nothing written
    assert len(json.loads(run(b.home, "--json", "conflicts").output)) == 1  # still open
    kept.write_text("name: flow\nsteps: 45\nnote: hours\n", encoding="utf-8")
    assert run(b.home, "conflicts", "resolve", "1", "--take", str(kept)).exit_code == 0
    assert b.store.load(ident).content == "name: flow\nsteps: 45\nnote: hours\n"


def test_a_merge_tool_that_leaves_no_readable_merged_file_is_a_clear_error(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """MERGED deleted or not UTF-8 was 'unexpected FileNotFoundError/UnicodeDecodeError ...
    report it', as for a bug; the bytes of one not UTF-8 were lost."""
    _, b, _ = _conflicted(make_device)
    remove = _merge_tool(tmp_path, "import os; os.remove(merged)\n")
    gone = run(b.home, "conflicts", "resolve", "1", "--tool", env=remove)
    assert gone.exit_code == 3, gone.output  # needs attention: the conflict stays open
    assert "left no merged file" in gone.stderr and "unexpected" not in gone.stderr
    latin = _merge_tool(tmp_path, "open(merged, 'wb').write(b'name: caf\\xe9\\n')\n")
    bad = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=latin)
    assert bad.exit_code == 1
    error = json.loads(bad.stderr)["error"]
    assert "not UTF-8" in error["message"] and "unexpected" not in error["message"]
    assert Path(error["kept"]).read_bytes() == b"name: caf\xe9\n"
    # Saved, then quit with an error: open as before (exit 3), and what it saved is kept.
    quit_ = _merge_tool(tmp_path, "open(merged, 'w').write('half: done\\n'); sys.exit(2)\n")
    failed = run(b.home, "conflicts", "resolve", "1", "--tool", env=quit_)
    assert failed.exit_code == 3 and "exited with 2; the conflict stays open" in failed.stderr
    kept = failed.stderr.split("kept at ", 1)[1].strip()
    assert Path(kept).read_text(encoding="utf-8") == "half: done\n"
    assert len(json.loads(run(b.home, "--json", "conflicts").output)) == 1


def test_a_merge_finished_after_another_terminal_resolved_is_kept(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """While the tool is open, the conflict is resolved from another terminal: the merge made in
    the tool was dropped with "already resolved"; it is kept, the other resolution stands."""
    _, b, ident = _conflicted(make_device)
    other = (
        "import subprocess\n"
        f"subprocess.run([sys.executable, '-m', 'localstore', '--home', {str(b.home)!r}, "
        "'conflicts', 'resolve', '1', '--take', 'remote'], check=True)\n"
        "open(merged, 'w', encoding='utf-8').write('name: flow\\nsteps: 45\\n')\n"
    )
    env = {**_merge_tool(tmp_path, other), "PYTHONPATH": os.getcwd()}
    result = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=env)
    assert result.exit_code == 1
    error = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    assert "already resolved (take remote)" in error["message"]
    kept = Path(error["kept"])
    assert kept.read_text(encoding="utf-8") == "name: flow\nsteps: 45\n"
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"  # the other terminal's choice


def test_two_terminals_resolving_at_once_do_not_both_win(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resolve` checked that the conflict was open before its write transaction: another
    terminal resolving in between was overwritten (its choice replaced, the record marked again)
    while both said "resolved". The check is made again inside the write."""
    _, b, ident = _conflicted(make_device)
    real = sync_local.conflict_local_text

    def other_terminal_first(store: Any, record: Any) -> str:
        # Fault injected: the other terminal resolves between this one's check and its write.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "localstore",
                "--home",
                str(b.home),
                "conflicts",
                "resolve",
                "1",
                "--take",
                "remote",
            ],
            check=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        return real(store, record)

    monkeypatch.setattr(sync_local, "conflict_local_text", other_terminal_first)
    result = run(b.home, "conflicts", "resolve", "1", "--take", "local")
    assert result.exit_code == 1 and "already resolved (take remote)" in result.stderr
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"  # the remote, as chosen
    (record,) = json.loads(run(b.home, "--json", "conflicts", "list", "--all").output)
    assert record["resolution"] == "take remote"


def test_a_merge_tool_that_exits_0_without_saving_keeps_the_conflict_open(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """A merge tool closed without saving (exit 0, MERGED as it was written) resolved the
    conflict as "merge tool" with the local text: the remote side's edit was silently dropped
    from the files while the person believed they had merged. Now the conflict stays open
    (exit 3) and the error says how to resolve it; nothing is written."""
    _, b, ident = _conflicted(make_device)
    (record,) = b.engine.conflicts()
    untouched = _merge_tool(tmp_path, "open(local).read()  # looked, closed without saving\n")
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=untouched)
    assert result.exit_code == 3, result.output
    assert "exited without saving a merge" in result.stderr
    assert "--take local" in result.stderr and "the conflict stays open" in result.stderr
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"  # the remote, untouched
    assert record.copy_id is not None and b.store.exists(record.copy_id)
    # The same bytes saved again are no merge either (`--take local` keeps that side).
    resaved = _merge_tool(tmp_path, "open(merged, 'w').write(open(local).read())\n")
    again = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=resaved)
    assert again.exit_code == 3 and again.stdout == ""
    error = json.loads(again.stderr)["error"]
    assert error["exit_code"] == 3 and "kept" not in error  # nothing of the person's to keep
    assert "--take local" in error["hint"]
    (still,) = json.loads(run(b.home, "--json", "conflicts").output)
    assert still["cid"] == 1
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"


def test_a_merge_that_still_holds_conflict_markers_keeps_the_conflict_open(
    make_device: Callable[..., Device], tmp_path: Path
) -> None:
    """The copy holds conflict markers where YAML allows them (a block scalar the person was
    merging by hand). A tool that exits 0 leaving them in, saved or not, resolved with the
    markers as the blueprint's text. The conflict stays open; a changed MERGED is kept, as any
    merge the conflict cannot take."""
    _, b, ident = _conflicted(make_device)
    (record,) = b.engine.conflicts()
    assert record.copy_id is not None
    marked = (
        "name: flow\nsteps: 5\nnotes: |\n  <<<<<<< mine\n  five\n  =======\n  four\n"
        "  >>>>>>> theirs\n"
    )
    b.store.save(record.copy_path or "", marked, id=record.copy_id)
    untouched = _merge_tool(tmp_path, "pass\n")
    result = run(b.home, "conflicts", "resolve", "1", "--tool", env=untouched)
    assert result.exit_code == 3, result.output
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"
    edited = _merge_tool(tmp_path, "open(merged, 'a').write('owner: me\\n')\n")
    half = run(b.home, "--json", "conflicts", "resolve", "1", "--tool", env=edited)
    assert half.exit_code == 1, half.output
    error = json.loads(half.stderr)["error"]
    assert "conflict markers" in error["message"]
    kept = Path(error["kept"])
    assert kept.read_text(encoding="utf-8") == marked + "owner: me\n"
    assert b.store.load(ident).content == "name: flow\nsteps: 4\n"
    assert len(json.loads(run(b.home, "--json", "conflicts").output)) == 1


def test_the_marker_check_reads_a_large_merge_in_one_pass() -> None:
    """A label after `<<<<<<<` was matched with `.*` under DOTALL, which ran to the end of the
    text and backed off one line end at a time, each try scanning the rest for `=======`: the
    check took time in the square of the merge's lines (160 KB: 9 s; a 2 MB blueprint's merge
    hung `resolve --tool` for an hour). Run in a child, so that the old behaviour fails by the
    timeout instead of hanging the suite; the check itself takes milliseconds."""
    probe = (
        "from sync.cli_sync import _has_conflict_markers\n"
        "head = b'name: flow\\n<<<<<<< mine\\nsteps: 5\\n=======\\nsteps: 4\\n>>>>>>> theirs\\n'\n"
        "print(_has_conflict_markers(head + b'# padding\\n' * 200_000), "
        "_has_conflict_markers(b'<<<<<<< mine\\n' + b'# padding\\n' * 200_000))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["True", "False"]
