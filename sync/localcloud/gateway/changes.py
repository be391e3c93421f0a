"""Where realtime's postgres_changes come from: wal2json on a temporary slot, or triggers + NOTIFY.

``WalChangeFeed`` is what Supabase Realtime does (``realtime.list_changes``): a logical slot read with
``pg_logical_slot_get_changes(..., 'format-version', '2', 'add-tables', <publication tables>)`` every
``interval`` seconds. The slot is TEMPORARY, so it disappears with its connection and cannot retain
WAL after the gateway stops or dies. Changes made by anything (psql, migrations, other gateways) are
seen, in commit order, with real commit timestamps.

``TriggerChangeFeed`` is the fallback when the server has no wal2json: an AFTER ROW trigger on each
publication table sends the row through ``pg_notify``. NOTIFY is also delivered at commit in commit
order, but its payload is capped at 8000 bytes (bigger rows are sent as their primary key and
re-read), and its timestamp is the transaction's start, not its commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from sync.localcloud.gateway import jsontext
from sync.localcloud.gateway.db import connect_with_backoff, run_reconnect_hook, stop_loop

log = logging.getLogger(__name__)

_ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}
IDLE_POLL_INTERVAL = 1.0  # seconds between slot advances while nobody listens
MAX_CHANGES_PER_POLL = 1000
NOTIFY_CHANNEL = "gw_realtime_change"
APPLICATION_NAME = "localcloud-gateway-changes"  # how pg_stat_activity shows the feed's connection

_PUBLICATION_TABLES = """
select schemaname, tablename from pg_publication_tables where pubname = %s order by 1, 2
"""


@dataclass(slots=True)
class Change:
    """One row change, normalised from either source (values still as the source typed them)."""

    schema: str
    table: str
    type: str  # INSERT | UPDATE | DELETE
    commit_timestamp: str
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    types: dict[str, str] = field(default_factory=dict)  # column -> type name from the source
    typed: bool = False  # values are already JSON as to_jsonb() makes them (trigger source)
    truncated: bool = False  # only the primary key was sent (NOTIFY size cap); re-read the row


ChangeSink = Callable[[list[Change]], Awaitable[None]]


def format_commit_timestamp(value: datetime) -> str:
    """Realtime's ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def timestamptz_json(text: str) -> str:
    """A timestamptz's text form as ``to_jsonb`` writes it: "2026-11-22T01:46:55.43352+00:00"."""
    # wal2json prints the server's text form, e.g. "2026-11-22 01:46:55.43352+00". Kept as text:
    # datetime.isoformat() pads the fraction to six digits, to_jsonb trims trailing zeros.
    value = text.replace(" ", "T", 1)
    if len(value) >= 3 and value[-3] in "+-" and value[-2:].isdigit():
        value += ":00"
    return value


def _parse_pg_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(timestamptz_json(text))


def change_from_wal2json(item: dict[str, Any]) -> Change | None:
    """Turn one wal2json format-version 2 row into a Change (None for other actions)."""
    kind = _ACTIONS.get(item.get("action", ""))
    if kind is None:
        return None
    types: dict[str, str] = {}
    record = None
    old = None
    if "columns" in item:
        record = {c["name"]: c.get("value") for c in item["columns"]}
        types.update({c["name"]: c["type"] for c in item["columns"]})
    if "identity" in item:
        old = {c["name"]: c.get("value") for c in item["identity"]}
        types.update({c["name"]: c["type"] for c in item["identity"] if c["name"] not in types})
    stamp = item.get("timestamp")
    when = _parse_pg_timestamp(stamp) if stamp else datetime.now(UTC)
    return Change(
        schema=item["schema"],
        table=item["table"],
        type=kind,
        commit_timestamp=format_commit_timestamp(when),
        record=record if kind != "DELETE" else None,
        old_record=old,
        types=types,
    )


class WalChangeFeed:
    """Poll a temporary wal2json slot and hand batches of changes to ``sink``."""

    def __init__(
        self,
        dsn: str,
        sink: ChangeSink,
        *,
        interval: float = 0.05,
        publication: str = "supabase_realtime",
        listening: Callable[[], bool] | None = None,
        on_reconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.dsn = dsn
        self.sink = sink
        self.interval = interval
        self.publication = publication
        # Whether anyone subscribes to postgres_changes now; None: always decode.
        self.listening = listening
        self.on_reconnect = on_reconnect  # after a lost connection was replaced (and its slot)
        self.slot = ""
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._skipped = False

    async def start(self) -> None:
        """Connect and create the slot; changes committed after this returns are seen."""
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._run(), name=f"wal2json-{self.slot}")

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # A new name each time: the old temporary slot is dropped only once its backend has
        # exited, which a reconnect does not wait for ("replication slot already exists").
        self.slot = f"gw_{os.getpid()}_{secrets.token_hex(4)}"
        conn = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, application_name=APPLICATION_NAME
        )
        try:
            await conn.execute(
                "select pg_create_logical_replication_slot(%s, 'wal2json', true)", (self.slot,)
            )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def stop(self) -> None:
        """Stop polling and close the connection (the temporary slot is dropped with it)."""
        await stop_loop(self)

    def poke(self) -> None:
        """Poll now instead of at the next tick (used after a subscriber joins)."""
        self._wake.set()

    async def poll_once(self) -> int:
        """Read and dispatch one batch; return how many changes it held."""
        assert self._conn is not None
        self._skipped = False
        if self.listening is not None and not self.listening() and await self._skip():
            self._skipped = True
            return 0
        tables = await (
            await self._conn.execute(_PUBLICATION_TABLES, (self.publication,))
        ).fetchall()
        add_tables = ",".join(f"{_escape(s)}.{_escape(t)}" for s, t in tables)
        options = [
            "format-version", "2", "include-pk", "true", "include-transaction", "false",
            "include-timestamp", "true", "include-type-oids", "true",
            "actions", "insert,update,delete",
        ]  # fmt: skip
        # No publication table: decode (to advance the slot) but keep nothing.
        options += ["add-tables", add_tables] if add_tables else ["filter-tables", "*.*"]
        placeholders = ", ".join(["%s"] * len(options))
        rows = await (
            await self._conn.execute(
                f"select data from pg_logical_slot_get_changes(%s, null, %s, {placeholders})",
                [self.slot, MAX_CHANGES_PER_POLL, *options],
            )
        ).fetchall()
        changes = [c for c in (change_from_wal2json(json.loads(r[0])) for r in rows) if c]
        if changes:
            await self.sink(changes)
        return len(rows)

    async def _skip(self) -> bool:
        """Move the slot to the current WAL end without decoding; False if someone subscribed.

        With no subscriber every change would be decoded to JSON, sent and parsed only to be
        dropped: for a push of 500 blueprints that was a megabyte, and as much CPU in this
        process as the request itself. The end is read before the second look at the
        subscribers, so a change committed after a subscription was confirmed lies beyond it and
        is still decoded.
        """
        assert self._conn is not None
        row = await (await self._conn.execute("select pg_current_wal_lsn()::text")).fetchone()
        assert row is not None and self.listening is not None
        if self.listening():
            return False
        await self._conn.execute(
            "select pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, row[0])
        )
        return True

    async def _run(self) -> None:
        while True:
            try:
                n = await self.poll_once()
            except psycopg.OperationalError as exc:
                await self._recover(exc)
                continue
            except Exception:  # the feed serves every subscriber: it must go on
                # A batch that cannot be decoded or delivered (a value Python's json cannot hold
                # was one) ended this task for good, and every socket stayed up without a change
                # ever again. The batch is lost (the slot moved past it); later ones are not.
                log.exception("realtime: dropping a batch of changes that could not be delivered")
                n = 0
            if n >= MAX_CHANGES_PER_POLL:
                continue  # a backlog: read on without waiting
            self._wake.clear()
            # Every call decodes (or, when skipping, reads) the WAL again from the slot's restart
            # point, which moves only every 15 s or so: skipping every 50 ms under a bulk push
            # cost Postgres a third as much CPU as the pushes. A subscriber's join pokes us.
            wait = max(self.interval, IDLE_POLL_INTERVAL) if self._skipped else self.interval
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _recover(self, lost: psycopg.OperationalError) -> None:
        """Reconnect with a new slot after a failed poll; then run ``on_reconnect``.

        The old slot went with its connection, so changes committed before the new one exists
        are never decoded: ``on_reconnect`` tells subscribers to re-read. The loss and the
        recovery are logged once each (a warning per failed try flooded the log while Postgres
        was down)."""
        began = time.monotonic()
        log.warning("realtime: the change feed lost its connection (%s); reconnecting", lost)
        if self._conn is not None:
            await self._conn.close()
        self._conn = await connect_with_backoff(self._connect, "the change feed")
        log.info(
            "realtime: the change feed reconnected after %.1f s; changes made meanwhile were "
            "not decoded, so subscribers are told to re-read",
            time.monotonic() - began,
        )
        if self.on_reconnect is not None:
            await run_reconnect_hook(self.on_reconnect, "the change feed")


def _escape(name: str) -> str:
    # wal2json's add-tables syntax escapes '.', ',' and '*' with a backslash.
    return "".join("\\" + ch if ch in ".,*\\ " else ch for ch in name)


# ----------------------------------------------------------------------------- trigger fallback

_TRIGGER_FUNCTION = f"""
create or replace function realtime.gw_capture_change() returns trigger
language plpgsql security definer set search_path to '' as $$
declare
  body jsonb;
  pk text[];
begin
  body := jsonb_build_object(
    'schema', tg_table_schema, 'table', tg_table_name, 'type', tg_op,
    'commit_timestamp', to_char(now() at time zone 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'record', case when tg_op <> 'DELETE' then to_jsonb(new) end,
    'old_record', case when tg_op <> 'INSERT' then to_jsonb(old) end);
  if octet_length(body::text) > 7900 then
    -- NOTIFY payloads are capped at 8000 bytes: send the primary key only; the gateway re-reads.
    select array_agg(a.attname::text) into pk from pg_index i
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
      where i.indrelid = tg_relid and i.indisprimary;
    body := body || jsonb_build_object('truncated', true,
      'record', case when tg_op <> 'DELETE' then (select jsonb_object_agg(k, v)
         from jsonb_each(to_jsonb(new)) e(k, v) where k = any(pk)) end,
      'old_record', case when tg_op <> 'INSERT' then (select jsonb_object_agg(k, v)
         from jsonb_each(to_jsonb(old)) e(k, v) where k = any(pk)) end);
  end if;
  perform pg_notify('{NOTIFY_CHANNEL}', body::text);
  return null;
end $$;
"""


# A notification Python's json cannot read (a row holding a value it cannot, see jsontext), read
# by Postgres instead: the rest of it, and each column of the rows as its own JSON text.
_SPLIT_NOTIFICATION = """
select (p - 'record' - 'old_record')::text,
       (select array_agg(array[k, v::text]) from jsonb_each(nullif(p->'record', 'null')) e(k, v)),
       (select array_agg(array[k, v::text]) from jsonb_each(nullif(p->'old_record', 'null')) e(k, v))
from (select %s::jsonb as p) s
"""


def columns(pairs: list[list[str]] | None) -> dict[str, Any] | None:
    """A row from (column, JSON text) pairs, each value read by :func:`jsontext.loads`."""
    return None if pairs is None else {k: jsontext.loads(v) for k, v in pairs}


class TriggerChangeFeed:
    """Install capture triggers on the publication's tables; changes arrive via NOTIFY."""

    def __init__(
        self, dsn: str, sink: ChangeSink, *, publication: str = "supabase_realtime"
    ) -> None:
        self.dsn = dsn
        self.sink = sink
        self.publication = publication

    async def start(self) -> None:
        """Create the capture function and one trigger per publication table."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(_TRIGGER_FUNCTION)
            tables = await (await conn.execute(_PUBLICATION_TABLES, (self.publication,))).fetchall()
            for schema, table in tables:
                await conn.execute(
                    psycopg.sql.SQL(
                        "create or replace trigger gw_capture_change after insert or update or delete"
                        " on {}.{} for each row execute function realtime.gw_capture_change()"
                    ).format(psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table))
                )

    async def stop(self) -> None:
        """Nothing runs here; the NOTIFY listener belongs to the gateway."""

    def poke(self) -> None:
        """NOTIFY is pushed, not polled."""

    async def on_notify(self, payload: str) -> None:
        """Handle one NOTIFY payload from the capture trigger."""
        item = jsontext.loads(payload)
        if isinstance(item, jsontext.RawJSON):
            # json.loads of the whole lost the change (a 5,000-digit integer: ValueError) or
            # ended the gateway's NOTIFY listener (nesting 2,000 deep: RecursionError).
            item = await self._split(payload)
        change = Change(
            schema=item["schema"],
            table=item["table"],
            type=item["type"],
            commit_timestamp=item["commit_timestamp"],
            record=item.get("record"),
            old_record=item.get("old_record"),
            typed=True,
            truncated=bool(item.get("truncated")),
        )
        await self.sink([change])

    async def _split(self, payload: str) -> dict[str, Any]:
        """A notification as Postgres reads it, each row value kept as jsontext reads it."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            cur = await conn.execute(_SPLIT_NOTIFICATION, (payload,))
            rest, record, old = await cur.fetchone()  # type: ignore[misc]
        item: dict[str, Any] = json.loads(rest)
        item.update(record=columns(record), old_record=columns(old))
        return item
