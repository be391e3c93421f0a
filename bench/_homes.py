"""Where the benchmarks put their homes: a temp folder in a block group no recent delete touched.

This VM's root filesystem is ext4 *without a journal*. There, the kernel's inode allocator skips
every inode deleted in the last 1-5 minutes (``recently_deleted()`` in fs/ext4/ialloc.c: 60 s,
300 s while the inode table block is still dirty; only when the filesystem has no journal), and
it looks for a free inode in the block group of the new file's folder. So after a test suite or
the previous benchmark deleted tens of thousands of files under ``/tmp``, each new file there
costs 100-1,000 us of kernel CPU instead of 15-30 us, for minutes (measured: 29 us in a fresh
group against 194-912 us in ``/tmp``'s and ``/work``'s groups at the same moment). A journaled
ext4, APFS or NTFS, what users have, never does this; a benchmark that deletes its homes made the
next one (or its own next run) slower, and the figures followed what ran before them.

The parent folder gets ext4's "top of directory hierarchy" attribute (``chattr +T``,
``FS_TOPDIR_FL``): the Orlov allocator then places each new subfolder (each benchmark run's temp
folder) in a block group of its own chosen by the hash of its random name, as it does for
folders at the root of the filesystem. The engine and its peers (the bare write, diskcache) run
in the same folder, so the ratios compare like with like. ``LOCALSTORE_BENCH_PLAIN_TMP=1`` puts
the homes in a plain temp folder instead (to see the difference); elsewhere (tmpfs, other
filesystems, other systems) the attribute is refused or means nothing and the folder is an
ordinary temp folder.
"""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# linux/fs.h: _IOR('f', 1, long) and _IOW('f', 2, long); the kernel reads and writes an int.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000


def _set_topdir(folder: Path) -> bool:
    """Give ``folder`` the top-directory attribute; False where the filesystem refuses it."""
    if not sys.platform.startswith("linux"):
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
        if not flags[0] & _FS_TOPDIR_FL:
            flags[0] |= _FS_TOPDIR_FL
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags, True)
        return True
    except OSError:  # tmpfs, btrfs, a sandbox: an ordinary folder
        return False
    finally:
        os.close(fd)


def bench_dir(prefix: str) -> tuple[Path, str]:
    """A new temp folder for a benchmark's homes, and a line saying where it is and why."""
    if os.environ.get("LOCALSTORE_BENCH_PLAIN_TMP") == "1":
        return Path(
            tempfile.mkdtemp(prefix=prefix)
        ), "a plain temp folder (LOCALSTORE_BENCH_PLAIN_TMP=1)"
    parent = Path(tempfile.gettempdir()) / "localstore-bench"
    parent.mkdir(exist_ok=True)
    spread = _set_topdir(parent)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    how = (
        "a block group of its own (ext4 top-directory attribute on its parent; see bench/_homes.py)"
        if spread
        else "an ordinary temp folder (this filesystem has no top-directory attribute)"
    )
    return folder, how


def create_probe(directory: Path, n: int = 500) -> float:
    """Median microseconds to create (open O_CREAT|O_EXCL, write 1.5 KB, close) one new file."""
    directory.mkdir()
    data = os.urandom(1500)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        fd = os.open(directory / f"p{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        samples.append((time.perf_counter() - t) * 1e6)
    return statistics.median(samples)


_PROBE_YAML = "".join(
    f"step_{i}:\n  run: make target-{i} && echo done\n  needs: [build, test]\n  retries: {i % 4}\n"
    for i in range(30)
).encode()


def cpu_probe(rounds: int = 5) -> float:
    """Median milliseconds of a fixed piece of CPU work like a save's: Python bytecode, a sha256
    of 2 MB, and libyaml's syntax check of a 2 KB document 100 times (as the save's YAML check).

    This VM's CPU speed varies up to 2.8x between sessions (the same download took 0.84 and 2.38
    CPU s), so every report prints this beside its figures: compare runs of different days by it.
    """
    import hashlib

    import yaml

    # libyaml's bare parser, as localstore.blueprint uses it (None without libyaml).
    loader = getattr(yaml, "CSafeLoader", None)
    parser_cls = loader.__mro__[1] if loader is not None else None
    blob = bytes(range(256)) * 8192
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        total = 0
        for i in range(100_000):
            total += i * i % 7
        hashlib.sha256(blob).digest()
        for _ in range(100):
            if parser_cls is not None:
                parser = parser_cls(_PROBE_YAML)
                try:
                    parser.raw_parse()
                finally:
                    parser.dispose()
            else:
                yaml.safe_load(_PROBE_YAML)
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples)


def disk_report(folder: Path, how: str) -> str:
    """Where the homes are, and what creating a file costs there and in a plain temp folder now.

    The probe's files stay in ``folder`` until the benchmark removes it: deleted, they would be
    500 recently deleted inodes that the run's own creates must skip."""
    here = create_probe(folder / "probe")
    plain = Path(tempfile.mkdtemp(prefix="ls-probe-"))
    try:
        there = create_probe(plain / "probe")
    finally:
        shutil.rmtree(plain)
    return (
        f"homes in {folder}: {how}\n"
        f"file create now: {here:.1f} us/file here, {there:.1f} us/file in a plain temp folder "
        "(median of 500)\n"
        f"cpu reference now: {cpu_probe():.2f} ms (bench/_homes.py cpu_probe: fixed work, median "
        "of 5; higher = a slower CPU phase)"
    )
