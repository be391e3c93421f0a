"""Server rows parked because a file the index cannot record held their path (``path_blocked``)
apply by themselves once that file is fixed, moved or removed (MemoryRemote).

Before, only ``localstore sync --retry-quarantined`` applied them: the cursor is past the row,
and nothing a cycle did looked at the path again, so the replicas stayed apart for good.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.memory_remote import MemoryServer

from .conftest import Device, assert_converged, converge


def _blocked(a: Device, b: Device) -> tuple[str, Path]:
    """b's blueprint y at p reaches the server; a holds a half-typed unindexed file there."""
    a.sync()
    y = b.store.save("p", "from_b: 1\n").id
    b.sync()
    broken = a.store.root / "p.blueprint.yaml"
    broken.write_text("a: [unclosed\n")  # a half-typed new file, no watcher here
    a.sync()
    assert [(q.id, q.code) for q in a.engine.quarantined()] == [(y, "path_blocked")]
    assert broken.read_text() == "a: [unclosed\n"
    return y, broken


def _fetches(d: Device) -> int:
    return d.remote.calls.get("fetch", 0) + d.remote.calls.get("fetch_page", 0)


@pytest.mark.parametrize("how", ["removed", "moved"])
def test_a_row_applies_once_the_file_in_its_way_is_gone(
    make_device: Callable[..., Device], server: MemoryServer, how: str
) -> None:
    a, b = make_device("a"), make_device("b")
    y, broken = _blocked(a, b)
    if how == "removed":
        broken.unlink()
    else:
        os.makedirs(a.store.root / "aside")
        broken.rename(a.store.root / "aside/p.blueprint.yaml")  # still does not parse there
    a.sync()
    assert a.store.load(y).content == "from_b: 1\n"
    assert a.engine.quarantined() == []
    converge(a, b)
    assert_converged(server, a, b)
    assert a.engine.verify().clean


def test_a_row_applies_once_the_file_in_its_way_is_fixed_and_recorded(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Fixed, the file is a local blueprint like any other: it moves aside (kept, with a
    conflict record), as one in a pulled row's way always does."""
    a, b = make_device("a"), make_device("b")
    y, broken = _blocked(a, b)
    broken.write_text("from_a: 1\n")
    a.store.reconcile()  # (the watcher's part)
    a.sync()
    assert a.store.load(y).content == "from_b: 1\n"
    assert a.store.load(y).path == "p.blueprint.yaml"
    assert a.engine.quarantined() == []
    (record,) = a.engine.conflicts()
    assert record.local == "from_a: 1\n"
    converge(a, b)
    assert_converged(server, a, b)
    assert sorted(t for _, t in b.snapshot().values()) == ["from_a: 1\n", "from_b: 1\n"]


def test_a_blocked_row_waits_without_asking_the_server_each_cycle(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    y, broken = _blocked(a, b)
    broken.write_text("a: [still, typing\n")
    a.store.reconcile()
    before = _fetches(a)
    a.sync()
    a.sync()
    assert _fetches(a) == before
    assert broken.read_text() == "a: [still, typing\n"
    assert [(q.id, q.code) for q in a.engine.quarantined()] == [(y, "path_blocked")]


def test_a_link_in_the_way_still_blocks_and_its_removal_frees_the_path(
    make_device: Callable[..., Device],
) -> None:
    """A link at the row's name (a checkout's, say) is never written through: the row waits,
    with no fetch per cycle, until the link goes."""
    a, b = make_device("a"), make_device("b")
    a.sync()
    y = b.store.save("p", "from_b: 1\n").id
    b.sync()
    target = a.home / "elsewhere.yaml"
    target.write_text("k: 1\n")
    link = a.store.root / "p.blueprint.yaml"
    link.symlink_to(target)
    a.sync()
    assert [(q.id, q.code) for q in a.engine.quarantined()] == [(y, "path_blocked")]
    before = _fetches(a)
    a.sync()
    assert _fetches(a) == before
    link.unlink()
    a.sync()
    assert a.store.load(y).content == "from_b: 1\n" and a.engine.quarantined() == []
    assert target.read_text() == "k: 1\n"


def test_a_merge_blocked_at_the_renamed_path_waits_and_then_merges(
    make_device: Callable[..., Device],
) -> None:
    """A three-way merge (an edit here, a rename and an edit there) needs the server's new path,
    held by a file that does not parse: the row is parked under the path that blocks it, waits
    with no fetch per cycle, and merges once the file parses (it moves aside, kept).

    The merged path differs from the row's only when the local rename wins, and then the
    blueprint itself holds it: the path a merge is refused at is always the one recorded."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("p", "k: 1\nl: 1\n").id
    a.sync()
    b.sync()
    (a.store.root / "p.blueprint.yaml").write_text("k: 2\nl: 1\n")
    a.store.reconcile()
    b.store.move(x, "q")
    (b.store.root / "q.blueprint.yaml").write_text("k: 1\nl: 2\n")
    b.store.reconcile()
    b.sync()
    broken = a.store.root / "q.blueprint.yaml"
    broken.write_text("a: [unclosed\n")
    a.store.reconcile()
    a.sync()
    assert [(q.id, q.code, q.path) for q in a.engine.quarantined()] == [
        (x, "path_blocked", "q.blueprint.yaml")
    ]
    before = _fetches(a)
    a.sync()
    a.sync()
    assert _fetches(a) == before
    assert broken.read_text() == "a: [unclosed\n"
    broken.write_text("z: 1\n")
    a.store.reconcile()
    a.sync()
    assert a.engine.quarantined() == []
    assert a.store.row(x).path == "q.blueprint.yaml" and a.text(x) == "k: 2\nl: 2\n"
    assert "z: 1\n" in {t for _, t in a.snapshot().values()}
