"""A home this user cannot write: a backup snapshot, a read-only disk, another user's home.

Nothing could open one: SQLite needs the index's -shm in data/, the open reconciles into the
index and writes its marks. Here the homes are really read-only: every folder and file loses its
write bits, and as root (the CI container) the readers run under ``setpriv`` without
CAP_DAC_OVERRIDE, so the modes bind them as they bind a user. A snapshot is the home copied while
a store had it open, so its index's last commits are in the -wal only (as a btrfs or ZFS snapshot
of a running daemon's home has them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

import localstore
from localstore._daemon_state import EXIT_HOME_READ_ONLY
from localstore.errors import ReadOnlyStoreError
from localstore.index import oldest_core_read_as_is
from tests.conftest import bound_by_file_modes

REPO = Path(__file__).resolve().parents[2]


def as_reader(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``python argv...`` in a process that file modes bind, even when the tests run as root."""
    cmd = bound_by_file_modes([sys.executable, *argv])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def read_only_answer(home: Path, expression: str) -> Any:
    """What ``expression`` (over ``s``, the home opened read-only) gives, as JSON, in a process
    that file modes bind."""
    code = (
        "import json, sys, localstore\n"
        "with localstore.open(home=sys.argv[1], read_only=True) as s:\n"
        f"    print(json.dumps({expression}))\n"
    )
    done = as_reader("-c", code, str(home))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return as_reader("-c", "from localstore.cli import main; main()", "--home", str(home), *args)


def freeze(root: Path) -> None:
    """Take every write bit off, as a read-only mount or snapshot has them."""
    for here, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            p = Path(here, name)
            p.chmod(stat.S_IMODE(p.lstat().st_mode) & ~0o222)
    root.chmod(stat.S_IMODE(root.stat().st_mode) & ~0o222)


def thaw(root: Path) -> None:
    root.chmod(0o755)
    for here, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            Path(here, name).chmod(0o755 if name in dirs else 0o644)


def fingerprint(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``root``: size, modification time and content hash."""
    out: dict[str, tuple[int, int, str]] = {}
    for here, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            p = Path(here, name)
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if name in files else "dir"
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def snapshot(tmp_path: Path) -> Iterator[Path]:
    """A copy of a home taken while a store had it open, its last commits in the -wal only."""
    live = tmp_path / "live"
    store = localstore.open(home=live, maintenance=False)  # (no checkpoint behind the test's back)
    try:
        store.save("team/deploy", "steps: [build, ship]\n", tags=["ops"], name="Deploy")
        store.save("team/deploy", "steps: [build, test, ship]\n")
        store.save("notes/readme", "text: hello snapshot\n")
        snap = tmp_path / "snap"
        shutil.copytree(live, snap)
    finally:
        store.close()
    assert (snap / "data" / "index.db-wal").stat().st_size > 0
    yield snap
    thaw(snap)


def blueprints_in_main_file(index: Path) -> int:
    """The live blueprints an immutable open sees: the main file's, the -wal ignored."""
    conn = apsw.Connection(
        Path(index).as_uri() + "?mode=ro&immutable=1",
        flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI,
    )
    try:
        cur = conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'blueprints'")
        if not cur.fetchall():
            return 0  # (the whole index is still in the -wal)
        rows = conn.execute("SELECT count(*) FROM blueprints WHERE deleted = 0").fetchall()
        return int(str(rows[0][0]))
    finally:
        conn.close()


# -- the CLI's reading commands ------------------------------------------------------------------


def test_reading_commands_work_on_a_snapshot_and_write_nothing(snapshot: Path) -> None:
    """Every one failed with "cannot write the index (attempt to write a readonly database)"."""
    freeze(snapshot)
    before = fingerprint(snapshot)
    out = snapshot.parent / "out"
    out.mkdir()
    done = cli(snapshot, "--json", "ls")
    assert done.returncode == 0, done.stderr
    assert sorted(i["path"] for i in json.loads(done.stdout)) == [
        "notes/readme.blueprint.yaml",
        "team/deploy.blueprint.yaml",
    ]
    note = done.stderr.strip().splitlines()
    assert len(note) == 1 and note[0].startswith("note: opened ") and "read-only" in note[0]
    assert "may not write" in note[0], note
    done = cli(snapshot, "show", "team/deploy")
    assert (done.returncode, done.stdout) == (0, "steps: [build, test, ship]\n"), done.stderr
    done = cli(snapshot, "--json", "search", "snapshot")
    assert done.returncode == 0, done.stderr
    assert [h["path"] for h in json.loads(done.stdout)] == ["notes/readme.blueprint.yaml"]
    done = cli(snapshot, "--json", "history", "team/deploy")
    assert done.returncode == 0, done.stderr
    assert [r["rev"] for r in json.loads(done.stdout)] == [2, 1]
    done = cli(snapshot, "show", "team/deploy", "--rev", "1")
    assert (done.returncode, done.stdout) == (0, "steps: [build, ship]\n"), done.stderr
    done = cli(snapshot, "export", "-o", str(out / "all.lsbundle"))
    assert done.returncode == 0, done.stderr
    done = cli(snapshot, "export", "team/deploy", "--yaml", "-o", str(out / "deploy.yaml"))
    assert done.returncode == 0, done.stderr
    assert (out / "deploy.yaml").read_text() == "steps: [build, test, ship]\n"
    assert fingerprint(snapshot) == before
    # The bundle restores the blueprint into a writable home, with its meta.
    with localstore.open(home=snapshot.parent / "restored") as target:
        from localstore.archive import import_bundle

        import_bundle(target, out / "all.lsbundle")
        assert target.load("team/deploy").meta.name == "Deploy"


def test_a_snapshot_without_the_cache_folder_is_read(snapshot: Path) -> None:
    """A backup that left cache/ out: the usual open failed making it with a plain StorageError
    ("cannot create folder"), which the reading commands did not take for a read-only home."""
    shutil.rmtree(snapshot / "cache")
    freeze(snapshot)
    done = cli(snapshot, "show", "notes/readme")
    assert (done.returncode, done.stdout) == (0, "text: hello snapshot\n"), done.stderr
    assert not (snapshot / "cache").exists()


def test_an_encrypted_export_from_a_read_only_home_is_written(snapshot: Path) -> None:
    """Its plaintext zip went to the home's cache first: refused with ReadOnlyStoreError, which
    left a snapshot's blueprints no way out but in plaintext. It goes to a folder of its own in
    the user's temp folder now, removed after."""
    freeze(snapshot)
    before = fingerprint(snapshot)
    tmp = snapshot.parent / "usertmp"
    tmp.mkdir()
    tmp.chmod(0o1777)  # (as /tmp: the reader keeps root's uid but not its overrides)
    out = snapshot.parent / "enc.lsbundle"
    env_code = (
        "import os; os.environ['LOCALSTORE_PASSPHRASE'] = 'pw'; "
        f"os.environ['TMPDIR'] = {str(tmp)!r}\n"
        "from localstore.cli import main; main()"
    )
    done = as_reader("-c", env_code, "--home", str(snapshot), "export", "--encrypt", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "(encrypted)" in done.stderr
    assert fingerprint(snapshot) == before
    assert list(tmp.iterdir()) == []  # (no plaintext left behind)
    assert not out.read_bytes().startswith(b"PK")  # (not a plain zip)
    with localstore.open(home=snapshot.parent / "restored") as target:
        from localstore.archive import import_bundle

        import_bundle(target, out, passphrase="pw")
        assert target.load("team/deploy").content == "steps: [build, test, ship]\n"


def test_a_killed_read_only_export_s_plaintext_is_removed_by_the_next(tmp_path: Path) -> None:
    """A finally cannot run after SIGKILL: the next read-only encrypted export removes the
    folder a dead process left in the temp folder (and never one of a live process)."""
    from localstore.archive import export_bundle

    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
    prefix = "localstore-export-"  # (_bundle_temps.READ_ONLY_EXPORT_PREFIX)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=-1)
    tmp = tmp_path / "usertmp"
    (tmp / f"{prefix}{int(dead.stdout)}-abcd").mkdir(parents=True)
    (tmp / f"{prefix}{int(dead.stdout)}-abcd" / "plaintext.lstmp").write_text("x")
    live = tmp / f"{prefix}{os.getppid()}-efgh"
    live.mkdir()
    old_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    import tempfile

    tempfile.tempdir = None  # (it caches the folder it chose)
    try:
        with localstore.open(home=home, read_only=True) as s:
            export_bundle(s, tmp_path / "out.lsbundle", passphrase="pw")
    finally:
        if old_tmp is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = old_tmp
        tempfile.tempdir = None
    assert [p.name for p in tmp.iterdir()] == [live.name]


def test_a_home_an_older_localstore_made_is_refused_read_only(snapshot: Path) -> None:
    """A read-only open cannot migrate the index: it says so rather than run queries its
    tables do not fit (the newest version whose next step today's queries need)."""
    from tests.store.older_index import set_core_back

    thaw(snapshot)
    set_core_back(snapshot, oldest_core_read_as_is() - 1, ())
    freeze(snapshot)
    before = fingerprint(snapshot)
    done = cli(snapshot, "ls")
    assert done.returncode == 1
    assert "error: the index" in done.stderr and "made by an older localstore" in done.stderr
    assert "copy the home to a folder you may write" in done.stderr, done.stderr
    assert fingerprint(snapshot) == before


# The index each core step after v11 adds, and nothing else (CORE_READ_WITHOUT).
STEP_INDEXES = {12: "blueprints_deleted_path", 13: "blueprints_odd_times"}
# A stamp edited by hand (09:30 UTC) and two in other forms: by moment odd, 10:00, 10:00:00.5;
# as text the other way round ('.' sorts before 'Z', '1' of 11:30 after '0').
HAND_STAMPS = {
    "t/odd": "2024-01-01T11:30:00+02:00",
    "t/ten": "2024-01-01T10:00:00Z",
    "t/half": "2024-01-01T10:00:00.500000Z",
}


def _stamped_home(home: Path) -> None:
    """A home whose meta files hold HAND_STAMPS (recorded by a writable open), and a deleted
    blueprint's history."""
    with localstore.open(home=home) as s:
        for path in HAND_STAMPS:
            s.save(path, f"word: {path}\n")
        s.save("t/gone", "word: gone\n")
        s.delete("t/gone")
    for path, stamp in HAND_STAMPS.items():
        meta = home / "blueprints" / f"{path}.blueprint.meta.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "modified": stamp}))
    localstore.open(home=home).close()


@pytest.mark.parametrize("version", [12, 11])
def test_a_read_only_home_a_step_that_adds_an_index_ago_is_read(
    tmp_path: Path, version: int
) -> None:
    """Core v13 only added an index, and a read-only open refused every index of v12 ("made by
    an older localstore"): yesterday's backup could not be read without copying it. Today's
    code reads an index without the indexes of v12 and v13 correctly: the stamp sort asks the
    table itself whether an odd stamp exists, and the deleted blueprint is found by its path."""
    from tests.store.older_index import set_core_back

    home = tmp_path / "home"
    _stamped_home(home)
    conn = apsw.Connection(str(home / "data/index.db"))
    for name in (name for step, name in STEP_INDEXES.items() if step > version):
        conn.execute(f"DROP INDEX {name}")
    conn.close()
    set_core_back(home, version, ())
    freeze(home)
    before = fingerprint(home)
    back, paths, hits, half, content, revs, core = read_only_answer(
        home,  # (the page first: the query's order, then the cached listing's)
        "[[i.path for i in s.list(sort='modified', descending=True, limit=2)], "
        "[i.path for i in s.list(sort='modified')], "
        "sorted(h.info.path for h in s.search('word')), [h.info.path for h in s.search('half')], s.load('t/odd').content, "
        "[r.rev for r in s.history('t/gone')], "
        "s.index.conn.execute('PRAGMA user_version').fetchall()[0][0]]",
    )
    assert paths == ["t/odd.blueprint.yaml", "t/ten.blueprint.yaml", "t/half.blueprint.yaml"]
    assert back == ["t/half.blueprint.yaml", "t/ten.blueprint.yaml"]
    assert hits == [f"{path}.blueprint.yaml" for path in sorted(HAND_STAMPS)]
    assert half == ["t/half.blueprint.yaml"]
    assert (content, revs, core) == ("word: t/odd\n", [2, 1], version)
    assert fingerprint(home) == before


@pytest.mark.parametrize(
    ("args", "action"),
    [
        (("init",), "set up the home"),
        (("save", "team/new", "-f", "{out}/new.yaml"), "save a blueprint"),
        (("rm", "team/deploy"), "delete a blueprint"),
        (("mv", "team/deploy", "team/moved"), "move a blueprint"),
        (("restore", "team/deploy", "1"), "restore a revision"),
        (("import", "{out}/all.lsbundle"), "import a bundle"),
        (("check", "--fix"), "repair the index"),
    ],
    ids=["init", "save", "rm", "mv", "restore", "import", "check-fix"],
)
def test_a_store_command_that_writes_says_the_home_is_read_only(
    snapshot: Path, args: tuple[str, ...], action: str
) -> None:
    """Each failed with the usual open's "cannot write the index (attempt to write a readonly
    database) (check that this user may write index.db ...)": not that the home is read-only,
    nor what to do about it. No read-only fallback either: each must write."""
    out = snapshot.parent / "out"
    out.mkdir()
    (out / "new.yaml").write_text("v: 1\n")
    assert cli(snapshot, "export", "-o", str(out / "all.lsbundle")).returncode == 0
    freeze(snapshot)
    before = fingerprint(snapshot)
    done = cli(snapshot, *(a.replace("{out}", str(out)) for a in args))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"error: cannot {action}: the home {snapshot} is read-only (this user may not write "
        f"{snapshot / 'data'}) (a backup or snapshot: copy it to a folder you may write"
    ), done.stderr
    assert fingerprint(snapshot) == before


# -- the index's last commits, in the -wal ---------------------------------------------------------


@pytest.mark.parametrize("keep_shm", [True, False], ids=["with-shm", "without-shm"])
def test_commits_only_in_the_wal_are_read(snapshot: Path, keep_shm: bool) -> None:
    """An immutable open (the obvious way to read a read-only WAL database) ignores the -wal:
    the blueprints saved last were not there. A backup that left the -shm out (or a -shm that
    cannot be made) is read through a private wal-index."""
    index = snapshot / "data" / "index.db"
    if not keep_shm:
        index.with_name("index.db-shm").unlink()
    assert blueprints_in_main_file(index) < 2  # (the scenario is real)
    freeze(snapshot)
    before = fingerprint(snapshot)
    paths, access, content = read_only_answer(
        snapshot,
        "[sorted(i.path for i in s.list()), s.index.read_access, s.load('notes/readme').content]",
    )
    assert paths == ["notes/readme.blueprint.yaml", "team/deploy.blueprint.yaml"]
    assert access == ("shared" if keep_shm else "private-wal")
    assert content == "text: hello snapshot\n"
    assert fingerprint(snapshot) == before


def test_a_home_closed_cleanly_opens_immutable(snapshot: Path) -> None:
    """No -wal at all (the store had closed before the backup): SQLite can make no -shm in a
    read-only folder, and the main file is the whole index."""
    thaw(snapshot)
    localstore.open(home=snapshot).close()  # (its close checkpoints and removes the -wal)
    assert not (snapshot / "data" / "index.db-wal").exists()
    freeze(snapshot)
    count, access, reason = read_only_answer(
        snapshot, "[s.count(), s.index.read_access, s.read_only_reason]"
    )
    assert (count, access) == (2, "immutable")
    assert reason == f"this user may not write {snapshot / 'data'}"


# -- files are the truth ---------------------------------------------------------------------------


def test_show_reads_what_the_files_hold_after_the_index_s_last_commit(snapshot: Path) -> None:
    """The snapshot caught a save between its files' rename and its index commit (or an edit
    nobody recorded): show prints the files, the index cannot be told."""
    root = snapshot / "blueprints"
    (root / "team" / "deploy.blueprint.yaml").write_text("steps: [edited]\n")
    meta_path = root / "team" / "deploy.blueprint.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["name"] = "Deploy, edited"
    meta_path.write_text(json.dumps(meta))
    (root / "notes" / "readme.blueprint.yaml").unlink()
    freeze(snapshot)
    done = cli(snapshot, "--json", "show", "team/deploy")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["content"], shown["meta"]["name"]) == ("steps: [edited]\n", "Deploy, edited")
    assert shown["rev"] == 2  # (the last one recorded; the edit is no revision)
    done = cli(snapshot, "show", "notes/readme")
    assert done.returncode == 4, done.stderr
    assert "deleted after the index's last save" in done.stderr
    done = cli(snapshot, "show", "notes/readme", "--rev", "1")
    assert (done.returncode, done.stdout) == (0, "text: hello snapshot\n"), done.stderr


# -- the library ---------------------------------------------------------------------------------


def test_writes_on_a_read_only_store_say_why_and_change_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
    before = fingerprint(home / "blueprints")
    with localstore.open(home=home, read_only=True) as s:
        assert s.read_only and s.read_only_reason == "opened with read_only=True"
        for write in (
            lambda: s.save("a/x", "v: 2\n"),
            lambda: s.save("b/new", "v: 1\n"),
            lambda: s.delete("a/x"),
            lambda: s.move("a/x", "b/x"),
            lambda: s.restore("a/x", 1),
            lambda: s.check(fix=True),
            lambda: s.reconcile(),
            lambda: s.index.set_setting("k", "v"),
        ):
            with pytest.raises(ReadOnlyStoreError, match=r"open read-only \(opened with read_only"):
                write()
        assert s.load("a/x").content == "v: 1\n"
    assert fingerprint(home / "blueprints") == before


def test_an_edit_made_meanwhile_is_shown_not_recorded(tmp_path: Path) -> None:
    """A read-only store neither reconciles at open nor records what load finds changed."""
    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
    (home / "blueprints" / "a" / "x.blueprint.yaml").write_text("v: 2\n")
    with localstore.open(home=home, read_only=True) as s:
        assert s.load("a/x").content == "v: 2\n"
        assert [r.rev for r in s.history("a/x")] == [1]
    with localstore.open(home=home) as s:  # (the next writable open records it)
        assert [r.rev for r in s.history("a/x")] == [2, 1]


def test_read_only_refuses_recover_index(tmp_path: Path) -> None:
    with pytest.raises(localstore.InvalidInputError, match="recover_index"):
        localstore.BlueprintStore(
            localstore.load_settings(home=tmp_path / "h"), read_only=True, recover_index=True
        )


def test_a_home_without_an_index_is_refused_read_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "blueprints").mkdir(parents=True)
    with pytest.raises(localstore.StorageError, match="a read-only open cannot build one"):
        localstore.open(home=home, read_only=True)
    assert sorted(p.name for p in home.iterdir()) == ["blueprints"]  # (no folders made)


# -- what the index has not recorded ---------------------------------------------------------------


def _edit_after_the_last_commit(snapshot: Path) -> None:
    """A file added and one changed after the index's last commit (nobody recorded either)."""
    root = snapshot / "blueprints"
    (root / "new").mkdir()
    (root / "new" / "added.blueprint.yaml").write_text("a: 1\n")
    (root / "team" / "deploy.blueprint.yaml").write_text("steps: [edited]\n")


def test_check_reports_what_the_index_has_not_recorded_and_fixes_nothing(
    snapshot: Path,
) -> None:
    """check failed on a read-only home: the CLI's usual open with "cannot write the index",
    the library's check() in FTS5's integrity check (an INSERT)."""
    _edit_after_the_last_commit(snapshot)
    freeze(snapshot)
    before = fingerprint(snapshot)
    problems = read_only_answer(snapshot, "[(p['kind'], p['path']) for p in s.check().problems]")
    expected = [
        ["changed", "team/deploy.blueprint.yaml"],
        ["unindexed", "new/added.blueprint.yaml"],
    ]
    assert sorted(problems) == expected
    done = cli(snapshot, "--json", "check")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert sorted([p["kind"], p["path"]] for p in report["problems"]) == expected
    assert report["fixed"] == []
    done = cli(snapshot, "check")
    assert done.returncode == 3, done.stderr
    assert "this home is read-only: copy it to a folder you may write" in done.stderr
    assert fingerprint(snapshot) == before
    done = cli(snapshot, "check", "--fix")  # (a write: no read-only fallback)
    assert done.returncode == 1, done.stderr
    assert "cannot repair the index: the home" in done.stderr and "is read-only" in done.stderr
    assert fingerprint(snapshot) == before


def test_load_of_a_file_the_index_never_saw_says_so(snapshot: Path) -> None:
    """It said "no blueprint matches" of a file the user can see in the folder."""
    _edit_after_the_last_commit(snapshot)
    freeze(snapshot)
    done = cli(snapshot, "show", "new/added")
    assert done.returncode == 4, done.stderr
    assert "new/added.blueprint.yaml is in" in done.stderr
    assert "not in the index: it was added after the index's last save" in done.stderr
    done = cli(snapshot, "show", "team/deploy")  # (changed: what the file holds)
    assert (done.returncode, done.stdout) == (0, "steps: [edited]\n"), done.stderr
    done = cli(snapshot, "show", "new/other")  # (nothing there: as before)
    assert done.returncode == 4 and "no blueprint matches" in done.stderr, done.stderr


# -- status, the watcher, sync ---------------------------------------------------------------------


@pytest.mark.parametrize("synced", [False, True], ids=["never-synced", "sync-tables"])
def test_status_of_a_read_only_home(tmp_path: Path, synced: bool) -> None:
    """status failed with "record this home's device id ... cannot write the index"; a home
    that never synced has no sync tables, which a read-only store cannot make."""
    from sync._local import ensure_schema

    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
        s.save("a/y", "v: 1\n")
        if synced:
            ensure_schema(s)
    freeze(home)
    before = fingerprint(home)
    done = cli(home, "--json", "status")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["pending"], status["conflicts"], status["quarantined"]) == (2, 0, 0)
    assert status["quarantine"] == [] and status["last_synced_at"] is None
    assert "read-only" in done.stderr
    assert fingerprint(home) == before


@pytest.fixture
def synced_home(tmp_path: Path) -> Path:
    """A home with a blueprint and the sync tables (it synced once)."""
    from sync._local import ensure_schema

    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
        ensure_schema(s)
    return home


def test_a_watcher_on_a_read_only_store_is_refused(synced_home: Path) -> None:
    """It started, then failed in wait_idle ("cannot lay a fence ... check that the blueprints
    folder exists"), and recorded nothing."""
    from localstore.watcher import Watcher

    before = fingerprint(synced_home / "blueprints")
    with (
        localstore.open(home=synced_home, read_only=True) as s,
        pytest.raises(ReadOnlyStoreError, match="cannot watch the blueprints folder"),
    ):
        Watcher(s).start()
    assert fingerprint(synced_home / "blueprints") == before


def test_a_sync_engine_of_a_read_only_store_is_refused(synced_home: Path) -> None:
    """It was made (the sync tables were there), and failed at its first write of every cycle,
    as one more retryable error."""
    from sync.engine import SyncEngine
    from sync.memory_remote import MemoryRemote

    with (
        localstore.open(home=synced_home, read_only=True) as s,
        pytest.raises(ReadOnlyStoreError, match="cannot sync: this store is open read-only"),
    ):
        SyncEngine(s, MemoryRemote())


# -- app data (KVStore) ----------------------------------------------------------------------------


def test_app_data_of_a_read_only_home_is_read(snapshot: Path) -> None:
    thaw(snapshot)
    with localstore.open(home=snapshot, maintenance=False) as s:
        from localstore.kv import KVStore

        with KVStore(s.index) as kv:
            kv.save("prefs/theme", {"dark": True}, tags=["ui"])
            kv.save("gone", 1, expires_at=1.0)
    freeze(snapshot)
    before = fingerprint(snapshot)
    answer = read_only_answer(
        snapshot,
        "(lambda kv: [kv.load('prefs/theme'), kv.keys(), kv.find_by_tag('ui'), "
        "kv.exists('gone'), kv.load('gone', None)])(__import__('localstore.kv').kv.KVStore(s.index))",
    )
    assert answer == [{"dark": True}, ["prefs/theme"], ["prefs/theme"], False, None]
    assert fingerprint(snapshot) == before


def test_app_data_tables_a_read_only_home_never_had_read_as_empty(snapshot: Path) -> None:
    """KVStore(index) raised ReadOnlyStoreError ("cannot write to the index"): it could not
    make its tables, and an app could not even ask whether a key was there."""
    freeze(snapshot)
    before = fingerprint(snapshot)
    answer = read_only_answer(
        snapshot,
        "(lambda kv: [kv.keys(), kv.exists('k'), kv.load('k', 'default'), kv.current_key_id()])"
        "(__import__('localstore.kv').kv.KVStore(s.index))",
    )
    assert answer == [[], False, "default", None]
    assert fingerprint(snapshot) == before


def test_app_data_writes_on_a_read_only_store_say_what_and_why(tmp_path: Path) -> None:
    """Each failed inside the index's write with "cannot write to the index"; start_purger
    started a thread whose every round failed, logged, for ever."""
    from localstore.kv import KVStore

    home = tmp_path / "home"
    with localstore.open(home=home) as s, KVStore(s.index) as kv:
        kv.save("k", 1)
    with localstore.open(home=home, read_only=True) as s, KVStore(s.index) as kv:
        for write, action in (
            (lambda: kv.save("k", 2), "save app-data item 'k'"),
            (lambda: kv.delete("k"), "delete app-data item 'k'"),
            (kv.purge_expired, "purge expired app data"),
            (kv.start_purger, "purge expired app data"),
        ):
            with pytest.raises(ReadOnlyStoreError, match=f"cannot {action}: this store is open"):
                write()
        assert kv.load("k") == 1


# -- conflicts, doctor, and the commands that cannot run read-only --------------------------------


def _add_conflict(home: Path) -> None:
    """One open conflict record on a.x (as a sync that met edits on both sides leaves it)."""
    from sync import _state

    with localstore.open(home=home) as s, s.index.write() as cur:
        _state.add_conflict(
            cur,
            blueprint_id=s.row("a/x").id,
            path="a/x.blueprint.yaml",
            copy_id=None,
            copy_path=None,
            reason="edited on both devices",
            base="v: 1\n",
            local="v: 2\n",
            remote="v: 3\n",
            base_rev=1,
            remote_rev=2,
        )


@pytest.mark.parametrize("synced", [False, True], ids=["never-synced", "a-conflict"])
def test_conflicts_of_a_read_only_home_are_listed_and_shown(tmp_path: Path, synced: bool) -> None:
    """`conflicts` (list) and `conflicts show` failed with "cannot write the index"; and the
    library's list_conflicts/get_conflict with ReadOnlyStoreError on a home without sync
    tables. They only read."""
    from sync._local import ensure_schema

    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
        if synced:
            ensure_schema(s)
    if synced:
        _add_conflict(home)
    freeze(home)
    before = fingerprint(home)
    done = cli(home, "--json", "conflicts")
    assert done.returncode == 0, done.stderr
    assert [(c["cid"], c["path"]) for c in json.loads(done.stdout)] == (
        [(1, "a/x.blueprint.yaml")] if synced else []
    )
    assert "read-only" in done.stderr
    done = cli(home, "conflicts", "show", "1")
    if synced:
        assert done.returncode == 0, done.stderr
        assert "-v: 2\n+v: 3" in done.stdout and "--- base" in done.stdout
    else:
        assert done.returncode == 4 and "there is no conflict #1" in done.stderr, done.stderr
    assert fingerprint(home) == before


@pytest.mark.parametrize(
    ("args", "action", "code"),
    [
        (("watch",), "watch the blueprints folder", 1),
        (("sync",), "sync", 1),
        # The daemon's own code, which its service files do not restart: restarted every 5 s,
        # it refused the home and logged that, forever.
        (("daemon",), "run the daemon", EXIT_HOME_READ_ONLY),
        (("daemon", "--detach"), "run the daemon", 1),
        (("conflicts", "resolve", "1", "--take", "local"), "resolve a conflict", 1),
    ],
    ids=["watch", "sync", "daemon", "daemon-detach", "conflicts-resolve"],
)
def test_a_command_that_writes_says_the_home_is_read_only(
    synced_home: Path, args: tuple[str, ...], action: str, code: int
) -> None:
    """watch, sync and conflicts resolve failed with the usual open's "cannot write the index
    (attempt to write a readonly database)", the daemon with "cannot write the daemon's log
    ... a daemon once run with sudo leaves files there": none said that the home is read-only,
    nor what to do about it."""
    _add_conflict(synced_home)
    freeze(synced_home)
    before = fingerprint(synced_home)
    done = cli(synced_home, *args)
    data = synced_home / "data"
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"error: cannot {action}: the home {synced_home} is read-only "
        f"(this user may not write {data}) (a backup or snapshot: copy it to a folder you may "
        "write and use the copy; else make it writable"
    ), done.stderr
    assert fingerprint(synced_home) == before


def test_a_command_that_writes_says_the_home_is_read_only_in_json(synced_home: Path) -> None:
    freeze(synced_home)
    done = cli(synced_home, "--json", "sync")
    assert done.returncode == 1, done.stderr
    error = json.loads(done.stderr)["error"]
    assert error["exit_code"] == 1
    assert error["message"] == (
        f"cannot sync: the home {synced_home} is read-only "
        f"(this user may not write {synced_home / 'data'})"
    )
    assert "copy it to a folder you may write" in error["hint"]


def test_doctor_on_a_read_only_home_says_so_and_writes_nothing(snapshot: Path) -> None:
    """Its index, cloud and validator checks failed with "cannot write the index (attempt to
    write a readonly database)" and "check that this user may write index.db": three problems,
    none saying that the home is read-only. The index is checked read-only now."""
    _edit_after_the_last_commit(snapshot)
    freeze(snapshot)
    before = fingerprint(snapshot)
    done = cli(snapshot, "--json", "doctor")
    assert done.returncode == 3, done.stderr
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    assert not [c for c in checks.values() if "cannot write the index" in c["detail"]], checks
    index = checks["index"]
    assert index["status"] == "problem"
    assert index["detail"] == (
        f"the home {snapshot} is read-only (this user may not write {snapshot / 'data'}): "
        "nothing can be saved, watched or synced in it; 2 difference(s) between files and "
        "index (changed, unindexed)"
    )
    assert index["fix"].startswith("a backup or snapshot: copy it to a folder you may write")
    assert index["fix"].endswith("`localstore check --fix` runs on a writable copy only")
    assert (checks["cloud"]["status"], checks["cloud"]["detail"]) == (
        "info",
        f"sync is off: the home is read-only (this user may not write {snapshot / 'data'})",
    )
    assert checks["validator"]["status"] == "ok", checks["validator"]
    assert fingerprint(snapshot) == before
