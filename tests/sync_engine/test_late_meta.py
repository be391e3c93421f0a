"""Sync after a blueprint's own meta file came later than the store's wait for it (see
localstore/_late_meta.py): the id the store made up for the lone YAML leaves no ghost on the
server, whether it was pushed before the meta came or not, and an edit made under that id goes up
on the arriving id without a conflict copy."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

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
