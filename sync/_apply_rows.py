"""Server rows before they are applied: the meta they are stored with, which ones this device
already builds on, what to ask the server's history, and the local state of a window of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore.errors import InvalidInputError
from localstore.store import Row
from sync import _state as st
from sync.remote import RevisionProbe, ServerRow

if TYPE_CHECKING:
    from localstore.store import BlueprintStore


def _server_stamp(updated_at: str) -> str | None:
    """``updated_at`` (the server's timestamp of a row) as a meta time, or None if unreadable."""
    try:
        when = datetime.fromisoformat(updated_at)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # no zone: not the server's timestamptz; no time to make up
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stored_meta(r: ServerRow) -> dict[str, Any]:
    """The meta a server row is stored with here: as sent, a missing ``created`` or
    ``modified`` taken from the row's server timestamp (``updated_at``).

    Another client may write rows with a minimal meta. The store fills what is missing with
    its own clock, so each device stored other bytes (and another content hash, ``created``
    being part of it) for the same row: replicas differed from each other for good. Filled from
    the row alone, every device holding a revision holds the same bytes. A LocalStore device
    always sends both, so its rows are stored as sent.
    """
    meta = r.meta
    if meta.get("created") not in (None, "") and meta.get("modified") not in (None, ""):
        return meta
    stamp = _server_stamp(r.updated_at)
    if stamp is None:
        return meta
    filled = dict(meta)
    for key in ("created", "modified"):
        if filled.get(key) in (None, ""):
            filled[key] = stamp
    return filled


def refuse_unreadable(r: ServerRow) -> None:
    """Raise InvalidInputError (the engine parks the row as ``invalid_remote``) for a live row
    whose meta this client cannot hold (``ServerRow.unreadable``): what is wrong, and what to
    do, for the quarantine record and `localstore status`."""
    if r.unreadable is None or r.deleted:
        return
    raise InvalidInputError(
        f"server row {r.id} (rev {r.rev}) cannot be read here: {r.unreadable}. Correct the "
        "row's meta in the cloud's blueprints table, or delete the row there: the next sync "
        "takes the corrected row (any copy this device holds stays as it is until then)"
    )


def is_known(item: st.ItemState | None, r: ServerRow) -> bool:
    """True when this device already builds on this server write (or a later one)."""
    return item is not None and item.base_rev is not None and item.base_seq >= r.seq


def drop_known(cur: Any, rows: Sequence[ServerRow]) -> list[ServerRow]:
    """The rows this device does not already build on (see :func:`is_known`), in order."""
    items = st.items_for(cur, [r.id for r in rows])
    return [r for r in rows if not is_known(items.get(r.id), r)]


def ancestor_probes(cur: Any, rows: Sequence[ServerRow]) -> list[RevisionProbe]:
    """What to ask the server's history before applying ``rows`` (see ``Applier.ancestors``).

    A row meets a local copy this device has no base for (never synced here: an index that
    `check --fix` rebuilt, an imported bundle, a new account) and that differs from it (content,
    or path of a live row) and is dirty. Without a base the merge cannot tell an older, unedited
    copy from an edit; the server can, when the copy's hash is one of its accepted revisions of
    that id. Two ``IN (...)`` queries per 500 rows; nothing to ask in a normal sync (every row
    this device holds has a base).
    """
    items = st.items_for(cur, [r.id for r in rows])
    baseless: dict[str, ServerRow] = {}
    for r in rows:
        item = items.get(r.id)
        if item is None or item.base_rev is None:
            baseless[r.id.lower()] = r
    probes: dict[str, RevisionProbe] = {}
    ids = list(baseless)
    for i in range(0, len(ids), st.IN_CHUNK):
        part = ids[i : i + st.IN_CHUNK]
        for rid, digest, path, op_id in cur.execute(
            "SELECT id, content_hash, path, op_id FROM blueprints WHERE deleted = 0 "
            f"AND flagged IS NULL AND id IN ({','.join('?' * len(part))})",
            part,
        ):
            r = baseless[str(rid)]
            item = items.get(r.id)
            if int(op_id) <= (item.synced_op_id if item is not None else 0):
                continue  # clean: taken as it is, nothing to decide
            if digest == r.content_hash and (r.deleted or path == r.path):
                continue  # the same version: settled without asking
            probes[r.id] = RevisionProbe(r.id, str(digest), str(path))
    return list(probes.values())


class Prefetched:
    """The local state of a window of pulled rows, read with three ``IN (...)`` queries.

    Replaces four primary-key or index reads per row (sync item, local row, live holder of the
    path, and the item again for :func:`is_known`). Valid only until the store or the sync rows
    change: the engine reads a new window after every row that goes through ``apply_row``;
    saves planned into a run happen later, and ``plan_clean_save`` keeps their ids and paths
    apart itself, exactly as it did when it queried per row.
    """

    def __init__(self, store: BlueprintStore, cur: Any, rows: Sequence[ServerRow]) -> None:
        self.end = 0
        self.items = st.items_for(cur, [r.id for r in rows])
        lowered = [r.id.lower() for r in rows]
        keys = [fs.path_key(r.path) for r in rows]
        present: set[str] = set()
        self.live: dict[str, str] = {}
        for i in range(0, len(rows), st.IN_CHUNK):
            ids, part = lowered[i : i + st.IN_CHUNK], keys[i : i + st.IN_CHUNK]
            marks = ",".join("?" * len(ids))
            present.update(
                str(r[0])
                for r in cur.execute(f"SELECT id FROM blueprints WHERE id IN ({marks})", ids)
            )
            self.live.update(
                (str(r[0]), str(r[1]))
                for r in cur.execute(
                    f"SELECT path_key, id FROM blueprints WHERE path_key IN ({marks}) "
                    "AND deleted = 0",
                    part,
                )
            )
        # Only ids the index has are read in full (none in a first download).
        self._rows = {i: store.row_by_id(i, cur) for i in present}

    def local(self, blueprint_id: str) -> Row | None:
        """The index row with this id (deleted or not), as ``store.row_by_id`` gives it."""
        return self._rows.get(blueprint_id.lower())
