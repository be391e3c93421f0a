"""An encrypted export's plaintext folder across pid namespaces (containers sharing /tmp or a home).

The next export removes what a killed one left. It told a dead exporter by the pid in the
folder's name; in another pid namespace that pid is no process here (a live export's folder was
removed under it, and the export failed) or some other process (a killed export's plaintext
stayed for good). Each folder is now held by its exporter's lock. Here the exporter really runs
in a pid namespace of its own (unshare), as the pid the case needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import localstore
from localstore import archive
from localstore._held_temps import process_alive
from tests.archive.conftest import FAST_SCRYPT, populate

REPO = Path(__file__).resolve().parents[2]

# The exporter: it stops after its first blueprint is in the plaintext zip, says so, and then
# either goes on ("go") or dies without running a finally ("die": as SIGKILL leaves it).
_EXPORTER = textwrap.dedent(
    """
    import os, sys
    import localstore
    from localstore import archive
    from localstore.crypto import ScryptParams

    home, out, mode = sys.argv[1:4]
    store = localstore.open(home=home, read_only=mode == "read-only", maintenance=False)

    def progress(phase, done, total):
        if phase == "export" and done == 1:
            print(os.getpid(), flush=True)
            if sys.stdin.readline().strip() == "die":
                os._exit(9)

    archive.export_bundle(store, out, passphrase="pw", progress=progress,
                          scrypt_params=ScryptParams(log2_n=10, r=8, p=1))
    store.close()
    """
)


def _namespaces_or_skip() -> None:
    reason = "needs unshare(1) and the right to make pid namespaces (root, as in CI)"
    if os.name == "nt" or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip(reason)
    tried = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    if tried.returncode != 0:
        pytest.skip(f"{reason}: {tried.stderr.decode(errors='replace').strip()}")


def _in_pid_namespace(argv: list[str], pid: int) -> list[str]:
    """``argv`` run as ``pid`` in a pid namespace of its own."""
    if pid == 1:
        return ["unshare", "--pid", "--fork", *argv]
    # ns_last_pid: the pid this namespace gave last, so its next process gets ``pid``. (Not
    # exec'd: the shell forks it, as the command is not its last.)
    script = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid && "$@"; exit $?'
    return ["unshare", "--pid", "--fork", "sh", "-c", script, "sh", *argv]


def _dead_pid_here() -> int:
    """A pid no process has in this namespace."""
    return next(p for p in range(30000, 20000, -1) if not process_alive(p))


@pytest.fixture
def user_tmp(tmp_path: Path) -> Iterator[Path]:
    """TMPDIR of the test and of its exporter: where a read-only home's export writes."""
    folder = tmp_path / "usertmp"
    folder.mkdir()
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved


class Exporter:
    """An encrypted export in another pid namespace, stopped with its plaintext zip begun."""

    def __init__(self, home: Path, out: Path, mode: str, pid: int, tmp: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
        argv = [sys.executable, "-c", _EXPORTER, str(home), str(out), mode]
        self.child = subprocess.Popen(
            _in_pid_namespace(argv, pid),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert self.child.stdout is not None
        self.pid = int(self.child.stdout.readline())  # (its pid, as its namespace numbers it)

    def then(self, word: str) -> int:
        assert self.child.stdin is not None
        self.child.stdin.write(word + "\n")
        self.child.stdin.close()
        return self.child.wait(60)

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait(30)
        for stream in (self.child.stdin, self.child.stdout):
            if stream is not None:
                stream.close()


def _temps(root: Path, prefix: str) -> list[Path]:
    """The export temps there: folders (a file, export-<pid>-XXXX.lstmp, before the locks)."""
    return sorted(root.glob(f"{prefix}*"))


def _plaintext(temp: Path) -> Path:
    return temp / "plaintext.lstmp" if temp.is_dir() else temp


@pytest.mark.parametrize("mode", ["read-only", "writable"])
def test_a_live_export_whose_pid_is_no_process_here_keeps_its_plaintext(
    tmp_path: Path, user_tmp: Path, mode: str
) -> None:
    """The second export removed the first one's folder (its pid was dead here): the first
    then failed."""
    _namespaces_or_skip()
    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        populate(s, 3)
    root, prefix = (
        (user_tmp, "localstore-export-")
        if mode == "read-only"
        else (
            home / "cache",
            "export-",
        )
    )
    pid = _dead_pid_here()
    first = Exporter(home, tmp_path / "first.lsbundle", mode, pid, user_tmp)
    try:
        assert first.pid == pid and not process_alive(pid)
        (held,) = _temps(root, prefix)
        assert held.name.startswith(f"{prefix}{pid}-")
        with localstore.open(home=home, read_only=mode == "read-only") as s:
            archive.export_bundle(
                s, tmp_path / "second.lsbundle", passphrase="pw", scrypt_params=FAST_SCRYPT
            )
        assert held.exists(), "a live export's plaintext was removed"
        assert first.then("go") == 0
    finally:
        first.close()
    with localstore.open(home=tmp_path / "other") as s:
        archive.import_bundle(s, tmp_path / "first.lsbundle", passphrase="pw")
        assert s.count() == 3
    assert _temps(root, prefix) == []


@pytest.mark.parametrize("mode", ["read-only", "writable"])
def test_a_killed_export_whose_pid_is_a_process_here_is_removed(
    tmp_path: Path, user_tmp: Path, mode: str
) -> None:
    """Its exporter was pid 1 of its namespace, which here is a live process (init): its
    plaintext stayed for good."""
    _namespaces_or_skip()
    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        populate(s, 3)
    root, prefix = (
        (user_tmp, "localstore-export-")
        if mode == "read-only"
        else (
            home / "cache",
            "export-",
        )
    )
    killed = Exporter(home, tmp_path / "first.lsbundle", mode, 1, user_tmp)
    try:
        assert killed.pid == 1 and process_alive(1)
        assert killed.then("die") == 9
    finally:
        killed.close()
    (left,) = _temps(root, prefix)
    assert _plaintext(left).read_bytes()[:4] == b"PK\x03\x04"
    with localstore.open(home=home, read_only=mode == "read-only") as s:
        archive.export_bundle(
            s, tmp_path / "second.lsbundle", passphrase="pw", scrypt_params=FAST_SCRYPT
        )
    assert _temps(root, prefix) == []


@pytest.mark.skipif(os.name == "nt", reason="byte-range locks there are per handle already")
def test_a_sweep_leaves_this_processs_own_held_folders_where_locks_are_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an NFS home Linux emulates flock with POSIX record locks, which belong to the process,
    not the descriptor: a sweep's lock on a folder this very process holds (an app exporting in
    one thread and importing in another) is granted, and the live folder was removed under its
    export (closing the sweep's descriptor also dropped the maker's lock). Fault injected: the
    locks made per-process, as on NFS (fcntl.lockf is that lock)."""
    import fcntl

    from localstore import _durable
    from localstore._bundle_temps import EXPORT_TEMP_PREFIX, sweep_stale_temps
    from localstore._held_temps import make_held_folder

    def per_process_lock(fd: int, *, blocking: bool) -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            return False
        return True

    monkeypatch.setattr(_durable, "try_lock", per_process_lock)
    held = make_held_folder(tmp_path, EXPORT_TEMP_PREFIX)
    try:
        sweep_stale_temps(tmp_path)
        assert held.path.is_dir()
    finally:
        held.remove()
    assert not held.path.exists()
