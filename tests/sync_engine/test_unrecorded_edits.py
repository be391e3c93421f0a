"""An editor's change no watcher has recorded yet, met by a pulled row: it is recorded, kept and
pushed, never overwritten, deleted or lost with a rolled-back savepoint."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sync.memory_remote import MemoryServer
from tests.conftest import rename_in_same_tick, replace_keeping_stat

from .conftest import Device, assert_converged, converge


def _edit_unseen(dev: Device, rel: str, text: str) -> None:
    """An editor's save the index does not know (no watcher runs in these tests)."""
    path = dev.store.abspath(rel)
    path.write_text(text)
    later = time.time_ns() + 10**9  # a distinct mtime even on a coarse clock
    os.utime(path, ns=(later, later))


def test_an_unrecorded_edit_of_a_blueprint_moved_aside_is_recorded_and_kept(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The server moved h off p and gave p to r; b still has h at p, edited in an editor. The
    move aside met the edit (ChangedOnDiskError): every cycle failed, and the savepoint rolled
    back the edit the error said was recorded."""
    a, b = make_device("A"), make_device("B")
    h = a.store.save("p", "h: 1\n").id
    a.sync()
    b.sync()
    a.store.move(h, "q")
    a.sync()
    r = a.store.save("p", "r: 1\n").id
    a.sync()
    a.store.save("q", "h: 2\n")  # h's newest row comes after r's: b meets r's row first
    a.sync()
    _edit_unseen(b, "p.blueprint.yaml", "h: 1\nb: kept\n")
    report = b.sync()
    assert report.errors == [] and report.quarantined == 0
    assert [x.origin for x in b.store.history(h)][-2:] == ["external", "remote"]
    converge(a, b)
    assert_converged(server, a, b)
    assert a.text(h) == "h: 2\nb: kept\n" and a.store.row(h).path == "q.blueprint.yaml"
    assert a.text(r) == "r: 1\n"


def test_a_remote_delete_loses_to_an_unrecorded_edit_whose_meta_is_missing(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The engine took a missing meta file for "unchanged", so the row looked clean and the
    store's delete recorded the edit, then deleted it. An edit beats a delete."""
    a, b = make_device("A"), make_device("B")
    x = a.store.save("x", "v: 1\n").id
    a.sync()
    b.sync()
    _edit_unseen(b, "x.blueprint.yaml", "v: 1\nlocal: important\n")
    b.store.abspath("x.blueprint.meta.json").unlink()
    a.store.delete(x)
    a.sync()
    report = b.sync()
    assert report.errors == [] and report.quarantined == 0
    assert b.text(x) == "v: 1\nlocal: important\n"
    converge(a, b)
    assert_converged(server, a, b)
    assert a.text(x) == "v: 1\nlocal: important\n"


def test_an_edit_saved_just_before_a_remote_delete_is_written_is_kept(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: Any
) -> None:
    """The editor saves after the engine looked at the files (the row is clean) and before the
    store deletes: the store records the edit and refuses, the row's savepoint rolled that
    back, and the cycle failed. The row is applied once more and the edit wins."""
    a, b = make_device("A"), make_device("B")
    x = a.store.save("x", "v: 1\n").id
    a.sync()
    b.sync()
    a.store.delete(x)
    a.sync()
    real = b.store.delete

    def editor_saves_first(ref: str, **kw: Any) -> Any:
        # Fault injection: the editor's save lands inside the window, once.
        monkeypatch.setattr(b.store, "delete", real)
        _edit_unseen(b, "x.blueprint.yaml", "v: 1\nlate: edit\n")
        return real(ref, **kw)

    monkeypatch.setattr(b.store, "delete", editor_saves_first)
    report = b.sync()
    assert report.errors == [] and b.text(x) == "v: 1\nlate: edit\n"
    assert b.store.history(x)[0].origin == "external"
    converge(a, b)
    assert_converged(server, a, b)
    assert a.text(x) == "v: 1\nlate: edit\n"


def test_a_remote_delete_loses_to_a_same_stat_replacement(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The apply's freshness check took such a version for the clean file: the pulled delete
    went through (the store recorded the version in history, then deleted it). An edit beats a
    delete: it is recorded first, stays, and is pushed."""
    a, b = make_device("A"), make_device("B")
    x = a.store.save("x", "a: 1\n").id
    a.sync()
    b.sync()
    replace_keeping_stat(b.store.abspath("x.blueprint.yaml"), "a: 2\n")
    a.store.delete(x)
    a.sync()
    report = b.sync()
    assert report.errors == [] and report.quarantined == 0
    assert b.text(x) == "a: 2\n"
    converge(a, b)
    assert_converged(server, a, b)
    assert a.text(x) == "a: 2\n"


def test_a_pulled_row_does_not_overwrite_a_same_stat_replacement_unseen(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """A pulled change merges with such a version, which a revision holds."""
    a, b = make_device("A"), make_device("B")
    x = a.store.save("x", "a: 1\nb: 1\n").id
    a.sync()
    b.sync()
    replace_keeping_stat(b.store.abspath("x.blueprint.yaml"), "a: 2\nb: 1\n")
    a.store.save("x", "a: 1\nb: 3\n")
    a.sync()
    report = b.sync()
    assert report.errors == [] and report.quarantined == 0
    assert "a: 2\nb: 1\n" in [b.store.load_revision(x, r.rev).content for r in b.store.history(x)]
    converge(a, b)
    assert_converged(server, a, b)
    assert a.text(x) == b.text(x) == "a: 2\nb: 3\n"


def test_a_remote_delete_loses_to_a_version_renamed_in_within_the_save_tick(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The apply's freshness check compares inodes too (core v9): a same-size version with the
    recorded mtime and change time (renamed in within the tick of the pull's own write) was
    taken for the clean file, and the pulled delete deleted it."""
    a, b = make_device("A"), make_device("B")
    x = a.store.save("x", "a: 1\n").id
    a.sync()
    b.sync()
    rename_in_same_tick(b.store, "x.blueprint.yaml", "a: 2\n")
    a.store.delete(x)
    a.sync()
    report = b.sync()
    assert report.errors == [] and report.quarantined == 0
    assert b.text(x) == "a: 2\n"
    converge(a, b)
    assert_converged(server, a, b)
    assert a.text(x) == "a: 2\n"
