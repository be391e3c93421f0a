"""The HTTP side of the client: its httpx client and options, reading RPC answers json cannot
hold (``decode_answer``), ``Retry-After`` headers, and the server's clock from ``Date`` headers.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import re
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from supabase import ClientOptions
from supabase_auth import SyncSupportedStorage
from supabase_auth.constants import EXPIRY_MARGIN
from supabase_auth.types import Session

from sync.remote import (
    UnreadableValue,
)

log = logging.getLogger("sync.supabase_remote")

DEFAULT_TIMEOUT_S = 30.0


def _client_options(
    storage: SyncSupportedStorage, http: httpx.Client, *, auto_refresh: bool
) -> ClientOptions:
    # Our own httpx client: it carries the timeout (the default is 120 s, far too long to notice
    # a black-holed connection) and lets close() release the sockets.
    return ClientOptions(
        storage=storage,
        httpx_client=http,
        auto_refresh_token=auto_refresh,
        persist_session=True,
        flow_type="implicit",
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~0.2 s; one context serves every client of the process
    # (SSLContext is safe to share between connections and threads once configured).
    return ssl.create_default_context()


def _http_client(
    timeout_s: float, *, on_response: Callable[[httpx.Response], None] | None = None
) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=True,
        verify=_tls_context(),
        event_hooks={"response": [on_response]} if on_response is not None else None,
    )


# How deep decode_answer reads an RPC answer: a value nested deeper is replaced by an
# UnreadableValue. A row's meta starts at level 4 of a pull page (page, changes, row, meta), so
# that still reads past MAX_META_DEPTH (what a meta may hold), and stays far below the
# interpreter's recursion limit, which json's C decoder spends one frame per level of.
ANSWER_DEPTH = 128
# A JSON string (escapes included) or a bracket, for decode_answer's depth cut.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# What decode_answer puts in place of a value nested too deep: a string with a NUL, which no
# jsonb value holds, so it cannot be one a row really has.
_TOO_DEEP = "\x00nested too deep"


def decode_answer(raw: bytes) -> Any:
    """An RPC answer decoded as ``json.loads`` does, except for what json cannot hold: an
    integer of more digits than ``int()`` converts (``sys.get_int_max_str_digits()``, left as
    it is: it is process-wide) and a value nested deeper than :data:`ANSWER_DEPTH` each become
    an :class:`~sync.remote.UnreadableValue` where they were. ``sync.remote.meta_problem`` then
    refuses only the rows that hold one. Raises ValueError for what is no JSON at all.
    """
    text, cut = _cut_deep(raw.decode("utf-8"), ANSWER_DEPTH)
    data = json.loads(text, parse_int=_answer_int)
    return _mark_too_deep(data) if cut else data


def _answer_int(text: str) -> int | UnreadableValue:
    try:
        return int(text)
    except ValueError:  # (as meta_problem says it of such an int in a decoded meta)
        return UnreadableValue(f"an integer of more than {sys.get_int_max_str_digits()} digits")


def _cut_deep(text: str, limit: int) -> tuple[str, bool]:
    """``text`` with each value that opens deeper than ``limit`` levels replaced by the JSON
    string of :data:`_TOO_DEEP`, and whether any was. Brackets inside strings are skipped; a
    text whose brackets do not match is left to json.loads to refuse."""
    depth = 0
    start = -1
    parts: list[str] = []
    last = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token[0] == '"':
            continue
        if token in "[{":
            depth += 1
            if depth == limit + 1:
                start = match.start()
        else:
            if depth == limit + 1 and start >= 0:
                parts += [text[last:start], json.dumps(_TOO_DEEP)]
                last = match.end()
                start = -1
            depth -= 1
    if not parts:
        return text, False
    parts.append(text[last:])
    return "".join(parts), True


def _mark_too_deep(data: Any) -> Any:
    """``data`` with every :data:`_TOO_DEEP` string replaced by an UnreadableValue (in place;
    iterative, as the answer may still be 128 levels deep)."""
    marker = UnreadableValue(f"a value nested deeper than {ANSWER_DEPTH} levels of the answer")
    if data == _TOO_DEEP:
        return marker
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                if child == _TOO_DEEP:
                    value[key] = marker
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(value, list):
            for i, child in enumerate(value):
                if child == _TOO_DEEP:
                    value[i] = marker
                elif isinstance(child, dict | list):
                    stack.append(child)
    return data


# A server's Retry-After is honoured up to this: a bogus or hostile header (a day, a date years
# ahead) must not park a daemon's sync for longer than an hour.
MAX_RETRY_AFTER_S = 3600.0


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), capped at
    MAX_RETRY_AFTER_S; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": a date of unknown zone
            return None
        # A date already past asks for no wait.
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    return min(seconds, MAX_RETRY_AFTER_S)


def _http_date(value: str | None) -> float | None:
    """The epoch seconds of an HTTP date header; None when absent, unreadable or of no zone."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() if when.tzinfo is not None else None


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """The wait a response's ``Retry-After`` asks for; an HTTP date is read against the
    response's own ``Date`` (the server's clock) when it has one: a client clock a day behind
    took "retry at 12:00:30" for a day's wait (cut to the hour's cap), one ahead for none."""
    return retry_after_seconds(headers.get("Retry-After"), now=_http_date(headers.get("Date")))


# A response's Date differing from this machine's clock by at most this is taken for agreement:
# the header has a 1-second resolution and arrives a network delay late, and an error of a few
# seconds is well inside the margin expiry is judged with (EXPIRY_MARGIN, 10 s).
CLOCK_AGREES_S = 5.0
# One differing by more is taken for a broken header (a proxy's cached Date, a date of 1970),
# not this clock. A clock's usual errors are far smaller: a time zone (up to 14 h: a dual boot
# keeping the RTC in local time) or drift with NTP off.
MAX_CLOCK_SKEW_S = 7 * 86400.0


class ServerClock:
    """The server's wall clock, as this machine's plus the offset its responses' ``Date`` shows.

    Access tokens expire by the server's clock (``expires_at`` is the JWT's ``exp``). Judged on a
    local clock two hours behind (a dual boot whose RTC keeps local time, NTP off), a token that
    expired an hour ago looked live: realtime rejoined with it and was refused, and the refresh
    guard reused another process's expired session. Two hours ahead, every token looked expired:
    each realtime join and each guarded refresh rotated the session again, and (ahead by more
    than a token's lifetime) supabase_auth armed no refresh timer at all
    (docs/supabase-remote.md, "Clocks")."""

    def __init__(self) -> None:
        # Server minus local seconds; 0 until a response says otherwise. One float, replaced
        # whole: the response hook runs on every calling thread, readers need no lock.
        self.offset = 0.0

    def note(self, date: str | None) -> None:
        """Learn the offset from a response's ``Date`` header (its value, or None)."""
        server = _http_date(date)
        if server is None:
            return
        skew = server - time.time()
        if abs(skew) > MAX_CLOCK_SKEW_S:
            return
        self.offset = skew if abs(skew) > CLOCK_AGREES_S else 0.0

    def now(self) -> float:
        """The server's time now, in epoch seconds (this machine's when they agree)."""
        return time.time() + self.offset

    def expired(self, session: Session) -> bool:
        """Whether ``session``'s access token has expired, or will within EXPIRY_MARGIN, by
        the server's clock (the test supabase_auth makes on the local one)."""
        return (session.expires_at or 0) <= self.now() + EXPIRY_MARGIN
