"""The quarantine: changes the server refused for good and server rows this device cannot store,
parked with their error until changed or retried."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localstore.blueprint import utc_now
from localstore.files import MAX_PATH_CHARS
from sync._shown import MAX_CODE, MAX_SHOWN, escaped, shown
from sync._state_watermark import _unsettle


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A change parked after a permanent refusal, with the server's (or local) error."""

    id: str
    op_id: int
    path: str
    direction: str
    code: str
    message: str
    ts: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (with the command that retries it)."""
        return {
            "id": self.id,
            "op_id": self.op_id,
            "path": self.path,
            "direction": self.direction,
            "code": self.code,
            "message": self.message,
            "ts": self.ts,
            "retry": "localstore sync --retry-quarantined",
        }


# -- quarantine ---------------------------------------------------------------------------------


def quarantine(
    cur: Any, blueprint_id: str, op_id: int, path: str, direction: str, code: str, message: str
) -> None:
    """Park one change with its error.

    The path (a pulled row's is the server's), code and message are stored escaped and cut
    (sync._shown): every `localstore status` prints them. The limits leave room for any path
    the store takes and for this project's own longest messages (their hint is at the end); a
    server's rejection text was cut shorter when it was parsed (PushResult)."""
    path = shown(path, MAX_PATH_CHARS)
    code, message = shown(code, MAX_CODE), shown(message, 4 * MAX_SHOWN)
    cur.execute(
        "INSERT INTO sync_quarantine VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "op_id = excluded.op_id, path = excluded.path, direction = excluded.direction, "
        "code = excluded.code, message = excluded.message, ts = excluded.ts",
        (blueprint_id, op_id, path, direction, code, message, utc_now()),
    )
    _unsettle(cur, blueprint_id)  # a different op id un-parks the current one


def unquarantine(cur: Any, blueprint_id: str) -> None:
    """Drop a parked entry (the change went through)."""
    cur.execute("DELETE FROM sync_quarantine WHERE id = ?", (blueprint_id,))
    _unsettle(cur, blueprint_id)


def parked_unblocked(cur: Any, path_free: Callable[[str], bool]) -> list[str]:
    """Ids of server rows parked for a reason on this device that is gone, oldest first.

    ``unparsable_local``: the blueprint's own file parses now (or this device no longer holds
    it), read from the index. ``path_blocked``: a file the index cannot record (its YAML or meta
    does not parse, a link) held the row's path; ``path_free(path)`` says whether it still does
    (sync._apply.path_unblocked: a few lstats, the file was never indexed, so its fix, move or
    removal leaves no trace in the index to query)."""
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT q.id, q.code, q.path FROM sync_quarantine q "
            "LEFT JOIN blueprints b ON b.id = q.id WHERE q.direction = 'pull' AND ("
            "(q.code = 'unparsable_local' AND (b.id IS NULL OR b.deleted OR b.flagged IS NULL)) "
            "OR q.code = 'path_blocked') ORDER BY q.ts"
        )
        if r[1] != "path_blocked" or path_free(str(r[2]))
    ]


def parsed_push_parks(cur: Any) -> list[str]:
    """Ids of pushes parked as ``unparsable_local`` (their path was taken on the server and their
    file did not parse, so it could not move aside: sync.engine's ``_path_taken``) whose file
    parses now, or that this device no longer holds live; read from the index."""
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT q.id FROM sync_quarantine q LEFT JOIN blueprints b ON b.id = q.id "
            "WHERE q.direction = 'push' AND q.code = 'unparsable_local' "
            "AND (b.id IS NULL OR b.deleted OR b.flagged IS NULL) ORDER BY q.ts"
        )
    ]


def quarantined(cur: Any) -> list[QuarantineEntry]:
    """Every parked entry, oldest first."""
    # Escaped again on the way out: a record an older version stored holds the server's text as
    # it came (escaping what is already escaped changes nothing).
    return [
        QuarantineEntry(
            str(r[0]),
            int(r[1]),
            escaped(str(r[2])),
            str(r[3]),
            escaped(str(r[4])),
            escaped(str(r[5])),
            str(r[6]),
        )
        for r in cur.execute(
            "SELECT id, op_id, path, direction, code, message, ts FROM sync_quarantine ORDER BY ts"
        )
    ]


def quarantine_count(cur: Any) -> int:
    """Number of parked entries."""
    return int(cur.execute("SELECT count(*) FROM sync_quarantine").fetchall()[0][0])


def clear_quarantine(cur: Any, direction: str | None = None) -> list[QuarantineEntry]:
    """Remove parked entries (all, or of one direction) and return them."""
    entries = [e for e in quarantined(cur) if direction is None or e.direction == direction]
    cur.executemany("DELETE FROM sync_quarantine WHERE id = ?", [(e.id,) for e in entries])
    for e in entries:
        _unsettle(cur, e.id)
    return entries
