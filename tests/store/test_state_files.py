"""The small files of the home's state/ folder are written by one writer (write_state_file).

daemon.json (the daemon's control token), the sync pause, the cloud session's marker, the sync
account and base records and the local cloud's state were each written by a copy of the same
temp, fsync, rename code; each keeps its mode, its flushes and its errors through the one.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.errors import DiskFullError

# Each writer of state/ as a line of code run with ``state`` bound (here, and in the child
# processes of tests/store/test_state_temps.py), and the file it writes.
STATE_WRITES: dict[str, tuple[str, str]] = {
    "daemon.json": (
        "from sync.embed import write_state; write_state(state, {'pid': 1, 'token': 'secret'})",
        "daemon.json",
    ),
    "pause": (
        "from localstore._daemon_state import write_pause; write_pause(state)",
        "sync-paused.json",
    ),
    "session": (
        "import localstore; from sync import session_marker; "
        "session_marker.touch(localstore.load_settings(home=state.parent))",
        "cloud-session.changed",
    ),
    "account": (
        "from sync.account_record import AccountRecord, write; "
        "write(state, AccountRecord('user-1', 'a@example.test'))",
        "sync-account.json",
    ),
    "bases": (
        "from sync import base_record; base_record.rewrite(state, 'user-1', [])",
        "sync-bases.jsonl",
    ),
    "localcloud": (
        "from sync.localcloud.service import write_state; write_state(state, {'pid': 1})",
        "localcloud.json",
    ),
}
# The writers whose callers take StorageError (files.atomic_write's); the others raise OSError.
RAISE_STORAGE_ERROR = {"account", "bases"}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    localstore.open(home=home).close()
    return home / "state"


def run_write(state: Path, what: str) -> Path:
    """Run ``what``'s writer here; the file it writes."""
    code, name = STATE_WRITES[what]
    exec(code, {"state": state})
    return state / name


@pytest.mark.parametrize("what", sorted(STATE_WRITES))
def test_each_state_file_is_private_and_leaves_no_temp(state: Path, what: str) -> None:
    before = set(os.listdir(state))
    old_umask = os.umask(0o022)
    try:
        path = run_write(state, what)
        path = run_write(state, what)  # (and over the file it wrote)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes()
    assert set(os.listdir(state)) - before == {path.name}


@pytest.mark.parametrize("what", sorted(STATE_WRITES))
def test_a_failed_state_write_keeps_the_old_file_and_raises_its_caller_s_error(
    state: Path, what: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = run_write(state, what)
    if what == "pause":
        path.unlink()  # (a pause already recorded is kept as it is: nothing written)
    old = path.read_bytes() if path.exists() else None
    listing = sorted(os.listdir(state))

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs, "replace_file", full)
    expected = DiskFullError if what in RAISE_STORAGE_ERROR else OSError
    with pytest.raises(expected):
        run_write(state, what)
    assert (path.read_bytes() if path.exists() else None) == old
    assert sorted(os.listdir(state)) == listing  # (its temp removed)
