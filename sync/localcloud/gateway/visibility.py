"""Who may see a change: Realtime's ``apply_rls`` rules, run at delivery time.

* INSERT/UPDATE: the row is looked up by primary key under the subscriber's role and claims (one
  ``select pk ... where pk = any(...)`` per table and subscriber per batch), so row-level security and
  table grants decide, exactly as for a REST read at that moment. A row already gone is not sent.
* DELETE: hosted Realtime cannot apply RLS to a deleted row and sends its primary key to every
  subscriber of the table. This gateway is stricter: on an RLS table the old row (it needs
  ``REPLICA IDENTITY FULL``) is put back inside a transaction that is rolled back, with triggers and
  foreign keys off (``session_replication_role = replica``), and the same SELECT check decides; without
  the full old row nothing is sent. On a table without RLS the SELECT grant decides.

Values from wal2json are converted the way ``realtime.cast`` does (``to_jsonb(value::type)``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from sync.localcloud.gateway import jsontext
from sync.localcloud.gateway.changes import Change, columns, timestamptz_json
from sync.localcloud.gateway.db import Database, RequestInfo

log = logging.getLogger(__name__)

_META_SQL = """
select a.attname, t.typname, format_type(a.atttypid, a.atttypmod),
       coalesce(a.attnum = any(i.indkey), false), c.relrowsecurity
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_type t on t.oid = a.atttypid
left join pg_index i on i.indrelid = c.oid and i.indisprimary
where n.nspname = %s and c.relname = %s
order by a.attnum
"""
_PLAIN = {"bool", "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bpchar",
          "uuid", "name", "char", "oid"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TableMeta:
    """What delivery needs to know about a published table."""

    schema: str
    name: str
    columns: list[tuple[str, str]]  # (name, typname) in attribute order
    sql_types: dict[str, str]  # name -> format_type
    primary_key: list[str]
    rls: bool

    @property
    def rel(self) -> sql.Composed:
        """The quoted relation name."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))


class Visibility:
    """Table metadata, value conversion and the per-subscriber visibility decision."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._meta: dict[tuple[str, str], TableMeta] = {}

    def clear(self) -> None:
        """Forget cached table metadata (schema reload)."""
        self._meta.clear()

    async def published(
        self,
        schema: str,
        table: str,
        publication: str = "supabase_realtime",
        *,
        timeout: float | None = None,
    ) -> bool:
        """Whether ``schema.table`` is in the realtime publication. ``timeout``: seconds to wait
        for a connection (the pool's default when None); raises psycopg.Error (PoolTimeout)."""
        async with self.db.admin.connection(timeout=timeout) as conn:
            cur = await conn.execute(
                "select 1 from pg_publication_tables where pubname = %s and schemaname = %s"
                " and tablename = %s",
                (publication, schema, table),
            )
            return await cur.fetchone() is not None

    async def meta(self, schema: str, table: str) -> TableMeta:
        """Columns, primary key and RLS flag of a table (cached)."""
        key = (schema, table)
        found = self._meta.get(key)
        if found is None:
            async with self.db.admin.connection() as conn:
                rows = await (await conn.execute(_META_SQL, key)).fetchall()
            found = TableMeta(
                schema,
                table,
                [(r[0], r[1]) for r in rows],
                {r[0]: r[2] for r in rows},
                [r[0] for r in rows if r[3]],
                bool(rows and rows[0][4]),
            )
            self._meta[key] = found
        return found

    # ------------------------------------------------------------------ conversion

    async def prepare(self, changes: list[Change]) -> None:
        """Convert source values to JSON as ``to_jsonb`` would, once per change."""
        pending: list[tuple[dict[str, Any], str, str]] = []
        for change in changes:
            if change.typed:
                if change.truncated:
                    await self._reread(change)
                continue
            meta = await self.meta(change.schema, change.table)
            typnames = dict(meta.columns)
            for row in (change.record or {}, change.old_record or {}):
                for name, value in row.items():
                    if value is None:
                        continue
                    typname = typnames.get(name, "text")
                    if typname in _PLAIN:
                        continue
                    if typname in ("json", "jsonb") and isinstance(value, str):
                        row[name] = jsontext.loads(value)
                    elif typname == "timestamptz" and isinstance(value, str):
                        row[name] = timestamptz_json(value)
                    elif typname == "timestamp" and isinstance(value, str):
                        row[name] = value.replace(" ", "T", 1)
                    else:
                        pending.append((row, name, meta.sql_types.get(name, "text")))
            change.typed = True
        if pending:
            await self._cast(pending)

    async def _cast(self, pending: list[tuple[dict[str, Any], str, str]]) -> None:
        texts = [v if isinstance(v, str) else json.dumps(v) for v in (r[n] for r, n, _ in pending)]
        types = [t for _, _, t in pending]
        async with self.db.admin.connection() as conn:
            cur = await conn.execute(
                "select realtime.cast(v, t::regtype) from unnest(%s::text[], %s::text[])"
                " with ordinality u(v, t, i) order by i",
                (texts, types),
            )
            rows = await cur.fetchall()
        for (row, name, _), (value,) in zip(pending, rows, strict=True):
            row[name] = value

    async def _reread(self, change: Change) -> None:
        meta = await self.meta(change.schema, change.table)
        if change.record and meta.primary_key:
            where, params = _pk_where(meta, change.record)
            # Column by column: psycopg's json.loads of the whole row raised for a value Python
            # cannot hold (see jsontext), and the change was lost.
            query = sql.SQL(
                "select (select array_agg(array[k, v::text]) from jsonb_each(to_jsonb(t)) e(k, v))"
                " from {} t where {}"
            ).format(meta.rel, where)
            async with self.db.admin.connection() as conn:
                row = await (await conn.execute(query, params)).fetchone()
            if row is not None:
                change.record = columns(row[0])

    # ------------------------------------------------------------------ decisions

    async def decide(self, items: list[tuple[Change, dict[str, Any]]]) -> list[bool]:
        """For each (change, subscriber claims): may the subscriber see it?"""
        results = [False] * len(items)
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for i, (change, claims) in enumerate(items):
            key = (change.schema, change.table, json.dumps(claims, sort_keys=True))
            groups[key].append(i)
        for (schema, table, claims_json), idxs in groups.items():
            meta = await self.meta(schema, table)
            claims = json.loads(claims_json)
            live = [i for i in idxs if items[i][0].type != "DELETE"]
            gone = [i for i in idxs if items[i][0].type == "DELETE"]
            if live:
                visible = await self._visible_rows(meta, claims, [items[i][0] for i in live])
                for i, ok in zip(live, visible, strict=True):
                    results[i] = ok
            for i in gone:
                results[i] = await self._visible_deleted(meta, claims, items[i][0])
        return results

    async def _visible_rows(
        self, meta: TableMeta, claims: dict[str, Any], changes: list[Change]
    ) -> list[bool]:
        if not meta.primary_key:
            return [await self._can_select(meta, claims)] * len(changes)
        role = str(claims.get("role") or "anon")
        info = RequestInfo(role, claims, "GET", "/realtime", {}, meta.schema)
        try:
            async with self.db.request_tx(info, read_only=True) as conn:
                return [await _exists(conn, meta, c.record or {}) for c in changes]
        except psycopg.errors.InsufficientPrivilege:
            return [False] * len(changes)
        except psycopg.Error as exc:
            log.warning(
                "realtime: visibility check on %s.%s failed: %s", meta.schema, meta.name, exc
            )
            return [False] * len(changes)

    async def _visible_deleted(
        self, meta: TableMeta, claims: dict[str, Any], change: Change
    ) -> bool:
        if not meta.rls:
            return await self._can_select(meta, claims)
        old = change.old_record or {}
        if not meta.primary_key or set(old) != {n for n, _ in meta.columns}:
            return False  # no full old row (REPLICA IDENTITY FULL): cannot decide, so do not send
        return await self._probe_deleted(meta, claims, old)

    async def _probe_deleted(
        self, meta: TableMeta, claims: dict[str, Any], old: dict[str, Any]
    ) -> bool:
        cols = sql.SQL(", ").join(sql.Identifier(n) for n, _ in meta.columns)
        insert = sql.SQL(
            "insert into {rel} ({cols}) overriding system value"
            " select {cols} from json_populate_record(null::{rel}, %s::json)"
        ).format(rel=meta.rel, cols=cols)
        role = str(claims.get("role") or "anon")
        async with self.db.admin.connection() as conn:
            await conn.execute("BEGIN")
            try:
                await conn.execute("set local session_replication_role = replica")
                await conn.execute(insert, (jsontext.dumps(old),))
                await conn.execute(
                    "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                    (role, json.dumps(claims)),
                )
                return await _exists(conn, meta, old)
            except psycopg.Error as exc:
                log.debug("realtime: delete probe on %s refused: %s", meta.name, exc)
                return False
            finally:
                await conn.execute("ROLLBACK")

    async def _can_select(self, meta: TableMeta, claims: dict[str, Any]) -> bool:
        role = str(claims.get("role") or "anon")
        async with self.db.admin.connection() as conn:
            cur = await conn.execute(
                "select has_table_privilege(%s, %s::regclass, 'SELECT')",
                (role, f'"{meta.schema}"."{meta.name}"'),
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------ payload

    def payload(self, change: Change, claims: dict[str, Any]) -> dict[str, Any]:
        """The ``data`` of a postgres_changes frame (old_record trimmed to the key under RLS)."""
        meta = self._meta.get((change.schema, change.table))
        columns = [{"name": n, "type": t} for n, t in (meta.columns if meta else [])]
        data: dict[str, Any] = {
            "schema": change.schema,
            "table": change.table,
            "commit_timestamp": change.commit_timestamp,
            "type": change.type,
            "columns": columns,
            "errors": None,
        }
        if change.type != "DELETE":
            data["record"] = change.record or {}
        if change.type != "INSERT":
            old = change.old_record or {}
            if meta is not None and meta.rls and meta.primary_key:
                old = {k: v for k, v in old.items() if k in meta.primary_key}
            data["old_record"] = old
        return data

    def passes_filter(self, change: Change, expr: str | None) -> bool:
        """Realtime's filter ``col=op.value`` (eq neq lt lte gt gte in) on the new or old row."""
        if not expr:
            return True
        column, _, rest = expr.partition("=")
        op, _, wanted = rest.partition(".")
        row = change.record if change.type != "DELETE" else change.old_record
        if not row or column not in row:
            return False
        return _compare(row[column], op, wanted)


def _pk_where(meta: TableMeta, row: dict[str, Any]) -> tuple[sql.Composable, list[Any]]:
    parts = [
        sql.SQL("{} = %s::{}").format(sql.Identifier(k), sql.SQL(meta.sql_types[k]))
        for k in meta.primary_key
    ]
    return sql.SQL(" and ").join(parts), [_as_text(row.get(k)) for k in meta.primary_key]


async def _exists(conn: psycopg.AsyncConnection[Any], meta: TableMeta, row: dict[str, Any]) -> bool:
    where, params = _pk_where(meta, row)
    query = sql.SQL("select exists(select 1 from {} where {})").format(meta.rel, where)
    found = await (await conn.execute(query, params)).fetchone()
    return bool(found and found[0])


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return jsontext.dumps(value)
    if isinstance(value, jsontext.RawJSON):
        return value.text
    return str(value)


def _compare(value: Any, op: str, wanted: str) -> bool:
    have = _as_text(value)
    if op == "in":
        items = [w.strip().strip('"') for w in wanted.strip("()").split(",")]
        return have in items
    if op in ("eq", "neq"):
        return (have == wanted) == (op == "eq")
    try:
        left, right = float(have or ""), float(wanted)
    except ValueError:
        left, right = have or "", wanted  # type: ignore[assignment]
    return {"lt": left < right, "lte": left <= right, "gt": left > right, "gte": left >= right}.get(
        op, False
    )
