"""Snippets of large blueprints: FTS5's ``snippet()`` on a window of the text, not on all of it.

FTS5's ``snippet()`` scores every candidate fragment against every hit of the query in the
column, so its time grows with the square of the hits in one blueprint: a 1 MB blueprint that
holds a searched word on each line took 1.4 s for its snippet alone, ``deploy build`` on a
100,000-blueprint home with three blueprints of 2-7 MB 24.5 s (``highlight()`` is no way out:
0.7 s for the 1 MB one). A search holds the index's read lock meanwhile. So a hit whose YAML is
over ``SNIPPET_WHOLE_MAX`` bytes gets its snippet from a window of about 4 KB of its content
around the first place where a word of the query appears, made by the same ``snippet()`` over
the same columns in a private in-memory FTS5 table, with the same tokenizer: the marks, the
ellipses and the length are what a small blueprint's snippet has. The window is found by a
case-insensitive search for the query's words as written; text they match only through the
tokenizer's folding (``cafe`` for ``café``) is not found that way, and the window is then the
start of the content (the snippet may then come from the name, tags or path, as FTS5 picks, or
show no hit).
"""

from __future__ import annotations

import re
import threading
from typing import Any

import apsw

from localstore._fts_text import HIT_CLOSE, HIT_OPEN, SPLIT

# Blueprints (their YAML file's bytes) above this get the window's snippet. At 32 KB the whole
# text's snippet() costs about 6 ms in the worst case (a query word on every line); a typical
# blueprint is 1-5 KB.
SNIPPET_WHOLE_MAX = 32 * 1024
# The window: this much content before the first place a query word appears, and after it.
WINDOW_BEFORE, WINDOW_AFTER = 1024, 3072

FULL_COLUMNS = ("name", "description", "tags", "content", "path")
_SNIPPET_ARGS = f"-1, '{HIT_OPEN}', '{HIT_CLOSE}', '…', 12"
_QUOTED = re.compile(r'"([^"]*)"')
_local = threading.local()


def snippet_sql(table: str, *, whole_max: int | None) -> str:
    """The SQL of a hit's snippet in ``table``; with ``whole_max``, NULL for a hit whose YAML
    is bigger (its snippet is then :func:`window_snippet`'s)."""
    snippet = f"snippet({table}, {_SNIPPET_ARGS})"
    if whole_max is None:
        return snippet
    return (
        f"CASE WHEN (SELECT yaml_size FROM blueprints WHERE rid = {table}.rowid) > {whole_max} "
        f"THEN NULL ELSE {snippet} END"
    )


def window_snippet(cur: Any, match: str, rid: int) -> str:
    """The snippet of blueprint row ``rid`` for the FTS5 query ``match`` (as the search ran it),
    from a window of its content; see the module's docstring. '' if the row is gone."""
    rows = cur.execute(
        f"SELECT {', '.join(FULL_COLUMNS)} FROM blueprints_text WHERE rid = ?", (rid,)
    ).fetchall()
    if not rows:
        return ""
    name, description, tags, content, path = (str(v) if v is not None else "" for v in rows[0])
    start, end = _window(content, _needles(match))
    window = content[start:end]
    conn = _scratch()
    try:
        conn.execute(
            "INSERT INTO w(name, description, tags, content, path) VALUES (?, ?, ?, ?, ?)",
            (name, description, tags, window, path),
        )
        found = conn.execute(
            f"SELECT snippet(w, {_SNIPPET_ARGS}) FROM w WHERE w MATCH ?", (match,)
        ).fetchall()
    finally:
        conn.execute("DELETE FROM w")
    if found and found[0][0]:
        return str(found[0][0])
    # (The window holds no hit the tokenizer sees: its first words, as a snippet shows text.)
    words = window.split()
    return " ".join(words[:12]) + ("…" if len(words) > 12 or end < len(content) else "")


def _needles(match: str) -> re.Pattern[str] | None:
    """The words of an FTS5 query as a case-insensitive pattern (each as a word start)."""
    words = {
        token.casefold()
        for quoted in _QUOTED.findall(match)
        for token in quoted.replace(SPLIT, " ").split()
    }
    if not words:
        return None
    # Longest first, so the pattern prefers "deployment" over "deploy" at the same place.
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(f"(?<!\\w)(?:{alternatives})", re.IGNORECASE)


def _window(content: str, needles: re.Pattern[str] | None) -> tuple[int, int]:
    """Where the window starts and ends: whole lines around the first needle found (or the
    start of the content), about WINDOW_BEFORE + WINDOW_AFTER characters."""
    found = needles.search(content) if needles is not None else None
    at = found.start() if found is not None else 0
    start = max(0, at - WINDOW_BEFORE)
    if start:
        line = content.rfind("\n", start - 256 if start > 256 else 0, at)
        start = line + 1 if line >= 0 else start
    end = min(len(content), at + WINDOW_AFTER)
    if end < len(content):
        line = content.find("\n", end, end + 256)
        end = line if line >= 0 else end
    return start, end


def _scratch() -> apsw.Connection:
    """This thread's in-memory database with the FTS5 table the window is indexed in (one row at
    a time, deleted after use)."""
    conn: apsw.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = apsw.Connection(":memory:")
        conn.execute(
            f"CREATE VIRTUAL TABLE w USING fts5({', '.join(FULL_COLUMNS)}, "
            "tokenize = 'unicode61 remove_diacritics 2')"
        )
        _local.conn = conn
    return conn
