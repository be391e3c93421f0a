"""Which statements scan the blueprints table, and how a listing is read: from SQLite's query
plans, never timed (shared by the lookup and listing tests of the store and of upgraded homes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def blueprint_scans(store: Any, run: Callable[[], object]) -> list[str]:
    """The statements ``run`` runs on the store's connection whose plan scans the blueprints
    table (every statement is traced, and its plan asked of SQLite with the same bindings)."""
    return [sql for sql, plan in query_plans(store, run) if any(map(_scans_blueprints, plan))]


def _scans_blueprints(step: str) -> bool:
    """A plan step that walks the blueprints table or one of its indexes whole (under its own
    name or the alias ``b``; not ``blueprints_fts``, searched by MATCH)."""
    return step.split()[:2] in (["SCAN", "blueprints"], ["SCAN", "b"])


def query_plans(store: Any, run: Callable[[], object]) -> list[tuple[str, list[str]]]:
    """Each SELECT ``run`` runs on the store's connection, with the steps of its query plan."""
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
    return [
        (sql, [str(step[3]) for step in conn.execute("EXPLAIN QUERY PLAN " + sql, bindings)])
        for sql, bindings in ran
        if sql.lstrip().upper().startswith("SELECT")
    ]
