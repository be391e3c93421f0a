"""The migration files only ever grow at the end, because of how deployed projects take them.

`supabase db push` records each applied file's version in supabase_migrations.schema_migrations
and never runs that version again. So on a project that already has a file:
* an edit of its SQL never arrives (the project keeps the old definitions while a fresh one gets
  the new: the two silently differ);
* a rename or removal stops every later `db push` ("Remote migration versions not found in
  local migrations directory");
* a new file numbered before the newest one is refused without `--include-all`.
``RELEASED`` pins each file's SQL (comments and spacing do not count: they never reach a
database's behaviour). A new migration gets a version after all of them and is added here.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from sync.localcloud.schema import MIGRATIONS_DIR, migration_files, migration_version

# file name -> sha256 (first 16 hex digits) of its SQL without comments or spacing.
RELEASED = {
    "20261122000000_blueprints_tables.sql": "9219ae569d227632",
    "20261122000100_blueprints_rpc.sql": "65d000187a6e29ac",
    "20261122000200_push_shared_ids.sql": "7b65706f6d47060b",
    "20261122000300_internal_helpers_check_caller.sql": "579cc7314077f617",
    "20261122000500_row_limits.sql": "f20763b362f9ef37",
    "20261122000600_match_revisions.sql": "4f309535a9938aaf",
    "20261122000700_purge_owner_index.sql": "ff741378928c825b",
    "20261122000800_op_fingerprint.sql": "4b2512b6fbcc4ba9",
    "20261122000900_schema_version.sql": "bc61ef0ced05e4a4",
    "20261122001000_purge_revisions.sql": "c7c0fc3fb7ea1a7a",
    "20261122001100_pull_page_bytes.sql": "5ff3f032553e1b6c",
    "20261122001200_fetch_rows_limit.sql": "54c12e79d08ca571",
    "20261122001300_fetch_page_bytes.sql": "ca567002d614ac5b",
    "20261122001400_recreated_rev.sql": "fdfdaaaca1cfaaf4",
    "20261122001500_realtime_publication_scope.sql": "9bc71b683689728b",
    "20261122001600_purge_tombstones_owner_bound.sql": "d6d04f82296b8191",
    "20261122001700_refuse_truncate.sql": "c6eaa4935d52426f",
    "20261122001800_meta_clients_hold.sql": "c8c984ff5c8cc6f6",
}


def sql_digest(path: Path) -> str:
    text = re.sub(r"--[^\n]*", "", path.read_text(encoding="utf-8"))
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


def problems(directory: Path, released: dict[str, str]) -> list[str]:
    """What a project holding every ``released`` file could not take from ``directory``."""
    found = {p.name: p for p in migration_files(directory)}
    out = []
    for name, digest in released.items():
        if name not in found:
            out.append(f"{name} was renamed or removed")
        elif sql_digest(found[name]) != digest:
            out.append(f"{name} changed its SQL (now {sql_digest(found[name])})")
    newest = max(migration_version(Path(n)) for n in released)
    for name in sorted(set(found) - set(released)):
        if migration_version(found[name]) <= newest:
            out.append(f"{name} is numbered before the newest released file ({newest})")
    return out


def test_released_migrations_are_never_edited_renamed_or_preceded() -> None:
    assert problems(MIGRATIONS_DIR, RELEASED) == [], (
        "deployed projects never run a released migration again: write the change as a new"
        " file numbered after every released one, and add it to RELEASED"
    )


_KINDS = ("renamed or removed", "changed its SQL", "numbered before")


def test_the_check_finds_an_edit_a_rename_and_a_file_numbered_into_a_gap(tmp_path: Path) -> None:
    for p in migration_files():
        shutil.copy(p, tmp_path / p.name)
    assert problems(tmp_path, RELEASED) == []
    (tmp_path / "20261122000900_schema_version.sql").write_text("-- only a comment\n", "utf-8")
    (tmp_path / "20261122000700_purge_owner_index.sql").rename(tmp_path / "20261122000750_x.sql")
    (tmp_path / "20261122000400_into_the_gap.sql").write_text("select 1;", "utf-8")
    (tmp_path / "20991231000000_later.sql").write_text("select 1;", "utf-8")
    found = problems(tmp_path, RELEASED)
    assert [(f.split(" ", 1)[0], kind) for f in found for kind in _KINDS if kind in f] == [
        ("20261122000700_purge_owner_index.sql", "renamed or removed"),
        ("20261122000900_schema_version.sql", "changed its SQL"),
        ("20261122000400_into_the_gap.sql", "numbered before"),
        ("20261122000750_x.sql", "numbered before"),
    ]
    # Comments and spacing are not SQL: a reworded comment is no change.
    p = tmp_path / "20261122000800_op_fingerprint.sql"
    p.write_text("-- reworded\n" + p.read_text("utf-8").replace("\n", "\n\n"), "utf-8")
    assert not any("op_fingerprint" in f for f in problems(tmp_path, RELEASED))
