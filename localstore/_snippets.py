"""Snippets of large blueprints: FTS5's ``snippet()`` on a window of the text, not on all of it.

FTS5's ``snippet()`` scores every candidate fragment against every hit of the query in the
column, so its time grows with the square of the hits in one blueprint: a 1 MB blueprint that
holds a searched word on each line took 1.4 s for its snippet alone, ``deploy build`` on a
100,000-blueprint home with three blueprints of 2-7 MB 24.5 s (``highlight()`` is no way out:
0.7 s for the 1 MB one). A search holds the index's read lock meanwhile. So a hit whose YAML is
over ``SNIPPET_WHOLE_MAX`` bytes gets its snippet from a window of about 4 KB of its content
around the first place where a word of the query appears, made by the same ``snippet()`` over
the same columns in a private in-memory FTS5 table, with the same tokenizer: the marks, the
ellipses and the length are what a small blueprint's snippet has.

The window is found where the tokenizer finds a hit, not where the query's letters are: a plain
case-insensitive search for the words as typed missed every hit made through the tokenizer's
folding (``cafe`` for ``café``, ``straße`` for ``Straße``, ``build`` in ``deploy_build``) and
stopped at look-alikes that are none (``cafeteria`` for an exact ``cafe``), so the snippet showed
the start of the content, without a hit. That search is still tried first (a few microseconds for
the usual ASCII word), but its place is taken only if the tokenizer sees a hit in the window made
around it. Otherwise, if the index says the content holds one at all (a hit by the name alone
needs no scan), the content is indexed in slices of about 4 KB, a few at a time, in a second
private FTS5 table until one matches (about 55 ms a MB scanned), and ``highlight()`` of that slice
gives the hit's place. A phrase that a slice's edge (a line end) cuts in two is not found there.
"""

from __future__ import annotations

import re
import threading
from typing import Any, cast

import apsw

from localstore._fts_text import HIT_CLOSE, HIT_OPEN, SPLIT

# Blueprints (their YAML file's bytes) above this get the window's snippet. At 32 KB the whole
# text's snippet() costs about 6 ms in the worst case (a query word on every line); a typical
# blueprint is 1-5 KB.
SNIPPET_WHOLE_MAX = 32 * 1024
# The window: this much content before the first place a query word appears, and after it.
WINDOW_BEFORE, WINDOW_AFTER = 1024, 3072
# The slices a content is searched in when its hits are only the tokenizer's (about 4 KB each,
# ended at a line end), and how many are indexed at a time: most such hits are near the start.
SLICE, SLICES_AT_A_TIME = 4096, 16

FULL_COLUMNS = ("name", "description", "tags", "content", "path")
_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2'"  # as the index's (localstore.index)
_SNIPPET_ARGS = f"-1, '{HIT_OPEN}', '{HIT_CLOSE}', '…', 12"
# A phrase of the query as the search wrote it (localstore.store._fts_query), and its prefix mark.
_PHRASE = re.compile(r'"([^"]*)"(\*?)')
# Where a word may start or end for the first, plain search: not next to a letter or digit ('_'
# is a word character for re but a separator for the tokenizer).
_START, _END = r"(?<![^\W_])", r"(?![^\W_])"
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
    """The snippet of blueprint row ``rid`` of the full index (blueprints_fts) for the FTS5 query
    ``match`` (as the search ran it), from a window of its content; see the module's docstring.
    '' if the row is gone."""
    rows = cur.execute(
        f"SELECT {', '.join(FULL_COLUMNS)} FROM blueprints_text WHERE rid = ?", (rid,)
    ).fetchall()
    if not rows:
        return ""
    name, description, tags, content, path = (str(v) if v is not None else "" for v in rows[0])
    start, end = _window(content, _first_hit(cur, rid, content, _PHRASE.findall(match)))
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


def _first_hit(cur: Any, rid: int, content: str, phrases: list[tuple[str, str]]) -> int:
    """Where in ``content`` the tokenizer sees a hit of one of the query's ``phrases`` (each its
    text and its prefix mark): the first plain match if the window around it holds a hit, else
    the first hit of the slices (0 if the content holds none)."""
    if not phrases:
        return 0
    anyone = " OR ".join(f'"{text}"{star}' for text, star in phrases)
    plain = _needles(phrases).search(content)
    if plain is not None:
        start, end = _window(content, plain.start())
        found = _hit_in(((start, content[start:end]),), anyone)
        if found is not None:
            return found
    # (The index seeks to the row: the cost of the words' doclists near it, not of the text.)
    if not cur.execute(
        "SELECT 1 FROM blueprints_fts WHERE blueprints_fts MATCH ? AND rowid = ?",
        (f"content : ({anyone})", rid),
    ).fetchall():
        return 0  # a hit by the name, description, tags or path only
    pieces = list(_slices(content))
    for at in range(0, len(pieces), SLICES_AT_A_TIME):
        found = _hit_in(pieces[at : at + SLICES_AT_A_TIME], anyone)
        if found is not None:
            return found
    return 0  # a phrase cut by a slice's edge


def _needles(phrases: list[tuple[str, str]]) -> re.Pattern[str]:
    """The words of the query's phrases as a case-insensitive pattern, each a whole word, or a
    word start for the last of a prefix phrase."""
    words: dict[str, bool] = {}
    for text, star in phrases:
        tokens = [t.lower() for t in re.split(r"[\W_]+", text.replace(SPLIT, " ")) if t]
        for i, token in enumerate(tokens):
            words[token] = words.get(token, False) or (bool(star) and i == len(tokens) - 1)
    if not words:
        return re.compile(r"(?!)")
    # Longest first, so the pattern prefers "deployment" over "deploy" at the same place.
    alternatives = "|".join(
        re.escape(w) + ("" if prefix else _END)
        for w, prefix in sorted(words.items(), key=lambda item: len(item[0]), reverse=True)
    )
    return re.compile(f"{_START}(?:{alternatives})", re.IGNORECASE)


def _hit_in(pieces: Any, query: str) -> int | None:
    """Where the first of ``pieces`` (offset in the content, text) that ``query`` matches has
    its first hit, by the tokenizer (``highlight()`` of that piece only); None if none matches."""
    conn = _scratch()
    try:
        with conn:
            conn.executemany("INSERT INTO s(rowid, content) VALUES (?, ?)", pieces)
        found = conn.execute(
            f"SELECT rowid, highlight(s, 0, '{HIT_OPEN}', '{HIT_CLOSE}') FROM s "
            "WHERE s MATCH ? ORDER BY rowid LIMIT 1",
            (query,),
        ).fetchall()
    finally:
        conn.execute("DELETE FROM s")
    if not found:
        return None
    # (Indexed text holds no HIT_OPEN of its own: localstore._fts_text blanks it.)
    offset, marked = cast("tuple[int, str]", found[0])
    return offset + max(0, marked.find(HIT_OPEN))


def _slices(content: str) -> Any:
    """``content`` in pieces of about SLICE characters (offset, text), each ended at a line end
    (or a space, or anywhere in a line over 256 characters longer), so no word is cut."""
    at = 0
    while at < len(content):
        end = at + SLICE
        if end >= len(content):
            yield at, content[at:]
            return
        cut = content.find("\n", end, end + 256)
        if cut < 0:
            cut = content.rfind(" ", at, end)
        cut = cut + 1 if cut >= at else end
        yield at, content[at:cut]
        at = cut


def _window(content: str, at: int) -> tuple[int, int]:
    """Where the window around ``at`` starts and ends: whole lines, about WINDOW_BEFORE +
    WINDOW_AFTER characters."""
    start = max(0, at - WINDOW_BEFORE)
    if start:
        # (The line end before the start, not before ``at``: that cut the window to the hit's
        # own line, so the snippet started there, unlike the whole text's.)
        line = content.rfind("\n", max(0, start - 256), start)
        start = line + 1 if line >= 0 else start
    end = min(len(content), at + WINDOW_AFTER)
    if end < len(content):
        line = content.find("\n", end, end + 256)
        end = line if line >= 0 else end
    return start, end


def terms(text: str) -> int:
    """How many terms FTS5 makes of ``text`` (indexed text, see localstore._fts_text) in a query:
    the index's tokenizer's count, which is not Python's count of words (unicode61 also cuts at
    Devanagari's vowel signs, letters Python's isalnum() keeps in a word)."""
    tokenize = getattr(_local, "tokenize", None)
    if tokenize is None:
        tokenize = _local.tokenize = _scratch().fts5_tokenizer(
            "unicode61", ["remove_diacritics", "2"]
        )
    found = tokenize(
        text.encode("utf-8"),
        apsw.FTS5_TOKENIZE_QUERY,
        None,
        include_offsets=False,
        include_colocated=False,
    )
    return sum(1 for _ in found)


def _scratch() -> apsw.Connection:
    """This thread's in-memory database with the FTS5 tables a window (w) and the slices of a
    content (s) are indexed in (deleted after use)."""
    conn: apsw.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = apsw.Connection(":memory:")
        conn.execute(f"CREATE VIRTUAL TABLE w USING fts5({', '.join(FULL_COLUMNS)}, {_TOKENIZE})")
        conn.execute(f"CREATE VIRTUAL TABLE s USING fts5(content, {_TOKENIZE})")
        _local.conn = conn
    return conn
