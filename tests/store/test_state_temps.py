"""Temp files a killed writer left in the home's state/ folder are swept at the next open.

The rarely-run writes there (daemon.json with the daemon's control token, the sync pause, the
cloud session's marker, the sync account record) each write a temp and rename it into place; a
process killed in between left the temp for ever: nothing looked at state/ for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import localstore
from localstore._state_temps import sweep_state_temps

REPO = Path(__file__).resolve().parents[2]

# Each writer run in a process killed (SIGKILL) as its temp is renamed into place: the temp is
# left whole, as a kill or power cut between the write and the rename leaves it.
_KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
import localstore.files as fs

def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

fs.replace_file = os.replace = killed  # (atomic_write renames with os.replace)
state = Path(sys.argv[1])
what = sys.argv[2]
if what == "daemon.json":
    from sync.embed import write_state
    write_state(state, {"pid": 1, "token": "secret-token"})
elif what == "pause":
    from localstore._daemon_state import write_pause
    write_pause(state)
elif what == "account":
    from sync.account_record import AccountRecord, write
    write(state, AccountRecord("user-1", "a@example.test"))
"""


def _kill_a_write(state: Path, what: str) -> Path:
    """Run ``what``'s writer into ``state``, killed before its rename; the temp it left."""
    before = set(os.listdir(state))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITE, str(state), what],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    (left,) = set(os.listdir(state)) - before
    return state / left


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    localstore.open(home=home).close()
    return home


def test_a_killed_writer_s_temp_in_state_is_swept_once_stale(home: Path) -> None:
    state = home / "state"
    temps = [_kill_a_write(state, what) for what in ("daemon.json", "pause", "account")]
    assert "secret-token" in temps[0].read_text()  # (the daemon's token, left behind)
    # Not ours, or not a temp: kept whatever their age.
    others = [state / "notes.txt", state / ".hidden", state / "x.lstmp"]
    for path in others:
        path.write_text("mine\n")
    folder = state / ".folder.lstmp"
    folder.mkdir()
    # A moment old: it may be a live writer's (they rename within milliseconds); kept.
    assert sweep_state_temps(state) == []
    assert all(t.exists() for t in temps)
    # An hour later (a file's change time cannot be set back: the clock is moved instead).
    removed = sweep_state_temps(state, now=time.time() + 3600)
    assert sorted(removed) == sorted(temps)
    assert not any(t.exists() for t in temps)
    assert all(p.exists() for p in others) and folder.is_dir()


def test_a_store_open_sweeps_state(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = home / "state"
    temp = _kill_a_write(state, "daemon.json")
    localstore.open(home=home).close()
    assert temp.exists()  # (fresh)
    later = time.time() + 3600
    monkeypatch.setattr("localstore._state_temps.time.time", lambda: later)
    with localstore.open(home=home, read_only=True):
        assert temp.exists()  # (a read-only open writes nothing)
    localstore.open(home=home).close()
    assert not temp.exists()
