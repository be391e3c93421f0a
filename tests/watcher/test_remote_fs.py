"""A blueprints folder on a network or FUSE file system (NFS, SMB, sshfs, 9p, virtiofs...).

inotify reports only the changes made through this kernel: an edit made on the server or on
another client sends no event. The detection is tested against this machine's real mounts; the
policy (timer rescans, the barrier, the notice, the override) with the detector's answer
substituted and the kernel's silence about "the other machine's" edit injected by dropping that
file's events in the observer's handler. The watcher, the store and the files are real.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore import _fstype, _inotify, _watch_health
from localstore.store import BlueprintStore
from localstore.watcher import (
    Watcher,
    WatcherState,
    filesystem_type,
    is_remote_filesystem,
    remote_fs_notice,
)

# Local file systems this suite may run on (a container's overlay, a CI runner's ext4...).
EXT = {"ext4", "ext3", "ext2"}
LOCAL_TYPES = EXT | {"xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "bcachefs"}


def test_filesystem_type_of_this_machines_mounts(tmp_path: Path) -> None:
    here = filesystem_type(tmp_path)
    assert here in LOCAL_TYPES, here
    assert not is_remote_filesystem(here)
    assert filesystem_type(Path("/proc/self")) == "proc"  # a mount point inside another mount
    # A symlink is followed to the mount that holds its target.
    (tmp_path / "link").symlink_to("/proc")
    assert filesystem_type(tmp_path / "link") == "proc"
    assert filesystem_type(tmp_path / "missing") is None


@pytest.mark.skipif(not os.path.ismount("/dev/shm"), reason="no /dev/shm mount here")
def test_a_folder_on_tmpfs_is_tmpfs() -> None:
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        assert filesystem_type(Path(d)) == "tmpfs"


def test_without_proc_statfs_tells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No /proc (a chroot, a sandbox): statfs(2)'s magic number names the same file system."""
    from_mountinfo = filesystem_type(tmp_path)
    monkeypatch.setattr(_fstype, "_MOUNTINFO", tmp_path / "no-mountinfo")
    from_statfs = filesystem_type(tmp_path)
    assert from_statfs is not None
    # ext2/3/4 share one magic number: statfs calls them all ext4.
    assert from_statfs == from_mountinfo or {from_statfs, from_mountinfo} <= EXT
    assert not is_remote_filesystem(from_statfs)


def test_network_and_fuse_types_are_remote() -> None:
    for remote in ("nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "fuse.rclone", "9p", "virtiofs"):
        assert is_remote_filesystem(remote), remote
    for local in ("ext4", "tmpfs", "overlay", "btrfs", "fuseblk", "proc", None):
        assert not is_remote_filesystem(local), local
    assert _fstype._unescape_mount("/mnt/my\\040share\\134x") == "/mnt/my share\\x"


# -- the policy, with the detector's answer substituted ---------------------------------------------


@pytest.fixture
def on_nfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The detector answers nfs4 for every path (the folder itself is on this machine's disk)."""
    # (Read by the watcher's detection and by remote_fs_notice, doctor's.)
    monkeypatch.setattr(_watch_health, "filesystem_type", lambda path: "nfs4")
    monkeypatch.setattr(_fstype, "filesystem_type", lambda path: "nfs4")


@pytest.fixture
def silent_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """File names whose events the kernel "does not send": an edit made on another machine."""
    names: set[str] = set()
    real = _inotify._Handler.dispatch

    def dispatch(self: _inotify._Handler, event: object) -> None:
        if os.path.basename(os.fsdecode(event.src_path)) in names:  # type: ignore[attr-defined]
            return
        real(self, event)  # type: ignore[arg-type]

    monkeypatch.setattr(_inotify._Handler, "dispatch", dispatch)
    yield names


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_network_folder_is_rescanned_on_a_timer_and_says_so(
    make_store: Callable[..., BlueprintStore],
    make_watcher: Callable[..., Watcher],
    on_nfs: None,
    silent_kernel: set[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, an edit made on the NFS server waited for the 10-minute timer rescan, and the
    daemon's `sync --wait` barrier synced without it; nothing said why."""
    store = make_store(remote_rescan_interval_s=0.5)
    bp = store.save("shared/note", "value: 1\n")
    silent_kernel.add("note.blueprint.yaml")
    with caplog.at_level(logging.WARNING, logger="localstore.watcher"):
        w = make_watcher(store)
        w.start()
    assert w.wait_idle(10)
    # Not DEGRADED: nothing is wrong, the folder is watched the only way it can be.
    assert w.state is WatcherState.RUNNING and w.problem is None
    assert w.remote and w.filesystem == "nfs4"
    assert w.notice is not None and "nfs4" in w.notice and "rescan every 0.5 s" in w.notice
    assert any("network or FUSE" in r.getMessage() for r in caplog.records)

    yaml = store.root / "shared" / "note.blueprint.yaml"
    yaml.write_text("value: 2\n")  # "on the server": no event reaches the watcher
    # The barrier covers it (the daemon's `sync --wait` must not sync without it).
    assert w.wait_idle(10)
    assert store.load(bp.id).content == "value: 2\n"
    # Without a barrier, the timer finds the next one within the shortened period.
    yaml.write_text("value: 3\n")
    assert _wait_for(lambda: store.load(bp.id).content == "value: 3\n", timeout=5)
    assert not any(r.deleted for r in store.history(bp.id))


def test_remote_fs_local_overrides_the_detection(
    make_store: Callable[..., BlueprintStore],
    make_watcher: Callable[..., Watcher],
    on_nfs: None,
) -> None:
    store = make_store(remote_fs="local", remote_rescan_interval_s=0.5)
    w = make_watcher(store)
    w.start()
    assert w.wait_idle(10)
    assert w.filesystem == "nfs4" and not w.remote and w.notice is None
    # Only the ordinary timer (600 s) rescans.
    assert w._interval() == store.settings.rescan_interval_s


def test_remote_fs_remote_forces_timer_rescans_on_a_local_disk(
    make_store: Callable[..., BlueprintStore],
    make_watcher: Callable[..., Watcher],
    silent_kernel: set[str],
) -> None:
    store = make_store(remote_fs="remote", remote_rescan_interval_s=0.5)
    bp = store.save("note", "value: 1\n")
    silent_kernel.add("note.blueprint.yaml")
    w = make_watcher(store)
    w.start()
    assert w.wait_idle(10)
    assert w.remote and "remote_fs: remote" in (w.notice or "")
    (store.root / "note.blueprint.yaml").write_text("value: 2\n")
    assert _wait_for(lambda: store.load(bp.id).content == "value: 2\n", timeout=5)


def test_doctor_says_a_network_folder_is_rescanned(
    make_store: Callable[..., BlueprintStore], on_nfs: None
) -> None:
    from sync.cli_daemon import check_watch_limits

    store = make_store()
    assert remote_fs_notice(store.settings) is not None
    finding = check_watch_limits(store.settings)
    assert finding.status == "info", finding
    assert "nfs4" in finding.detail and "rescan every 30 s" in finding.detail
    assert "max_user_watches" in finding.detail  # the limits are still reported
    assert remote_fs_notice(store.settings.replace(remote_fs="local")) is None
