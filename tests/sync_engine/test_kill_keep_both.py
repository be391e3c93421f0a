"""A kill during a keep-both apply: the copy's files (and the server's version) written, the
index not committed. The open's reconcile adopts the copy as a blueprint; the cycle that applies
the row again must not make a second copy of the same local version, and the conflict record
must be there after it: killed after both files were written, the copy survived as an ordinary
blueprint with no record, so the person was never told (real process, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import close_device, server_snapshot
from .file_remote import load_server
from .test_base_recovery import _file_device

_ROOT = Path(__file__).parents[2]

# The child syncs b and kills itself at the hook named by argv[3]: "save_remote" (the copy
# written, the server's version not yet) or "add_conflict" (both written, no record yet).
_CHILD = """
import os, signal, sys
from pathlib import Path
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync import _apply, _state
from sync.engine import SyncEngine
from tests.sync_engine.file_remote import FileRemote

home, server, where = sys.argv[1:4]
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if where == "save_remote":
    _apply.Applier._save_remote = killed
else:
    _state.add_conflict = killed
store = BlueprintStore(load_settings(home=home, device_name="b"), maintenance=False)
SyncEngine(store, FileRemote(Path(server))).sync_once()
"""


@pytest.mark.parametrize("where", ["save_remote", "add_conflict"])
def test_a_kill_during_keep_both_leaves_one_copy(tmp_path: Path, where: str) -> None:
    server_file = tmp_path / "server.pickle"
    a = _file_device(tmp_path, "a", server_file)
    b = _file_device(tmp_path, "b", server_file)
    try:
        x = a.store.save("n/x", "name: x\nk: 1\n").id
        a.sync()
        b.sync()
        a.store.save("n/x", "name: x\nk: a\n")
        a.sync()
        b.store.save("n/x", "name: x\nk: b\n")  # conflicts with a's edit: keep-both
    finally:
        close_device(b)
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(b.home), str(server_file), where],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    copies = list((b.home / "blueprints/n").glob("x (conflict b *).blueprint.yaml"))
    assert len(copies) == 1  # the kill came after the copy's files were written
    b = _file_device(tmp_path, "b", server_file)
    try:
        b.sync()
        (record,) = b.engine.conflicts()
        assert record.id == x and record.local == "name: x\nk: b\n"
        assert record.remote == "name: x\nk: a\n" and record.base == "name: x\nk: 1\n"
        assert record.copy_path == f"n/{copies[0].name}"
        assert b.text(record.copy_id or "") == "name: x\nk: b\n"
        assert b.engine.status().conflicts == 1
        a.sync()
        for d in (a, b):
            texts = sorted((i.path, d.text(i.id)) for i in d.store.list())
            assert [t for _, t in texts] == ["name: x\nk: b\n", "name: x\nk: a\n"], texts
            assert d.engine.verify().clean
        assert a.text(x) == "name: x\nk: a\n"
        rows = server_snapshot(load_server(server_file))
        assert sorted(c for _, c in rows.values()) == ["name: x\nk: a\n", "name: x\nk: b\n"]
    finally:
        close_device(a)
        close_device(b)
