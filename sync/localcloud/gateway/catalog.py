"""A small schema cache: functions and tables looked up in ``pg_catalog`` on first use.

PostgREST keeps a full schema cache reloaded by ``NOTIFY pgrst, 'reload schema'``. This gateway looks
an object up the first time a request names it and keeps it until that same NOTIFY (or
:meth:`Catalog.clear`), so migrations run before the gateway starts need no reload, and a function
created later is found on its first call (a miss is never cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

_JSON_TYPES = ("json", "jsonb")


@dataclass(frozen=True, slots=True)
class Function:
    """One overload of a function as PostgREST sees it."""

    schema: str
    name: str
    arg_names: tuple[str, ...]
    arg_types: tuple[str, ...]
    required: int  # the first `required` args have no default
    volatile: bool
    returns_set: bool
    return_kind: str  # "void" | "scalar" | "composite"

    @property
    def single_json_param(self) -> bool:
        """One unnamed json/jsonb parameter: it receives the whole request body."""
        return (
            len(self.arg_types) == 1 and not self.arg_names[0] and self.arg_types[0] in _JSON_TYPES
        )

    def accepts(self, keys: set[str]) -> bool:
        """Whether a call with exactly these named arguments resolves to this overload."""
        names = set(self.arg_names)
        return keys <= names and set(self.arg_names[: self.required]) <= keys


@dataclass(frozen=True, slots=True)
class Table:
    """A table or view: its columns (name -> SQL type) in order and its primary key."""

    schema: str
    name: str
    columns: dict[str, str]
    primary_key: tuple[str, ...]


_FUNCTIONS_SQL = """
select p.proargnames, p.proargmodes, p.pronargs, p.pronargdefaults, p.provolatile, p.proretset,
       rt.typname, rt.typtype, p.prorettype = 'record'::regtype as returns_record,
       array(select format_type(x, null) from unnest(p.proargtypes::oid[]) x) as arg_types
from pg_proc p
join pg_namespace n on n.oid = p.pronamespace
join pg_type rt on rt.oid = p.prorettype
where n.nspname = %s and p.proname = %s and p.prokind = 'f'
"""

_TABLE_SQL = """
select a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(a.attnum = any(i.indkey), false) as in_pk
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_index i on i.indrelid = c.oid and i.indisprimary
where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'v', 'm', 'f', 'p')
order by a.attnum
"""


class Catalog:
    """Cached lookups of functions and tables, read through the admin pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool
        self._functions: dict[tuple[str, str], list[Function]] = {}
        self._tables: dict[tuple[str, str], Table] = {}

    def clear(self) -> None:
        """Forget everything (PostgREST's schema cache reload)."""
        self._functions.clear()
        self._tables.clear()

    async def functions(self, schema: str, name: str) -> list[Function]:
        """Every overload of ``schema.name`` (empty when none)."""
        key = (schema, name)
        cached = self._functions.get(key)
        if cached is not None:
            return cached
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_FUNCTIONS_SQL, key)).fetchall()
        found = [_function_of(schema, name, row) for row in rows]
        if found:
            self._functions[key] = found
        return found

    async def table(self, schema: str, name: str) -> Table | None:
        """The table or view ``schema.name``, or None."""
        key = (schema, name)
        cached = self._tables.get(key)
        if cached is not None:
            return cached
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(_TABLE_SQL, key)).fetchall()
        if not rows:
            return None
        table = Table(
            schema,
            name,
            {row[0]: row[1] for row in rows},
            tuple(row[0] for row in rows if row[2]),
        )
        self._tables[key] = table
        return table


def _function_of(schema: str, name: str, row: tuple[Any, ...]) -> Function:
    argnames, argmodes, nargs, ndefaults, volatility, retset, typname, typtype, is_record, types = (
        row
    )
    all_names = list(argnames or [])
    if argmodes is None:
        in_names = (all_names + [""] * nargs)[:nargs]
    else:
        # Only IN, INOUT and VARIADIC arguments are call parameters.
        in_names = [n for n, m in zip(all_names, argmodes, strict=False) if m in ("i", "b", "v")]
    if typname == "void":
        kind = "void"
    elif typtype == "c" or is_record:
        kind = "composite"
    else:
        kind = "scalar"
    return Function(
        schema=schema,
        name=name,
        arg_names=tuple(in_names),
        arg_types=tuple(types),
        required=nargs - ndefaults,
        volatile=volatility == "v",
        returns_set=bool(retset),
        return_kind=kind,
    )
