"""A blueprint whose file does not parse (a half-typed edit) where the server gives its path to
another blueprint: the sync goes on, the file is left byte for byte, and once it parses it moves
aside as usual (MemoryRemote).

Moving it is a save at a new path, which re-reads the files: the store refused the half-typed
YAML (InvalidYAMLError) and every sync cycle failed at it, nothing else synced, until the person
fixed the file (sync._apply.UnparsedInTheWay).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sync.memory_remote import MemoryServer

from .conftest import Device, assert_converged, converge

HALF_TYPED = "v: [2  # half-typed\n"


def _files(dev: Device, path: str) -> tuple[bytes, bytes]:
    yaml = dev.home / "blueprints" / f"{path}.blueprint.yaml"
    return yaml.read_bytes(), (dev.home / "blueprints" / f"{path}.blueprint.meta.json").read_bytes()


def _half_type(dev: Device, path: str) -> Path:
    f = dev.home / "blueprints" / f"{path}.blueprint.yaml"
    f.write_text(HALF_TYPED)
    dev.store.reconcile()
    assert dev.engine.status().flagged == 1
    return f


def _taken(a: Device, b: Device) -> tuple[str, str, str, str]:
    """b's own s/x (never synced) is half-typed; a's s/x is on the server; each has one more."""
    mine = b.store.save("s/x", "v: b\n").id
    other = b.store.save("s/other", "o: 1\n").id
    theirs = a.store.save("s/x", "v: a\n").id
    more = a.store.save("s/more", "m: 1\n").id
    a.sync()
    _half_type(b, "s/x")
    return mine, other, theirs, more


def test_a_half_typed_blueprint_at_a_taken_path_lets_the_rest_sync(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    mine, other, theirs, more = _taken(a, b)
    before = _files(b, "s/x")

    b.sync()  # raised InvalidYAMLError on every cycle
    a.sync()
    assert a.text(other) == "o: 1\n" and b.text(more) == "m: 1\n"
    assert _files(b, "s/x") == before  # the person's bytes, exactly, both files
    row = b.store.row(mine)
    assert row.path == "s/x.blueprint.yaml" and row.flagged and not b.store.exists(theirs)
    parked = {(q.id, q.direction, q.code) for q in b.engine.quarantined()}
    assert parked == {(mine, "push", "unparsable_local"), (theirs, "pull", "path_blocked")}
    assert all("does not parse here" in q.message for q in b.engine.quarantined())
    fetched = b.remote.calls.get("fetch", 0)
    b.sync()  # and the next cycle too, without asking the server again for the parked row
    assert _files(b, "s/x") == before
    assert b.remote.calls.get("fetch", 0) == fetched

    (b.home / "blueprints/s/x.blueprint.yaml").write_text("v: b2\n")
    b.store.reconcile()
    converge(b, a)
    assert b.engine.quarantined() == []
    assert b.text(theirs) == "v: a\n" and b.store.row(theirs).path == "s/x.blueprint.yaml"
    moved = b.store.row(mine)
    assert moved.path != "s/x.blueprint.yaml" and b.text(mine) == "v: b2\n"
    assert a.text(mine) == "v: b2\n"
    [record] = b.engine.conflicts()
    assert (record.reason, record.copy_id, record.id) == ("path_taken", mine, theirs)
    assert record.local == "v: b2\n"
    assert_converged(server, a, b)


def test_a_file_fixed_back_to_its_recorded_text_then_moves_aside(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """No new op id (the text is the one the index holds): the parked push is un-parked all
    the same once the file parses, and the conflict is handled as usual."""
    a, b = make_device("a"), make_device("b")
    mine, _, theirs, _ = _taken(a, b)
    b.sync()
    assert len(b.engine.quarantined()) == 2

    (b.home / "blueprints/s/x.blueprint.yaml").write_text("v: b\n")
    b.store.reconcile()
    converge(b, a)
    assert b.engine.quarantined() == [] and b.engine.status().conflicts == 1
    assert b.text(theirs) == "v: a\n" and a.text(mine) == "v: b\n"
    assert [c.reason for c in b.engine.conflicts()] == ["path_taken"]
    assert_converged(server, a, b)


def test_a_half_typed_blueprint_the_server_moved_away_waits_for_its_file(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The server moved x off s/x and gave s/x to z: x's local copy, half-typed here, is moved
    aside for z (Applier._move_aside) only once it parses; the rest syncs meanwhile."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("s/x", "v: 1\n").id
    converge(a, b)
    a.store.move(x, "s/y")
    z = a.store.save("s/x", "z: 1\n").id
    more = a.store.save("s/more", "m: 1\n").id
    a.sync()
    _half_type(b, "s/x")
    before = _files(b, "s/x")

    b.sync()  # raised InvalidYAMLError on every cycle
    assert b.text(more) == "m: 1\n" and _files(b, "s/x") == before
    parked = {(q.id, q.code) for q in b.engine.quarantined()}
    assert parked == {(x, "unparsable_local"), (z, "path_blocked")}

    (b.home / "blueprints/s/x.blueprint.yaml").write_text("v: 2\n")
    b.store.reconcile()
    converge(b, a)
    assert b.engine.quarantined() == []
    assert b.text(z) == "z: 1\n" and b.store.row(z).path == "s/x.blueprint.yaml"
    assert a.text(x) == "v: 2\n" and a.store.row(x).path == "s/y.blueprint.yaml"
    assert_converged(server, a, b)


def test_a_half_typed_blueprint_deleted_instead_leaves_nothing_parked(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    mine, _, theirs, _ = _taken(a, b)
    b.sync()
    assert len(b.engine.quarantined()) == 2

    (b.home / "blueprints/s/x.blueprint.yaml").unlink()
    (b.home / "blueprints/s/x.blueprint.meta.json").unlink()
    b.store.reconcile()
    converge(b, a)
    assert b.engine.quarantined() == [] and not b.engine.status().needs_attention
    assert b.text(theirs) == "v: a\n" and not a.store.exists(mine)
    assert_converged(server, a, b)
