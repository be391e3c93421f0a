"""What this device last synced of each blueprint, kept in a file besides the index.

The sync bases (``sync_items``: the server rev, seq, content hash and path this device builds
on) live in the index, and ``localstore check --fix`` rebuilds a damaged index from the files
without them. The files say what a blueprint *is* now, never what it was when this device last
synced it, so three local intents were lost with the index (docs/sync-engine.md, "After `check
--fix`"): a delete not uploaded yet (no file is left to say so: the server's copy came back), a
rename made together with an edit (the copy matched no server revision, so the server's path
won), and an edit back to an older text (it matched an older server revision, so it was taken
as unedited and the server's newer text replaced it).

So the engine also appends the bases that each step of a cycle changes to
``state/sync-bases.jsonl`` (the record may be ahead of the index, never silently behind it), and
a cycle on an index that has no sync knowledge takes them back
(``SyncEngine._recover_bases``). This is sync bookkeeping, not user data: DESIGN.md keeps sync
state out of the user's files, and the state folder is where the home's account record
(``sync.account_record``) already lives for the same reason.

Format: one JSON document per line. The first is ``{"v": 1, "identity": ...}`` (bases mean
nothing to another account or project); every other line is ``[id, rev, seq, hash, path,
deleted]``, the last line of an id wins. Each step of a cycle that takes server rows as bases
(a push batch's results, a pulled page) first appends ``{"step": [ids]}`` (fsynced) and, right
after the index committed, the bases of those ids and ``{"done": []}``: a step the file says is
open is one a kill cut between the two, whose recorded bases may be older than the index's, and
the recovery does not trust them for those ids (see the engine). A torn last line (a kill during
the append) is skipped. The file is rewritten whole (temp, fsync, rename) when it is
new, belongs to another identity, or has grown to several times the size of what it holds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_str  # C, as json.dumps uses
from pathlib import Path

from localstore import files as fs
from localstore._state_temps import replace_state_record

__all__ = [
    "RECORD_FILE",
    "BaseEntry",
    "append",
    "open_step",
    "read",
    "record_path",
    "rewrite",
    "unsettled",
]

log = logging.getLogger("sync.engine")

RECORD_FILE = "sync-bases.jsonl"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class BaseEntry:
    """One recorded base: the server row this device last built on for ``id``."""

    id: str
    rev: int
    seq: int
    content_hash: str
    path: str
    deleted: bool

    def line(self) -> str:
        bid, rev, seq, digest, path, deleted = (
            self.id,
            self.rev,
            self.seq,
            self.content_hash,
            self.path,
            self.deleted,
        )
        if (
            type(rev) is int
            and type(seq) is int
            and type(deleted) is bool
            and type(bid) is str
            and type(digest) is str
            and type(path) is str
        ):
            # What json.dumps writes, written out (a download appends a line per blueprint, and
            # json.dumps with an argument builds an encoder per call).
            q = _json_str
            return (
                f"[{q(bid)}, {rev}, {seq}, {q(digest)}, {q(path)}, "
                f"{'true' if deleted else 'false'}]"
            )
        return json.dumps([bid, rev, seq, digest, path, deleted], ensure_ascii=False)


def record_path(state_dir: Path) -> Path:
    """The record file in a home's state folder."""
    return state_dir / RECORD_FILE


def _header(identity: str) -> str:
    return json.dumps({"v": _VERSION, "identity": identity}, ensure_ascii=False)


def _entry(raw: object) -> BaseEntry | None:
    if not isinstance(raw, list) or len(raw) != 6:
        return None
    rid, rev, seq, digest, path, deleted = raw
    if not (
        isinstance(rid, str)
        and isinstance(rev, int)
        and isinstance(seq, int)
        and isinstance(digest, str)
        and isinstance(path, str)
        and isinstance(deleted, bool)
    ):
        return None
    return BaseEntry(rid, rev, seq, digest, path, deleted)


def read(state_dir: Path, identity: str) -> dict[str, BaseEntry] | None:
    """The recorded bases of ``identity`` by id, or None (no file, another identity, unreadable).

    An unreadable record is logged and ignored: the recovery then works as without one.
    """
    path = record_path(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("sync: cannot read the record of synced bases %s (%s); ignored", path, exc)
        return None
    lines = text.split("\n")
    try:
        head = json.loads(lines[0])
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("v") != _VERSION:
        log.warning("sync: the record of synced bases %s has no valid header; ignored", path)
        return None
    if head.get("identity") != identity:
        return None
    out: dict[str, BaseEntry] = {}
    for line in lines[1:]:
        if not line:
            continue
        try:
            entry = _entry(json.loads(line))
        except ValueError:
            entry = None
        if entry is None:
            continue  # a torn last line (a kill during the append), or a foreign one
        out[entry.id] = entry
    return out


def rewrite(state_dir: Path, identity: str, entries: Iterable[BaseEntry]) -> None:
    """Durably replace the record with ``entries``. Raises StorageError."""
    # state/ only: with the home deleted or moved away, its folders are not made again here.
    fs.ensure_dir(state_dir, mode=0o700, parents=False)
    body = "\n".join([_header(identity), *(e.line() for e in entries)]) + "\n"
    replace_state_record(record_path(state_dir), body.encode("utf-8"))


_STEP = "step"
_DONE = "done"


def _marker(kind: str, ids: Iterable[str] = ()) -> str:
    return json.dumps({kind: list(ids)}, ensure_ascii=False)


def open_step(state_dir: Path, ids: Iterable[str]) -> None:
    """Say, durably, that the bases of ``ids`` are about to change. Raises OSError.

    Written before the index commits a step's bases; the step's :func:`append` with ``done``
    closes it. A recovery that finds it still open (:func:`unsettled`) knows that the recorded
    bases of those ids may be older than what the lost index had.
    """
    _write(record_path(state_dir), (_marker(_STEP, ids) + "\n").encode("utf-8"))


def unsettled(state_dir: Path) -> set[str]:
    """The ids of steps opened and never closed (a kill between a step's commit and its append).

    An unreadable file has none (``read`` has already said it is ignored).
    """
    try:
        text = record_path(state_dir).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    open_ids: set[str] = set()
    for line in text.split("\n")[1:]:
        if not line.startswith("{"):
            continue
        try:
            mark = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if not isinstance(mark, dict):
            continue
        if _DONE in mark:
            open_ids.clear()
        ids = mark.get(_STEP)
        if isinstance(ids, list):
            open_ids.update(i for i in ids if isinstance(i, str))
    return open_ids


def append(state_dir: Path, entries: Iterable[BaseEntry], *, done: bool = False) -> int:
    """Append ``entries`` and fsync; returns the file's size afterwards. Raises OSError.

    ``done``: the record now holds every base the index has, which closes the open steps.
    """
    lines = [e.line() for e in entries]
    if done:
        lines.append(_marker(_DONE))
    return _write(record_path(state_dir), "".join(x + "\n" for x in lines).encode("utf-8"))


def _write(path: Path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        if data:
            os.write(fd, data)
            os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)
