"""The PostgREST subset under ``/rest/v1``: RPC calls and table reads/writes with a filter subset.

SQL shapes follow PostgREST's ``QueryBuilder.hs``: RPC arguments pass through ``json_to_record`` so
JSON -> SQL conversion is Postgres's own, inserts read ``json_populate_recordset(NULL::tbl, $1)``, and
writes are wrapped as ``WITH pgrst_source AS (... RETURNING ...) SELECT json_agg(...)``. What is not
implemented answers with a PostgREST error instead of silently doing something else.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from aiohttp import web
from multidict import MultiMapping
from psycopg import sql

from sync.localcloud.gateway.catalog import Catalog, Function, Table
from sync.localcloud.gateway.context import Caller, caller_of, require_api_key
from sync.localcloud.gateway.db import Database, RequestInfo
from sync.localcloud.gateway.errors import ApiError, GatewayKeyError, connection_lost, from_psycopg
from sync.localcloud.gateway.filters import parse_filters, parse_order, parse_select
from sync.localcloud.gateway.jsontext import RawJSON
from sync.localcloud.gateway.keys import ProjectKeys

log = logging.getLogger(__name__)

MAX_ROWS = 1000  # Supabase's PGRST_DB_MAX_ROWS
OBJECT_MEDIA = "application/vnd.pgrst.object+json"
_RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns", "apikey"}


@dataclass(frozen=True, slots=True)
class Prefer:
    """The ``Prefer`` header values this gateway honours."""

    representation: bool = False
    count: bool = False
    resolution: str | None = None

    @classmethod
    def parse(cls, header: str) -> Prefer:
        """Parse ``return=..., count=..., resolution=...`` (unknown values are ignored, as by default)."""
        values: dict[str, str] = {}
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            values[key.strip()] = value.strip()
        return cls(
            representation=values.get("return") == "representation",
            count=values.get("count") in ("exact", "planned", "estimated"),
            resolution=values.get("resolution"),
        )


class PostgrestHandler:
    """aiohttp handlers for ``/rest/v1``."""

    def __init__(
        self, db: Database, catalog: Catalog, keys: ProjectKeys, *, schemas: tuple[str, ...]
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.keys = keys
        self.schemas = schemas

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount on the application."""
        return [
            web.route("*", "/rest/v1/rpc/{fn}", self.rpc),
            web.route("*", "/rest/v1/{table}", self.table),
            web.get("/rest/v1/", self.root),
        ]

    async def root(self, request: web.Request) -> web.StreamResponse:
        """The OpenAPI root is not served; answer like an unknown media type would."""
        return await self._guard(request, self._root)

    async def _root(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        raise ApiError(404, "PGRST125", "The OpenAPI root is not available in the local stack")

    async def rpc(self, request: web.Request) -> web.StreamResponse:
        """``POST|GET /rest/v1/rpc/{fn}``."""
        return await self._guard(request, self._rpc)

    async def table(self, request: web.Request) -> web.StreamResponse:
        """``GET|HEAD|POST|PATCH|DELETE /rest/v1/{table}``."""
        return await self._guard(request, self._table)

    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Run a handler and turn every failure into PostgREST's JSON error."""
        caller: Caller | None = None
        try:
            require_api_key(request, self.keys)
            caller = caller_of(request, self.keys)
            response: web.StreamResponse = await handler(request, caller)
            return response
        except (ApiError, GatewayKeyError) as exc:
            return exc.response()
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None:  # the connection itself failed
                log.warning("database unreachable for %s %s: %s", request.method, request.path, exc)
                return connection_lost(exc).response()
            return from_psycopg(
                exc, authenticated=caller is not None and caller.authenticated
            ).response()
        except psycopg.Error as exc:
            return from_psycopg(
                exc, authenticated=caller is not None and caller.authenticated
            ).response()

    # ------------------------------------------------------------------ helpers

    def _schema(self, request: web.Request) -> str:
        header = "Accept-Profile" if request.method in ("GET", "HEAD") else "Content-Profile"
        schema = request.headers.get(header) or self.schemas[0]
        if schema not in self.schemas:
            raise ApiError(
                406,
                "PGRST106",
                f"Invalid schema: {schema}",
                hint=f"Only the following schemas are exposed: {', '.join(self.schemas)}",
            )
        return schema

    def _info(self, request: web.Request, caller: Caller, schema: str, path: str) -> RequestInfo:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return RequestInfo(caller.role, caller.claims, request.method, path, headers, schema)

    async def _write_body(self, request: web.Request) -> tuple[Any, str | None]:
        """A table write's body and, when Python cannot hold it, its text to send as is.

        Such a body (nested past the recursion limit, an integer past int()'s digit limit) is
        PostgREST's to hand to Postgres, and Postgres takes it: a 400 here failed, only
        locally, a write Supabase stores. Its shape comes from Postgres."""
        body = (await self._json_body_text(request))[0]
        if isinstance(body, RawJSON):
            return await self._shape_read_by_postgres(body), body.text
        return body, None

    async def _json_body_text(self, request: web.Request) -> tuple[Any, str | None]:
        """The parsed body and its text (None when empty); PGRST102 when it is not JSON.

        The body is a RawJSON when Python cannot hold it (nested past the recursion limit, an
        integer past int()'s digit limit) though it may well be JSON: PostgREST reads both and
        Postgres takes them, so the caller hands its text on to Postgres.
        """
        raw = await request.read()
        if not raw.strip():
            return None, None
        try:
            text = raw.decode("utf-8")
            return json.loads(text), text
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "PGRST102", "Empty or invalid json", details=str(exc)) from exc
        except (ValueError, RecursionError):
            return RawJSON(text), text

    async def _shape_read_by_postgres(self, body: RawJSON) -> Any:
        """The shape of a body Python cannot hold, read by Postgres: an object's keys (each value
        None), an array's objects' keys likewise (other elements None); else the RawJSON.

        Only the keys matter (the statement sends the body's text as is). PGRST102 when
        Postgres finds it is no JSON; its 54001 (nested past its stack depth) passes on, as it
        would from PostgREST's statement.
        """
        query = (
            "select json_typeof(b),"
            " case json_typeof(b) when 'object' then array(select json_object_keys(b)) end,"
            " case json_typeof(b) when 'array' then (select json_agg(case json_typeof(e)"
            " when 'object' then array_to_json(array(select json_object_keys(e))) end)"
            " from json_array_elements(b) as e) end"
            " from (select %s::json as b) as body"
        )
        try:
            async with self.db.api.connection() as conn:
                row = await (await conn.execute(query, [body.text])).fetchone()
        except psycopg.errors.InvalidTextRepresentation as exc:
            detail = exc.diag.message_detail
            raise ApiError(400, "PGRST102", "Empty or invalid json", details=detail) from exc
        assert row is not None
        kind, keys, elements = row
        if kind == "object":
            return dict.fromkeys(keys)
        if kind == "array":
            return [None if k is None else dict.fromkeys(k) for k in elements or []]
        return body

    # ------------------------------------------------------------------ RPC

    async def _rpc(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")
        schema = self._schema(request)
        name = request.match_info["fn"]
        single = _wants_object(request)
        body_text: str | None = None
        if request.method == "POST":
            body, body_text = await self._json_body_text(request)
            if isinstance(body, RawJSON):
                body = await self._shape_read_by_postgres(body)
            args: Any = {} if body is None else body
        else:
            args = {k: v for k, v in request.query.items() if k not in _RESERVED}
        fn = await self._resolve(schema, name, args)
        query, params = _call_sql(fn, args, body_text)
        read_only = request.method in ("GET", "HEAD") or not fn.volatile
        info = self._info(request, caller, schema, f"/rpc/{name}")
        async with self.db.request_tx(info, read_only=read_only) as conn:
            row = await (await conn.execute(query, params)).fetchone()
            text = row[0] if row else None
            if fn.return_kind != "void" and single and fn.returns_set:
                result = _single(None if text is None else json.loads(text))
                text = json.dumps(result, ensure_ascii=False)
        if fn.return_kind == "void":
            return web.Response(status=204)
        # Postgres's JSON text as is: decoding it only to encode it again cost as much as the
        # HTTP exchange for a page of 500 rows.
        return _raw_json_response(200, "null" if text is None else text)

    async def _resolve(self, schema: str, name: str, args: Any) -> Function:
        overloads = await self.catalog.functions(schema, name)
        keys = set(args) if isinstance(args, dict) else set()
        matches = [f for f in overloads if not f.single_json_param and f.accepts(keys)]
        if not matches:
            matches = [f for f in overloads if f.single_json_param]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ApiError(
                300,
                "PGRST203",
                f"Could not choose the best candidate function between: {schema}.{name}",
                hint="Try renaming the parameters or the function itself in the database "
                "so function overloading can be resolved",
            )
        params = ", ".join(sorted(keys))
        raise ApiError(
            404,
            "PGRST202",
            f"Could not find the function {schema}.{name}({params}) in the schema cache",
            details=f"Searched for the function {schema}.{name} with parameters {params} or with "
            "a single unnamed json/jsonb parameter, but no matches were found in the schema cache.",
            hint=None,
        )

    # ------------------------------------------------------------------ tables

    async def _table(self, request: web.Request, caller: Caller) -> web.StreamResponse:
        schema = self._schema(request)
        name = request.match_info["table"]
        table = await self.catalog.table(schema, name)
        if table is None:
            raise ApiError(
                404,
                "PGRST205",
                f"Could not find the table '{schema}.{name}' in the schema cache",
            )
        method = request.method
        if method in ("GET", "HEAD"):
            return await self._read(request, caller, table)
        if method == "POST":
            return await self._insert(request, caller, table)
        if method == "PATCH":
            return await self._update(request, caller, table)
        if method == "DELETE":
            return await self._delete(request, caller, table)
        raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {method}")

    async def _read(self, request: web.Request, caller: Caller, table: Table) -> web.StreamResponse:
        q = request.query
        filters = parse_filters(table, _filter_items(q))
        columns = parse_select(table, q.get("select", "*"))
        order = parse_order(table, q.get("order", ""))
        limit = min(_int_param(q, "limit", MAX_ROWS), MAX_ROWS)
        offset = _int_param(q, "offset", 0)
        prefer = Prefer.parse(request.headers.get("Prefer", ""))
        rel = _rel(table)
        inner = sql.SQL(
            "select {cols} from {rel} where {where}{order} limit {lim} offset {off}"
        ).format(
            cols=columns,
            rel=rel,
            where=filters.where,
            order=order,
            lim=sql.Literal(limit),
            off=sql.Literal(offset),
        )
        total_sql: sql.Composable = sql.SQL("null::bigint")
        params = list(filters.params)
        if prefer.count:
            total_sql = sql.SQL("(select count(*) from {rel} where {where})").format(
                rel=rel, where=filters.where
            )
            params += filters.params
        query = sql.SQL(
            "select coalesce(json_agg(_), '[]')::text, count(*), {total} from ({inner}) _"
        ).format(total=total_sql, inner=inner)
        info = self._info(request, caller, table.schema, f"/{table.name}")
        async with self.db.request_tx(info, read_only=True) as conn:
            row = await (await conn.execute(query, params)).fetchone()
        assert row is not None
        body, n, total = row
        headers = {"Content-Range": _content_range(offset, n, total)}
        status = 206 if total is not None and n < total and (offset or n) else 200
        if _wants_object(request):
            return _raw_json_response(200, _single_text(body, n), headers=headers)
        return _raw_json_response(status, body, headers=headers)

    async def _insert(
        self, request: web.Request, caller: Caller, table: Table
    ) -> web.StreamResponse:
        body, text = await self._write_body(request)
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(r, dict) for r in rows):
            raise ApiError(400, "PGRST102", "Empty or invalid json")
        if text is None:
            text = json.dumps(rows)
        elif not isinstance(body, list):
            text = f"[{text}]"  # (json_populate_recordset takes an array)
        prefer = Prefer.parse(request.headers.get("Prefer", ""))
        columns = _insert_columns(table, request.query.get("columns"), rows)
        rel = _rel(table)
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        statement = sql.SQL(
            "insert into {rel} ({cols}) select {cols} from json_populate_recordset(null::{rel}, %s::json)"
        ).format(rel=rel, cols=cols)
        statement += _on_conflict(table, request.query.get("on_conflict"), prefer, columns)
        return await self._write(request, caller, table, statement, [text], prefer, 201)

    async def _update(
        self, request: web.Request, caller: Caller, table: Table
    ) -> web.StreamResponse:
        body, text = await self._write_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "PGRST102", "Empty or invalid json")
        prefer = Prefer.parse(request.headers.get("Prefer", ""))
        _check_columns(table, list(body))
        filters = parse_filters(table, _filter_items(request.query))
        rel = _rel(table)
        if not body:
            return _write_response(prefer, "[]", 0, 200, _wants_object(request))
        assignments = sql.SQL(", ").join(
            sql.SQL("{c} = pgrst_body.{c}").format(c=sql.Identifier(c)) for c in body
        )
        statement = sql.SQL(
            "update {rel} set {assign} from (select * from json_populate_record(null::{rel}, %s::json))"
            " pgrst_body where {where}"
        ).format(rel=rel, assign=assignments, where=filters.where)
        params = [json.dumps(body) if text is None else text, *filters.params]
        return await self._write(request, caller, table, statement, params, prefer, 200)

    async def _delete(
        self, request: web.Request, caller: Caller, table: Table
    ) -> web.StreamResponse:
        await request.read()  # the client sends "{}"; tolerated and ignored
        prefer = Prefer.parse(request.headers.get("Prefer", ""))
        filters = parse_filters(table, _filter_items(request.query))
        statement = sql.SQL("delete from {rel} where {where}").format(
            rel=_rel(table), where=filters.where
        )
        return await self._write(
            request, caller, table, statement, list(filters.params), prefer, 200
        )

    async def _write(
        self,
        request: web.Request,
        caller: Caller,
        table: Table,
        statement: sql.Composable,
        params: list[Any],
        prefer: Prefer,
        status: int,
    ) -> web.StreamResponse:
        single = _wants_object(request)
        returning = sql.SQL(
            " returning {rel}.*" if prefer.representation or single else " returning 1"
        )
        query = sql.SQL(
            "with pgrst_source as ({stmt}{ret}) select {agg}, count(*) from pgrst_source _"
        ).format(
            stmt=statement,
            ret=returning.format(rel=_rel(table)),
            agg=sql.SQL("coalesce(json_agg(_), '[]')::text" if prefer.representation else "''"),
        )
        info = self._info(request, caller, table.schema, f"/{table.name}")
        async with self.db.request_tx(info, read_only=False) as conn:
            row = await (await conn.execute(query, params)).fetchone()
            assert row is not None
            body, n = row
            if single and n != 1:
                _single_text(body, n)  # raises PGRST116 and so rolls back, as PostgREST does
        return _write_response(prefer, body, n, status, single)


# ---------------------------------------------------------------------- pure helpers


def _rel(table: Table) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))


def _filter_items(query: MultiMapping[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query.items() if k not in _RESERVED]


def _int_param(query: MultiMapping[str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "PGRST100", f'"failed to parse {name} parameter ({raw})"') from exc
    if value < 0:
        raise ApiError(400, "PGRST100", f'"failed to parse {name} parameter ({raw})"')
    return value


def _wants_object(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "*/*")
    if OBJECT_MEDIA in accept:
        return True
    acceptable = ("*/*", "application/json", "application/*", "")
    if not any(media.split(";")[0].strip() in acceptable for media in accept.split(",")):
        raise ApiError(406, "PGRST107", f"None of these media types are available: {accept}")
    return False


def _single(result: Any) -> Any:
    if isinstance(result, list):
        if len(result) != 1:
            raise _not_single(len(result))
        return result[0]
    return result


def _single_text(body: str, n: int) -> str:
    """The one row of ``body`` (``json_agg``'s text) as Postgres wrote it; PGRST116 unless ``n`` is 1.

    Sliced, not decoded: decoding raised on a row Python's json cannot hold (an integer of 5,000
    digits, nesting past the recursion limit), a 500 where PostgREST sends the row."""
    if n != 1:
        raise _not_single(n)
    return body[1:-1]  # json_agg of one row: "[" + row + "]"


def _not_single(n: int) -> ApiError:
    return ApiError(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        details=f"The result contains {n} rows",
    )


def _content_range(offset: int, n: int, total: int | None) -> str:
    tail = "*" if total is None else str(total)
    if n == 0:
        return f"*/{tail}"
    return f"{offset}-{offset + n - 1}/{tail}"


def _raw_json_response(
    status: int, body: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=body.encode(),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _write_response(prefer: Prefer, body: str, n: int, status: int, single: bool) -> web.Response:
    headers = {"Content-Range": _content_range(0, n, None)}
    if single and prefer.representation:
        return _raw_json_response(status, _single_text(body, n), headers=headers)
    # (A single object with return=minimal: no body, as PostgREST; _write checked the count.)
    if prefer.representation:
        headers["Preference-Applied"] = "return=representation"
        return _raw_json_response(status, body, headers=headers)
    return web.Response(status=201 if status == 201 else 204, headers=headers)


def _check_columns(table: Table, columns: list[str]) -> None:
    for col in columns:
        if col not in table.columns:
            raise ApiError(
                400,
                "PGRST204",
                f"Could not find the '{col}' column of '{table.name}' in the schema cache",
            )


def _insert_columns(
    table: Table, columns_param: str | None, rows: list[dict[str, Any]]
) -> list[str]:
    if columns_param:
        columns = [c.strip().strip('"') for c in columns_param.split(",") if c.strip()]
    else:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    _check_columns(table, columns)
    return columns


def _on_conflict(
    table: Table, on_conflict: str | None, prefer: Prefer, columns: list[str]
) -> sql.Composable:
    if prefer.resolution not in ("merge-duplicates", "ignore-duplicates"):
        return sql.SQL("")
    target = [c.strip() for c in on_conflict.split(",")] if on_conflict else list(table.primary_key)
    if not target:
        raise ApiError(400, "PGRST100", "on_conflict needs a column list or a primary key")
    _check_columns(table, target)
    conflict = sql.SQL(", ").join(sql.Identifier(c) for c in target)
    updates = [c for c in columns if c not in target]
    if prefer.resolution == "ignore-duplicates" or not updates:
        return sql.SQL(" on conflict ({}) do nothing").format(conflict)
    assign = sql.SQL(", ").join(
        sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in updates
    )
    return sql.SQL(" on conflict ({}) do update set {}").format(conflict, assign)


def _call_sql(
    fn: Function, args: Any, body_text: str | None = None
) -> tuple[sql.Composed, list[Any]]:
    """Build ``select <shape>::text from json_to_record($1) pgrst_body, lateral fn(...) pgrst_call``.

    ``body_text`` is the request body the arguments were parsed from; it is sent as is (as
    PostgREST does) instead of being encoded again: a push of 500 blueprints is a megabyte.
    """
    target = sql.SQL("{}.{}").format(sql.Identifier(fn.schema), sql.Identifier(fn.name))
    params: list[Any] = []
    if fn.single_json_param and not (isinstance(args, dict) and fn.accepts(set(args))):
        source = sql.SQL("{fn}(%s::{t}) pgrst_call").format(fn=target, t=sql.SQL(fn.arg_types[0]))
        params.append(body_text if body_text is not None else json.dumps(args))
    elif isinstance(args, dict) and args:
        typed = dict(zip(fn.arg_names, fn.arg_types, strict=True))
        names = [k for k in fn.arg_names if k in args]
        record = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(typed[n])) for n in names
        )
        call_args = sql.SQL(", ").join(
            sql.SQL("{n} := pgrst_body.{n}").format(n=sql.Identifier(n)) for n in names
        )
        # PostgREST reads the body with json_to_record. Without a `json` parameter (whose text
        # it keeps verbatim) jsonb_to_record gives the same arguments for half the parsing: a
        # jsonb parameter is then parsed once instead of three times (json check, record
        # split, jsonb cast), a sixth of a 500-change push's server time.
        reader = "json" if "json" in fn.arg_types else "jsonb"
        source = sql.SQL(
            "{reader}_to_record(%s::{reader}) as pgrst_body({rec}), lateral {fn}({args}) pgrst_call"
        ).format(reader=sql.SQL(reader), rec=record, fn=target, args=call_args)
        # Every key of the body is an argument (resolution checked it), so the body text is
        # exactly what json_to_record needs.
        params.append(body_text if body_text is not None else json.dumps(args))
    else:
        source = sql.SQL("{fn}() pgrst_call").format(fn=target)
    if fn.return_kind == "void":
        shape = sql.SQL("null")
    elif fn.returns_set:
        shape = sql.SQL("coalesce(json_agg(pgrst_call), '[]')::text")
    else:
        shape = sql.SQL("to_json(pgrst_call)::text")
    return sql.SQL("select {shape} from {source}").format(shape=shape, source=source), params
