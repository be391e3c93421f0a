"""Homes handled the way people handle folders: restored from a backup in place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["restore_in_place"]


def restore_in_place(backup: Path, home: Path) -> None:
    """Put ``home`` back as ``backup`` had it, writing the index into its own file.

    A filesystem snapshot rolled back, `rsync --inplace`, a VM snapshot: the index keeps its
    inode and path, so nothing on this machine tells the restored home from the one that ran.
    """
    for name in ("blueprints", "state", "config", "cache"):
        shutil.rmtree(home / name, ignore_errors=True)
        if (backup / name).exists():
            shutil.copytree(backup / name, home / name)
    for extra in (home / "data").iterdir():
        if extra.name != "index.db":
            if extra.is_dir():
                shutil.rmtree(extra)
            else:
                extra.unlink()
    inode = os.stat(home / "data" / "index.db").st_ino
    with open(home / "data" / "index.db", "r+b") as fh:
        data = (backup / "data" / "index.db").read_bytes()
        fh.write(data)
        fh.truncate(len(data))
    for extra in (backup / "data").iterdir():
        if extra.name != "index.db":
            shutil.copy2(extra, home / "data" / extra.name)
    assert os.stat(home / "data" / "index.db").st_ino == inode
