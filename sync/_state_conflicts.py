"""Conflict records (base, local and remote text of one blueprint) for the API and the CLI, their
numbering across index rebuilds, and how long resolved ones are kept."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from localstore.blueprint import utc_now
from sync._shown import MAX_SHOWN, shown
from sync._state_keys import get_state, set_state

# The end sync._local.resolve_conflict appends to a resolution that replaced a newer change
# (its _REPLACED): the revision history keeps that change as.
_REPLACED_REV = re.compile(r"; replaced rev (\d+), changed since the conflict\Z")


@dataclass(frozen=True, slots=True)
class ConflictRecord:
    """A conflict kept for the user: base, local and remote text of one blueprint.

    ``id``/``path`` is the blueprint that holds the server's version; ``copy_id``/``copy_path`` is
    the conflict copy holding the local version (None when no copy was made). ``copy_synced``
    (path collisions only): the blueprint moved off the path already had a server row of its own,
    so it is no copy and resolving the record never deletes it.
    """

    cid: int
    id: str
    path: str
    copy_id: str | None
    copy_path: str | None
    reason: str
    base: str | None
    local: str
    remote: str
    base_rev: int | None
    remote_rev: int | None
    created: str
    resolved: str | None
    resolution: str | None
    copy_synced: bool = False

    @property
    def open(self) -> bool:
        """True until the conflict is resolved."""
        return self.resolved is None

    @property
    def replaced_rev(self) -> int | None:
        """The local revision of the blueprint this resolve wrote over although it had changed
        since the conflict (a newer edit; ``localstore restore ID REV`` brings it back)."""
        found = _REPLACED_REV.search(self.resolution or "")
        return int(found.group(1)) if found else None

    def to_dict(self, *, texts: bool = False) -> dict[str, Any]:
        """A JSON-friendly view; ``texts`` adds base, local and remote."""
        rev = self.replaced_rev
        out: dict[str, Any] = {
            "cid": self.cid,
            "id": self.id,
            "path": self.path,
            "copy_id": self.copy_id,
            "copy_path": self.copy_path,
            "reason": self.reason,
            "base_rev": self.base_rev,
            "remote_rev": self.remote_rev,
            "created": self.created,
            "resolved": self.resolved,
            "resolution": self.resolution,
            "copy_synced": self.copy_synced,
            "replaced": None if rev is None else {"id": self.id, "rev": rev},
        }
        if texts:
            out.update(base=self.base, local=self.local, remote=self.remote)
        return out


_CONFLICT_COLUMNS = (
    "cid, id, path, copy_id, copy_path, reason, base, local, remote, base_rev, remote_rev, "
    "created, resolved, resolution, copy_synced"
)


# -- conflicts ----------------------------------------------------------------------------------

# sync_state key: the first conflict number this index gave (add_conflict, conflicts_from).
CONFLICTS_FROM_KEY = "conflicts_from"


def add_conflict(
    cur: Any,
    *,
    blueprint_id: str,
    path: str,
    copy_id: str | None,
    copy_path: str | None,
    reason: str,
    base: str | None,
    local: str,
    remote: str,
    base_rev: int | None,
    remote_rev: int | None,
    copy_synced: bool = False,
    above: int = 0,
) -> int:
    """Store a conflict record; returns its number, the next after this index's last and after
    ``above`` (the highest number a file kept for a conflict bears: sync._kept_merges).

    The reason is stored escaped and cut (sync._shown), as a quarantine message is: `localstore
    conflicts` prints it, and it quotes what nobody here wrote (the app's validator, a YAML error
    naming a synced file's text, a server path)."""
    reason = shown(reason, 4 * MAX_SHOWN)
    last = cur.execute("SELECT max(cid) FROM sync_conflicts").fetchall()[0][0]
    # A rebuilt index numbers from 1 again, and a merge kept in STATE/merges/ for the lost
    # index's conflict N would be taken for the new conflict N's (and replaced by its merge).
    cid = max(int(last or 0), above) + 1
    if last is None:
        # This index's first conflict: a kept merge numbered below it, and without a record,
        # belongs to a conflict of an index lost before (sync._kept_merges keeps it).
        set_state(cur, CONFLICTS_FROM_KEY, str(cid))
    cur.execute(
        "INSERT INTO sync_conflicts (cid, id, path, copy_id, copy_path, reason, base, local, "
        "remote, base_rev, remote_rev, created, copy_synced) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            cid,
            blueprint_id,
            path,
            copy_id,
            copy_path,
            reason,
            base,
            local,
            remote,
            base_rev,
            remote_rev,
            utc_now(),
            int(copy_synced),
        ),
    )
    return cid


def has_conflict_for_copy(cur: Any, copy_id: str) -> bool:
    """Whether a conflict record (open or resolved) names ``copy_id`` as its copy."""
    return bool(
        cur.execute("SELECT 1 FROM sync_conflicts WHERE copy_id = ? LIMIT 1", (copy_id,)).fetchall()
    )


def conflicts_from(cur: Any) -> int | None:
    """The first conflict number this index gave, None when it gave none yet (a conflict record
    is never dropped while it is the highest, so a table with none never had one) or gave them
    before it recorded the first (an index older than this record: 0)."""
    first = get_state(cur, CONFLICTS_FROM_KEY)
    if first is not None:
        return int(first)
    has_any = cur.execute("SELECT 1 FROM sync_conflicts LIMIT 1").fetchall()
    return 0 if has_any else None


def _conflict_from(r: Iterable[Any]) -> ConflictRecord:
    t = list(r)
    return ConflictRecord(
        cid=int(t[0]),
        id=str(t[1]),
        path=str(t[2]),
        copy_id=None if t[3] is None else str(t[3]),
        copy_path=None if t[4] is None else str(t[4]),
        reason=shown(str(t[5]), 4 * MAX_SHOWN),  # (records stored before were raw)
        base=None if t[6] is None else str(t[6]),
        local=str(t[7]),
        remote=str(t[8]),
        base_rev=None if t[9] is None else int(t[9]),
        remote_rev=None if t[10] is None else int(t[10]),
        created=str(t[11]),
        resolved=None if t[12] is None else str(t[12]),
        resolution=None if t[13] is None else str(t[13]),
        copy_synced=bool(t[14]),
    )


def conflicts(cur: Any, *, include_resolved: bool = False) -> list[ConflictRecord]:
    """Conflict records, oldest first (open ones only unless ``include_resolved``)."""
    where = "" if include_resolved else " WHERE resolved IS NULL"
    return [
        _conflict_from(r)
        for r in cur.execute(f"SELECT {_CONFLICT_COLUMNS} FROM sync_conflicts{where} ORDER BY cid")
    ]


def get_conflict(cur: Any, cid: int) -> ConflictRecord | None:
    """One conflict record by number."""
    rows = cur.execute(
        f"SELECT {_CONFLICT_COLUMNS} FROM sync_conflicts WHERE cid = ?", (cid,)
    ).fetchall()
    return _conflict_from(rows[0]) if rows else None


def open_conflict_count(cur: Any) -> int:
    """Number of unresolved conflict records."""
    return int(
        cur.execute("SELECT count(*) FROM sync_conflicts WHERE resolved IS NULL").fetchall()[0][0]
    )


def conflicts_with_deleted_copy(cur: Any) -> list[int]:
    """Open conflict records whose conflict copy is deleted: a person settled them by deleting
    the copy (or another device did, and the delete synced here). One indexed look at the open
    records; nothing in the usual case of none."""
    return [
        int(r[0])
        for r in cur.execute(
            "SELECT c.cid FROM sync_conflicts c JOIN blueprints b ON b.id = c.copy_id "
            "WHERE c.resolved IS NULL AND b.deleted = 1"
        )
    ]


# How long resolved conflict records are kept, and the most kept (docs/sync-engine.md,
# "Conflict records"). Each keeps three texts of its blueprint, and a person who resolves a
# conflict a day on two devices had thousands after some years, for ever. An open record is
# never dropped; a resolved one holds nothing history lacks (every side was a revision here).
RESOLVED_CONFLICT_DAYS = 90
RESOLVED_CONFLICTS_KEPT = 200


def resolve_conflict(cur: Any, cid: int, resolution: str) -> None:
    """Mark a conflict record resolved, then drop the resolved records past the retention."""
    now = utc_now()
    cur.execute(
        "UPDATE sync_conflicts SET resolved = ?, resolution = ? WHERE cid = ?",
        (now, resolution, cid),
    )
    prune_resolved_conflicts(cur, now=now)


def prune_resolved_conflicts(cur: Any, *, now: str | None = None) -> int:
    """Drop resolved conflict records resolved more than RESOLVED_CONFLICT_DAYS before ``now``
    and those past the newest RESOLVED_CONFLICTS_KEPT; returns how many went.

    Run whenever a record is resolved, the only way resolved ones are added: so they stay
    bounded without a timer. Open records are never touched. What a resolved record held stays
    in history: the local side as the conflict copy's revisions (the copy is deleted, not
    purged), the remote and base sides as revisions of the blueprint itself.
    """
    stamp = now or utc_now()
    cutoff = _days_before(stamp, RESOLVED_CONFLICT_DAYS)
    # The highest cid always stays: cid has no AUTOINCREMENT, so dropping it would hand its
    # number, which the person may have noted, to the next conflict.
    cur.execute(
        "DELETE FROM sync_conflicts WHERE resolved IS NOT NULL "
        "AND cid < (SELECT max(cid) FROM sync_conflicts) AND (resolved < ? OR cid NOT IN "
        "(SELECT cid FROM sync_conflicts WHERE resolved IS NOT NULL "
        "ORDER BY resolved DESC, cid DESC LIMIT ?))",
        (cutoff, max(RESOLVED_CONFLICTS_KEPT, 1)),
    )
    return int(cur.execute("SELECT changes()").fetchall()[0][0])


def _days_before(stamp: str, days: int) -> str:
    """``stamp`` (utc_now's format) minus ``days``, in the same format (compares as text)."""
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
