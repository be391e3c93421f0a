"""The apply journal: the server rows of an apply in progress, so the next cycle settles the rows
a kill cut short."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sync._state_items import IN_CHUNK
from sync._state_keys import del_state, get_state, set_state

# -- apply journal ------------------------------------------------------------------------------
#
# A kill between writing a remote row's files and committing the index leaves files that
# reconcile-on-open records as a *local* edit. Without help the next cycle would push it against
# an older base and could report a conflict between two server versions. So before a chunk is
# applied, the (id, seq, rev, path, hash, deleted) of its rows are committed here; the chunk's own
# transaction clears them. Entries found at the next cycle name exactly the rows whose apply was
# cut short; a dirty blueprint whose content matches its entry is the server's version.
#
# A row whose local copy has edits not yet pushed may be kept both ways (sync._apply._keep_both):
# its entry also holds that copy's content hash ("local"), from which the conflict copy's id
# follows (sync._apply.copy_id_for). A kill after the copy's files were written and before the
# commit left the copy as an ordinary blueprint (reconcile adopts it) with no conflict record;
# recovery finds the copy by that id and records the conflict again.

JOURNAL_KEY = "apply_journal"


def journal_write(
    cur: Any, rows: Iterable[Any], local_hashes: Mapping[str, str] | None = None
) -> None:
    """Record the server rows about to be applied (ServerRow-like objects), with the content
    hash of each one's local copy that has unpushed edits (``local_hashes``, by id)."""
    entries = []
    for r in rows:
        entry = {
            "id": r.id,
            "seq": r.seq,
            "rev": r.rev,
            "path": r.path,
            "hash": r.content_hash,
            "deleted": r.deleted,
        }
        if local_hashes and r.id in local_hashes:
            entry["local"] = local_hashes[r.id]
        entries.append(entry)
    set_state(cur, JOURNAL_KEY, json.dumps(entries))


def dirty_hashes(cur: Any, ids: Sequence[str]) -> dict[str, str]:
    """Content hash of each live, parsed blueprint of ``ids`` with edits not pushed yet (the
    ones an apply may keep both ways), by id; one query per ``IN_CHUNK`` ids."""
    found: dict[str, str] = {}
    for i in range(0, len(ids), IN_CHUNK):
        part = list(ids[i : i + IN_CHUNK])
        found.update(
            (str(r[0]), str(r[1]))
            for r in cur.execute(
                "SELECT b.id, b.content_hash FROM blueprints b "
                "LEFT JOIN sync_items i ON i.id = b.id WHERE b.deleted = 0 AND b.flagged IS NULL "
                f"AND b.op_id > coalesce(i.synced_op_id, 0) AND b.id IN ({','.join('?' * len(part))})",
                part,
            )
        )
    return found


def journal_read(cur: Any) -> list[dict[str, Any]]:
    """Entries of an apply that did not commit (empty normally)."""
    raw = get_state(cur, JOURNAL_KEY)
    return list(json.loads(raw)) if raw else []


def journal_clear(cur: Any) -> None:
    """Drop the journal (inside the transaction that applied its rows)."""
    del_state(cur, JOURNAL_KEY)
