"""Cut a migration file into statements exactly where ``supabase db push`` cuts it.

The Supabase CLI does not send a migration file as one query: it splits it at ``;`` with a
small state machine (supabase/cli ``pkg/parser``: ``state.go``, ``token.go`` ``SplitAndTrim``),
sends each piece with the extended protocol (one statement per message, so a piece holding two
statements fails) and records the pieces in ``supabase_migrations.schema_migrations.statements``.
Sending the whole file with the simple protocol, as ``psql -f`` does and this project's runner
did, accepts SQL the CLI cuts in the wrong place: ``E'it\\'s; fine'`` is one string to Postgres
and two broken statements to the CLI. So the local runner cuts with this copy of the CLI's rules,
quirks included (a backslash outside quotes escapes the next character; ``''`` inside quotes is
an escaped quote, a backslash is not; a ``;`` inside parentheses or a ``BEGIN ATOMIC`` body does
not end a statement; the first ``)`` after nested parentheses ends them all).
"""

from __future__ import annotations

__all__ = ["split_statements"]


class _State:
    """One state of the tokenizer; ``next`` returns the following one, or None to cut."""

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        raise NotImplementedError


def _is_ident(ch: str) -> bool:
    return ch.isalpha() or ch.isdigit() or ch in "_$"


def _ends_begin_atomic(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` ends with the keywords BEGIN ATOMIC (any case, any spacing)."""
    token = text[start:end]
    if len(token) < 6 or token[-6:].upper() != "ATOMIC":
        return False
    if len(token) > 6 and _is_ident(token[-7]):
        return False
    prefix = token[:-6].rstrip()
    if len(prefix) < 5 or prefix[-5:].upper() != "BEGIN":
        return False
    return len(prefix) == 5 or not _is_ident(prefix[-6])


class _Ready(_State):
    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if ch == "$":
            return _Tag(end - 1)
        if ch in "'\"":
            return _Quote(ch)
        if ch == "-":
            return _Comment()
        if ch == "/":
            return _Block()
        if ch == "\\":
            return _Escape()
        if ch == ";":
            return None
        if ch == "(":
            return _Nested(self, ")")
        if ch in "cC" and _ends_begin_atomic(text, start, end):
            return _Nested(self, "END")
        return self


class _Comment(_State):
    """After one ``-``: a second one opens a line comment (read up to the newline)."""

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if ch == "-":
            return _Closing("\n")
        return _Ready().next(ch, text, start, end)


class _Block(_State):
    """After ``/``: a ``*`` opens a block comment; they nest."""

    def __init__(self) -> None:
        self.depth = 0

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        window = text[max(start, end - 2) : end]
        if window == "/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().next(ch, text, start, end)
        if window == "*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


class _Quote(_State):
    """Inside '...' or "...": a doubled delimiter is an escaped one."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.escape = False

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if self.escape:
            if ch == self.delimiter:
                self.escape = False
                return self
            return _Ready().next(ch, text, start, end)
        if ch == self.delimiter:
            self.escape = True
        return self


class _Closing(_State):
    """Inside a dollar quote or a line comment: nothing is escaped until the delimiter."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if text.endswith(self.delimiter, start, end):
            return _Ready()
        return self


class _Tag(_State):
    """After ``$``: ``$tag$`` (or ``$$``) opens a dollar quote."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        if ch == "$":
            return _Closing(text[self.offset : end])
        if ch.isalpha() or ch.isdigit() or ch == "_":
            return self
        return _Ready().next(ch, text, start, end)


class _Escape(_State):
    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        return _Ready()


class _Nested(_State):
    """Inside parentheses or a BEGIN ATOMIC body: ``;`` does not cut until the closing word."""

    def __init__(self, inner: _State, delimiter: str) -> None:
        self.inner = inner
        self.delimiter = delimiter

    def next(self, ch: str, text: str, start: int, end: int) -> _State | None:
        following = self.inner.next(ch, text, start, end)
        if following is not None:
            self.inner = following
        if isinstance(self.inner, _Ready):
            window = text[max(start, end - len(self.delimiter)) : end]
            if window.upper() == self.delimiter.upper():
                return _Ready()
        return self


def split_statements(text: str) -> list[str]:
    """Return the statements ``supabase db push`` sends for ``text``, in order.

    Each piece is cut after its ``;`` (or at the end of the text), loses its trailing ``;``s
    and surrounding whitespace, and is dropped when nothing is left. A piece may be only a
    comment (Postgres answers it as an empty query)."""
    pieces: list[str] = []
    state: _State = _Ready()
    start = 0
    for i, ch in enumerate(text):
        following = state.next(ch, text, start, i + 1)
        if following is None:
            pieces.append(text[start : i + 1])
            start, state = i + 1, _Ready()
        else:
            state = following
    if start < len(text):
        pieces.append(text[start:])
    trimmed = (p.rstrip(";").strip() for p in pieces)
    return [p for p in trimmed if p]
