"""A kill right after the commit of a batch the server answered ``op_id_reused``: the home must
still part from the other home that shares its device id (real process, SIGKILL).

The batch's commit raises the op counter above the server's highest op of this device id; no
later push of this home meets a used op id again. When the new device id was drawn only after
that commit, a kill in between left two live homes (a copy made before fingerprints and its
original) under one id for good, and the own-device checks took the other home's writes for this
one's: the copy's delete then won over the original's later edit ("edit beats delete").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import assert_converged, assert_watermark_kept, close_device, converge
from .file_remote import load_server
from .test_base_recovery import _file_device
from .test_device_identity import _forget_fingerprint

_ROOT = Path(__file__).parents[2]
BASE = "a: 1\nkeep: [1, 2, 3]\nmiddle: here\nmore: [4, 5, 6]\nb: 1\n"

# The child syncs the home at argv[1] and kills itself once the batch that met a reused op id
# committed: at the first step after that commit (``_finish_apply``).
_CHILD = """
import os, signal, sys
from pathlib import Path
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from tests.sync_engine.file_remote import FileRemote

home, server = sys.argv[1:3]
reused = []
real_reused_op = SyncEngine._reused_op
real_finish_apply = SyncEngine._finish_apply
def reused_op(self, *args, **kwargs):
    reused.append(True)
    return real_reused_op(self, *args, **kwargs)
def finish_apply(self, *args, **kwargs):
    if reused:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_finish_apply(self, *args, **kwargs)
SyncEngine._reused_op = reused_op
SyncEngine._finish_apply = finish_apply
store = BlueprintStore(load_settings(home=home, device_name="b"), maintenance=False)
SyncEngine(store, FileRemote(Path(server))).sync_once()
"""


def test_a_kill_after_a_reused_op_id_still_gives_the_home_a_device_id_of_its_own(
    tmp_path: Path,
) -> None:
    server_file = tmp_path / "server.pickle"
    a = _file_device(tmp_path, "a", server_file)
    x = a.store.save("flows/x", BASE).id
    a.sync()
    close_device(a)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for name in ("a", "b"):
        _forget_fingerprint(tmp_path / name)
    a = _file_device(tmp_path, "a", server_file)
    b = _file_device(tmp_path, "b", server_file)
    try:
        shared = a.store.device_id
        assert b.store.device_id == shared  # nothing tells them apart at open
        b.store.delete(x)
        a.store.save("flows/x", BASE.replace("a: 1", "a: 2"))
        a.sync()
    finally:
        close_device(b)
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(b.home), str(server_file)],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    b = _file_device(tmp_path, "b", server_file)
    try:
        assert b.store.device_id != shared  # parted in the killed cycle's commit
        converge(a, b)
        assert b.store.device_id != a.store.device_id
        server = load_server(server_file)
        assert_converged(server, a, b)
        assert a.text(x) == BASE.replace("a: 1", "a: 2")  # edit beats delete
        for d in (a, b):
            assert_watermark_kept(d)
    finally:
        close_device(a)
        close_device(b)
