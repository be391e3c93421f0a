"""Which statements scan the blueprints table: counted from SQLite's query plans, never timed
(shared by the lookup tests of the store and of upgraded homes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def blueprint_scans(store: Any, run: Callable[[], object]) -> list[str]:
    """The statements ``run`` runs on the store's connection whose plan scans the blueprints
    table (every statement is traced, and its plan asked of SQLite with the same bindings)."""
    conn = store.index.conn
    ran: list[tuple[str, Any]] = []

    def trace(_cursor: Any, sql: str, bindings: Any) -> bool:
        ran.append((sql, bindings))
        return True

    conn.exec_trace = trace
    try:
        run()
    finally:
        conn.exec_trace = None
    assert ran  # (the trace saw the statements: an empty answer means something)
    scans = []
    for sql, bindings in ran:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql, bindings).fetchall()
        if any(str(step[3]).startswith("SCAN blueprints") for step in plan):
            scans.append(sql)
    return scans
