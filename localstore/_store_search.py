"""Full-text search's queries: the query's words made into FTS5 terms (with the limits on
them), and ``_Search``, the statements one search runs (counted, ranked in tiers, with
snippets). ``BlueprintStore.search`` (``_store_reads``) drives them; ``fts_tags`` is also the tags'
text the index's search tables hold.
"""

from __future__ import annotations

import builtins
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from localstore import _snippets
from localstore._fts_text import SPLIT, indexed_text, shown
from localstore._listing import INFO_COLUMNS, infos
from localstore._store_types import SearchHit
from localstore.blueprint import tags_json
from localstore.errors import InvalidInputError, LimitExceededError, wrong_type

# Column weights of search ranking: name, description, tags, content, path (the FTS column order),
# and the same without content for the index of the described columns.
_BM25_WEIGHTS = "10.0, 4.0, 6.0, 1.0, 2.0"


_BM25_DESCRIBED_WEIGHTS = "10.0, 4.0, 6.0, 2.0"


_FULL, _DESCRIBED = "blueprints_fts", "blueprints_described"


# A search matching more blueprints than this is answered in tiers (see search()): BM25 costs about
# 1.5 us a match (all of a 10,000-blueprint store is 15-20 ms). Bounds search time whatever the
# store's size; the trade is in docs/architecture.md, "Search".
SEARCH_RANK_CAP = 1000


# A search in a folder of at most this many live blueprints gathers their row ids once and tests
# each match of the words against them, instead of looking up each match's index row: a common
# word in a 10-blueprint folder of a 100,000-blueprint home took 100-160 ms, now 15-25 ms (every
# match is still walked, ranking unchanged). Gathering costs about 0.1 us a row a statement, so
# above this bound a word rare in the store would pay more for it than the lookups cost.
_SEARCH_FOLDER_ROWS = 3000


# Words a search query may have: FTS5's cost grows faster than linearly with them (5,000 words,
# a text pasted into a search box, held the index and so every thread of the app for 20 s).
SEARCH_MAX_WORDS = 64


# What a search query may hold but no indexed text does (see _fts_query).
_UNSEARCHABLE = re.compile("[\x00\ud800-\udfff]")


# The listing projection: only what BlueprintInfo needs (no content hashes of files, no meta JSON).
class _Search:
    """The queries of one search. Deleted blueprints have no FTS row, so without filters counting
    and ranking read the FTS table alone and only the hits are joined to their index rows."""

    def __init__(
        self,
        cur: Any,
        filters: str,
        args: Sequence[Any],
        *,
        snippets: bool = True,
        rows: tuple[int, int, int] | None = None,
    ) -> None:
        self._cur = cur
        self._filters = filters
        self._args = tuple(args)
        # The number of live blueprints in the folder searched and their lowest and highest
        # row id, if it has at most _SEARCH_FOLDER_ROWS (else None).
        self._rows = None if rows is None else rows[0]
        if rows is not None:
            self._args = (rows[1], rows[2], *self._args)
        self._snippets = snippets
        # Without snippets: by blueprint id, the full-text table, query and rowid each hit was
        # found by, for its snippet later (add_snippets).
        self._found_by: dict[str, tuple[str, str, int]] = {}

    def _source(self, table: str) -> str:
        if not self._filters:
            return f"FROM {table} WHERE {table} MATCH ?"
        if self._rows is not None:
            # The filtered row ids gathered once (SQLite keeps them in a sorted list behind a
            # Bloom filter), each match tested against them: a lookup of the match's index row
            # costs several times that; and only the matches between the lowest and the highest
            # id are walked (FTS5 seeks to them). The '+' keeps the test itself away from FTS5,
            # which would take each id as a query of its own and compute BM25's statistics (a
            # walk of each word's whole doclist) again for each.
            return (
                f"FROM {table} WHERE {table} MATCH ? AND {table}.rowid >= ? "
                f"AND {table}.rowid <= ? AND +{table}.rowid IN "
                f"(SELECT b.rid FROM blueprints b WHERE b.deleted = 0{self._filters})"
            )
        return (
            f"FROM {table} JOIN blueprints b ON b.rid = {table}.rowid "
            f"WHERE {table} MATCH ? AND b.deleted = 0{self._filters}"
        )

    def answer(self, match: str, limit: int) -> builtins.list[SearchHit]:
        """Ranked when there are few enough matches, else in tiers (see BlueprintStore.search)."""
        # (A folder of at most SEARCH_RANK_CAP blueprints has no more matches than that: not
        # counted, a walk of every match of the words in the whole store.)
        if (self._rows is not None and self._rows <= SEARCH_RANK_CAP) or self.count(
            match
        ) <= SEARCH_RANK_CAP:
            return self.top(match, limit, ranked=True)
        # The described tier from the small index of those columns: asking the full one with a
        # column filter decodes every position list of the words (0.4-1.7 ms).
        found = self.count(match, _DESCRIBED)
        hits = (
            self.top(match, limit, ranked=found <= SEARCH_RANK_CAP, table=_DESCRIBED)
            if found
            else []
        )
        if len(hits) < limit:
            rest = f"({match}) NOT ({{name description tags path}} : ({match}))" if found else match
            hits += self.top(rest, limit - len(hits))
        return hits

    def count(self, match: str, table: str = _FULL) -> int:
        """Matches, counted up to one past the cap (walks doclists, ranks nothing)."""
        sql = f"SELECT count(*) FROM (SELECT 1 {self._source(table)} LIMIT {SEARCH_RANK_CAP + 1})"
        return int(self._cur.execute(sql, (match, *self._args)).fetchall()[0][0])

    def top(
        self, match: str, limit: int, *, ranked: bool = False, table: str = _FULL
    ) -> builtins.list[SearchHit]:
        """The first ``limit`` matches, by BM25 or newest first (score 0: BM25's first call scans
        every phrase's whole doclist, the very cost this order avoids), with snippets (unless this
        search makes them later, see add_snippets)."""
        if ranked:
            weights = _BM25_WEIGHTS if table == _FULL else _BM25_DESCRIBED_WEIGHTS
            # Ties (identical blueprints) newest first, as unranked hits: without a total order
            # SQLite's sorter returned tied hits in an order that changed with the LIMIT, so
            # pages overlapped and skipped hits.
            score, order = f"bm25({table}, {weights})", f"score, {table}.rowid DESC"
        else:
            score, order = "0.0", f"{table}.rowid DESC"
        snippet = _snippet_sql(table) if self._snippets else "''"
        picked = self._cur.execute(
            f"SELECT {table}.rowid, {score} AS score, {snippet} {self._source(table)} "
            f"ORDER BY {order} LIMIT ?",
            (match, *self._args, limit),
        ).fetchall()
        if not picked:
            return []
        marks = ",".join("?" * len(picked))
        by_rid = {
            r[0]: r[1:]
            for r in self._cur.execute(
                f"SELECT b.rid, {INFO_COLUMNS} FROM blueprints b WHERE b.rid IN ({marks})",
                [p[0] for p in picked],
            ).fetchall()
        }
        hits = infos([by_rid[p[0]] for p in picked])
        if not self._snippets:
            for info, p in zip(hits, picked, strict=True):
                self._found_by[info.id] = (table, match, p[0])
        return [
            SearchHit(info, -float(p[1]), *shown(_snippet(self._cur, p[2], match, p[0])))
            for info, p in zip(hits, picked, strict=True)
        ]

    def add_snippets(self, hits: builtins.list[SearchHit]) -> builtins.list[SearchHit]:
        """``hits`` (found without snippets) with their snippets, as top() would have made them:
        by the same table and query, one statement per pair."""
        by_query: dict[tuple[str, str], builtins.list[int]] = {}
        for hit in hits:
            table, match, rid = self._found_by[hit.info.id]
            by_query.setdefault((table, match), []).append(rid)
        snippets: dict[int, str] = {}
        for (table, match), rids in by_query.items():
            marks = ",".join("?" * len(rids))
            for rid, made in self._cur.execute(
                f"SELECT rowid, {_snippet_sql(table)} FROM {table} "
                f"WHERE {table} MATCH ? AND rowid IN ({marks})",
                (match, *rids),
            ).fetchall():
                snippets[rid] = _snippet(self._cur, made, match, rid)
        return [
            SearchHit(hit.info, hit.score, *shown(snippets[self._found_by[hit.info.id][2]]))
            for hit in hits
        ]


def _folder_rows(cur: Any, sql_filter: str, args: Sequence[Any]) -> tuple[int, int, int] | None:
    """The number of live blueprints a folder filter passes and their lowest and highest row id;
    None if more than _SEARCH_FOLDER_ROWS (read from one range of the folder index, which holds
    the row ids, no further than one past the bound)."""
    sql = (
        "SELECT count(*), min(rid), max(rid) FROM (SELECT b.rid FROM blueprints b "
        f"WHERE b.deleted = 0 AND {sql_filter} LIMIT {_SEARCH_FOLDER_ROWS + 1})"
    )
    rows, low, high = cur.execute(sql, args).fetchall()[0]
    return (rows, low, high) if rows <= _SEARCH_FOLDER_ROWS else None


def _snippet_sql(table: str) -> str:
    """A hit's snippet, its hits marked by characters no indexed text holds (see _fts_text);
    NULL for a large blueprint (its content is searched), whose snippet _snippet() makes."""
    whole_max = _snippets.SNIPPET_WHOLE_MAX if table == _FULL else None
    return _snippets.snippet_sql(table, whole_max=whole_max)


def _snippet(cur: Any, made: Any, match: str, rid: int) -> str:
    """The snippet the query made (``made``), or for a large blueprint (NULL) one from a window
    of its content: FTS5's snippet() of a whole large text costs the square of its hits."""
    return _snippets.window_snippet(cur, match, rid) if made is None else str(made)


def fts_tags(tags: Sequence[str]) -> str:
    """The tags text search indexes: the index row's JSON with its brackets, quotes and commas
    blanked, exactly as the ``blueprints_text`` view computes it before its indexed_text() (FTS5
    removes an entry given the values it indexed, and reads snippets and checks from that view)."""
    text = tags_json(tags)
    return text.replace("[", "").replace("]", "").replace('"', "").replace(",", " ")


def _fts_queries(query: str) -> tuple[str, str]:
    """The FTS5 queries for what someone typed: whole words only, and with the last word also as
    a prefix (see _fts_query). Text that has two Unicode forms (composed NFC, decomposed NFD:
    macOS hands out NFD) is searched in both, OR-ed: saves store names, descriptions and tags
    NFC, but older rows, content and meta files of other tools may hold NFD, and the tokenizer
    folds only Latin accents, not, say, Hangul jamo into syllables. (ASCII: nothing to do.)"""
    if not isinstance(query, str) or query.isascii():
        return _fts_query(query, prefix=False), _fts_query(query)
    forms = dict.fromkeys(
        (query, unicodedata.normalize("NFC", query), unicodedata.normalize("NFD", query))
    )
    if len(forms) == 1:
        return _fts_query(query, prefix=False), _fts_query(query)
    # The word limit is the shortest form's (NFC's): each of the NFD form's Hangul jamo is a term
    # of its own, so 29 Korean syllables typed (71 jamo) were refused as "71 words, more than
    # the 64 a search takes". The cost: NFD has at most three terms a syllable, so the forms
    # together hold up to about seven times the limit's terms (three times before, each form
    # under it); measured, a 42-syllable query on 2,000 Korean blueprints holding every one of
    # its syllables took 75 ms (a 64-term one 13 ms). Long pasted text is still refused.
    words = min(_fts_words(f) for f in forms)
    if words > SEARCH_MAX_WORDS:
        raise _too_many_words(words)
    return (
        " OR ".join(f"({_fts_query(f, prefix=False, counted=False)})" for f in forms),
        " OR ".join(f"({_fts_query(f, counted=False)})" for f in forms),
    )


def _too_many_words(words: int) -> LimitExceededError:
    return LimitExceededError(
        f"the search query has {words:,} words, more than the {SEARCH_MAX_WORDS} a search takes",
        hint="search for fewer words (each character of Chinese, Japanese, Korean or Thai "
        "counts as one): a few distinctive ones find the same blueprints",
    )


def _fts_words(query: str) -> int:
    """The terms of ``query`` counted against SEARCH_MAX_WORDS, as _fts_query() counts them."""
    # (Quoted or not, a chunk's words count the same: the quotes only split the text.)
    return sum(
        _terms(indexed_text(w))
        for chunk in _UNSEARCHABLE.sub(" ", query).split('"')
        for w in _query_words(chunk)
    )


def _fts_query(query: str, *, prefix: bool = True, counted: bool = True) -> str:
    """The FTS5 query for what someone typed: whole words, the last one also as a prefix (it may
    still be being typed), quoted text as a phrase. Prefixes cost: FTS5 merges the doclists of
    every word they match before it can count or rank, so only the last word gets one.
    ``counted``: refuse more than SEARCH_MAX_WORDS words (else the caller counted them)."""
    if not isinstance(query, str):
        raise wrong_type(
            "the search query", query, "a string", hint="pass the words to search for as text"
        )
    if not query.strip():
        raise InvalidInputError("empty search query", hint="give one or more words")
    # A lone surrogate (an argument decoded with surrogateescape) cannot be bound as UTF-8, and
    # a NUL ends FTS5's string early ("unterminated string"): neither is in any indexed text.
    query = _UNSEARCHABLE.sub(" ", query)
    parts: list[str] = []
    words = 0
    tokens = query.split('"')
    for i, chunk in enumerate(tokens):
        if i % 2 == 1:
            # Counted as indexed, as unquoted words are: each character of a run written without
            # spaces is a term of the phrase (a quoted paragraph of Chinese counted one word).
            words += sum(_terms(indexed_text(w)) for w in _query_words(chunk))
            if chunk.strip():
                parts.append('"' + indexed_text(chunk) + '"')
            continue
        found = [indexed_text(word) for word in _query_words(chunk)]
        words += sum(_terms(w) for w in found)
        parts.extend('"' + word + '"' for word in found)
    if counted and words > SEARCH_MAX_WORDS:
        raise _too_many_words(words)
    if not parts:
        raise InvalidInputError(f"nothing to search for in {query!r}", hint="use letters or digits")
    # The last word, unless the query ends with a closed phrase or a character indexed as a
    # token of its own (a prefix of one character finds nothing more, at a prefix's cost).
    open_end = not query.rstrip().endswith('"') or len(tokens) % 2 == 0
    if prefix and open_end and not parts[-1].endswith(SPLIT + '"'):
        parts[-1] += "*"
    return " ".join(parts)


def _terms(word: str) -> int:
    """The FTS5 terms of one query word (as indexed): one, or as many as the tokenizer cuts it
    into: one a character of a run written without spaces (``東京`` is the phrase of two; see
    localstore._fts_text), three for ``हिन्दी`` (cut at its vowel signs). Counted as one, 'हिन्दी'
    pasted 700 times (2,100 terms) held the index for 5 s on 5,000 blueprints."""
    if word.isascii():  # (the query's words are letters and digits: one token)
        return 1
    return max(1, _snippets.terms(word))


def _query_words(text: str) -> builtins.list[str]:
    """The words of unquoted query text, split where the tokenizer splits: at every character
    that is neither a letter, a digit nor a combining mark (FTS5 tokenizes each quoted word as
    it does the documents, so marks stay in). Deleting the other characters instead glued
    'config.yaml', 'a/b' and 'v1.2' into words no document holds."""
    words = []
    for word in text.split():
        if not word.isalnum():
            word = "".join(c if c.isalnum() or _in_token(c) else " " for c in word)
        words += [w for w in word.split() if any(c.isalnum() or _private(c) for c in w)]
    return words


def _in_token(c: str) -> bool:
    """A character inside a token that isalnum() does not say: a combining mark, or a private-use
    one (unicode61's token characters are "L* N* Co": a Powerline or Nerd Font glyph glued to a
    word, as in a branch name, is part of it; split off, the word was never found)."""
    category = unicodedata.category(c)
    return category.startswith("M") or category == "Co"


def _private(c: str) -> bool:
    return unicodedata.category(c) == "Co"
