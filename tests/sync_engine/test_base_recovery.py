"""Sync of blueprints this device holds without a base: after `check --fix`, or an old bundle.

`localstore check --fix` rebuilds a damaged index from the files: the blueprints and their ids
stay, the sync bases, the cursor and the account record (all in the index) are gone. A fresh
device that imports an old bundle before its first sync is in the same place. Every such
blueprint is pushed as a create and meets the server's row of its id. When the local copy is an
older version the server itself had (nobody edited it here), it is no edit: it must simply take
the server's version, not become a conflict copy (docs/sync-engine.md, "After `check --fix`").
The home's account must survive the rebuild too: another user of the project is still refused.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.archive import export_bundle, import_bundle
from localstore.cli import cli
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync import base_record
from sync.engine import SyncEngine
from sync.errors import AccountMismatchError, RemoteConfigError
from sync.memory_remote import MemoryServer

from .conftest import (
    Device,
    assert_converged,
    close_device,
    converge,
    open_device,
    server_snapshot,
)
from .file_remote import FileRemote, load_server


def _damage_and_fix(dev: Device, *, lose_record: bool = False) -> None:
    """Close the device, damage its index and run `localstore check --fix` through the CLI.

    ``lose_record`` also removes the record of synced bases kept besides the index (a home
    synced by an older version has none): the recovery then has only the server's history.
    """
    close_device(dev)
    if lose_record:
        (dev.home / "state" / "sync-bases.jsonl").unlink()
    _damage_home_and_fix(dev.home)


def _damage_home_and_fix(home: Path) -> None:
    data = home / "data"
    for side in ("index.db-wal", "index.db-shm"):
        (data / side).unlink(missing_ok=True)
    db = data / "index.db"
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big") or 65536
    raw[page:] = b"\xa5" * (len(raw) - page)
    db.write_bytes(bytes(raw))
    result = CliRunner().invoke(
        cli, ["--home", str(home), "--json", "check", "--fix"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    kinds = [f["kind"] for f in json.loads(result.stdout)["fixed"]]
    assert "index-rebuilt" in kinds


def _no_copies(server: MemoryServer, *devices: Device) -> None:
    assert not any("(conflict " in p for p, _ in server_snapshot(server).values())
    for dev in devices:
        assert dev.engine.conflicts() == [], dev.name


@pytest.mark.parametrize("lose_record", [False, True], ids=["record", "no-record"])
def test_an_older_unedited_copy_is_fast_forwarded_after_check_fix(
    make_device: Callable[..., Device], server: MemoryServer, lose_record: bool
) -> None:
    a, b = make_device("a"), make_device("b")
    x = a.store.save("notes/x", "name: x\nk: 1\n").id
    m = a.store.save("notes/m", "name: m\nk: 1\n").id
    d = a.store.save("notes/d", "name: d\nk: 1\n").id
    s = a.store.save("notes/s", "name: s\nk: 1\n").id
    converge(a, b)
    # While b is away, a edits x twice (the same key each time), edits and moves m, and edits
    # then deletes d. b's copies stay exactly as they were synced.
    a.store.save("notes/x", "name: x\nk: 2\n")
    a.sync()
    a.store.save("notes/x", "name: x\nk: 3\n")
    a.store.save("notes/m", "name: m\nk: 2\n")
    a.store.move(m, "moved/m")
    a.store.save("notes/d", "name: d\nk: 2\n")
    a.store.delete(d)
    a.store.save("notes/s", "name: s\nk: a\n")
    a.sync()
    # b's one real edit (the same key as a's), never uploaded: the lookup must not hide it.
    b.store.save("notes/s", "name: s\nk: b\n")

    _damage_and_fix(b, lose_record=lose_record)
    b = make_device("b")
    report = b.sync()
    assert report.conflicts == 1
    (record,) = b.engine.conflicts()
    assert record.id == s and record.local == "name: s\nk: b\n"
    converge(b, a)
    copies = [p for p, _ in server_snapshot(server).values() if "(conflict " in p]
    assert [p for p in copies if p.startswith("notes/s (conflict ")] == copies
    assert len(copies) == 1
    assert b.text(x) == "name: x\nk: 3\n"
    assert b.store.row(m).path == "moved/m.blueprint.yaml" and b.text(m) == "name: m\nk: 2\n"
    assert not b.store.exists(d) and d not in server_snapshot(server)
    assert b.text(s) == "name: s\nk: a\n"
    # The local version taken over is kept in this device's history, as any overwrite is.
    assert len(b.store.history(x)) == 2
    assert_converged(server, a, b)
    assert b.engine.verify().clean


@pytest.mark.parametrize("lose_record", [False, True], ids=["record", "no-record"])
def test_an_unsynced_rename_survives_check_fix_and_a_server_rename_is_taken(
    make_device: Callable[..., Device], server: MemoryServer, lose_record: bool
) -> None:
    a, b = make_device("a"), make_device("b")
    mine = a.store.save("notes/mine", "name: mine\n").id
    theirs = a.store.save("notes/theirs", "name: theirs\n").id
    gone = a.store.save("notes/gone", "name: gone\nkeep: this text\n").id
    converge(a, b)
    a.store.move(theirs, "elsewhere/theirs")
    a.sync()
    b.store.move(mine, "renamed/mine")  # not uploaded before the damage
    b.store.delete(gone)  # not uploaded either
    _damage_and_fix(b, lose_record=lose_record)
    b = make_device("b")
    converge(b, a)
    _no_copies(server, a, b)
    paths = {i: p for i, (p, _) in server_snapshot(server).items()}
    assert paths[mine] == "renamed/mine.blueprint.yaml"
    assert paths[theirs] == "elsewhere/theirs.blueprint.yaml"
    if lose_record:
        # Without the record nothing outside the index says it was deleted: the blueprint
        # comes back from the server, with its content (nothing is lost).
        assert b.text(gone) == "name: gone\nkeep: this text\n"
    else:
        assert not b.store.exists(gone) and gone not in paths
    assert_converged(server, a, b)


def test_a_fresh_device_importing_an_old_bundle_takes_the_newer_versions(
    make_device: Callable[..., Device], server: MemoryServer, tmp_path: Path
) -> None:
    a = make_device("a")
    x = a.store.save("notes/x", "name: x\nk: 1\n").id
    y = a.store.save("notes/y", "name: y\nk: 1\n").id
    a.sync()
    bundle = tmp_path / "old.lsbundle"
    export_bundle(a.store, bundle)
    a.store.save("notes/x", "name: x\nk: 2\n")
    a.store.move(y, "moved/y")
    a.sync()

    c = make_device("c")
    import_bundle(c.store, bundle)
    report = c.sync()
    assert report.conflicts == 0
    converge(c, a)
    _no_copies(server, a, c)
    assert c.text(x) == "name: x\nk: 2\n"
    assert c.store.row(y).path == "moved/y.blueprint.yaml"
    assert_converged(server, a, c)


def test_the_ancestor_lookup_is_one_request_per_batch_and_none_when_bases_are_known(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    ids = [a.store.save(f"n/{i}", f"name: n{i}\nk: 1\n").id for i in range(12)]
    b = make_device("b", batch_size=5)
    converge(a, b)
    assert b.remote.calls.get("match_revisions", 0) == 0  # every base known: never asked
    for i in range(len(ids)):
        a.store.save(f"n/{i}", f"name: n{i}\nk: 2\n")
    a.sync()
    _damage_and_fix(b, lose_record=True)
    b = make_device("b", batch_size=5)
    b.sync()
    # 12 creates in 3 push batches, each answered `exists`: one lookup per batch, none per row.
    assert b.remote.calls.get("match_revisions", 0) == 3
    _no_copies(server, a, b)
    assert_converged(server, a, b)


def test_a_server_that_refuses_the_lookup_still_syncs_as_before(
    make_device: Callable[..., Device], server: MemoryServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The lookup only spares conflict copies: a server refusing it (grants) must not stop sync."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("notes/x", "name: x\nk: 1\n").id
    y = a.store.save("notes/y", "name: y\nk: 1\n").id
    converge(a, b)
    a.store.save("notes/x", "name: x\nk: 2\n")
    a.store.save("notes/y", "name: y\nk: 2\n")
    a.sync()
    _damage_and_fix(b, lose_record=True)
    b = make_device("b", batch_size=1)
    refused = RemoteConfigError("match_revisions: permission denied [42501]", code="42501")
    b.remote.fail_next(exc=refused, method="match_revisions")
    with caplog.at_level(logging.WARNING, logger="sync.engine"):
        report = b.sync()
    assert "revision history cannot be asked" in caplog.text
    assert b.remote.calls["match_revisions"] == 1  # not asked again by this engine
    assert report.conflicts == 2  # the old outcome: merged without a base, nothing lost
    converge(b, a)
    assert b.text(x) == "name: x\nk: 2\n" and b.text(y) == "name: y\nk: 2\n"
    assert_converged(server, a, b)


def test_the_home_still_belongs_to_its_account_after_check_fix(
    tmp_path: Path, server: MemoryServer
) -> None:
    alice = open_device(tmp_path, "h", server, user="alice")
    alice.store.save("private/secret", "ssn: 123\n")
    alice.sync()
    record = alice.store.settings.paths.state / "sync-account.json"
    assert json.loads(record.read_text())["identity"] == alice.remote.identity
    assert record.stat().st_mode & 0o077 == 0
    _damage_and_fix(alice)
    bob = open_device(tmp_path, "h", server, user="bob")  # alice logged out, bob logged in
    try:
        with pytest.raises(AccountMismatchError):
            bob.sync()
        assert bob.remote.calls.get("push", 0) == 0
        assert all(o.owner == "alice" for o in server.rows.values())
    finally:
        close_device(bob)
    alice = open_device(tmp_path, "h", server, user="alice")
    try:
        alice.sync()
        assert alice.engine.verify().clean
        assert alice.engine.conflicts() == []
    finally:
        close_device(alice)


# -- local intent kept besides the index (state/sync-bases.jsonl) --------------------------------
#
# The three cases below were the "known limits" of base recovery: nothing outside the index said
# what this device had last synced, so an unsynced delete, a rename made with an edit, and an
# edit back to an older text were all misread after `check --fix`.


def test_an_unsynced_delete_stays_deleted_after_check_fix(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    gone = a.store.save("notes/gone", "name: gone\nk: 1\n").id
    kept = a.store.save("notes/kept", "name: kept\nk: 1\n").id
    revived = a.store.save("notes/revived", "name: revived\nk: 1\n").id
    converge(a, b)
    b.store.delete(gone)  # not uploaded before the damage
    b.store.delete(revived)  # not uploaded either, and a edits it meanwhile
    a.store.save("notes/revived", "name: revived\nk: 2\n")
    a.sync()
    _damage_and_fix(b)
    b = make_device("b")
    converge(b, a)
    _no_copies(server, a, b)
    assert gone not in server_snapshot(server)
    assert not b.store.exists(gone) and not a.store.exists(gone)
    assert b.text(kept) == "name: kept\nk: 1\n"
    # An edit beats a delete, as in any sync: a's edit was made after b last synced.
    assert b.text(revived) == "name: revived\nk: 2\n"
    assert_converged(server, a, b)
    assert b.engine.verify().clean


def test_an_unsynced_rename_with_an_edit_survives_check_fix(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    mine = a.store.save("notes/mine", "name: mine\nk: 1\n").id
    converge(a, b)
    b.store.save("notes/mine", "name: mine\nk: 2\n")
    b.store.move(mine, "renamed/mine")  # rename + edit, neither uploaded
    _damage_and_fix(b)
    b = make_device("b")
    report = b.sync()
    assert report.conflicts == 0
    converge(b, a)
    _no_copies(server, a, b)
    assert server_snapshot(server)[mine] == ("renamed/mine.blueprint.yaml", "name: mine\nk: 2\n")
    assert_converged(server, a, b)


def test_an_edit_back_to_an_older_text_is_an_edit_after_check_fix(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A -> B synced, then B -> A here: A is what the person wants now, not an old copy."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("notes/x", "name: x\nk: 1\n").id
    converge(a, b)
    a.store.save("notes/x", "name: x\nk: 2\n")
    converge(a, b)
    b.store.save("notes/x", "name: x\nk: 1\n")  # set back here, not uploaded
    _damage_and_fix(b)
    b = make_device("b")
    report = b.sync()
    assert report.conflicts == 0
    converge(b, a)
    assert server_snapshot(server)[x] == ("notes/x.blueprint.yaml", "name: x\nk: 1\n")
    assert a.text(x) == "name: x\nk: 1\n"
    assert_converged(server, a, b)


def test_an_edit_back_meets_a_newer_server_edit_and_is_kept_after_check_fix(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    x = a.store.save("notes/x", "name: x\nk: 1\n").id
    converge(a, b)
    a.store.save("notes/x", "name: x\nk: 2\n")
    converge(a, b)
    b.store.save("notes/x", "name: x\nk: 1\n")  # set back here, not uploaded
    a.store.save("notes/x", "name: x\nk: 3\n")
    a.sync()
    _damage_and_fix(b)
    b = make_device("b")
    b.sync()
    converge(b, a)
    # Both edits of the same key: the server's stays at the id, b's is a conflict copy.
    assert a.text(x) == "name: x\nk: 3\n"
    copies = [t for p, t in server_snapshot(server).values() if "(conflict " in p]
    assert copies == ["name: x\nk: 1\n"]
    assert_converged(server, a, b)


def test_an_unsynced_rename_meets_a_server_edit_after_check_fix(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Renamed here, edited there: both are kept, no conflict copy (the base text is the copy)."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("notes/x", "name: x\nk: 1\n").id
    converge(a, b)
    b.store.move(x, "renamed/x")
    a.store.save("notes/x", "name: x\nk: 2\n")
    a.sync()
    _damage_and_fix(b)
    b = make_device("b")
    converge(b, a)
    _no_copies(server, a, b)
    assert server_snapshot(server)[x] == ("renamed/x.blueprint.yaml", "name: x\nk: 2\n")
    assert_converged(server, a, b)


def test_the_record_of_bases_is_appended_per_cycle_and_read_back_leniently(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    from sync import base_record

    a = make_device("a")
    x = a.store.save("notes/x", "name: x\n").id
    a.sync()
    state = a.store.settings.paths.state
    path = base_record.record_path(state)
    assert path.stat().st_mode & 0o077 == 0
    size = path.stat().st_size
    a.sync()  # idle: nothing appended
    assert path.stat().st_size == size
    a.store.move(x, "moved/x")
    a.sync()
    entries = base_record.read(state, a.remote.identity)
    assert entries is not None and entries[x].path == "moved/x.blueprint.yaml"
    assert entries[x].rev == 2 and not entries[x].deleted
    with path.open("a") as fh:
        fh.write('["torn')  # a kill during an append
    assert base_record.read(state, a.remote.identity) == entries
    assert base_record.read(state, "supabase:elsewhere:someone") is None


def test_a_parked_row_applied_again_reaches_the_record(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A parked row applied again (once its file parses: the cycle fetches it again, as a
    quarantine retry does) is below the cursor; the record must still get it."""
    from sync import base_record

    a, b = make_device("a"), make_device("b")
    x = a.store.save("n/x", "name: x\nk: 1\n").id
    converge(a, b)
    path = b.store.abspath("n/x.blueprint.yaml")
    path.write_text("name: x\nk: [1\n")  # an edit in progress: the pulled row is parked
    b.store.reconcile()
    a.store.save("n/x", "name: x\nk: 2\n")
    a.sync()
    b.sync()
    assert [e.code for e in b.engine.quarantined()] == ["unparsable_local"]
    path.write_text("name: x\nk: 1\n")  # undone: the file is its last synced version again
    b.store.reconcile()
    b.sync()  # nothing new from the server: the cursor is past the parked row
    assert b.text(x) == "name: x\nk: 2\n"
    assert b.engine.quarantined() == []
    entries = base_record.read(b.store.settings.paths.state, b.remote.identity)
    assert entries is not None and entries[x].rev == 2


# -- a record one cycle behind the index (a kill after the cycle's commits) ----------------------
#
# The record was written once, after the whole cycle: a process killed after a cycle had pulled
# (or pushed) but before that write left a record one cycle behind. When the index was then lost,
# the recovery took the older bases for the items of that cycle, with the symptoms it had without
# any record. The child below is killed by SIGKILL the moment its cycle reports idle: every
# commit of the cycle is done, and nothing after it ran.

_KILLED_AT_IDLE = """
import os, signal, sys
from pathlib import Path
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync import base_record
from sync.engine import SyncEngine
from tests.sync_engine.file_remote import FileRemote

home, server = sys.argv[1:3]
store = BlueprintStore(load_settings(home=home, device_name="b"), maintenance=False)
engine = SyncEngine(store, FileRemote(Path(server)))
engine.subscribe_status(
    lambda s: os.kill(os.getpid(), signal.SIGKILL) if s.state == "idle" else None
)
engine.sync_once()
"""
_ROOT = Path(__file__).parents[2]


def _file_device(root: Path, name: str, server_file: Path) -> Device:
    """A device whose server is a file: it outlives the killed process."""
    home = root / name
    store = BlueprintStore(load_settings(home=home, device_name=name), maintenance=False)
    remote = FileRemote(server_file)
    return Device(name, home, store, remote, SyncEngine(store, remote))  # type: ignore[arg-type]


def _sync_killed(home: Path, server_file: Path, code: str = _KILLED_AT_IDLE) -> None:
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(home), str(server_file)],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_the_cycle_a_kill_cut_short_is_in_the_record_after_check_fix(tmp_path: Path) -> None:
    """b pulls a's edits, is killed at the end of that cycle, then deletes, renames with an edit
    and sets a text back, none uploaded; the index is lost. Each stays what b made it."""
    server_file = tmp_path / "server.pickle"
    a = _file_device(tmp_path, "a", server_file)
    b = _file_device(tmp_path, "b", server_file)
    try:
        d = a.store.save("notes/d", "name: d\nk: 1\n").id
        r = a.store.save("notes/r", "name: r\nk: 1\nj: 1\n").id
        x = a.store.save("notes/x", "name: x\nk: 1\n").id
        y = a.store.save("notes/y", "name: y\nk: 1\n").id
        a.sync()
        b.sync()
        a.store.save("notes/d", "name: d\nk: 2\n")
        a.store.save("notes/r", "name: r\nk: 2\nj: 1\n")
        a.store.save("notes/x", "name: x\nk: 2\n")
        a.sync()
        b.store.save("notes/y", "name: y\nk: 2\n")  # b's own edit, pushed by the killed cycle
    finally:
        close_device(b)
    _sync_killed(b.home, server_file)  # pushes y, pulls a's three edits, then dies
    assert server_snapshot(load_server(server_file))[y][1] == "name: y\nk: 2\n"
    b = _file_device(tmp_path, "b", server_file)
    assert b.text(x) == "name: x\nk: 2\n"  # the killed cycle did apply them
    b.store.delete(d)  # after seeing a's edit: no edit of a's is lost by it
    b.store.save("notes/r", "name: r\nk: 2\nj: b\n")
    b.store.move(r, "renamed/r")
    b.store.save("notes/x", "name: x\nk: 1\n")  # set back to the older text
    b.store.save("notes/y", "name: y\nk: 1\n")  # its own pushed edit set back too
    _damage_and_fix(b)
    b = _file_device(tmp_path, "b", server_file)
    try:
        report = b.sync()
        a.sync()
        rows = server_snapshot(load_server(server_file))
        assert report.conflicts == 0, report
        assert d not in rows and not a.store.exists(d) and not b.store.exists(d)
        assert rows[r] == ("renamed/r.blueprint.yaml", "name: r\nk: 2\nj: b\n")
        assert rows[x] == ("notes/x.blueprint.yaml", "name: x\nk: 1\n")
        assert rows[y] == ("notes/y.blueprint.yaml", "name: y\nk: 1\n")
        assert a.text(x) == "name: x\nk: 1\n" and a.store.row(r).path == "renamed/r.blueprint.yaml"
        assert not any("(conflict " in p for p, _ in rows.values())
        assert b.engine.verify().clean
    finally:
        close_device(a)
        close_device(b)


_KILLED_BEFORE_APPEND = """
import os, signal, sys
from pathlib import Path
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync import base_record
from sync import base_record
from sync.engine import SyncEngine
from tests.sync_engine.file_remote import FileRemote

real = base_record.append


def append(state_dir, entries, **kw):
    entries = list(entries)
    if any(e.path == "notes/x.blueprint.yaml" and e.rev == 2 for e in entries):
        os.kill(os.getpid(), signal.SIGKILL)  # x's new base is committed, not yet in the record
    return real(state_dir, entries, **kw)


base_record.append = append
home, server = sys.argv[1:3]
store = BlueprintStore(load_settings(home=home, device_name="b"), maintenance=False)
SyncEngine(store, FileRemote(Path(server))).sync_once()
"""


def test_a_kill_between_a_steps_commit_and_its_record_keeps_both_after_check_fix(
    tmp_path: Path,
) -> None:
    """The one window left: the page that took x's new base committed, the record not yet
    written. The record says which bases were changing, so the recovery does not trust the
    older base it has for them: b's text set back is kept (a conflict copy at worst), never
    overwritten by a's."""
    server_file = tmp_path / "server.pickle"
    a = _file_device(tmp_path, "a", server_file)
    b = _file_device(tmp_path, "b", server_file)
    try:
        x = a.store.save("notes/x", "name: x\nk: 1\n").id
        r = a.store.save("notes/r", "name: r\nk: 1\n").id
        a.sync()
        b.sync()
        a.store.save("notes/x", "name: x\nk: 2\n")
        a.store.save("notes/r", "name: r\nk: 2\n")
        a.sync()
    finally:
        close_device(b)
    _sync_killed(b.home, server_file, _KILLED_BEFORE_APPEND)
    b = _file_device(tmp_path, "b", server_file)
    assert b.text(x) == "name: x\nk: 2\n"  # the page was applied and committed
    b.store.save("notes/x", "name: x\nk: 1\n")  # set back to the older text, not uploaded
    _damage_and_fix(b)
    b = _file_device(tmp_path, "b", server_file)
    try:
        b.sync()
        a.sync()
        b.sync()
        rows = server_snapshot(load_server(server_file))
        assert "name: x\nk: 1\n" in {t for _, t in rows.values()}  # b's text is kept
        assert rows[r] == ("notes/r.blueprint.yaml", "name: r\nk: 2\n")
        assert [p for p, _ in rows.values() if p.startswith("notes/r (conflict")] == []
        assert b.engine.verify().clean
    finally:
        close_device(a)
        close_device(b)


# -- a home made by a version before the record ---------------------------------------------------
#
# Such a home has the bases in its index only. The record was first written at the end of a
# successful cycle, so a home that was offline since the upgrade (or killed in its first cycle)
# still had none when its index was lost, and its changes waiting for upload were recovered
# without bases: the waiting edit became a conflict copy and the waiting delete came back.

_OLD_HOMES = sorted(
    p
    for p in (Path(__file__).parents[1] / "upgrade" / "fixtures").glob("home-*.tar.gz")
    if p.name != "home-36ae549.tar.gz"  # the store-only home never synced
)


def _has_record(fixture: Path) -> bool:
    with tarfile.open(fixture) as tar:
        return "home/state/sync-bases.jsonl" in tar.getnames()


# The homes of the versions before the record (the later fixtures have one).
_NO_RECORD = [p for p in _OLD_HOMES if not _has_record(p)]


@pytest.mark.parametrize("fixture", _NO_RECORD, ids=[p.name[:-7] for p in _NO_RECORD])
def test_an_old_home_offline_since_the_upgrade_keeps_its_waiting_changes_after_check_fix(
    fixture: Path, tmp_path: Path
) -> None:
    from sync.errors import OfflineError
    from sync.memory_remote import MemoryRemote
    from tests.upgrade.test_open_old_homes import _unpack

    old = _unpack(fixture, tmp_path)
    server = old.memory_server()
    live, deleted = old.expected["live"], old.expected["deleted"]
    store = BlueprintStore(load_settings(home=old.home), maintenance=False)
    remote = MemoryRemote(server)
    remote.fail_next(exc=OfflineError("no route to host"), method="server_info")
    engine = SyncEngine(store, remote)
    try:
        with pytest.raises(OfflineError):
            engine.sync_once()  # the first cycle after the upgrade: offline
    finally:
        engine.stop()
        store.close()
    _damage_home_and_fix(old.home)
    store = BlueprintStore(load_settings(home=old.home), maintenance=False)
    engine = SyncEngine(store, MemoryRemote(server))
    try:
        report = engine.sync_once()
        assert report.conflicts == 0 and not report.errors, report
        rows = {rid: o.row for rid, o in server.rows.items()}
        # The four changes made after the old version's last sync, each uploaded as made.
        deploy = live["ops/deploy.blueprint.yaml"]
        assert rows[deploy["id"]].content == deploy["content"]
        assert store.load(deploy["id"]).content == deploy["content"]
        assert rows[live["pending/new.blueprint.yaml"]["id"]].path == "pending/new.blueprint.yaml"
        moved = live["moved/again.blueprint.yaml"]["id"]
        assert rows[moved].path == "moved/again.blueprint.yaml"
        gone = deleted["notes/kubernetes.blueprint.yaml"]["id"]
        assert rows[gone].deleted and not store.exists(gone)
        assert {i.path for i in store.list()} == set(live)
        assert engine.verify().clean
    finally:
        engine.stop()
        store.close()


@pytest.mark.parametrize("fixture", _NO_RECORD, ids=[p.name[:-7] for p in _NO_RECORD])
def test_an_old_home_lost_before_any_record_loses_nothing_and_says_what_came_back(
    fixture: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No record at all (the index lost before this version ever ran): nothing to take bases
    from. Every local text is still kept (an edit without a base is a keep-both), and a
    blueprint deleted here that the server brings back is named, not restored silently."""
    from sync.memory_remote import MemoryRemote
    from tests.upgrade.test_open_old_homes import _unpack

    old = _unpack(fixture, tmp_path)
    assert not (old.home / "state" / "sync-bases.jsonl").exists()
    server = old.memory_server()
    live = old.expected["live"]
    _damage_home_and_fix(old.home)
    store = BlueprintStore(load_settings(home=old.home), maintenance=False)
    engine = SyncEngine(store, MemoryRemote(server))
    try:
        with caplog.at_level(logging.WARNING, logger="sync.engine"):
            engine.sync_once()
        texts = {o.row.content for o in server.rows.values() if not o.row.deleted}
        assert {e["content"] for e in live.values()} <= texts  # every local text is kept
        warned = [r.getMessage() for r in caplog.records if "came from the server" in r.message]
        assert len(warned) == 1 and "notes/kubernetes.blueprint.yaml" in warned[0], caplog.text
        assert "ops/deploy" not in warned[0]  # a conflict copy made here is no download
        assert engine.verify().clean
    finally:
        engine.stop()
        store.close()
    # A new home with a blueprint of its own downloads the rest as a matter of course: no warning.
    caplog.clear()
    fresh = open_device(tmp_path, "fresh", server, user="user")  # the fixtures' user
    try:
        fresh.store.save("mine/own", "k: 1\n")
        with caplog.at_level(logging.WARNING, logger="sync.engine"):
            fresh.sync()
        assert fresh.store.exists(live["ops/deploy.blueprint.yaml"]["id"])
        assert "came from the server" not in caplog.text
    finally:
        close_device(fresh)


def test_deletes_lost_with_the_index_go_in_batches_of_the_servers_lowered_limit(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    # The deletes a rebuilt index lost are pushed by _push_recovered_deletes, apart from the
    # outbox: they must go in batches of the limit the server announces (asked at the cycle's
    # start), not of the engine's own batch size, or the server refuses them whole (22023).
    a, b = make_device("a"), make_device("b")
    gone = [a.store.save(f"notes/gone{n}", f"name: g{n}\n").id for n in range(7)]
    converge(a, b)
    for rid in gone:
        b.store.delete(rid)  # not uploaded before the damage
    _damage_and_fix(b)
    server.max_batch = 3  # lowered while b was down
    b = make_device("b")
    pushes = b.remote.calls.get("push", 0)
    report = b.sync()
    assert report.errors == []
    assert b.remote.calls["push"] - pushes >= 3  # 3 + 3 + 1 deletes
    assert b.engine.batch_size == 3
    converge(b, a)
    assert not any(rid in server_snapshot(server) for rid in gone)
    assert not any(a.store.exists(rid) or b.store.exists(rid) for rid in gone)
    assert_converged(server, a, b)


@pytest.mark.parametrize(
    "entry",
    [
        base_record.BaseEntry(
            "3f2a1b4c-1234-4abc-9def-0123456789ab", 3, 41, "ab" * 32, "a/b", False
        ),
        # Escapes json.dumps writes: quotes, backslashes, controls, non-ASCII kept as is (and
        # U+2028, which JSON allows raw), a seq past 64 bits, a deleted base.
        base_record.BaseEntry('q"\\\x01\u2028', 1, 2**70, "h\n", "é/日本\t.blueprint.yaml", True),
        # Not the declared types (no writer makes them): json.dumps words them.
        base_record.BaseEntry("i", True, 2, "h", "p", 0),  # type: ignore[arg-type]
    ],
)
def test_a_base_line_is_what_json_dumps_writes(entry: base_record.BaseEntry) -> None:
    # BaseEntry.line writes the JSON out by hand (a line per downloaded blueprint): the record
    # must stay byte for byte what json.dumps wrote, and read back as the same entry.
    fields = [entry.id, entry.rev, entry.seq, entry.content_hash, entry.path, entry.deleted]
    assert entry.line() == json.dumps(fields, ensure_ascii=False)
    assert json.loads(entry.line()) == fields
