"""A home on a genuinely full filesystem: every operation fails typed, nothing is made worse,
and everything works again once space is freed.

The disk is real: a small tmpfs mounted for the test (this needs root, as CI and the dev VM
run; elsewhere the tests skip saying so). ``DiskSpace.fill(leave=n)`` writes a filler file
until the kernel answers ENOSPC and then gives ``n`` bytes back, so each operation runs out
of space at a different step (a temp file, a rename's folder, the index's WAL, the commit);
``free()`` deletes the filler. The other disk-full tests cap the index with ``PRAGMA
max_page_count``, which never fails a file write.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import localstore
from localstore.errors import DiskFullError, LocalStoreError, StorageError
from localstore.store import BlueprintStore, SaveRequest
from sync import _state as sync_state
from sync.daemon import configure_logging
from sync.memory_remote import MemoryServer
from tests.sync_engine.conftest import close_device, open_device

DISK_BYTES = 8 * 1024 * 1024
# Bytes left free before an operation: 0 fails the first temp file; the larger ones let the
# files through and fail the index's WAL or a later step.
LEAVE = [0, 8 << 10, 24 << 10, 64 << 10, 160 << 10]


@dataclass
class DiskSpace:
    """A tmpfs of DISK_BYTES at ``root`` that a test fills and frees."""

    root: Path

    @property
    def filler(self) -> Path:
        return self.root / "filler"

    def fill(self, leave: int = 0) -> None:
        """Fill the filesystem, then give ``leave`` bytes back."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * 65536
            while chunk:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)
        if leave:
            os.truncate(self.filler, max(0, self.filler.stat().st_size - leave))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskSpace]:
    """A small tmpfs, always unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a real full disk); CI runs as root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield DiskSpace(mnt)
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            # Still busy (a test failed with a file open): detach it, never leave it mounted.
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def text(i: int, salt: str = "v1", lines: int = 40) -> str:
    """About 2 KB of YAML (``lines`` 40)."""
    return f"name: bp{i}\nsteps:\n" + "".join(
        f"  - step {j} {salt} {i} lorem ipsum dolor sit amet\n" for j in range(lines)
    )


def open_store(disk: DiskSpace) -> BlueprintStore:
    return localstore.open(home=disk.root / "home")


@pytest.fixture
def store(disk: DiskSpace) -> Iterator[BlueprintStore]:
    s = open_store(disk)
    try:
        yield s
    finally:
        s.close()


def on_disk(store: BlueprintStore) -> dict[str, bytes]:
    """Every file under the blueprints folder (temps included) -> its bytes."""
    return {
        p.relative_to(store.root).as_posix(): p.read_bytes()
        for p in sorted(store.root.rglob("*"))
        if p.is_file() and p.name != ".localstore-folder"
    }


def indexed(store: BlueprintStore) -> dict[str, tuple[str, int, str]]:
    """id -> (path, rev, content hash) of every live blueprint."""
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT id, path, rev, content_hash FROM blueprints WHERE deleted = 0"
        ).fetchall()
    return {str(r[0]): (str(r[1]), int(r[2]), str(r[3])) for r in rows}


def assert_clean(store: BlueprintStore) -> None:
    report = store.check()
    assert report.problems == [], report.problems


def assert_disk_full(exc: BaseException) -> None:
    assert isinstance(exc, DiskFullError), repr(exc)
    assert exc.hint and "space" in exc.hint, exc.hint


def test_the_fixture_fills_and_frees_a_real_filesystem(disk: DiskSpace) -> None:
    disk.fill()
    with pytest.raises(OSError) as info:
        (disk.root / "x").write_bytes(b"y" * 8192)
    assert info.value.errno == errno.ENOSPC
    disk.free()
    (disk.root / "x").write_bytes(b"y" * 8192)


@pytest.mark.parametrize("leave", LEAVE)
def test_a_save_on_a_full_disk_fails_typed_and_keeps_the_previous_version(
    disk: DiskSpace, store: BlueprintStore, leave: int
) -> None:
    first = store.save("f/a.blueprint.yaml", text(0))
    store.save("f/b.blueprint.yaml", text(1))
    files, rows = on_disk(store), indexed(store)
    disk.fill(leave)
    try:
        # Updates until one fails (the larger `leave`s let a few through).
        for n in range(40):
            store.save("f/a.blueprint.yaml", text(0, f"v{n + 2}", lines=80))
            files, rows = on_disk(store), indexed(store)
    except LocalStoreError as exc:
        assert_disk_full(exc)
    else:
        pytest.fail("forty 4 KB saves fitted into the space left")
    assert on_disk(store) == files  # the previous version, no temp left behind
    assert indexed(store) == rows
    assert store.load(first.id).content == files["f/a.blueprint.yaml"].decode()
    disk.free()
    assert_clean(store)
    store.save("f/a.blueprint.yaml", text(0, "after"))
    assert store.load("f/a").content == text(0, "after")


@pytest.mark.parametrize("leave", [*LEAVE, 400 << 10])
def test_save_many_out_of_space_saves_each_blueprint_whole_or_not_at_all(
    disk: DiskSpace, store: BlueprintStore, leave: int
) -> None:
    store.save("keep.blueprint.yaml", text(99))
    disk.fill(leave)
    requests = [
        SaveRequest(path=f"d{i % 5}/bp{i}.blueprint.yaml", content=text(i, lines=60))
        for i in range(60)
    ]
    with pytest.raises(LocalStoreError) as info:
        store.save_many(requests)
    assert_disk_full(info.value)
    files, rows = on_disk(store), indexed(store)
    by_path = {path: (ident, h) for ident, (path, _, h) in rows.items()}
    for r in requests:
        assert isinstance(r.path, str)  # (SaveRequest.path may be a pathlib path too)
        meta = r.path.replace(".yaml", ".meta.json")
        if r.path in by_path:  # saved: both files, the content the index records
            assert isinstance(r.content, str)
            assert files[r.path] == r.content.encode() and meta in files
            assert store.load(r.path).content == r.content
        else:  # not saved: no file of it
            assert r.path not in files and meta not in files
    assert not [p for p in files if p.endswith(".lstmp")]
    disk.free()
    assert_clean(store)
    assert len(store.save_many(requests)) == len(requests)
    assert_clean(store)


def test_the_index_running_out_of_space_mid_commit_keeps_the_previous_version(
    disk: DiskSpace, store: BlueprintStore
) -> None:
    """The files fit, the WAL does not: the commit fails and the files are put back."""
    for i in range(5):
        store.save(f"bp{i}.blueprint.yaml", text(i))
    with store.index.read() as cur:  # a WAL that must grow (not one reused from its start)
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    files, rows = on_disk(store), indexed(store)
    failed = 0
    for leave in range(8 << 10, 256 << 10, 8 << 10):
        disk.free()
        disk.fill(leave)
        try:
            store.save_many(
                [
                    SaveRequest(path=f"bp{i}.blueprint.yaml", content=text(i, f"L{leave}", 200))
                    for i in range(5)
                ]
            )
        except LocalStoreError as exc:
            assert_disk_full(exc)
            failed += 1
            assert on_disk(store) == files
            assert indexed(store) == rows
        else:
            files, rows = on_disk(store), indexed(store)
    assert failed
    disk.free()
    assert_clean(store)


@pytest.mark.parametrize("leave", LEAVE)
def test_a_delete_on_a_full_disk_leaves_the_blueprint_or_deletes_it_whole(
    disk: DiskSpace, store: BlueprintStore, leave: int
) -> None:
    """Before: a delete whose commit failed had unlinked the pair and could not write it back
    (the disk was full), so the blueprint the user still had vanished from disk."""
    for i in range(30):
        store.save(f"d/bp{i}.blueprint.yaml", text(i))
    with store.index.read() as cur:
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    disk.fill(leave)
    for i in range(30):
        files, rows = on_disk(store), indexed(store)
        try:
            store.delete(f"d/bp{i}")
        except LocalStoreError as exc:
            assert_disk_full(exc)
            assert on_disk(store) == files
            assert indexed(store) == rows
            break
        assert f"d/bp{i}.blueprint.yaml" not in on_disk(store)
    disk.free()
    assert_clean(store)
    assert indexed(store) == rows


@pytest.mark.parametrize("leave", LEAVE)
def test_a_move_on_a_full_disk_leaves_the_blueprint_or_moves_it_whole(
    disk: DiskSpace, store: BlueprintStore, leave: int
) -> None:
    for i in range(30):
        store.save(f"m/bp{i}.blueprint.yaml", text(i))
    with store.index.read() as cur:
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    disk.fill(leave)
    failed = False
    for i in range(30):
        files, rows = on_disk(store), indexed(store)
        try:
            store.move(f"m/bp{i}", f"n{i}/deeper/bp{i}.blueprint.yaml")
        except LocalStoreError as exc:
            assert_disk_full(exc)
            assert on_disk(store) == files
            assert indexed(store) == rows
            failed = True
            break
    assert failed
    disk.free()
    assert_clean(store)


def test_reopen_and_reconcile_on_a_full_disk_make_nothing_worse(disk: DiskSpace) -> None:
    s = open_store(disk)
    for i in range(20):
        s.save(f"r/bp{i}.blueprint.yaml", text(i))
    s.close()
    root = disk.root / "home" / "blueprints"
    # Changes made while the store was closed: edits, new files without meta, a removal.
    for i in range(10):
        (root / f"r/bp{i}.blueprint.yaml").write_text(text(i, "edited"))
    for i in range(10):
        (root / f"new/n{i}.blueprint.yaml").parent.mkdir(exist_ok=True)
        (root / f"new/n{i}.blueprint.yaml").write_text(text(100 + i))
    (root / "r/bp19.blueprint.yaml").unlink()
    (root / "r/bp19.blueprint.meta.json").unlink()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for leave in (0, 16 << 10, 64 << 10):
        disk.free()
        disk.fill(leave)
        try:
            s = open_store(disk)
        except StorageError as exc:
            assert_disk_full(exc)
        else:
            s.close()
        # Nothing a user had is gone or changed; at most meta files were added.
        now = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
        assert {p: b for p, b in now.items() if p in before} == before
        assert all(
            p.name.endswith((".meta.json", ".localstore-folder")) for p in set(now) - set(before)
        )
    disk.free()
    s = open_store(disk)
    try:
        assert_clean(s)
        live = {path for path, _, _ in indexed(s).values()}
        assert {f"new/n{i}.blueprint.yaml" for i in range(10)} <= live
        assert "r/bp19.blueprint.yaml" not in live
        for i in range(10):
            assert s.load(f"r/bp{i}").content == text(i, "edited")
    finally:
        s.close()


@pytest.mark.parametrize("leave", [0, 32 << 10, 128 << 10, 512 << 10])
def test_sync_apply_out_of_space_keeps_the_cursor_and_loses_nothing(
    disk: DiskSpace, tmp_path: Path, leave: int
) -> None:
    server = MemoryServer()
    a = open_device(tmp_path, "a", server)
    b = open_device(disk.root, "b", server)
    try:
        a.store.save_many(
            [
                SaveRequest(path=f"p{i % 7}/bp{i}.blueprint.yaml", content=text(i))
                for i in range(150)
            ]
        )
        a.sync()
        with b.store.index.read() as cur:
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        disk.fill(leave)
        with pytest.raises(LocalStoreError) as info:
            b.sync()
        assert isinstance(info.value, StorageError), repr(info.value)
        # Whatever the cursor passed is applied: every row up to it is in b's index.
        with b.store.index.read() as cur:
            cursor = sync_state.get_cursor(cur)
        have = {ident for ident in indexed(b.store)}
        with server.lock:
            passed = {rid for rid, o in server.rows.items() if o.row.seq <= cursor}
        assert passed <= have
        disk.free()
        b.sync()
        assert b.snapshot() == a.snapshot()
        assert_clean(b.store)
    finally:
        close_device(a)
        close_device(b)


def test_daemon_log_writes_on_a_full_disk_do_not_raise(
    disk: DiskSpace, capsys: pytest.CaptureFixture[str]
) -> None:
    state = disk.root / "state"
    handlers = configure_logging(state, stderr=False)
    logger = logging.getLogger("sync.daemon")
    try:
        logger.info("before")
        disk.fill()
        for i in range(2000):
            logger.warning("on a full disk %d %s", i, "x" * 200)
        disk.free()
        logger.info("after the disk was freed")
        for h in handlers:
            h.flush()
        assert "after the disk was freed" in (state / "daemon.log").read_text()
    finally:
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()


def test_check_fix_out_of_space_for_the_index_rewrite_gives_the_space_back(
    disk: DiskSpace,
) -> None:
    """check --fix rewrites an index made before incremental auto_vacuum (VACUUM), which needs
    about the index's size again. Out of space, the conversion waits for the next check; but the
    rewrite's pages it had written stayed in the WAL, and the disk stayed full for the store that
    ran it (and for every other program) until a checkpoint reset the WAL: the next save failed.
    """
    from tests.store.test_index_free_space import _make_pre_vacuum_index

    home = disk.root / "home"
    with localstore.open(home=home, maintenance=False) as s:
        s.save_many([SaveRequest(f"f/bp{i}", text(i)) for i in range(150)])
        db = s.paths.index_db
    _make_pre_vacuum_index(db)
    store = localstore.open(home=home, maintenance=False)
    try:
        disk.fill(leave=db.stat().st_size // 3)
        report = store.check(fix=True)
        [problem] = [p for p in report.problems if p["kind"] == "index-not-vacuumed"]
        assert "disk is full" in problem["detail"]
        assert not db.with_name(db.name + "-wal").exists() or (
            db.with_name(db.name + "-wal").stat().st_size == 0
        )
        store.save("after", "name: after\n")  # the space the rewrite took is free again
        disk.free()
        report = store.check(fix=True)
        assert [f["kind"] for f in report.fixed] == ["index-vacuumed"]
        assert store.load("after").content == "name: after\n"
    finally:
        store.close()
