"""Temp files a killed writer left in the home's state/ folder are swept at the next open.

The rarely-run writes there (daemon.json with the daemon's control token, the sync pause, the
cloud session's marker, the sync records, the local cloud's state) each write a temp and rename it
into place; a process killed in between left the temp for ever: nothing looked at state/ for them.
A live writer (stopped between its write and its rename) keeps its temp whatever the clock says;
a dead one's goes at once, even dated in the future.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import localstore
from localstore._state_temps import sweep_state_temps
from tests.store.test_state_files import STATE_WRITES

REPO = Path(__file__).resolve().parents[2]

# A writer of state/ (tests/store/test_state_files.py's STATE_WRITES, its code in argv[2]) run
# in a process that, at its rename, kills itself (SIGKILL: a kill or power cut between the write
# and the rename leaves its temp whole) or stops (SIGSTOP: `docker pause`, a suspend, a debugger;
# continued, it renames).
_WRITE_UNTIL_RENAME = """
import os, signal, sys
from pathlib import Path
import localstore.files as fs

real = fs.replace_file
def at_rename(src, dst):
    os.kill(os.getpid(), getattr(signal, sys.argv[3]))
    real(src, dst)

fs.replace_file = at_rename
exec(sys.argv[2], {"state": Path(sys.argv[1])})
"""


def _start_write(state: Path, what: str, signal_name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITE_UNTIL_RENAME, str(state), STATE_WRITES[what][0], signal_name],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_a_write(state: Path, what: str) -> Path:
    """Run ``what``'s writer into ``state``, killed before its rename; the temp it left."""
    before = set(os.listdir(state))
    child = _start_write(state, what, "SIGKILL")
    _, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err
    (left,) = set(os.listdir(state)) - before
    return state / left


def _contents(path: Path) -> str:
    """The text of a temp, or of the files in a temp folder."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return "".join(f.read_text() for f in files if f.is_file())


def _date(path: Path, when: float) -> None:
    """Set the times of ``path`` and of all in it to ``when``."""
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (when, when))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    localstore.open(home=home).close()
    return home


def test_a_killed_writer_s_temp_in_state_is_swept_at_once(home: Path) -> None:
    state = home / "state"
    temps = [_kill_a_write(state, what) for what in sorted(STATE_WRITES)]
    assert "secret" in _contents(temps[sorted(STATE_WRITES).index("daemon.json")])  # (token)
    # Not ours, or not a temp: kept whatever their age.
    others = [state / "notes.txt", state / ".hidden", state / "x.lstmp"]
    for path in others:
        path.write_text("mine\n")
    folder = state / ".folder.lstmp"
    folder.mkdir()
    # A moment old: its writer is dead (nobody holds it), so it goes now, not a minute later.
    removed = sweep_state_temps(state)
    assert sorted(removed) == sorted(temps)
    assert not any(t.exists() for t in temps)
    assert all(p.exists() for p in others) and folder.is_dir()


def test_a_dead_writer_s_temp_dated_in_the_future_is_swept(home: Path) -> None:
    # A clock set back (NTP's step, a dead RTC battery fixed) after the write: by its times the
    # temp is still fresh for as long as the clock was off, and it was kept that long.
    state = home / "state"
    temp = _kill_a_write(state, "daemon.json")
    _date(temp, time.time() + 30 * 24 * 3600)
    assert sweep_state_temps(state) == [temp]
    assert not temp.exists()


def test_an_older_version_s_temp_goes_by_its_age(home: Path) -> None:
    # Named as before write_state_file held its temps: nothing tells a live writer's from a
    # dead one's but their times, so the minute's rule stays for them.
    state = home / "state"
    old = [state / ".daemon-abc123.lstmp", state / ".localcloud-abc123.tmp"]
    for path in old:
        path.write_text("{}")
    assert sweep_state_temps(state) == []
    assert sorted(sweep_state_temps(state, now=time.time() + 3600)) == sorted(old)


@pytest.mark.parametrize("what", sorted(STATE_WRITES))
def test_a_stopped_writer_s_temp_is_not_swept_and_its_write_completes(
    home: Path, what: str
) -> None:
    state = home / "state"
    before = set(os.listdir(state))
    child = _start_write(state, what, "SIGSTOP")
    try:
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        (temp,) = set(os.listdir(state)) - before
        # Stopped past a minute, and the clock stepped a day back or forward meanwhile.
        for now in (time.time() + 61, time.time() + 86400, time.time() - 86400, None):
            assert sweep_state_temps(state, now=now) == []
        assert (state / temp).exists()
    finally:
        os.kill(child.pid, signal.SIGCONT)
        _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    name = STATE_WRITES[what][1]
    assert (state / name).read_bytes()
    assert set(os.listdir(state)) - before <= {name}  # (its temp gone with the rename)


def test_a_store_open_sweeps_state(home: Path) -> None:
    state = home / "state"
    temp = _kill_a_write(state, "daemon.json")
    with localstore.open(home=home, read_only=True):
        assert temp.exists()  # (a read-only open writes nothing)
    localstore.open(home=home).close()
    assert not temp.exists()  # (fresh as it is: its writer is dead)
