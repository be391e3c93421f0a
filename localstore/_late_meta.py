"""A blueprint's own meta file arriving after the store gave its YAML a meta of its own.

A YAML that appears without its meta gets a new id (the watcher waits ``write_quiet_ms`` for the
meta first, reconcile on open does not wait). Tools that bring the meta later than that (a sync
client pulling the YAML seconds before the meta, ``cp *.yaml`` then ``cp *.meta.json``, a big
unzip, a home copied piecewise) then put the real meta over the one the store made up. The
arriving meta is the identity: the made-up id is retired and nothing that happened to it is lost.

- **Retired, not renamed.** The made-up id is recorded deleted (its history stays under it), and
  the arriving id is recorded as the blueprint. Renaming the row in place would leave no trace
  locally, but a sync that had already pushed the made-up id (or has its push in flight; the
  engine holds no lock over the network call) would then keep it live on the server for good:
  a ghost blueprint on every device. A delete is what sync needs in every case: never pushed,
  it is settled without a word (``SyncEngine._changes_for``); pushed, its tombstone goes up.
  The delete event says why, so a UI or ``localstore watch`` does not show a file deleted for
  nothing. This is also how sync itself gives a blueprint a new id (``_take_new_id``).
- **An edit made meanwhile follows the version that arrived.** The arriving id's history first
  gets the YAML as it arrived (the made-up id's first revision), then the current file. Sync
  finds the server's version of that id in this history (``_apply._find_base``) and pushes the
  edit on it; with the edit alone, it merged without a base and made a conflict copy of the
  user's own edit on every device.
- **A made-up identity the user described is kept beside it.** A name, tags, a description set
  on the made-up id (an app's save) are the user's work: that blueprint moves to
  ``<name> (kept <id>).blueprint.yaml`` with its id, meta and content, and the arriving one takes
  the path. Both are reported (a WARNING, and the ``moved`` event's detail).

Only a made-up meta is treated so: the first revision of the blueprint at the path came from a
file (origin ``external``) with the meta the store writes for a lone YAML (the default name, no
description, tags or other fields, created == modified). Any other meta put over a pair is the
old case (another pair's meta pasted over it: that blueprint is replaced), and so is a copy of a
live pair's meta (reconcile gives the copy a new id; it is no YAML's own meta come late).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from localstore import files as fs
from localstore._revisions import revision_text
from localstore.blueprint import BlueprintMeta, decode_meta
from localstore.errors import InvalidInputError, StorageError, UnsafePathError

if TYPE_CHECKING:
    from localstore._reconcile_ingest import _ReconcileIngest
    from localstore.store import CheckReport, Row

log = logging.getLogger("localstore.reconcile")


class MadeUp(NamedTuple):
    """A blueprint whose meta the store made up for a lone YAML."""

    arrived: bytes  # the YAML as it was first recorded (as the tool put it down)
    described: bool  # the user has since changed its meta (name, tags, ...)


def made_up(cur: Any, row: Row) -> MadeUp | None:
    """What ``row`` holds of a meta the store made up for its lone YAML, or None if its meta
    was not made up by the store."""
    found = cur.execute(
        "SELECT origin, path, content, meta FROM revisions WHERE id = ? AND rev = 1", (row.id,)
    ).fetchall()
    if not found:
        return None
    origin, path, content, meta_text = found[0]
    if origin != "external":
        return None
    try:
        first = decode_meta(revision_text(meta_text).encode("utf-8"), source="history")
    except InvalidInputError:
        return None
    if first != _as_made_up(first, str(path)):
        return None
    described = _without_modified(row.meta) != _without_modified(first)
    return MadeUp(revision_text(content).encode("utf-8"), described)


def _as_made_up(meta: BlueprintMeta, path: str) -> BlueprintMeta:
    """The meta the reconciler writes for a lone YAML at ``path``, with ``meta``'s id and time."""
    return BlueprintMeta(
        id=meta.id, name=fs.display_name(path), created=meta.created, modified=meta.created
    )


def _without_modified(meta: BlueprintMeta) -> BlueprintMeta:
    return dataclasses.replace(meta, modified="")


def retire(
    rec: _ReconcileIngest,
    cur: Any,
    row: Row,
    found: MadeUp,
    arriving: BlueprintMeta,
    report: CheckReport,
) -> bytes | None:
    """Make way for ``arriving`` at ``row``'s path; the YAML to record under the arriving id
    before the current file (the version that arrived), or None."""
    if found.described:
        _keep_beside(rec, cur, row, arriving, report)
        return None
    detail = (
        f"its own meta file came after this store had given it this id; it is now {arriving.id}"
    )
    rec._delete_locked(cur, row, report, detail=detail)
    log.info(
        "%s: its own meta file came (id %s); the id %s is retired", row.path, arriving.id, row.id
    )
    return found.arrived


def _keep_beside(
    rec: _ReconcileIngest, cur: Any, row: Row, arriving: BlueprintMeta, report: CheckReport
) -> None:
    """Move the blueprint the user described to a path of its own, as it is indexed."""
    store = rec.store
    content = store._revision_content(row.id, row.rev)
    for target in [*_kept_paths(rec, cur, row), *_random_paths(row)]:
        prepared = store._prepare(target, content, row.meta)
        if _place_pair(store.root, target, prepared.meta_bytes, prepared.yaml_bytes):
            break
    else:
        raise fs.NameTakenError(str(store.root / target))
    from localstore._reconcile import _Scan

    mark = len(rec.events)
    # (No stats for the new pair: the next look reads it, finds it recorded, and keeps its stats.)
    rec._record(cur, row, prepared, target, _Scan(), report)
    explain_kept(rec, mark, row.path, arriving.id, target, report)


def kept_before(rec: _ReconcileIngest, cur: Any, row: Row, rel: str) -> str | None:
    """The arriving id, if ``row`` found at ``rel`` is a described made-up blueprint that was
    being kept beside it when the process died (the kept pair written, nothing recorded).

    The next reconcile finds the pair at the kept name and records a move, as any: without
    this, with nothing to say why the user's blueprint moved, nor to merge the two.
    """
    if rel not in _candidates(row):
        return None
    found = made_up(cur, row)
    if found is None or not found.described:
        return None
    arriving = rec._meta_id_at(row.path)  # (the meta that came late, still at the old path)
    return arriving if arriving is not None and arriving != row.id else None


def explain_kept(
    rec: _ReconcileIngest, mark: int, path: str, arriving_id: str, target: str, report: CheckReport
) -> None:
    """Say why the blueprint at ``path`` was moved to ``target`` (the events since ``mark``, a
    problem and a WARNING): the same whether it was kept beside at once or after a kill."""
    why = (
        f"its own meta file (id {arriving_id}) came to {path} after this blueprint had been "
        f"given a name, tags or a description here; both are kept: {path} is now "
        f"{arriving_id}, and this one was moved to {target}; merge them and delete one"
    )
    rec.events[mark:] = [dataclasses.replace(e, detail=e.detail or why) for e in rec.events[mark:]]
    report.problems.append({"kind": "late-meta", "path": target, "detail": why})
    log.warning("%s", why)


def _candidates(row: Row) -> list[str]:
    """The paths beside ``row``'s a kept blueprint may take, in order of preference."""
    folder = fs.folder_of(row.path)
    stem = fs.display_name(row.path)
    short = row.id[:8]
    out = []
    for candidate in (f"{stem} (kept {short})", f"kept {short}"):
        rel = f"{folder}/{candidate}{fs.YAML_SUFFIX}" if folder else candidate + fs.YAML_SUFFIX
        try:
            out.append(fs.normalize_path(rel))
        except UnsafePathError:
            continue  # (too long a name with the mark added)
    # (The id is a name no other blueprint can have.)
    out.append(f"{folder}/{row.id}{fs.YAML_SUFFIX}" if folder else row.id + fs.YAML_SUFFIX)
    return out


def _random_paths(row: Row, count: int = 3) -> list[str]:
    """Last resorts after every candidate's name was taken (a file named like the id itself
    too): raising then failed this reconcile pass, and every later one while those files
    stayed. A random mark beside the id: a name nobody else makes."""
    folder = fs.folder_of(row.path)
    names = [f"{row.id} {secrets.token_hex(4)}{fs.YAML_SUFFIX}" for _ in range(count)]
    return [f"{folder}/{name}" if folder else name for name in names]


def _kept_paths(rec: _ReconcileIngest, cur: Any, row: Row) -> list[str]:
    """The free paths beside ``row``'s for the kept blueprint, best first: ``<stem> (kept
    <id>)``, then the id's own name (tried even if a file has it: see _place_pair)."""
    *free, last = _candidates(row)
    out = []
    for rel in free:
        taken = cur.execute(
            "SELECT 1 FROM blueprints WHERE path_key = ? AND deleted = 0", (fs.path_key(rel),)
        ).fetchall()
        if not taken and not (rec.store.root / rel).exists():
            out.append(rel)
    return [*out, last]


def _place_pair(root: Path, target: str, meta_bytes: bytes, yaml_bytes: bytes) -> bool:
    """Write the kept pair at ``target``, both names new; False (nothing of it left) if a file
    took one of them since the look (then the next candidate is tried). Raises StorageError.

    ``atomic_write_many`` renamed over such a file (a tool copying a folder in, an editor's
    new file): lost, in no revision."""
    pending = fs.PendingWrites(expected_files=2)
    try:
        for path, data in (
            (root / fs.meta_path_for(target), meta_bytes),
            (root / target, yaml_bytes),
        ):
            pending.add(path, data, new=True)
        pending.commit()
    except fs.NameTakenError:
        for placed, seen in pending.placed.items():
            # (Ours just placed: removed, unless that program saved over it too: that file
            # goes back, or stays under an aside name, which reconcile keeps.)
            with contextlib.suppress(OSError):
                fs.remove_placed(placed, seen)
        return False
    except StorageError:
        pending.abort()
        raise
    return True
