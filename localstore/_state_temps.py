"""Temp files a killed writer left in the home's ``state/`` folder, and their sweep.

The writes there are rare and small, each a temp file renamed over its target: ``daemon.json``
(``.daemon-*.lstmp``: it holds the daemon's control token), the sync pause (``.paused-*``), the
cloud session's marker (``.session-*``), the sync account and base records
(``.sync-account.json.*``, ``.sync-bases.jsonl.*``; files.atomic_write's names) and the local
cloud stack's state (``.localcloud-*.tmp``). A process killed (or a power cut) between the write
and the rename left the temp for ever: data/ and the blueprints folder have the reconcile's sweep
of stale temps, ``state/watchers/`` and ``state/merges/`` theirs; nothing looked here.

The rules are the reconcile's for data/ temps: only our own temp names (a dot, then the
``.lstmp`` suffix, or the local stack's one name), only regular files, and only once
``STALE_TEMP_SECONDS`` old by the later of their modification and change times. Each writer
renames its temp within milliseconds of making it (and a writer still writing moves the mtime),
so a temp that old is no live writer's. Run at every writable store open (the daemon opens one at
start), where it costs one listing of a folder of a few files.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

from localstore import files as fs
from localstore._reconcile import STALE_TEMP_SECONDS

log = logging.getLogger(__name__)

# sync/localcloud/service.py's temp: it predates TEMP_SUFFIX and is named apart.
_LOCALCLOUD_TEMP = (".localcloud-", ".tmp")


def is_state_temp(name: str) -> bool:
    """Whether ``name`` (in state/) is one of our writers' temp names."""
    if not name.startswith("."):
        return False
    prefix, suffix = _LOCALCLOUD_TEMP
    return name.endswith(fs.TEMP_SUFFIX) or (name.startswith(prefix) and name.endswith(suffix))


def sweep_state_temps(state_dir: Path, *, now: float | None = None) -> list[Path]:
    """Remove the stale temps of state/'s writers (see the module doc); the paths removed.

    ``now``: epoch seconds (default: the clock). Never raises OSError: a folder that cannot be
    listed (none yet, a read-only home) sweeps nothing, a temp that cannot be removed is left for
    the next open (logged).
    """
    try:
        names = os.listdir(state_dir)
    except OSError:
        return []
    cutoff = (time.time() if now is None else now) - STALE_TEMP_SECONDS
    removed: list[Path] = []
    for name in sorted(names):
        if not is_state_temp(name):
            continue
        path = Path(state_dir) / name
        try:
            st = os.lstat(path)
        except OSError:  # (renamed into place, or swept by another open, since the listing)
            continue
        # (Change time too: a rename keeps the mtime. A symlink or folder is not ours.)
        if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) > cutoff:
            continue
        try:
            fs.unlink_file(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("cannot remove the stale temp file %s: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        # (Not flushed: a removal a power cut undoes is swept again at the next open.)
        log.info("removed %d stale temp file(s) a killed write left in %s", len(removed), state_dir)
    return removed
