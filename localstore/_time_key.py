"""The sort key of a meta timestamp (``created``, ``modified``): the moment it names, as text.

The store writes ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (blueprint.utc_now), whose text order is time
order. A meta file edited by hand, or written by another tool, may name a moment in another
form (no fraction, an offset, no zone), and compared as text those sorted wrongly:
``10:00:00Z`` after ``10:00:00.5Z`` ('Z' follows '.'), ``11:30+02:00`` (09:30 UTC) after both.
The key is every time in the store's form, in UTC. The listing's SQL order and its cache
(localstore._listing) both use this one function, so a page and the cached listing agree.

The key costs: ordered by it, a page of 100 of 10,000 blueprints is a sort of all 10,000 (3 ms)
instead of a walk of the first 100 entries of ``blueprints_modified`` (0.1 ms). Where every stamp
is in the store's form, the key is the text itself, so the key order is needed only where some
stamp is not: core v13 indexes those rows (``blueprints_odd_times``, a partial index, empty in a
store that only the store wrote), and :data:`ODD_TIMES_SQL` asks it whether there is one (in a
v12 index opened read-only, which cannot be given it, SQLite answers from every live row instead).
Rejected: rewriting the stamps in the index (``BlueprintInfo`` shows what the meta file holds)
and key columns (two more columns and indexes that every writer, an older localstore's too,
would have to keep; SQLite keeps a partial index itself).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ODD_TIMES_INDEX",
    "ODD_TIMES_SQL",
    "SQL_CANONICAL",
    "sql_time_key",
    "time_key",
    "time_order_sql",
]

# The store's own form: its own key. The GLOB and the pattern say the same ([0-9] is ASCII).
_D = "[0-9]"
SQL_CANONICAL = f"{_D * 4}-{_D * 2}-{_D * 2}T{_D * 2}:{_D * 2}:{_D * 2}.{_D * 6}Z"
_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")

# The live rows with a stamp not in the store's form. The index (core v13) and the question
# must say the condition in the same words: SQLite uses a partial index only for a query whose
# WHERE holds each term of the index's own.
_ODD = (
    f"deleted = 0 AND (modified NOT GLOB '{SQL_CANONICAL}' OR created NOT GLOB '{SQL_CANONICAL}')"
)
# Over the stamps, so it covers the question: indexed by rid alone, SQLite answered it from the
# covering listing index instead, a walk of every live row.
ODD_TIMES_INDEX = f"CREATE INDEX IF NOT EXISTS blueprints_odd_times ON blueprints(modified, created) WHERE {_ODD};"
# Whether the key order is needed at all: a look into that (nearly always empty) index.
ODD_TIMES_SQL = f"SELECT 1 FROM blueprints WHERE {_ODD} LIMIT 1"


def time_key(text: str) -> str:
    """``text`` as the moment it names in the store's form ('' for none or an unreadable one,
    which sorts before every time); a time without a zone is UTC, as merge reads it."""
    if _CANONICAL.fullmatch(text):
        return text
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # (OverflowError: an offset before year 1)
        return ""
    return moment.isoformat(timespec="microseconds") + "Z"


def sql_time_key(*values: Any) -> Any:
    """localstore_time_key(text) in SQL: time_key() of a string, any other value as it is."""
    (value,) = values
    return time_key(value) if type(value) is str else value


def time_order_sql(column: str, *, by_moment: bool) -> str:
    """The SQL ``column`` sorts by: itself where every stamp is in the store's form
    (``by_moment`` False: SQLite walks the column's index), else its key, the store's own form
    (nearly every row) without a call into Python."""
    if not by_moment:
        return column
    return (
        f"CASE WHEN {column} GLOB '{SQL_CANONICAL}' THEN {column} "
        f"ELSE localstore_time_key({column}) END"
    )
