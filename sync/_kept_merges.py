"""Merges a conflict could not take, kept in ``STATE/merges/``, and when they go.

``localstore conflicts resolve CID --tool`` keeps a merge the conflict refused (conflict markers
left in, not UTF-8, not a valid blueprint, the conflict resolved meanwhile, a tool that saved and
then failed) as ``conflict-CID.merged.yaml``, so the person's merging outlives the tool's temp
folder. Nothing removed them, so a home collected one per such conflict for good. The rules
(docs/sync-engine.md, "How long conflict records are kept"):

* a conflict that is still open keeps its file, however old: it is the work to carry on from;
* resolved by taking that very file (``--take FILE``): it is removed at once, its text is now the
  blueprint's (and a revision in history);
* resolved any other way (``--take local|remote``, another file, ``--tool`` succeeding later, the
  API, the conflict copy deleted, another terminal), or its record gone (dropped with the
  resolved records past their retention, or lost with a rebuilt index): removed once both its
  last change and the resolution lie ``KEPT_MERGE_DAYS`` behind, the retention of resolved
  conflict records. The text may be the only copy of a merge nobody took, so it stays as long as
  `conflicts list --all` shows the conflict, and a file the person edits again stays that long
  after the edit.

The sweep runs at the start of every sync cycle (the daemon's, `localstore sync`, an app's) and
after each `conflicts resolve`: a directory listing that fails with ENOENT in the usual case, one
stat and one indexed read per file otherwise.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from localstore import files as fs
from localstore._reconcile import STALE_TEMP_SECONDS
from sync import _state as st

log = logging.getLogger("sync.engine")

MERGES_DIR = "merges"
# As long as a resolved conflict's record is kept, so the file never outlives the conflict
# that `conflicts list --all` can still show.
KEPT_MERGE_DAYS = st.RESOLVED_CONFLICT_DAYS

_KEPT_NAME = re.compile(r"conflict-([0-9]{1,18})\.merged\.yaml")


def kept_merge_path(state_dir: Path, cid: int) -> Path:
    """Where the merge of conflict ``cid`` is kept."""
    return state_dir / MERGES_DIR / f"conflict-{cid}.merged.yaml"


def keep_merge(state_dir: Path, cid: int, merged: bytes) -> Path:
    """Keep a merge conflict ``cid`` did not take; its path. A later failed attempt overwrites
    it (the last merge is the one to carry on from), atomically: a kill or a full disk during the
    write leaves the earlier one whole. Raises StorageError."""
    kept = kept_merge_path(state_dir, cid)
    fs.make_dirs(kept.parent, mode=0o700)
    fs.atomic_write(kept, merged, mode=0o600)
    return kept


def drop_if_taken(state_dir: Path, cid: int, taken: str) -> bool:
    """Remove the kept merge of conflict ``cid`` if ``taken`` (a resolve's ``--take FILE``) is
    that file; True if it went. Called only after the resolve committed."""
    kept = kept_merge_path(state_dir, cid)
    try:
        if not os.path.samefile(taken, kept):
            return False
        fs.unlink_file(kept)
    except OSError:  # (not there, or cannot be removed: the sweep's age rule takes it later)
        return False
    log.info("conflict #%d resolved with its kept merge; removed %s", cid, kept)
    return True


def sweep_kept_merges(store: Any, *, now: datetime) -> list[Path]:
    """Remove the kept merges the rules above let go, and stale temps of their writes; the
    paths removed. ``now`` is an aware UTC datetime. Never raises OSError (a file that cannot be
    removed is left for the next sweep, logged)."""
    folder = Path(store.paths.state) / MERGES_DIR
    try:
        names = os.listdir(folder)
    except OSError:  # (none kept: the usual case)
        return []
    cutoff = now - timedelta(days=KEPT_MERGE_DAYS)
    removed: list[Path] = []
    for name in sorted(names):
        path = folder / name
        match = _KEPT_NAME.fullmatch(name)
        if match is not None:
            going = _expired(store, int(match[1]), path, cutoff)
        elif name.endswith(fs.TEMP_SUFFIX):
            going = _older_than(path, now.timestamp() - STALE_TEMP_SECONDS)
        else:
            going = False  # (not ours: the person's own file)
        if going and _remove(path):
            removed.append(path)
    return removed


def _expired(store: Any, cid: int, path: Path, cutoff: datetime) -> bool:
    if not _older_than(path, cutoff.timestamp()):
        return False
    with store.index.read() as cur:
        record = st.get_conflict(cur, cid)
    if record is None:
        return True
    if record.resolved is None:
        return False
    return record.resolved < cutoff.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # (utc_now's format)


def _older_than(path: Path, epoch: float) -> bool:
    try:
        return os.lstat(path).st_mtime < epoch
    except OSError:
        return False


def _remove(path: Path) -> bool:
    try:
        fs.unlink_file(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot remove the old kept merge %s: %s", path, exc)
        return False
    log.info(
        "removed %s: its conflict is resolved (or its record gone) and the file and the "
        "resolution are over %d days old",
        path,
        KEPT_MERGE_DAYS,
    )
    return True
