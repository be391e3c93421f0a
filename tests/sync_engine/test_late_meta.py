"""Sync after a blueprint's own meta file came later than the store's wait for it (see
localstore/_late_meta.py): the id the store made up for the lone YAML leaves no ghost on the
server, whether it was pushed before the meta came or not, and an edit made under that id goes up
on the arriving id without a conflict copy."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from localstore._reconcile import Reconciler
from sync.memory_remote import MemoryServer

from .conftest import Device, assert_converged, converge, refuse_id, server_snapshot

YAML = "x.blueprint.yaml"
META = "x.blueprint.meta.json"


def _deleted_on_server(server: MemoryServer, ident: str) -> bool:
    with server.lock:
        return server.rows[ident].row.deleted


def _yaml_alone(dev: Device, data: bytes) -> str:
    """The YAML copied in alone, recorded by reconcile with a meta of its own; that meta's id."""
    (dev.store.root / YAML).write_bytes(data)
    dev.store.check(fix=True)
    return str(json.loads((dev.store.root / META).read_bytes())["id"])


def test_an_edit_made_before_the_meta_came_syncs_without_a_conflict_copy(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A's blueprint reaches B through a file sync tool, YAML first; B's user edits it before
    its meta comes. Before, the arriving id's history began with the edit: the push met A's
    version with no base, and the merge made a conflict copy of B's own edit on both devices."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n").id
    a.sync()
    yaml_bytes = (a.store.root / YAML).read_bytes()
    made_up = _yaml_alone(b, yaml_bytes)
    edited = yaml_bytes + b"  - two\n"
    (b.store.root / YAML).write_bytes(edited)
    b.store.check(fix=True)
    (b.store.root / META).write_bytes((a.store.root / META).read_bytes())
    b.store.check(fix=True)
    converge(a, b)
    assert b.engine.conflicts() == [] and a.engine.conflicts() == []
    assert server_snapshot(server) == {ident: (YAML, edited.decode())}
    assert made_up not in server.rows  # never pushed: its delete was settled here
    assert_converged(server, a, b)


def test_a_made_up_id_pushed_before_the_meta_came_is_deleted_on_the_server(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A running sync pushed the lone YAML under the id made up for it; then its meta came (a
    backup restored piecewise). The made-up id's delete goes up: no ghost blueprint remains."""
    b = make_device("b")
    made_up = _yaml_alone(b, b"steps: [x]\n")
    b.sync()
    assert set(server_snapshot(server)) == {made_up}
    real = '{"id": "7d5b8f6e-2f64-4f3b-9a51-0c7f3e1a2b4c", "name": "x", "tags": ["kept"]}\n'
    (b.store.root / META).write_text(real)
    b.store.check(fix=True)
    b.sync()
    assert server_snapshot(server) == {
        "7d5b8f6e-2f64-4f3b-9a51-0c7f3e1a2b4c": (YAML, "steps: [x]\n")
    }
    assert _deleted_on_server(server, made_up)
    assert_converged(server, b)


def test_a_made_up_id_pushed_onto_the_arriving_blueprints_path_takes_it_without_a_copy(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """B's sync pushes the lone YAML under its made-up id before the meta comes, while A has the
    same blueprint on the server at that path. The server refuses the path (``path_taken``);
    before, B moved its blueprint to a conflict copy of identical content (a conflict record,
    and the copy synced to every device). The same content at the same path, never synced, with
    a made-up meta, is the server's blueprint come early: it takes the server's identity."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n", tags=["from-a"]).id
    a.sync()
    made_up = _yaml_alone(b, (a.store.root / YAML).read_bytes())
    b.sync()
    assert b.engine.conflicts() == []
    assert [(i.id, i.path) for i in b.store.list()] == [(ident, YAML)]
    assert b.store.load(ident).meta.tags == ("from-a",)
    assert made_up not in server.rows
    (b.store.root / META).write_bytes((a.store.root / META).read_bytes())  # the meta, at last
    b.store.check(fix=True)
    converge(a, b)
    assert server_snapshot(server) == {ident: (YAML, "steps:\n  - one\n")}
    assert a.engine.conflicts() == [] and b.engine.conflicts() == []
    assert_converged(server, a, b)


def test_a_lone_yaml_at_the_old_path_of_a_blueprint_whose_move_is_held_back_is_not_taken_for_it(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's row at the path is a blueprint live here at another path (its move parked
    in quarantine), and the user put a copy of its YAML back at the old path. That is no row
    come early: its meta written beside the YAML is the id of a pair live elsewhere, so
    reconcile gave the YAML its own id back, and the push met the path again every round of
    every cycle: never pushed, no conflict, nothing shown. It is a path collision, as before."""
    b = make_device("b")
    held = b.store.save("x", "steps: [w]\n").id
    b.sync()
    b.store.move(held, "y")
    refuse_id(b, held, monkeypatch)
    assert b.sync().quarantined == 1
    made_up = _yaml_alone(b, b"steps: [w]\n")
    report = b.sync()
    assert report.rounds < 4 and report.conflicts == 1
    [record] = b.engine.conflicts()
    assert (record.id, record.copy_id, record.reason) == (held, made_up, "path_taken")
    assert server_snapshot(server)[made_up] == (record.copy_path, "steps: [w]\n")
    assert b.store.load(held).path == "y.blueprint.yaml"
    assert b.engine.status().pending == 0


def test_a_name_typed_into_the_made_up_meta_not_yet_recorded_is_not_replaced(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The user names and tags the blueprint in its meta file; the push meets the server's row
    of the same YAML at its path before the watcher has recorded that edit. The index still holds
    the made-up meta, nobody described: the server's meta was written over the user's file, and
    the name and tags were gone (in no file, no index, no history). The edit is recorded, and
    the blueprint the user described is no row come early: a path collision, as any."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n").id
    a.sync()
    made_up = _yaml_alone(b, (a.store.root / YAML).read_bytes())
    meta = json.loads((b.store.root / META).read_bytes())
    (b.store.root / META).write_text(json.dumps({**meta, "name": "Mine", "tags": ["hand"]}))
    b.sync()  # (no watcher: the edit is unrecorded when the push meets the path)
    mine = b.store.load(made_up)
    assert (mine.meta.name, mine.meta.tags) == ("Mine", ("hand",))
    [record] = b.engine.conflicts()
    assert (record.id, record.copy_id) == (ident, made_up)
    assert b.store.load(ident).path == YAML


def test_the_meta_come_late_unrecorded_when_the_push_meets_the_path_is_adopted(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The file sync tool brings the meta while the push of the made-up id is answered
    ``path_taken`` by the server's row of that blueprint, before the watcher has recorded the
    meta. The path collision's move records the files first, and that ingest retired the made-up
    id (the meta is its own, come late); the move was then made on the retired id and failed:
    every sync pass of this device stopped there, rolled back, until something else recorded
    the meta (a watcher, the next open). It is the clean adoption: one blueprint, the server's."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n", tags=["from-a"]).id
    a.sync()
    made_up = _yaml_alone(b, (a.store.root / YAML).read_bytes())
    (b.store.root / META).write_bytes((a.store.root / META).read_bytes())  # (not recorded yet)
    b.sync()
    assert [(i.id, i.path) for i in b.store.list()] == [(ident, YAML)]
    assert b.store.load(ident).meta.tags == ("from-a",)
    assert b.store.history(made_up)[0].deleted
    assert b.engine.conflicts() == []
    converge(a, b)
    assert server_snapshot(server) == {ident: (YAML, "steps:\n  - one\n")}
    assert made_up not in server.rows
    assert_converged(server, a, b)


def test_a_pass_that_died_after_writing_the_servers_meta_is_finished_by_the_next_one(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass that gives the made-up id's blueprint the server's identity writes the server's
    meta file, then records it; it dies in between (a storage error later in the pass rolls it
    all back, the meta file stays). The docstring promised that the next reconcile records the
    same, but the next sync pass came first: it met the path again, moved the blueprint aside,
    and the move's ingest retired the id it was moving (NotFoundError, every pass)."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n").id
    a.sync()
    made_up = _yaml_alone(b, (a.store.root / YAML).read_bytes())

    def dies(*_args: object, **_kw: object) -> bool:
        raise OSError(5, "injected: the pass dies after the meta file was written")

    with monkeypatch.context() as patch:
        patch.setattr(Reconciler, "ingest_locked", dies)
        with pytest.raises(OSError, match="injected"):
            b.sync()
    assert json.loads((b.store.root / META).read_bytes())["id"] == ident
    assert [i.id for i in b.store.list()] == [made_up]  # (rolled back: still the made-up id)
    b.sync()
    assert [(i.id, i.path) for i in b.store.list()] == [(ident, YAML)]
    assert b.engine.conflicts() == []
    converge(a, b)
    assert server_snapshot(server) == {ident: (YAML, "steps:\n  - one\n")}
    assert made_up not in server.rows
    assert_converged(server, a, b)


def test_the_meta_come_late_unrecorded_when_the_pull_meets_the_path_is_adopted(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same met by the pull: the made-up id is not pushed (parked in quarantine), and the
    server's row comes down to the path it holds, its meta there unrecorded. The move aside
    recorded the files, which retired the id it was moving: the pull failed on it, every pass."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n").id
    a.sync()
    made_up = _yaml_alone(b, (a.store.root / YAML).read_bytes())
    refuse_id(b, made_up, monkeypatch)
    (b.store.root / META).write_bytes((a.store.root / META).read_bytes())  # (not recorded yet)
    b.sync()
    assert [(i.id, i.path) for i in b.store.list()] == [(ident, YAML)]
    assert b.store.history(made_up)[0].deleted
    assert b.engine.conflicts() == []
    monkeypatch.undo()
    converge(a, b)
    assert server_snapshot(server) == {ident: (YAML, "steps:\n  - one\n")}
    assert made_up not in server.rows
    assert_converged(server, a, b)


def test_a_made_up_id_the_ingest_did_not_retire_is_not_taken_as_adopted(
    make_device: Callable[..., Device],
    server: MemoryServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server's meta is written in the made-up one's place, but the ingest that follows
    does not retire the made-up id (injected: it records nothing, as when the files changed
    again in between). It was taken as done all the same: the made-up id stayed live beside
    the server's meta file, and the collision was left to the pull, which failed on it. Now
    it is a path collision: its move records the files, which adopts the server's identity."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("x", "steps:\n  - one\n").id
    a.sync()
    made_up = _yaml_alone(b, (a.store.root / YAML).read_bytes())
    real = Reconciler.ingest_locked

    def ingest(self: Reconciler, cur: object, rel: str, **kw: bool) -> bool:
        if kw.get("trust_stat", True):
            return real(self, cur, rel, **kw)
        return True  # (the ingest of `_arrived_early`: nothing recorded)

    monkeypatch.setattr(Reconciler, "ingest_locked", ingest)
    with caplog.at_level("WARNING", logger="sync.engine"):
        b.sync()
    assert "was not adopted" in caplog.text
    monkeypatch.undo()
    assert [(i.id, i.path) for i in b.store.list()] == [(ident, YAML)]
    assert b.store.history(made_up)[0].deleted
    assert b.engine.conflicts() == []
    converge(a, b)
    assert made_up not in server.rows
    assert_converged(server, a, b)
