"""A hostile server's rows never write outside the blueprints folder.

The server (a MemoryServer, its rows changed behind its own checks as a misbehaving peer or a
compromised project would) sends rows whose path climbs out (``../../.bashrc``), is absolute,
holds a NUL, a backslash or a reserved device name, or moves a blueprint this device holds to such
a path. Each row is quarantined (kept out of the folder, shown to the user), the cycle goes on,
and no file outside the home's own folders appears or changes.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change, ServerRow
from tests.sync_engine.conftest import close_device, open_device

HOSTILE = [
    "../../.bashrc",
    "../../escape.blueprint.yaml",
    "a/../../../escape2.blueprint.yaml",
    "{root}/abs.blueprint.yaml",  # an absolute path into the test's own folder
    "C:/x.blueprint.yaml",
    "a\\..\\..\\back.blueprint.yaml",
    "a/b\x00c.blueprint.yaml",
    "a/NUL.blueprint.yaml",
    "a/aux/x.blueprint.yaml",
    "./.././dots.blueprint.yaml",
]


def _meta(ident: str) -> dict[str, object]:
    return {"id": ident, "name": "x", "created": "", "modified": ""}


def _tamper(server: MemoryServer, ident: str, path: str) -> None:
    """Change a stored row's path behind the server's own checks."""
    with server.lock:
        owned = server.rows[ident]
        owned.row = ServerRow(**{**owned.row.to_json(), "path": path})


def _files(root: Path, home: Path) -> dict[str, bytes]:
    """Every file under root but the home's index, state and cache, with its content."""
    private = {home / "data", home / "state", home / "cache"}
    out: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in private]
        for name in files:
            p = Path(folder, name)
            out[str(p)] = p.read_bytes()
    return out


@pytest.mark.parametrize("how", ["created", "moved"])
def test_rows_with_escaping_paths_are_quarantined_and_write_nothing_outside(
    tmp_path: Path, how: str
) -> None:
    server = MemoryServer()
    dev = open_device(tmp_path / "devices", "a", server)
    raw = MemoryRemote(server, user="u")
    try:
        ids = [str(uuid.uuid4()) for _ in HOSTILE]
        changes = [
            Change(
                op, ident, None, f"in/ok{op}.blueprint.yaml", f"v: {op}\n", _meta(ident), "0" * 64
            )
            for op, ident in enumerate(ids, start=1)
        ]
        assert {r.status for r in raw.push(changes, device="raw")} == {"applied"}
        if how == "moved":
            dev.sync()  # this device holds every one at its good path first
            assert len(dev.store.list()) == len(ids)
            # Then the server moves each (a new revision, so the device pulls it again), and
            # the hostile path is put on that revision.
            moves = [
                Change(
                    100 + op,
                    ident,
                    1,
                    f"in/mv{op}.blueprint.yaml",
                    f"v: {op}\n",
                    _meta(ident),
                    "0" * 64,
                )
                for op, ident in enumerate(ids, start=1)
            ]
            assert {r.status for r in raw.push(moves, device="raw")} == {"applied"}
        for ident, path in zip(ids, HOSTILE, strict=True):
            _tamper(server, ident, path.format(root=tmp_path))
        # A later, legitimate row: the cycle must go on past the hostile ones.
        good = str(uuid.uuid4())
        later = Change(99, good, None, "in/later.blueprint.yaml", "v: 9\n", _meta(good), "0" * 64)
        assert raw.push([later], device="raw")[0].status == "applied"
        before = _files(tmp_path, dev.home)

        report = dev.sync()

        quarantined = {e.id for e in dev.engine.quarantined()}
        assert quarantined == set(ids), report
        after = _files(tmp_path, dev.home)
        added = {p for p in after if p not in before}
        assert added == {str(dev.store.abspath("in/later.blueprint.yaml"))} | {
            str(dev.store.abspath("in/later.blueprint.meta.json"))
        }
        assert all(after[p] == b for p, b in before.items() if p in after)
        if how == "moved":
            # Kept where they were: a bad move is refused, not applied halfway.
            assert sorted(i.path for i in dev.store.list()) == sorted(
                [f"in/ok{op}.blueprint.yaml" for op in range(1, len(ids) + 1)]
                + ["in/later.blueprint.yaml"]
            )
        else:
            assert [i.path for i in dev.store.list()] == ["in/later.blueprint.yaml"]
        assert not (tmp_path / "abs.blueprint.yaml").exists()
        assert not list(tmp_path.rglob(".bashrc"))
    finally:
        raw.close()
        close_device(dev)
