"""A kill during a keep-both apply: the copy's files (and the server's version) written, the
index not committed. The open's reconcile adopts the copy as a blueprint; the cycle that applies
the row again must not make a second copy of the same local version, and the conflict record
must be there after it: killed after both files were written, the copy survived as an ordinary
blueprint with no record, so the person was never told (real process, SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine

from .conftest import Device, close_device, server_snapshot
from .file_remote import FileRemote, load_server
from .test_base_recovery import _file_device
from .test_cli_conflicts import run

_ROOT = Path(__file__).parents[2]

# The child syncs b and kills itself at the hook named by argv[3]: "save_remote" (the copy
# written, the server's version not yet) or "add_conflict" (both written, no record yet). An
# argv[4] (an ISO time) is the engine's clock, which names the copy.
_CHILD = """
import os, signal, sys
from datetime import datetime
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
at = datetime.fromisoformat(sys.argv[4]) if len(sys.argv) > 4 else None
SyncEngine(store, FileRemote(Path(server)), now=(lambda: at) if at else None).sync_once()
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


_KILLED_AT = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
_COPY = "x (conflict b 2024-05-01T10-00-00Z).blueprint.yaml"


def _killed_in_keep_both(tmp_path: Path, where: str) -> tuple[Device, Path, Path]:
    """a's edit and b's meet in keep-both; b's sync, its clock at _KILLED_AT, is killed at
    ``where``. Returns a, b's home and the server's file."""
    server_file = tmp_path / "server.pickle"
    a = _file_device(tmp_path, "a", server_file)
    b = _file_device(tmp_path, "b", server_file)
    try:
        a.store.save("n/x", "name: x\nk: 1\n")
        a.sync()
        b.sync()
        a.store.save("n/x", "name: x\nk: a\n")
        a.sync()
        b.store.save("n/x", "name: x\nk: b\n")
    finally:
        close_device(b)
    env = dict(os.environ, PYTHONPATH=str(_ROOT))
    argv = [str(b.home), str(server_file), where, _KILLED_AT.isoformat()]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        cwd=_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    copies = [p.name for p in (b.home / "blueprints/n").glob("x (conflict b *).blueprint.yaml")]
    assert copies == [_COPY]
    return a, b.home, server_file


def _later_device(home: Path, server_file: Path) -> Device:
    """Device b opened again, its clock an hour after the killed sync's."""
    store = BlueprintStore(load_settings(home=home, device_name="b"), maintenance=False)
    later = _KILLED_AT + timedelta(hours=1)
    remote = FileRemote(server_file)
    engine = SyncEngine(store, remote, now=lambda: later)
    return Device("b", home, store, remote, engine)  # type: ignore[arg-type]


@pytest.mark.parametrize("where", ["save_remote", "add_conflict"])
def test_the_sync_after_a_kill_during_keep_both_keeps_the_copy_it_wrote(
    tmp_path: Path, where: str
) -> None:
    """The copy's name has the time of the sync that wrote it. The sync after the kill ran a
    second or more later (half the runs of the test above): it made the copy's name again from
    its own clock and moved the copy the killed sync wrote, so the copy the person may already
    have opened vanished under them, under a name that no longer said when the conflict was
    found. Both clocks are fixed here, an hour apart."""
    a, home, server_file = _killed_in_keep_both(tmp_path, where)
    written = home / "blueprints/n" / _COPY
    copy_text = written.read_text(encoding="utf-8")
    b = _later_device(home, server_file)
    try:
        b.sync()
        (record,) = b.engine.conflicts()
        assert record.copy_path == f"n/{_COPY}"
        assert list(written.parent.glob("x (conflict b *).blueprint.yaml")) == [written]
        assert written.read_text(encoding="utf-8") == copy_text  # not written again
        assert b.engine.verify().clean
    finally:
        close_device(a)
        close_device(b)


def test_an_edit_of_the_copy_before_the_sync_after_the_kill_stays(tmp_path: Path) -> None:
    """Killed before the server's version was written, the apply runs again in the next sync:
    it wrote the local version over the copy again, so an edit the person made to the copy in
    between was replaced (kept only in its history)."""
    a, home, server_file = _killed_in_keep_both(tmp_path, "save_remote")
    b = _later_device(home, server_file)
    try:
        b.store.save(f"n/{_COPY}", "name: x\nk: b, then more\n")
        b.sync()
        (record,) = b.engine.conflicts()
        assert record.copy_path == f"n/{_COPY}" and record.local == "name: x\nk: b\n"
        assert b.text(record.copy_id or "") == "name: x\nk: b, then more\n"
        assert b.text(record.id) == "name: x\nk: a\n"
        assert b.engine.verify().clean
    finally:
        close_device(a)
        close_device(b)


@pytest.mark.parametrize("edit", ["after_open", "before_open"])
def test_the_record_made_again_after_a_kill_keeps_the_local_version(
    tmp_path: Path, edit: str
) -> None:
    """Killed after both files were written, the next sync records the conflict again: it took
    the record's local side from the copy as it is now, so an edit the person made to the copy
    in between showed in `conflicts show` as the local version the conflict found (and the
    local version itself was shown nowhere). The edit stays in the copy, which `--take local`
    keeps."""
    a, home, server_file = _killed_in_keep_both(tmp_path, "add_conflict")
    if edit == "before_open":  # in an editor: the open's reconcile makes it the copy's rev 1
        (home / "blueprints/n" / _COPY).write_text("name: x\nk: b, then more\n", encoding="utf-8")
    b = _later_device(home, server_file)
    try:
        if edit == "after_open":
            b.store.save(f"n/{_COPY}", "name: x\nk: b, then more\n")
        b.sync()
        (record,) = b.engine.conflicts()
        assert record.local == "name: x\nk: b\n" and record.remote == "name: x\nk: a\n"
        assert record.base == "name: x\nk: 1\n"
        assert b.text(record.copy_id or "") == "name: x\nk: b, then more\n"
        shown = run(home, "--json", "conflicts", "show", str(record.cid))
        data = json.loads(shown.output)
        assert (data["local"], data["remote"]) == ("name: x\nk: b\n", "name: x\nk: a\n")
        assert "-k: b\n+k: a" in run(home, "conflicts", "show", str(record.cid)).output
        taken = run(home, "conflicts", "resolve", str(record.cid), "--take", "local")
        assert taken.exit_code == 0, taken.output
        assert b.text(record.id) == "name: x\nk: b, then more\n"
        b.sync()
        assert b.engine.verify().clean
    finally:
        close_device(a)
        close_device(b)
