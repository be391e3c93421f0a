"""Text that came from a server, made safe to store, print and log.

A cloud's rejection message, error text, hint or code, and a pulled row's path, reach the index
(quarantine records, the last error), ``localstore status`` and ``sync --json`` on a terminal, and
the daemon's log. A hostile or broken server could put terminal escapes in them (``\\x1b]0;...``
retitles the window, ``\\x1b[2J`` clears it, a bidi override reverses what a line seems to say),
newlines that forge log lines, or a megabyte that every status read carries. :func:`shown` keeps
the text readable and loses nothing a person needs: such characters are written as escapes
(``\\x1b``, ``\\u202e``), and a text longer than the limit is cut with the count of what was left
out. Secrets are another matter: ``sync.supabase_remote.map_error`` replaces the values the
request carried; :func:`without_credentials` and :class:`CredentialFilter` take out, by their
shape, the ones a library puts in its log lines (the anon key in the realtime URL).
:class:`LibraryLogFilter`, on the realtime and websockets loggers, also escapes what those
libraries quote from the server (a close frame's reason, a header).
"""

from __future__ import annotations

import logging
import re
import unicodedata

# Longer than any message this project's SQL writes (under 200 characters) or PostgREST's,
# short enough for a status line: a quarantine record is shown by every `localstore status`.
MAX_SHOWN = 500
# A code is a word the engine compares (op_id_reused, not_owner, 42501): a short one.
MAX_CODE = 64

# Control (Cc: C0, DEL, C1), format (Cf: bidi overrides, zero-width), line and paragraph
# separators, and lone surrogates (which cannot be encoded to print or store).
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_CANDIDATES = re.compile(r"[^\x20-\x7e]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if unicodedata.category(ch) not in _HIDDEN:
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escaped(text: str) -> str:
    """``text`` with control and format characters written as escapes (no length limit)."""
    if text.isascii() and text.isprintable():
        return text
    return _CANDIDATES.sub(_escape, text)


_CUT = re.compile(r"\.\.\. \([\d,]+ more characters\)\Z")


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` (from a server) escaped as :func:`escaped` and cut to about ``limit`` characters,
    saying how many were left out. A text already cut is left as it is (an error mapped twice
    keeps its first count)."""
    text = escaped(text)
    if len(text) <= limit:
        return text
    cut = _CUT.search(text)
    if cut is not None and cut.start() == limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


# -- credentials in log lines --------------------------------------------------------------------

# The anon key rides in the realtime websocket's URL (``?apikey=...``): websockets logs that
# request line at DEBUG, and the realtime library logs a failed connect at ERROR with the
# exception's text, which for a redirect it cannot follow (InvalidURI) is the whole URL. Matched by
# shape, since those lines are written where the values are not known: an ``apikey``/
# ``access_token`` parameter, a bearer token, a JWT, a new-style Supabase key.
_CREDENTIALS = re.compile(
    r"(?i)(?<![\w-])((?:apikey|access_token|refresh_token|token)=)[^&\s'\"#<>]+"
    r"|(bearer\s+)[\w.~+/=-]+"
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"
    r"|sb_(?:publishable|secret)_[\w-]+"
)


def _hide(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2) or "") + "***"


def without_credentials(text: str) -> str:
    """``text`` with keys and tokens (by their shape, see _CREDENTIALS) replaced by ``***``."""
    return _CREDENTIALS.sub(_hide, text)


class CredentialFilter(logging.Filter):
    """Take keys and tokens out of a record's message and traceback before any handler writes it.

    On the daemon's handlers (every record of the daemon's log), and on the loggers of the
    libraries that log the realtime URL, for an embedding app's own handlers
    (:func:`guard_realtime_logs`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = without_credentials(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            # The formatter keeps the text of the traceback here and prints that one.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = without_credentials(record.exc_text)
        return True


class LibraryLogFilter(CredentialFilter):
    """A CredentialFilter that also escapes control and format characters (:func:`escaped`).

    For the realtime and websockets loggers, which quote what the server sent as it came: a
    close frame's reason (``WebSocket connection closed with code: 1011, reason: ...`` at
    ERROR), a refused handshake's headers, a redirect's ``Location``. A hostile server could
    forge log lines with a newline, or put terminal escapes into the daemon log. The message
    becomes one line (a library's own newline too); a traceback keeps the line breaks of its
    own structure (frames, exception lines), and every other such character is escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        message = record.getMessage()
        clean = escaped(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_text:
            record.exc_text = _escaped_traceback(record.exc_text)
        return True


# The lines a formatted traceback starts with (frames and code are indented, as are exception
# groups; an exception's own line is its type's name): any other line came from an error's
# message, a server's text among them.
_TRACEBACK_LINE = re.compile(
    r"(?:\s|Traceback \(most recent call last\):|During handling of the above exception"
    r"|The above exception was the direct cause|[\w.]+(?::|\Z)|\Z)"
)


def _escaped_traceback(text: str) -> str:
    """A traceback escaped as :func:`escaped`, keeping the line breaks of its own structure: a
    newline in an error's message (a forged log line) is escaped like any control character."""
    first, *rest = text.split("\n")
    out = [escaped(first)]
    for line in rest:
        out.append(("\n" if _TRACEBACK_LINE.match(line) else "\\x0a") + escaped(line))
    return "".join(out)


# The loggers that write the realtime URL or an error quoting it (a logger's filter sees only
# the records made on that very logger, not its children's: each is named), ours among them.
GUARDED_LOGGERS = (
    "sync._realtime",
    "websockets.client",
    "realtime._async.client",
    "realtime._async.channel",
    "realtime._async.push",
    "realtime._async.timer",
)


def guard_realtime_logs() -> None:
    """Put a LibraryLogFilter on each of GUARDED_LOGGERS (once)."""
    for name in GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LibraryLogFilter) for f in logger.filters):
            logger.addFilter(LibraryLogFilter())
