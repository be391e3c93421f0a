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
  API, the conflict copy deleted, another terminal), or its record dropped with the resolved
  records past their retention: removed once both its last change and the resolution lie
  ``KEPT_MERGE_DAYS`` behind, the retention of resolved conflict records. The text may be the
  only copy of a merge nobody took, so it stays as long as `conflicts list --all` shows the
  conflict, and a file the person edits again stays that long after the edit;
* its record lost with the index (a damaged one set aside and rebuilt by ``check --fix``): never
  removed. Nothing says that conflict was settled, and no command can take the file any more;
  it is the person's to copy from and delete. Such a file bears a number below the first one
  the rebuilt index gave (``sync._state.conflicts_from``).

Nothing kept here is ever written over. A rebuilt index numbers its conflicts past the highest
number kept here (:func:`highest_kept`, given to ``add_conflict``), not from 1 again: its
conflict #1's merge replaced the lost conflict #1's. A later failed attempt at the same conflict
keeps its merge under the usual name, and the one kept before (which the person may have been
fixing) moves to ``conflict-CID.merged.K.yaml`` first, under the same rules.

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

# conflict-CID.merged.yaml, the last merge kept; conflict-CID.merged.K.yaml, those kept before.
_KEPT_NAME = re.compile(r"conflict-([0-9]{1,18})\.merged(?:\.([0-9]{1,9}))?\.yaml")


def kept_merge_path(state_dir: Path, cid: int) -> Path:
    """Where the merge of conflict ``cid`` is kept."""
    return state_dir / MERGES_DIR / f"conflict-{cid}.merged.yaml"


def highest_kept(state_dir: Path) -> int:
    """The highest conflict number a file kept in STATE/merges/ bears; 0 for none."""
    try:
        names = os.listdir(state_dir / MERGES_DIR)
    except FileNotFoundError:  # (none kept: the usual case)
        return 0
    except OSError as exc:
        # (A folder this user cannot list cannot be written to either: keep_merge fails.)
        log.warning("cannot list the kept merges in %s: %s", state_dir / MERGES_DIR, exc)
        return 0
    return max((int(m[1]) for m in map(_KEPT_NAME.fullmatch, names) if m), default=0)


def keep_merge(state_dir: Path, cid: int, merged: bytes) -> tuple[Path, Path | None]:
    """Keep a merge conflict ``cid`` did not take; its path, and where the merge kept before
    for ``cid`` went (None when there was none, or it held the same bytes).

    The last merge is the one to carry on from, so it takes the usual name, atomically (a kill
    or a full disk during the write leaves the earlier one whole); the earlier one, which the
    person may have been fixing as the error said, is copied to the next free
    ``conflict-CID.merged.K.yaml`` first: it was overwritten. Raises StorageError."""
    kept = kept_merge_path(state_dir, cid)
    fs.make_dirs(kept.parent, mode=0o700)
    earlier = _keep_earlier(kept, cid, merged)
    try:
        fs.atomic_write(kept, merged, mode=0o600)
    except BaseException:
        if earlier is not None:  # (the earlier one is still whole under its name: one is enough)
            fs.discard(str(earlier))
        raise
    return kept, earlier


def _keep_earlier(kept: Path, cid: int, merged: bytes) -> Path | None:
    """Copy the merge kept at ``kept`` to a new name unless it is ``merged``; the copy's path."""
    try:
        # (StorageError when unreadable: refused rather than written over unread.)
        before = fs.read_regular(kept)
    except FileNotFoundError:  # (none kept yet; a link or folder in its place is not a merge)
        return None
    if before == merged:
        return None
    try:
        stamp = os.lstat(kept)
        names = os.listdir(kept.parent)
    except OSError as exc:
        raise fs.map_os_error(exc, "cannot keep the merge kept before at", kept) from exc
    taken = {int(m[2]) for m in map(_KEPT_NAME.fullmatch, names) if m and m[2]}
    n = max(taken, default=0)
    while True:
        n += 1
        earlier = kept.with_name(f"conflict-{cid}.merged.{n}.yaml")
        # (Exclusive: a name taken since the listing, another terminal's, is never replaced.)
        if fs.create_file(earlier, before, mode=0o600):
            break
    # Its own last change, not now: the sweep's age rule reads it, and so does the person.
    os.utime(earlier, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    log.info("conflict #%d: the merge kept before is now at %s", cid, earlier)
    return earlier


def drop_if_taken(state_dir: Path, cid: int, taken: str) -> bool:
    """Remove the kept merge of conflict ``cid`` if ``taken`` (a resolve's ``--take FILE``) is
    that file (the last one kept, or one kept before it); True if it went. Called only after the
    resolve committed."""
    match = _KEPT_NAME.fullmatch(Path(taken).name)
    if match is None or int(match[1]) != cid:
        return False
    kept = state_dir / MERGES_DIR / match[0]
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
        first = st.conflicts_from(cur) if record is None else 0
    if record is None:
        # Dropped past the retention (resolved long ago) only if this index numbered it;
        # otherwise its conflict went with a lost index, settled or not: the person's to delete.
        return first is not None and cid >= first
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
