"""Set a home's index back to an older core schema, as a build before a column-adding migration
left it, and count what an upgrade must not add (shared by the v8 and v9 upgrade tests)."""

from __future__ import annotations

from pathlib import Path

import apsw

from localstore.store import BlueprintStore


def set_core_back(home: Path, version: int, dropped: tuple[str, ...]) -> None:
    """Make the index one written before core ``version + 1``: ``dropped`` columns removed."""
    conn = apsw.Connection(str(home / "data/index.db"))
    for column in dropped:
        conn.execute(f"ALTER TABLE blueprints DROP COLUMN {column}")
    conn.execute("UPDATE component_versions SET version = ? WHERE component = 'core'", (version,))
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def revisions_and_op(store: BlueprintStore) -> tuple[int, int]:
    """How many revisions the index holds, and its op id counter."""
    with store.index.read() as cur:
        revisions = cur.execute("SELECT count(*) FROM revisions").fetchall()[0][0]
        op = cur.execute("SELECT value FROM counters WHERE name = 'op_id'").fetchall()[0][0]
    return revisions, op
