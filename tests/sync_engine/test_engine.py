"""SyncEngine behaviour with MemoryRemote: outbox, echo suppression, faults, quarantine, reset."""

from __future__ import annotations

import errno
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localstore.config import load_settings
from localstore.errors import DiskFullError, StorageError
from localstore.events import Event
from localstore.store import BlueprintStore
from sync import _state as sync_state
from sync.engine import SyncEngine, SyncStatus
from sync.errors import (
    AuthExpiredError,
    AuthRevokedError,
    MergeError,
    OfflineError,
    TransientError,
)
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

from .conftest import (
    Device,
    assert_converged,
    close_device,
    converge,
    foreign_id,
    open_device,
    refuse_id,
    server_snapshot,
)


def test_offline_edits_queue_and_go_up_in_order(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    paths = [f"q/item-{i}" for i in range(5)]
    for i, p in enumerate(paths):
        a.store.save(p, f"n: {i}\n")
    a.store.save(paths[0], "n: 100\n")  # a later edit of the first one goes last
    a.remote.fail_next(1, OfflineError("no route to host"))
    with pytest.raises(OfflineError):
        a.sync()
    status = a.engine.status()
    assert status.state == "offline" and status.pending == 5
    assert status.last_error is not None and "no route" in status.last_error
    a.sync()
    order = [row.path for _, row in server.revisions]
    assert order == [f"{p}.blueprint.yaml" for p in paths[1:]] + [f"{paths[0]}.blueprint.yaml"]
    status = a.engine.status()
    assert status.pending == 0 and status.last_error is None and status.last_synced_at


def test_push_in_bounded_batches(make_device: Callable[..., Device]) -> None:
    a = make_device("a", batch_size=3)
    for i in range(10):
        a.store.save(f"b/{i}", f"n: {i}\n")
    report = a.sync()
    assert report.pushed == 10
    assert a.remote.calls["push"] == 4


def test_remote_changes_are_not_echoed(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("e/x", "v: 1\n# note\n").id
    a.store.save("e/y", "v: 2\n")
    converge(a, b)
    events: list[Event] = []
    b.store.subscribe(events.append)
    a.store.save("e/x", "v: 3\n# note\n")
    a.store.move("e/y", "e/z")
    a.sync()
    b.sync()
    assert {e.origin for e in events} == {"remote"}
    assert b.engine.status().pending == 0
    # What the watcher would do for each written file: ingest it. Nothing new is recorded.
    report = b.store.reconcile()
    assert report.fixed == [] and b.engine.status().pending == 0
    assert b.store.load(ident).content == "v: 3\n# note\n"
    pushes_before = b.remote.calls.get("push", 0)
    b.sync()
    assert b.remote.calls.get("push", 0) == pushes_before
    assert_converged(server, a, b)


def test_moves_and_deletes_keep_identity(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("m/one", "v: 1\n").id
    converge(a, b)
    a.store.move(ident, "m/sub/renamed")
    converge(a, b)
    assert b.store.resolve(ident).path == "m/sub/renamed.blueprint.yaml"
    assert len(b.store.list()) == 1
    b.store.delete(ident)
    converge(a, b)
    assert not a.store.exists(ident)
    assert a.store.history(ident)[0].deleted
    assert_converged(server, a, b)


def test_rejected_change_is_quarantined_and_queue_goes_on(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_device("a")
    clash = a.store.save("mine/clash", "v: 1\n").id
    refuse_id(a, clash, monkeypatch)
    a.store.save("mine/fine", "v: 2\n")
    report = a.sync()
    assert report.quarantined == 1 and report.pushed == 1
    status = a.engine.status()
    assert status.quarantined == 1 and status.pending == 0 and status.needs_attention
    (entry,) = a.engine.quarantined()
    assert entry.code == "invalid_path" and entry.direction == "push"
    assert entry.to_dict()["retry"] == "localstore sync --retry-quarantined"
    assert a.store.load("mine/clash").content == "v: 1\n"  # kept locally, untouched
    assert a.engine.retry_quarantined() == 1
    report = a.sync()
    assert report.quarantined == 1  # the server still refuses: parked again, not dropped
    a.store.save("mine/clash", "v: 3\n")  # a local change un-parks it by itself
    assert a.engine.status().pending == 1
    assert a.sync().quarantined == 1


def test_a_blueprint_with_another_users_id_gets_a_new_id_and_syncs(
    tmp_path: Path, make_device: Callable[..., Device], server: MemoryServer, caplog: Any
) -> None:
    """A bundle imported from another user of the project keeps its ids: the server refuses them
    (not_owner). It was quarantined, and every later edit refused again; it never synced."""
    foreign = foreign_id(tmp_path, server)
    a, b = make_device("a"), make_device("b")
    a.store.save("imported/recipe", "v: 1\n", id=foreign)
    a.store.save("imported/recipe", "v: 2\n")  # some local history
    a.store.save("mine/fine", "v: 3\n")
    with caplog.at_level("WARNING", logger="sync.engine"):
        report = a.sync()
    assert report.quarantined == 0 and a.engine.quarantined() == []
    info = a.store.resolve("imported/recipe")
    assert info.id != foreign
    assert a.store.load(info.id).content == "v: 2\n"
    meta = json.loads(a.store.abspath("imported/recipe.blueprint.meta.json").read_text("utf-8"))
    assert meta["id"] == info.id
    # The old id's history stays in the store, ending in the delete the new id replaced.
    old = a.store.history(foreign)
    assert [r.rev for r in old] == [3, 2, 1] and old[0].deleted
    notice = f"its id {foreign} belongs to another user of this project"
    assert any(notice in line for line in report.errors)
    assert notice in caplog.text
    converge(a, b)
    assert server_snapshot(server)[info.id] == ("imported/recipe.blueprint.yaml", "v: 2\n")
    assert foreign not in server_snapshot(server)  # still the other user's
    assert_converged(server, a, b)
    a.store.save("imported/recipe", "v: 4\n")  # later edits sync like any other
    converge(a, b)
    assert b.text(info.id) == "v: 4\n" and a.engine.quarantined() == []
    assert_converged(server, a, b)


def test_unstorable_remote_row_is_quarantined_and_pull_goes_on(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    raw = MemoryRemote(server, user="u")
    bad_id, good_id = str(uuid.uuid4()), str(uuid.uuid4())
    changes = [
        _raw_change(1, bad_id, "bad/yaml.blueprint.yaml", "a: [unclosed\n"),
        _raw_change(2, good_id, "good/one.blueprint.yaml", "a: 1\n"),
    ]
    assert [r.status for r in raw.push(changes, device="raw")] == ["applied", "applied"]
    b = make_device("b")
    report = b.sync()
    assert report.quarantined == 1 and report.pulled == 2
    assert b.store.load(good_id).content == "a: 1\n"
    (entry,) = b.engine.quarantined()
    assert entry.direction == "pull" and entry.id == bad_id
    assert b.engine.status().cursor == server.seq  # the cursor moved past it


def test_a_path_this_device_cannot_hold_is_quarantined_not_a_wedge(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A server path whose name is a file here where a folder is needed, or the other way round.

    The StorageError (is a directory / not a directory) failed the whole pull, every cycle: the
    cursor never passed the row and nothing behind it was applied.
    """
    a, b = make_device("a"), make_device("b")
    # People's own files and folders, no blueprints: a has a file "docs", b a folder whose name
    # is a blueprint's file name.
    (a.store.root / "docs").write_text("a plain file\n")
    (b.store.root / "d.blueprint.yaml").mkdir()
    (b.store.root / "d.blueprint.yaml" / "notes.txt").write_text("mine\n")
    e = b.store.save("docs/e", "n: 3\n").id  # a folder where a has the file
    b.sync()
    before = a.store.save("before", "n: 0\n").id
    d = a.store.save("d", "n: 1\n").id  # a file where b has the folder
    after = a.store.save("after", "n: 2\n").id
    reports = {"a": a.sync()}  # does not raise
    later = a.store.save("later", "n: 4\n").id
    a.sync()
    reports["b"] = b.sync()
    for dev, bad in ((a, e), (b, d)):
        assert reports[dev.name].quarantined == 1
        assert [(q.id, q.direction) for q in dev.engine.quarantined()] == [(bad, "pull")]
        assert dev.engine.status().cursor == server.seq  # past the row it cannot hold
        assert dev.sync().quarantined == 0  # and it stays past it
        assert not dev.store.exists(bad)
    for ident in (before, after, later):
        assert b.store.load(ident).content == a.store.load(ident).content
    assert (b.store.root / "d.blueprint.yaml" / "notes.txt").read_text() == "mine\n"
    assert (a.store.root / "docs").read_text() == "a plain file\n"


def test_a_storage_error_caused_by_a_path_is_quarantined(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The OS refuses one row's name (injected: ENAMETOOLONG); that row alone is parked."""
    a, b = make_device("a"), make_device("b")
    bad = a.store.save("long", "n: 1\n").id
    good = a.store.save("fine", "n: 2\n").id
    a.sync()
    save, save_many = b.store.save, b.store.save_many

    def refuse(path: str) -> None:
        if path.startswith("long"):
            cause = OSError(errno.ENAMETOOLONG, "File name too long")
            raise StorageError(f"cannot create {path}: File name too long") from cause

    def one(path: str, *args: Any, **kwargs: Any) -> Any:
        refuse(path)
        return save(path, *args, **kwargs)

    def many(requests: list[Any], **kwargs: Any) -> Any:
        for request in requests:
            refuse(request.path)
        return save_many(requests, **kwargs)

    monkeypatch.setattr(b.store, "save", one)
    monkeypatch.setattr(b.store, "save_many", many)
    report = b.sync()
    assert report.quarantined == 1 and b.store.load(good).content == "n: 2\n"
    (entry,) = b.engine.quarantined()
    assert (entry.id, entry.code) == (bad, "unwritable_path")


def test_a_disk_error_while_pulling_stops_the_cycle_and_skips_nothing(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "n: 1\n").id
    a.sync()

    def full(*args: object, **kwargs: object) -> None:
        raise DiskFullError("cannot write: no space left", hint="free some disk space")

    monkeypatch.setattr(b.store, "save_many", full)
    monkeypatch.setattr(b.store, "save", full)
    with pytest.raises(DiskFullError):
        b.sync()
    assert b.engine.quarantined() == [] and b.engine.status().cursor == 0
    monkeypatch.undo()
    b.sync()
    assert b.store.load(ident).content == "n: 1\n"


def test_a_failed_fetch_while_retrying_the_quarantine_keeps_it(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """retry_quarantined un-parked every row, then fetched them: a network error lost them.

    The cursor is past those rows, so nothing fetched them again: status idle, nothing
    quarantined, the blueprint never arrived.
    """
    a, b = make_device("a"), make_device("b")
    (b.store.root / "d.blueprint.yaml").mkdir()  # a folder with the name a's blueprint needs
    d = a.store.save("d", "n: 1\n").id
    a.sync()
    assert b.sync().quarantined == 1
    (b.store.root / "d.blueprint.yaml").rmdir()  # the person renames their folder
    b.remote.fail_next(1, TransientError("network down"), method="fetch")
    with pytest.raises(TransientError):
        b.engine.retry_quarantined()
    assert [q.id for q in b.engine.quarantined()] == [d]  # still parked, still retryable
    b.sync()
    assert not b.store.exists(d) and b.engine.status().quarantined == 1
    assert b.engine.retry_quarantined() == 1
    assert b.engine.quarantined() == [] and b.store.load(d).content == "n: 1\n"
    assert_converged(server, a, b)


def test_an_unindexed_file_at_a_pulled_path_moves_aside_not_into_quarantine(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """An editor's new file at the path of a pulled row, not indexed yet, in a batched run.

    save_many refused the row (AlreadyExistsError) and the engine quarantined it as an invalid
    server row, although the row was fine and the file was an ordinary collision.
    """
    a, b = make_device("a"), make_device("b")
    a.sync()
    y = b.store.save("p", "from_b: 1\n").id
    b.sync()
    (a.store.root / "p.blueprint.yaml").write_text("from_a_editor: 1\n")  # no watcher here
    report = a.sync()
    assert report.quarantined == 0 and a.engine.quarantined() == []
    assert a.store.load(y).content == "from_b: 1\n"
    (record,) = a.engine.conflicts()
    assert record.reason == "path_taken" and record.local == "from_a_editor: 1\n"
    assert a.store.load(record.copy_id or "").path == record.copy_path
    converge(a, b)
    assert_converged(server, a, b)
    assert sorted(t for _, t in b.snapshot().values()) == ["from_a_editor: 1\n", "from_b: 1\n"]


def test_an_unindexable_file_at_a_pulled_path_parks_the_row_and_the_pull_goes_on(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The file at the pulled path does not parse, so the store can neither record it nor write
    over it (AlreadyExistsError): that row alone is parked; before, every pull raised on it."""
    a, b = make_device("a"), make_device("b")
    b.store.save("p", "from_b: 1\n")
    later = b.store.save("q", "later: 1\n").id
    b.sync()
    broken = a.store.root / "p.blueprint.yaml"
    broken.write_text("a: [unclosed\n")  # a half-typed edit, no watcher here
    report = a.sync()
    assert report.quarantined == 1
    (parked,) = a.engine.quarantined()
    assert parked.path == "p.blueprint.yaml" and parked.code == "path_blocked"
    assert a.store.load(later).content == "later: 1\n"  # the rest of the pull arrived
    assert broken.read_text() == "a: [unclosed\n"  # the person's file is untouched
    broken.unlink()  # once the person moves it, a retry brings the row in
    assert a.engine.retry_quarantined() == 1
    converge(a, b)
    assert_converged(server, a, b)


@pytest.mark.parametrize(
    ("path", "content", "meta"),
    [
        ("a:b.blueprint.yaml", "k: b\n", {}),  # a path this client refuses
        ("x.blueprint.yaml", "k: [b\n", {}),  # YAML that does not parse
        ("x.blueprint.yaml", "k: b\n", {"tags": "not-a-list"}),  # a bad meta
        ("x.blueprint.yaml", "k: b\n", {"id": str(uuid.uuid4())}),  # another id in the meta
        # (Paths in a hidden folder or matching .localstoreignore are no refusal: the local edit
        # is kept as a conflict copy on purpose; see test_refused_rows.py.)
    ],
    ids=["path", "yaml", "meta", "meta-id"],
)
def test_a_refused_row_leaves_no_conflict_copy_files_behind(
    make_device: Callable[..., Device],
    server: MemoryServer,
    path: str,
    content: str,
    meta: dict[str, object],
) -> None:
    """Keep-both wrote the copy's files, then the server row was refused and rolled back.

    The savepoint undid the copy's index row and record, not its files: reconcile adopted them
    as a new blueprint, uploaded everywhere, with no conflict record.
    """
    a = make_device("a")
    x = a.store.save("x", "k: 1\n").id
    a.sync()
    a.store.save("x", "k: a\n")  # conflicts with the server's edit below
    current = server.rows[x].row
    raw = MemoryRemote(server, user="u")  # another client: a row this one refuses
    other = Change(1, x, current.rev, path, content, {**current.meta, **meta}, "h")
    assert raw.push([other], device="other")[0].status == "applied"
    raw.close()
    report = a.sync()
    assert report.quarantined == 1 and report.conflicts == 0 and a.engine.conflicts() == []
    files = sorted(p.name for p in a.store.root.rglob("*.blueprint.*") if p.is_file())
    assert files == ["x.blueprint.meta.json", "x.blueprint.yaml"]
    a.store.reconcile()
    assert [i.id for i in a.store.list()] == [x] and a.text(x) == "k: a\n"
    a.sync()
    assert [rid for rid in server_snapshot(server)] == [x]


def _raw_change(op: int, ident: str, path: str, content: str) -> Change:
    meta = {"id": ident, "name": "x", "created": "", "modified": ""}
    return Change(op, ident, None, path, content, meta, "0" * 64)


def test_lost_push_response_is_replayed_not_duplicated(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    ident = a.store.save("l/one", "v: 1\n").id
    a.remote.drop_response_next()
    with pytest.raises(TransientError):
        a.sync()
    assert a.engine.status().pending == 1
    a.sync()
    assert [r.rev for r in server.history(ident)] == [1]
    assert a.engine.status().pending == 0


def test_lost_response_then_local_edit_is_not_a_conflict(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("l/two", "v: 1\n").id
    a.remote.drop_response_next()
    with pytest.raises(TransientError):
        a.sync()
    a.store.save("l/two", "v: 2\n")  # edited again before the retry
    report = a.sync()
    assert report.conflicts == 0 and a.engine.conflicts() == []
    converge(a, b)
    assert b.store.load(ident).content == "v: 2\n"
    assert_converged(server, a, b)


class RefreshingRemote(MemoryRemote):
    """A remote whose session can be refreshed (like the Supabase remote)."""

    refreshes = 0

    def refresh_auth(self) -> None:
        self.refreshes += 1


def test_expired_auth_is_refreshed_once_and_retried(tmp_path: Path, server: MemoryServer) -> None:
    store = BlueprintStore(load_settings(home=tmp_path / "h"), maintenance=False)
    remote = RefreshingRemote(server, user="u")
    engine = SyncEngine(store, remote)
    try:
        store.save("auth/x", "v: 1\n")
        remote.fail_next(1, AuthExpiredError("JWT expired", code="PGRST301"), method="push")
        assert engine.sync_once().pushed == 1
        assert remote.refreshes == 1
        remote.fail_next(2, AuthExpiredError("JWT expired", code="PGRST303"), method="pull")
        with pytest.raises(AuthExpiredError):
            engine.sync_once()  # refreshed once per cycle; a second expiry goes to the loop
        assert remote.refreshes == 2 and engine.status().state == "error"
    finally:
        remote.close()
        store.close()


def test_tell_user_errors_surface_in_status(make_device: Callable[..., Device]) -> None:
    a = make_device("a")
    a.remote.fail_next(1, AuthRevokedError("refresh token revoked"))
    with pytest.raises(AuthRevokedError):
        a.sync()
    status = a.engine.status()
    assert status.state == "error"
    assert status.last_error is not None and "localstore login" in status.last_error


def test_new_account_uploads_everything(tmp_path: Path, server: MemoryServer) -> None:
    dev = open_device(tmp_path, "a", server)
    try:
        dev.store.save("acct/x", "v: 1\n")
        dev.sync()
    finally:
        close_device(dev)
    other = MemoryServer()
    dev = open_device(tmp_path, "a", other)
    try:
        assert dev.engine.status().pending == 0  # identity is checked at the first sync
        assert dev.sync().pushed == 1
        assert len(other.rows) == 1
    finally:
        close_device(dev)


def test_tombstone_horizon_breach_triggers_full_reconcile(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    gone = a.store.save("h/gone", "v: 1\n").id
    kept = a.store.save("h/kept", "v: 1\n").id
    edited = a.store.save("h/edited", "v: 1\n").id
    converge(a, b)
    b.store.save("h/edited", "v: 2 edited offline\n")  # b is offline from here on
    a.store.delete(gone)
    a.store.delete(edited)
    a.store.save("h/kept", "v: 2\n")
    a.sync()
    assert a.remote.purge_tombstones() == 2
    report = b.sync()
    assert report.reset
    assert not b.store.exists(gone)  # deleted there, purged: not resurrected
    assert b.store.load(kept).content == "v: 2\n"
    assert b.store.load(edited).content == "v: 2 edited offline\n"  # edit beats delete
    converge(a, b)
    assert_converged(server, a, b)
    assert a.store.load(edited).content == "v: 2 edited offline\n"


def test_an_edit_behind_the_horizon_does_not_overwrite_a_re_created_row(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """b deletes x; its tombstone is purged; c, which had edited x, pushes it again as a create.
    a, offline since x's rev 1, then edits x and syncs. Its push (base rev 1) must not be applied
    over c's re-creation: a pushed before it pulled and so before it learnt of the horizon, and
    when the server started a create at rev 1 again, c's edit was overwritten, left only in the
    history. (The server now starts it above the horizon too: see the next test.)
    """
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    ident = a.store.save("r/x", "base: 1\n").id
    converge(a, b, c)
    b.store.delete(ident)
    b.sync()
    assert server.purge_tombstones("u") == 1
    c.store.save("r/x", "base: 1\nfrom_c: 1\n")  # c edited x without seeing the delete
    assert c.sync().reset  # edit beats delete: x pushed again as a create
    assert server.rows[ident].row.rev == server.horizons["u"] + 1
    a.store.save("r/x", "base: 1\nfrom_a: 1\n")
    assert a.sync().reset
    converge(a, b, c)
    assert_converged(server, a, b, c)
    text = a.store.load(ident).content
    assert "from_c: 1" in text and "from_a: 1" in text


@pytest.mark.parametrize("clash", [False, True], ids=["other-keys", "same-key"])
def test_an_old_clients_edit_behind_the_horizon_is_a_conflict_not_an_overwrite(
    make_device: Callable[..., Device],
    server: MemoryServer,
    monkeypatch: pytest.MonkeyPatch,
    clash: bool,
) -> None:
    """As the test above, but a is a client without the check of the horizon before its push
    (older than session 17, or a third-party one): it pushes its edit of the purged x (base rev
    1) before it pulls. c's re-created x had been written once: were its revs to start at 1
    again, that push was a fast-forward and c's edit was lost. The server answers rev_mismatch
    instead, so a merges the two edits, or, when they clash, keeps its own as a conflict copy
    and c's x stays."""
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    ident = a.store.save("r/x", "base: 1\n").id
    converge(a, b, c)
    b.store.delete(ident)
    b.sync()
    assert server.purge_tombstones("u") == 1
    c.store.save("r/x", "base: 1\nfrom_c: 1\n" if not clash else "base: c\n")
    assert c.sync().reset  # edit beats delete: x pushed again as a create
    a.store.save("r/x", "base: 1\nfrom_a: 1\n" if not clash else "base: a\n")
    # The old client: no look at the horizon before the push.
    monkeypatch.setattr(SyncEngine, "_reconcile_before_push", lambda self, report: None)
    report = a.sync()
    assert report.reset and report.conflicts == int(clash)
    converge(a, b, c)
    assert_converged(server, a, b, c)
    if not clash:
        text = a.store.load(ident).content
        assert "from_c: 1" in text and "from_a: 1" in text
        return
    assert a.store.load(ident).content == "base: c\n"  # c's x keeps its id and path
    (record,) = a.engine.conflicts()
    assert record.local == "base: a\n" and record.copy_id is not None
    assert a.store.load(record.copy_id).content == "base: a\n"


def test_verify_reports_differences(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    ident = a.store.save("v/x", "v: 1\n").id
    a.sync()
    assert a.engine.verify().clean
    with server.lock:
        owned = server.rows[ident]
        owned.row = type(owned.row)(**{**owned.row.to_json(), "content_hash": "f" * 64})
    a.store.save("v/local-only", "v: 1\n")
    report = a.engine.verify()
    kinds = sorted((d["kind"], d["pending"]) for d in report.differences)
    assert kinds == [("content_differs", False), ("missing_on_server", True)]


def test_invalid_blueprints_are_held_back(tmp_path: Path, server: MemoryServer) -> None:
    def validator(data: object) -> list[str]:
        assert isinstance(data, dict)
        return [] if "kind" in data else ["kind is required"]

    store = BlueprintStore(
        load_settings(home=tmp_path / "v"), validator=validator, maintenance=False
    )
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(store, remote)
    try:
        store.save("held/bad", "v: 1\n")
        store.save("held/good", "kind: x\n")
        report = engine.sync_once()
        assert report.pushed == 1 and report.held == 1
        assert engine.status().held == 1
        store.save("held/bad", "kind: fixed\n")
        assert engine.sync_once().pushed == 1
        assert len(server.rows) == 2
    finally:
        remote.close()
        store.close()


@pytest.mark.parametrize("stuck", ["held", "quarantined"])
def test_a_path_freed_by_a_move_that_cannot_go_up_is_a_real_collision(
    tmp_path: Path, server: MemoryServer, stuck: str
) -> None:
    """w moves p -> q but that move cannot be pushed; a new blueprint takes p.

    The new one's path_taken was taken for an ordering artefact and retried every round of
    every cycle: never synced, no record, four pushes a cycle.
    """

    def validator(data: object) -> list[str]:
        return ["broken"] if isinstance(data, dict) and "broken" in data else []

    store = BlueprintStore(
        load_settings(home=tmp_path / "v", device_name="v"), validator=validator, maintenance=False
    )
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(store, remote)
    try:
        w = store.save("p", "ok: 1\n").id
        engine.sync_once()
        if stuck == "held":
            store.save("q", "ok: 1\nbroken: true\n", id=w)  # moved, and fails the validator
        else:
            store.move(w, "q")
            with store.index.write() as cur:  # the server refused that push (a fault)
                op = sync_state.current_op_id(cur, w)
                sync_state.quarantine(cur, w, op, "q.blueprint.yaml", "push", "x", "refused")
        n = store.save("p", "new: 1\n").id
        before = remote.calls["push"]
        report = engine.sync_once()
        assert report.pushed == 1 and report.conflicts == 1
        (record,) = engine.conflicts()
        assert record.reason == "path_taken" and record.copy_id == n and record.id == w
        assert server.rows[n].row.path == record.copy_path  # synced, at its conflict path
        engine.sync_once()
        assert remote.calls["push"] - before == 2  # the refused push and the moved one, no retries
        assert server.rows[w].row.path == "p.blueprint.yaml"
    finally:
        remote.close()
        store.close()


def test_conflict_events_and_status_callbacks(make_device: Callable[..., Device]) -> None:
    a, b = make_device("a"), make_device("b")
    a.store.save("c/x", "v: 1\n")
    converge(a, b)
    a.store.save("c/x", "v: 2\n")
    b.store.save("c/x", "v: 3\n")
    a.sync()
    events: list[Event] = []
    b.store.subscribe(events.append, kinds=["conflict"])
    states: list[SyncStatus] = []
    unsubscribe = b.engine.subscribe_status(states.append)
    b.sync()
    unsubscribe()
    assert [e.origin for e in events] == ["remote"] and "conflict #1" in events[0].detail
    seen = [s.state for s in states]
    assert "pushing" in seen and "pulling" in seen and seen[-1] == "idle"
    assert states[-1].conflicts == 1


def test_bad_policy_is_refused(make_device: Callable[..., Device]) -> None:
    with pytest.raises(MergeError):
        make_device("a", policy="newest-wins")


class EditDuringPush(MemoryRemote):
    """Runs ``during()`` (a user's edit) while the push is in flight, before the reply."""

    during: Callable[[], object] | None = None

    def push(self, changes, *, device):
        results = super().push(changes, device=device)
        hook, self.during = self.during, None
        if hook is not None:
            hook()
        return results


def test_edit_during_an_in_flight_push_is_pushed_again(
    tmp_path: Path, server: MemoryServer
) -> None:
    store = BlueprintStore(load_settings(home=tmp_path / "d"), maintenance=False)
    remote = EditDuringPush(server, user="u")
    engine = SyncEngine(store, remote)
    try:
        ident = store.save("race/x", "v: 1\n").id
        remote.during = lambda: store.save("race/x", "v: 2\n")
        report = engine.sync_once()
        assert report.pushed == 2 and report.conflicts == 0
        assert [r.content for r in server.history(ident)] == ["v: 1\n", "v: 2\n"]
        assert engine.status().pending == 0
    finally:
        remote.close()
        store.close()


def test_unindexed_editor_change_is_merged_not_overwritten(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("ed/x", "top: 1\n# middle\nmid: 1\n# end\nend: 1\n").id
    converge(a, b)
    a.store.save("ed/x", "top: 2\n# middle\nmid: 1\n# end\nend: 1\n")
    a.sync()
    # An editor writes the file on b; no watcher runs, so the index has not seen it yet.
    path = b.store.abspath("ed/x.blueprint.yaml")
    path.write_text("top: 1\n# middle\nmid: 1\n# end\nend: 9\n", encoding="utf-8")
    b.sync()
    assert b.store.load(ident).content == "top: 2\n# middle\nmid: 1\n# end\nend: 9\n"
    converge(a, b)
    assert_converged(server, a, b)


def test_a_server_that_lost_everything_does_not_delete_local_data(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a = make_device("a")
    for i in range(12):
        a.store.save(f"w/{i}", f"v: {i}\n")
    a.sync()
    with server.lock:  # restored from an old backup: rows gone, horizon raised, op log kept
        server.rows.clear()
        server.seq += 5
        server.horizons["u"] = server.seq
    report = a.sync()
    assert report.reset and any("uploaded again" in e for e in report.errors)
    assert a.store.count() == 12
    assert len(server.rows) == 12 and a.engine.verify().clean
