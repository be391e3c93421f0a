"""The settled watermark W: no blueprint with ``op_id <= W`` is dirty (``sync._state`` explains
the promise and why it holds); the dirty condition it and the outbox share."""

from __future__ import annotations

from typing import Any

from sync._state_keys import SETTLED_KEY, get_state, set_state

# Dirty = changed since the last recorded match with the server, and not parked in quarantine
# at this very op id (a later edit un-parks it: that is how a fixed item retries by itself).
_DIRTY_WHERE = (
    "b.op_id > coalesce(s.synced_op_id, 0) "
    "AND NOT EXISTS (SELECT 1 FROM sync_quarantine q WHERE q.id = b.id AND q.op_id = b.op_id)"
)


def max_op_id(cur: Any) -> int:
    """The highest op id handed out so far."""
    row = cur.execute("SELECT value FROM counters WHERE name = 'op_id'").fetchall()
    return int(row[0][0]) if row else 0


# -- the settled watermark (see sync._state's docstring) ----------------------------------------


def settled_op_id(cur: Any) -> int:
    """The watermark W: no blueprint with ``op_id <= W`` is dirty (0 = unknown, scan all)."""
    raw = get_state(cur, SETTLED_KEY)
    if raw is None:
        return 0
    settled = int(raw)
    # An op counter below W (an index restored from an older copy) cannot vouch for anything.
    return settled if 0 <= settled <= max_op_id(cur) else 0


def settle(cur: Any, *, rescan: bool = False) -> int:
    """Advance W past every row that is not dirty (inside a write transaction); returns W.

    Only rows above the current W are read, unless ``rescan`` recomputes it from 0.
    """
    start = 0 if rescan else settled_op_id(cur)
    highest = max_op_id(cur)
    row = cur.execute(
        "SELECT min(b.op_id) FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
        f"WHERE b.op_id > ? AND {_DIRTY_WHERE}",
        (start,),
    ).fetchall()
    first = row[0][0]
    settled = highest if first is None else int(first) - 1
    set_state(cur, SETTLED_KEY, str(settled))
    return settled


def _unsettle(cur: Any, blueprint_id: str) -> None:
    """Keep W's promise after a change to one blueprint's sync rows (call after every change).

    Lowers W below the blueprint if it is dirty now. Three primary-key reads: one statement
    joining them measured several times slower per call in apsw.
    """
    op = _one(cur, "SELECT op_id FROM blueprints WHERE id = ?", blueprint_id)
    if op is None or op <= (_one(cur, _SYNCED_SQL, blueprint_id) or 0):
        return  # no index row (nothing to push), or not dirty
    if _one(cur, "SELECT op_id FROM sync_quarantine WHERE id = ?", blueprint_id) == op:
        return  # parked at this very op
    if settled_op_id(cur) >= op:
        set_state(cur, SETTLED_KEY, str(op - 1))


_SYNCED_SQL = "SELECT synced_op_id FROM sync_items WHERE id = ?"


def _one(cur: Any, sql: str, arg: str) -> int | None:
    rows = cur.execute(sql, (arg,)).fetchall()
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def unsettled_below_watermark(cur: Any) -> list[str]:
    """Dirty blueprints at or below W (always empty unless W's promise is broken; for tests)."""
    return [
        str(r[0])
        for r in cur.execute(
            "SELECT b.id FROM blueprints b LEFT JOIN sync_items s ON s.id = b.id "
            f"WHERE b.op_id <= ? AND {_DIRTY_WHERE}",
            (settled_op_id(cur),),
        )
    ]
