"""PostgREST's query-string grammar, the subset the sync tools use: filters, select, order.

``column=[not.]op.value`` with ``eq neq gt gte lt lte like ilike is in``; ``select=*`` or a column
list; ``order=col[.asc|.desc][.nullsfirst|.nullslast],...``. Values are bound as parameters and cast
to the column's own type, so comparisons behave as they do in PostgREST.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from sync.localcloud.gateway.catalog import Table
from sync.localcloud.gateway.errors import ApiError

_COMPARE = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LIKE = {"like": "like", "ilike": "ilike"}
_IS = {"null": "null", "true": "true", "false": "false", "unknown": "unknown"}


@dataclass(frozen=True, slots=True)
class Filters:
    """A WHERE clause and its parameters."""

    where: sql.Composable
    params: tuple[object, ...]


def _parse_error(message: str, details: str) -> ApiError:
    return ApiError(400, "PGRST100", message, details=details)


def _column(table: Table, name: str) -> sql.Composed:
    if name not in table.columns:
        raise ApiError(400, "42703", f"column {table.name}.{name} does not exist")
    return sql.SQL("{}.{}.{}").format(
        sql.Identifier(table.schema), sql.Identifier(table.name), sql.Identifier(name)
    )


def parse_filters(table: Table, items: list[tuple[str, str]]) -> Filters:
    """Turn ``(column, "op.value")`` pairs into one AND-ed WHERE clause."""
    parts: list[sql.Composable] = []
    params: list[object] = []
    for column, expr in items:
        if column in ("or", "and") or column.startswith(("not.or", "not.and")):
            raise _parse_error(
                '"failed to parse logic tree"', "or/and trees are not supported by the local stack"
            )
        part, values = _one_filter(table, column, expr)
        parts.append(part)
        params.extend(values)
    where = sql.SQL(" and ").join(parts) if parts else sql.SQL("true")
    return Filters(where, tuple(params))


def _one_filter(table: Table, column: str, expr: str) -> tuple[sql.Composable, list[object]]:
    negate = expr.startswith("not.")
    if negate:
        expr = expr[4:]
    op, dot, value = expr.partition(".")
    if not dot:
        raise _parse_error(f'"failed to parse filter ({expr})"', f"unexpected filter on {column}")
    col = _column(table, column)
    coltype = sql.SQL(table.columns[column])
    values: list[object] = []
    if op in _COMPARE:
        part: sql.Composable = sql.SQL("{} {} %s::{}").format(col, sql.SQL(_COMPARE[op]), coltype)
        values.append(value)
    elif op in _LIKE:
        part = sql.SQL("{}::text {} %s").format(col, sql.SQL(_LIKE[op]))
        values.append(value.replace("*", "%"))
    elif op == "is":
        keyword = _IS.get(value.lower())
        if keyword is None:
            raise _parse_error(
                f'"failed to parse filter ({expr})"', "is. takes null/true/false/unknown"
            )
        part = sql.SQL("{} is {}").format(col, sql.SQL(keyword))
    elif op == "in":
        part = sql.SQL("{} = any(%s::{}[])").format(col, coltype)
        values.append(parse_in_list(value))
    else:
        raise _parse_error(
            f'"failed to parse filter ({op}.{value})"',
            f"operator {op!r} is not supported by the local stack",
        )
    if negate:
        part = sql.SQL("not ({})").format(part)
    return part, values


def parse_in_list(value: str) -> list[str | None]:
    """Parse ``(a,"b,c",null)`` into items, honouring double quotes and backslash escapes."""
    if not (value.startswith("(") and value.endswith(")")):
        raise _parse_error(f'"failed to parse filter (in.{value})"', "in. needs a (list)")
    items: list[str | None] = []
    current: list[str] = []
    quoted = False
    was_quoted = False
    chars = iter(value[1:-1])
    for ch in chars:
        if quoted:
            if ch == "\\":
                current.append(next(chars, ""))
            elif ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = was_quoted = True
        elif ch == ",":
            items.append(_in_item(current, was_quoted))
            current, was_quoted = [], False
        else:
            current.append(ch)
    if current or was_quoted or items:
        items.append(_in_item(current, was_quoted))
    return items


def _in_item(chars: list[str], quoted: bool) -> str | None:
    text = "".join(chars)
    return None if not quoted and text == "null" else text


def parse_select(table: Table, select: str) -> sql.Composable:
    """``*`` or ``a,b,c``; embeddings, casts and aliases are refused."""
    select = select.strip()
    if select in ("", "*"):
        return sql.SQL("*")
    names = [s.strip() for s in select.split(",")]
    for name in names:
        if any(ch in name for ch in "():!") or name == "*":
            raise _parse_error(
                f'"failed to parse select parameter ({select})"',
                "embedding, casts and aliases are not supported by the local stack",
            )
    return sql.SQL(", ").join(_column(table, n) for n in names)


def parse_order(table: Table, order: str) -> sql.Composable:
    """``col.asc.nullslast,col2.desc`` -> ``order by ...`` (empty when none)."""
    if not order.strip():
        return sql.SQL("")
    terms: list[sql.Composable] = []
    for term in order.split(","):
        name, *mods = term.strip().split(".")
        direction = sql.SQL("")
        nulls = sql.SQL("")
        for mod in mods:
            if mod in ("asc", "desc"):
                direction = sql.SQL(" " + mod)
            elif mod in ("nullsfirst", "nullslast"):
                nulls = sql.SQL(" nulls first" if mod == "nullsfirst" else " nulls last")
            else:
                raise _parse_error(f'"failed to parse order ({order})"', f"unknown modifier {mod}")
        terms.append(sql.SQL("{}{}{}").format(_column(table, name), direction, nulls))
    return sql.SQL(" order by ") + sql.SQL(", ").join(terms)
