"""This home's device id, and telling a copied or moved home from the one that ran here.

The device id lives in the index (``settings.device_id``). Sync relies on it naming one live
home: the server deduplicates pushes by (device, op id), and a row written under this device id
is taken for one of this home's own writes (a push whose response was lost). A home copied to a
second machine, or to a second folder, and used beside the original carried the same id: the
two drew the same op ids and each took the other's writes for its own (a delete made on the
copy won over the original's later edit, which "edit beats delete" must keep).

So the index also keeps a fingerprint of where it lives (``settings.device_fingerprint``): the
machine id, the index file's real path and its inode. An index opened with another fingerprint
is a copy (or the home moved) and takes a new device id; everything else (blueprints, history,
bases, dirty marks, cursor) stays, so nothing is uploaded or downloaded again. A legitimate move
of the home on the same machine also gets a new id: harmless, since the id only names the
writer, and telling a move from a copy is impossible from inside the copy (both look the same;
keeping the id for a move would keep it for the copy whose original stayed where it was).
The inode is what tells a copy made at the same path (another machine with the same user
name, a backup restored by writing new files) from the original; the machine id catches a disk
image cloned onto another machine, which keeps paths and inodes.

An index written before fingerprints existed keeps its id and gets its fingerprint now: such a
home cannot tell whether it was copied. The server's op-id check (migration
``20261122000800``) keeps two homes under one id from losing each other's changes, and the sync
engine replaces the id (:func:`replace_device_id`) at the first op id the server says another
change used.
Rejected: the filesystem's device number in the fingerprint (it changes across reboots for
removable and network filesystems, and would rotate the id on every mount).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

__all__ = [
    "DEVICE_KEY",
    "FINGERPRINT_KEY",
    "ensure_device_id",
    "home_fingerprint",
    "machine_id",
    "replace_device_id",
]

log = logging.getLogger("localstore")

DEVICE_KEY = "device_id"
FINGERPRINT_KEY = "device_fingerprint"

# systemd's and D-Bus's places for the machine id (Linux, and some BSDs).
_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id", "/etc/hostid")


def machine_id() -> str:
    """A stable id of this machine ("" when the platform offers none cheaply)."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        try:
            import winreg

            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography")
            return str(winreg.QueryValueEx(key, "MachineGuid")[0])
        except OSError:
            return ""
    for name in _MACHINE_ID_FILES:
        try:
            with open(name, "rb") as fh:
                value = fh.read(256).strip()
        except OSError:
            continue
        if value:
            return value.decode("ascii", "replace")
    # macOS keeps its hardware UUID behind IOKit; asking `ioreg` costs a process per open, so
    # there the fingerprint is the path and the inode.
    return ""


def home_fingerprint(index_path: Path) -> str:
    """Where this index lives: machine id, real path and inode, hashed. Raises OSError."""
    real = os.path.realpath(index_path)
    inode = os.stat(real).st_ino
    raw = f"{machine_id()}\0{real}\0{inode}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).hexdigest()[:32]


def _read(cur: Any, key: str) -> str | None:
    rows = cur.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchall()
    return str(rows[0][0]) if rows else None


def _put(cur: Any, key: str, value: str) -> None:
    cur.execute(
        "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def ensure_device_id(index: Any, index_path: Path, new_id: Callable[[], str]) -> str:
    """This home's device id: kept while the index stays where it is, new for a copy or a move.

    ``index`` is the open :class:`localstore.index.Index`. Raises what the index raises.
    """
    try:
        here: str | None = home_fingerprint(index_path)
    except OSError as exc:  # (the index is open, so hardly ever): never fail an open over it
        log.warning("could not tell whether this home was copied (%s); keeping its id", exc)
        here = None
    # A read first, so opening a store does not wait for (nor need) the write lock while
    # another process writes: the usual open finds both values as they should be.
    with index.read() as cur:
        device, seen = _read(cur, DEVICE_KEY), _read(cur, FINGERPRINT_KEY)
    if device is not None and (seen == here or here is None):
        return device
    try:
        with index.write() as cur:
            device, seen = _read(cur, DEVICE_KEY), _read(cur, FINGERPRINT_KEY)
            if device is None:
                device = new_id()
                _put(cur, DEVICE_KEY, device)
            elif here is not None and seen is not None and seen != here:
                old, device = device, new_id()
                _put(cur, DEVICE_KEY, device)
                log.info(
                    "this home was copied or moved (%s); device id %s replaces %s, nothing else "
                    "changes",
                    index_path,
                    device,
                    old,
                )
            if here is not None and seen != here:
                _put(cur, FINGERPRINT_KEY, here)
        return device
    except apsw.Error as exc:
        from localstore.index import map_apsw_error

        # (write() leaves its body's errors to the caller.) A home that cannot be written, a
        # snapshot whose index SQLite opened read-only by itself, reached the user as a raw
        # apsw.ReadOnlyError traceback instead of PermissionDeniedError.
        raise map_apsw_error(exc, f"record this home's device id in {index_path}") from exc


def recorded_device_id(index: Any, new_id: Callable[[], str]) -> str:
    """The device id the index records, for a read-only store: neither a copy's new id nor a
    first one is written (a snapshot is a copy, but nothing it writes would keep the id). A
    fresh id, unrecorded, when there is none."""
    with index.read() as cur:
        device = _read(cur, DEVICE_KEY)
    return device if device is not None else new_id()


def replace_device_id(index: Any, new_id: Callable[[], str]) -> str:
    """Give this home a new device id now and return it (the fingerprint stays as it is).

    For the sync engine when the server shows another home pushes under this id. Raises what
    the index raises.
    """
    device = new_id()
    with index.write() as cur:
        _put(cur, DEVICE_KEY, device)
        # (A store caches the id per write transaction: under an enclosing one, not anew.)
        index.write_serial += 1
    return device
