"""Sync after `localstore check --fix` rebuilt a damaged index from the files.

The rebuild keeps the files (and so every blueprint's id, which lives in its meta file) but not
what the index knew: history, the sync tables (bases, cursor, what was pushed) and the device id,
which is stored there too. The device comes back as a new device that holds blueprints it cannot
tell apart from edits: every one is pushed as new, meets the server's row of the same id, and
must be merged onto it, never duplicated under a new id and never losing an edit that was not
uploaded before the damage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from localstore.cli import cli

from .conftest import Device, assert_converged, close_device, converge, server_snapshot


def _damage_pages(db: Path) -> None:
    """Overwrite every page after the header page (as tests/test_cli_store.py does)."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    data[page:] = b"\xa5" * (len(data) - page)
    db.write_bytes(bytes(data))


def _check_fix(home: Path) -> list[dict[str, str]]:
    """`localstore check --fix` on a closed home; returns what it fixed."""
    result = CliRunner().invoke(
        cli, ["--home", str(home), "--json", "check", "--fix"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    fixed: list[dict[str, str]] = json.loads(result.stdout)["fixed"]
    return fixed


def test_a_device_whose_index_was_rebuilt_loses_no_edit_and_duplicates_nothing(
    make_device: Callable[..., Device],
) -> None:
    a, b = make_device("a"), make_device("b")
    ids = {
        name: a.store.save(f"notes/{name}", f"name: {name}\nk: 1\n").id
        for name in ("x", "y", "z", "s", "m", "w")
    }
    converge(a, b)
    # While b is away, a edits z and s, moves m and deletes w.
    a.store.save("notes/z", "name: z\nk: 1\nfrom_a: 1\n")
    a.store.save("notes/s", "name: s\nk: a\n")
    a.store.move(ids["m"], "moved/m")
    a.store.delete(ids["w"])
    a.sync()
    # b, offline, edits x (untouched elsewhere), z (another key than a's), s (the same key as
    # a's) and creates a blueprint; none of it is uploaded before its index is damaged.
    b.store.save("notes/x", "name: x\nk: 1\nfrom_b: 1\n")
    b.store.save("notes/z", "name: z\nk: 1\nfrom_b: 1\n")
    b.store.save("notes/s", "name: s\nk: b\n")
    new = b.store.save("notes/new", "name: new\n").id
    assert b.engine.status().pending == 4
    old_device = b.store.device_id
    close_device(b)

    data = b.home / "data"
    for side in ("index.db-wal", "index.db-shm"):
        (data / side).unlink(missing_ok=True)
    _damage_pages(data / "index.db")
    fixed = _check_fix(b.home)
    assert [f["kind"] for f in fixed if f["kind"] == "index-rebuilt"] == ["index-rebuilt"]

    b = make_device("b")  # the same home, opened again on the rebuilt index
    # The device id lived in the lost index. It must change: the rebuilt index hands out op ids
    # from 1 again, and the server answers a (device, op id) it has seen with the stored result.
    assert b.store.device_id != old_device
    assert {i.id for i in b.store.list()} == {*ids.values(), new}  # ids come from the files
    converge(b, a)

    server = server_snapshot(b.remote.server)
    texts = sorted(text for _, text in server.values())
    # Nothing re-created under a new id: every original id (but the deleted w) and b's new one
    # are there, and the only other blueprint is the conflict copy of s (both sides edited k).
    copies = {i: p for i, (p, _) in server.items() if i not in {*ids.values(), new}}
    assert set(server) - set(copies) == {*(ids[n] for n in "xyzsm"), new}
    assert [p for p in copies.values() if p.startswith("notes/s (conflict ")] == list(
        copies.values()
    )
    assert len(copies) == 1
    # No edit lost: b's edits (x, z, s) and a's (z, s, the move of m) are all there.
    assert server[ids["x"]] == ("notes/x.blueprint.yaml", "name: x\nk: 1\nfrom_b: 1\n")
    assert server[ids["z"]][1] in (
        "name: z\nk: 1\nfrom_a: 1\nfrom_b: 1\n",
        "name: z\nk: 1\nfrom_b: 1\nfrom_a: 1\n",
    )
    assert "name: s\nk: a\n" in texts and "name: s\nk: b\n" in texts
    assert server[ids["m"]][0] == "moved/m.blueprint.yaml"
    assert server[new] == ("notes/new.blueprint.yaml", "name: new\n")
    # a's delete of w, made while b was away, stands: b's copy of w was the version a deleted.
    assert ids["w"] not in server and not b.store.exists(ids["w"])
    assert_converged(b.remote.server, a, b)
    for dev in (a, b):
        assert dev.engine.verify().clean, dev.name
        assert dev.engine.quarantined() == [], dev.name
