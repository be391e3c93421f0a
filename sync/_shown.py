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
# Format characters that ordinary text is written with, kept where they join two non-ASCII
# characters: the zero-width non-joiner (Persian, Hindi: U+200C) and joiner (emoji sequences
# such as the technologist, Indic conjuncts: U+200D). Escaped, a path or a message naming a
# blueprint in those scripts read "\u200c" mid-word, and a push quarantine record's path no
# longer named the blueprint. Between ASCII characters they only make look-alikes: escaped.
_JOINERS = frozenset({"\u200c", "\u200d"})
# A flag tag sequence (England, Scotland, Wales): U+1F3F4, tag characters, the cancel tag, kept
# whole; a tag character anywhere else (invisible text) is escaped.
_CANDIDATES = re.compile(r"\U0001F3F4[\U000E0020-\U000E007E]{1,32}\U000E007F|[^\x20-\x7e]")


def _visible_non_ascii(ch: str) -> bool:
    return not ch.isascii() and unicodedata.category(ch) not in _HIDDEN


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if len(ch) > 1 or unicodedata.category(ch) not in _HIDDEN:
        return ch  # (a flag, or a visible character)
    if ch in _JOINERS:
        text, at = match.string, match.start()
        if 0 < at < len(text) - 1 and all(_visible_non_ascii(c) for c in text[at - 1 : at + 2 : 2]):
            return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escaped(text: str) -> str:
    """``text`` with control and format characters written as escapes (no length limit)."""
    if text.isascii() and text.isprintable():
        return text
    return _CANDIDATES.sub(_escape, text)


_CUT = re.compile(r"\.\.\. \(([\d,]+) more characters\)\Z")


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """``text`` (from a server) escaped as :func:`escaped` and cut to about ``limit`` characters,
    saying how many were left out. A text already cut (an error mapped twice, or shown again
    under a smaller limit) keeps its count when it fits, else is cut again with the two counts
    added: counted as it was, the first cut's own "... (N more characters)" was counted in place
    of the N characters it stands for."""
    text = escaped(text)
    if len(text) <= limit:
        return text
    before = 0
    cut = _CUT.search(text)
    if cut is not None:
        if cut.start() <= limit:
            return text
        before = int(cut.group(1).replace(",", ""))
        text = text[: cut.start()]
    return f"{text[:limit]}... ({len(text) - limit + before:,} more characters)"


# -- credentials in log lines --------------------------------------------------------------------

# The anon key rides in the realtime websocket's URL (``?apikey=...``): websockets logs that
# request line at DEBUG, and the realtime library logs a failed connect at ERROR with the
# exception's text, which for a redirect it cannot follow (InvalidURI) is the whole URL. Matched by
# shape, since those lines are written where the values are not known: an ``apikey``/
# ``access_token`` parameter, a bearer token, a JWT, a new-style Supabase key. A JWT starts
# where a word starts, and with "eyJ" as written (base64 of '{"'): matched anywhere and in any
# case, ordinary names lost their end ("eyjafjallajokull.blueprint.yaml" logged as "***",
# "greyjoys_castle.blueprint.yaml" as "gr***"), and a long run of "eyJ" took time growing with
# the square of its length (every start scanned to its end: 15 s for a 120 KB line). A bearer
# token is a run of at least 16 characters: "missing bearer token" is a sentence.
_CREDENTIALS = re.compile(
    r"(?i)(?<![\w-])((?:apikey|access_token|refresh_token|token)=)[^&\s'\"#<>]+"
    r"|(bearer\s+)[\w.~+/=-]{16,}"
    r"|(?<![\w-])(?-i:eyJ)[\w-]{4,}\.[\w-]{4,}\.[\w-]*"
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
        try:
            message = record.getMessage()
            formatted = True
        except Exception as exc:  # noqa: BLE001 - any error a message or argument raises
            # Arguments that do not fit the format (a library's logging bug): logging reports
            # such a record and goes on, but raised here, in a filter, it reached the code that
            # logged (the daemon's threads, the realtime tasks). Written as it came, redacted.
            message, formatted = _unformatted(record, exc), False
        clean = without_credentials(message)
        if clean != message or not formatted:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            # The formatter keeps the text of the traceback here and prints that one.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = without_credentials(record.exc_text)
        return True


def _unformatted(record: logging.LogRecord, exc: Exception) -> str:
    """A record whose message cannot be formatted, as text (its format and arguments)."""
    try:
        return f"{record.msg!r} % {record.args!r} (cannot be formatted: {exc})"
    except Exception:  # noqa: BLE001 - an argument whose repr fails too
        return f"{type(record.msg).__name__} message (cannot be formatted: {exc})"


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
        if record.name == "realtime._async.client" and message.startswith(_UNREADABLE_FRAME):
            # realtime-py logs a frame it cannot validate at ERROR with the whole frame: a
            # change of a row the client cannot hold (a 5,000-digit number in its meta) put the
            # blueprint's content in the log, up to 10 MiB on one line. (Sync's own client reads
            # frames itself and pulls on such a change: sync._realtime._Client. This is for any
            # other realtime client in the process.)
            record.msg = (
                "realtime: dropped a message the client could not read (%d characters, not "
                "logged); the next pull takes its change"
            )
            record.args = (len(message) - len(_UNREADABLE_FRAME),)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
            return True
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


# How realtime-py's client starts its line for a frame it cannot validate (realtime 2.x).
_UNREADABLE_FRAME = "Unrecognized message format "

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
