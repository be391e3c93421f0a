"""Renames that trade paths, through the real server (push_changes keeps paths unique per change).

tests/sync_engine/test_path_cycles.py proves the engine breaks such a cycle against the
MemoryRemote; this runs a swap and a rotation against the local stack's `push_changes`, whose
per-change uniqueness check is what refused every order of the renames.
"""

from __future__ import annotations

from pathlib import Path

from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import open_device


def test_a_swap_and_a_rotation_of_paths_reach_the_server_and_the_other_device(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    email = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email)
    try:
        x = a.store.save("s/p", "x: 0\n").id
        y = a.store.save("s/q", "y: 0\n").id
        r = [a.store.save(f"r/{n}", f"v: {n}\n").id for n in "abc"]
        assert a.sync() is None and b.sync() is None
        a.store.move(x, "s/tmp")
        a.store.move(y, "s/p")
        a.store.move(x, "s/q")
        a.store.move(r[0], "r/tmp")
        a.store.move(r[2], "r/a")
        a.store.move(r[1], "r/c")
        a.store.move(r[0], "r/b")
        assert a.sync() is None
        assert a.engine.status().pending == 0
        assert b.sync() is None
        for dev in (a, b):
            assert dev.store.row(x).path == "s/q.blueprint.yaml"
            assert dev.store.row(y).path == "s/p.blueprint.yaml"
            assert [dev.store.row(i).path for i in r] == [
                "r/b.blueprint.yaml",
                "r/c.blueprint.yaml",
                "r/a.blueprint.yaml",
            ]
            assert dev.store.load(x).content == "x: 0\n"
            assert dev.engine.conflicts() == []
        assert a.snapshot() == b.snapshot()
        assert a.engine.verify().clean and b.engine.verify().clean
    finally:
        a.close()
        b.close()


def test_a_swap_of_paths_that_differ_beyond_ascii_case_reaches_the_server(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """PostgreSQL's lower(path) folds 'É' and 'ö' and makes 'İ' a plain 'i': these swaps are
    cycles to the real server, which the engine looked up with SQLite's ASCII-only NOCASE."""
    email = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email)
    try:
        x = a.store.save("s/É", "x: 0\n").id
        y = a.store.save("s/Ö", "y: 0\n").id
        v = a.store.save("t/İ", "v: 0\n").id
        w = a.store.save("t/É", "w: 0\n").id
        assert a.sync() is None and b.sync() is None
        for one, other, one_to, other_to in ((x, y, "s/ö", "s/é"), (v, w, "t/é", "t/i")):
            a.store.move(one, "tmp")
            a.store.move(other, other_to)
            a.store.move(one, one_to)
        assert a.sync() is None
        assert a.engine.status().pending == 0
        assert b.sync() is None
        for dev in (a, b):
            assert [dev.store.row(i).path for i in (x, y, v, w)] == [
                "s/ö.blueprint.yaml",
                "s/é.blueprint.yaml",
                "t/é.blueprint.yaml",
                "t/i.blueprint.yaml",
            ]
            assert dev.engine.conflicts() == []
        assert a.snapshot() == b.snapshot()
    finally:
        a.close()
        b.close()
