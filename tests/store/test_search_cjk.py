"""Search in scripts written without spaces between words (Chinese, Japanese, Korean particles,
Thai), snippets whose hits a bracket in the text cannot be mistaken for, and pages past the
first. A real store in a temporary home, real SQLite."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Literal

import apsw
import pytest

import localstore
from localstore.errors import LimitExceededError
from localstore.index import CORE_MIGRATIONS

# The blueprints_text view as schema v1-v3 defined it: the raw text, indexed by unicode61 alone.
_VIEW_V3 = """
    CREATE VIEW blueprints_text AS
        SELECT b.rid AS rid, b.name AS name, b.description AS description,
               replace(replace(replace(replace(b.tags, '[', ''), ']', ''), '"', ''), ',', ' ')
                   AS tags,
               r.content AS content, b.path AS path
        FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev WHERE b.deleted = 0
"""


@pytest.mark.parametrize(
    ("text", "query", "marked"),
    [
        ("東京都の天気", "東京", "[東京]都の天気"),  # Japanese: kanji
        ("東京都の天気", "天気", "東京都の[天気]"),
        ("東京都の天気", "都の", "東京[都の]天気"),  # kanji and hiragana
        ("北京是中国的首都", "中国", "北京是[中国]的首都"),  # Chinese
        ("カタカナのテスト", "テスト", "カタカナの[テスト]"),  # katakana
        ("서울에서 만나요", "서울", "[서울]에서 만나요"),  # Korean: a particle written on
        ("ภาษาไทยง่าย", "ไทย", "ภาษา[ไทย]ง่าย"),  # Thai
    ],
)
def test_a_word_inside_a_run_without_spaces_is_found(
    store, text: str, query: str, marked: str
) -> None:
    """unicode61 made the whole run one token: 天気 found nothing in 東京都の天気 (東京 only
    through the last word's prefix, which a second word loses)."""
    store.save("w/a", "steps: []\n", description=text)
    store.save("w/other", "steps: []\n", description="no match here")
    hits = store.search(query)
    assert [h.info.path for h in hits] == ["w/a.blueprint.yaml"]
    assert hits[0].snippet == marked  # the text as written: no separators show


def test_runs_in_content_tags_and_mixed_words_are_found(store) -> None:
    store.save("w/mixed", "title: Tokyo東京タワー\n", tags=["天気予報"])
    assert [h.info.path for h in store.search("東京")] == ["w/mixed.blueprint.yaml"]
    assert [h.info.path for h in store.search("タワー")] == ["w/mixed.blueprint.yaml"]
    assert [h.info.path for h in store.search("予報")] == ["w/mixed.blueprint.yaml"]
    # The run's characters are consecutive: a phrase, not any order.
    assert store.search("京東") == []
    assert [h.info.path for h in store.search('"東京タ"')] == ["w/mixed.blueprint.yaml"]


def test_a_long_run_counts_its_characters_against_the_word_limit(store) -> None:
    """Each character is a term of the phrase FTS5 evaluates (5,000 of them took 1.4 s on 300
    blueprints): a pasted paragraph is refused as a query of too many words is."""
    store.save("w/a", "steps: []\n", description="東京")
    with pytest.raises(LimitExceededError):
        store.search("東" * 65)
    assert store.search("東京")[0].info.path == "w/a.blueprint.yaml"


@pytest.mark.parametrize(
    "query", ['"' + "東" * 65 + '"', '"東京 ' + "東" * 64, 'a "' + "天気" * 40]
)
def test_a_quoted_run_counts_its_characters_against_the_word_limit(store, query: str) -> None:
    """A quoted phrase counted each run as one word, so quoting a pasted paragraph of Chinese
    (5,000 characters: 5,000 terms of one phrase) took it past the limit unquoted text meets."""
    store.save("w/a", "steps: []\n", description="東京")
    with pytest.raises(LimitExceededError) as info:
        store.search(query)
    assert "more than the 64" in info.value.message
    assert store.search('"' + "東" * 62 + '" 東京') == []  # (64 terms: at the limit)
    assert [h.info.path for h in store.search('"東京"')] == ["w/a.blueprint.yaml"]


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_a_korean_query_under_the_limit_is_searched_in_either_form(
    store, form: Literal["NFC", "NFD"]
) -> None:
    """Each character counts as one word (the limit's hint says so), but the query is also
    searched in its other Unicode form, whose Hangul jamo (NFD) are two or three terms a
    syllable, and that form was counted too: 29 syllables typed were refused as "71 words"."""
    sentence = "서울의 날씨가 오늘은 매우 좋습니다 내일도 맑을 것 같아요 감사합니다"
    assert len(sentence.replace(" ", "")) == 29
    store.save("k/nfc", "steps: []\n", description=sentence)
    store.save("k/nfd", f"t: {unicodedata.normalize('NFD', sentence)}\n")
    store.save("k/other", "steps: []\n", description="서울")
    query = unicodedata.normalize(form, sentence)
    assert sorted(h.info.path for h in store.search(query)) == [
        "k/nfc.blueprint.yaml",
        "k/nfd.blueprint.yaml",
    ]
    # Still refused past the limit, counted as NFC counts (65 syllables).
    with pytest.raises(LimitExceededError) as info:
        store.search(unicodedata.normalize(form, "서울" * 32 + "날"))
    assert "has 65 words" in info.value.message


def test_an_index_of_schema_v3_is_split_by_its_migration(home: Path) -> None:
    """Opening an index whose CJK text was indexed whole re-indexes those blueprints (and only
    those need it): the search finds them, and the index passes FTS5's check against the view."""
    with localstore.open(home=home) as store:
        store.save("w/cjk", "title: 東京都の天気\n", name="weather")
        store.save("w/latin", "steps:\n  - run: deploy\n", name="deploy")
        with store.index.write() as cur:
            cur.execute("DROP VIEW blueprints_text")
            cur.execute(_VIEW_V3)
            for table in ("blueprints_fts", "blueprints_described"):
                cur.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
            cur.execute("UPDATE component_versions SET version = 3 WHERE component = 'core'")
            cur.execute("PRAGMA user_version = 3")
        assert store.search("天気") == []  # as it was: 東京都の天気 is one token
    with localstore.open(home=home) as store:
        with store.index.read() as cur:
            assert cur.execute("PRAGMA user_version").fetchall()[0][0] == len(CORE_MIGRATIONS)
        assert store.index.integrity_check() == []
        assert [h.info.path for h in store.search("天気")] == ["w/cjk.blueprint.yaml"]
        assert [h.info.path for h in store.search("京")] == ["w/cjk.blueprint.yaml"]
        assert [h.info.path for h in store.search("deploy")] == ["w/latin.blueprint.yaml"]
        # Later saves take out the entries the migration made.
        store.save("w/cjk", "title: 大阪\n", name="大阪")
        assert store.search("天気") == []
        assert [h.info.path for h in store.search("大阪")] == ["w/cjk.blueprint.yaml"]
        assert store.index.integrity_check() == []


def test_snippet_parts_tell_hits_from_brackets_in_the_text(store) -> None:
    """Hits are marked [ and ] in ``snippet``, as the text's own brackets are written: the
    parts say which is which (and characters FTS5's markers are made of stay text)."""
    store.save("w/a", "steps:\n  - run: echo [deploy] \ufff9x\ufffb deploy\n")
    (hit,) = store.search("deploy")
    assert hit.snippet == "steps:\n  - run: echo [[deploy]]  x  [deploy]\n"
    assert hit.snippet_parts == (
        ("steps:\n  - run: echo [", False),
        ("deploy", True),
        ("]  x  ", False),
        ("deploy", True),
        ("\n", False),
    )
    assert hit.to_dict()["snippet_parts"][1] == ["deploy", True]


def test_a_page_past_the_first_makes_snippets_only_for_its_hits(store) -> None:
    """search(q, limit=n, offset=k) is search(q, limit=k + n)[k:], snippets included, but made
    a snippet for each skipped hit too (FTS5 reads and tokenizes a hit's text for it)."""
    for i in range(30):
        store.save(f"w/b{i:02}", f"steps:\n  - run: deploy service {i}\n")
    reads: list[str] = []
    conn = store.index.conn
    conn.trace_v2(
        apsw.SQLITE_TRACE_PROFILE,
        lambda e: reads.append(e["sql"]) if "blueprints_text" in e["sql"] else None,
        id="snippet-reads",
    )
    try:
        page = store.search("deploy", limit=5, offset=20)
    finally:
        conn.trace_v2(0, None, id="snippet-reads")
    assert page == store.search("deploy", limit=25)[20:]
    assert len(page) == 5 and all("[deploy]" in h.snippet for h in page)
    assert len(reads) == 5, reads


def _plain_rids(store) -> set[int]:
    with store.index.read() as cur:
        return {int(r[0]) for r in cur.execute("SELECT rid FROM fts_plain")}


def _rid(store, rel: str) -> int:
    with store.index.read() as cur:
        rows = cur.execute(
            "SELECT rid FROM blueprints WHERE path = ? AND deleted = 0", (rel,)
        ).fetchall()
    return int(rows[0][0])


def _count_text_calls(store) -> list[object]:
    """Registers a counting localstore_fts_text on the store's connection (same function)."""
    from localstore._index_connect import _sql_indexed_text

    calls: list[object] = []

    def counting(value: object) -> object:
        calls.append(value)
        return _sql_indexed_text(value)

    store.index.conn.create_scalar_function("localstore_fts_text", counting, 1, deterministic=True)
    return calls


def test_snippets_of_text_with_nothing_to_split_call_no_python(store) -> None:
    """FTS5 reads each hit's row through the view about 11 times for its snippet; with the
    function on every column that was 57 calls into Python a hit (a 2 KB text converted each
    time), 20 % of a search. Only rows with text to split call it now."""
    for i in range(5):
        store.save(f"w/latin{i}", f"steps:\n  - run: deploy service {i}\n", name=f"deploy {i}")
    store.save("w/cjk", "steps:\n  - run: deploy 東京\n", name="deploy tokyo")
    calls = _count_text_calls(store)
    hits = store.search("service")
    assert len(hits) == 5 and "[service]" in hits[0].snippet
    assert calls == []
    (hit,) = store.search("東京")
    assert hit.info.path == "w/cjk.blueprint.yaml" and "[東京]" in hit.snippet
    assert calls  # that row's text goes through the function


def test_the_plain_list_follows_each_save_move_and_delete(store) -> None:
    """A row is listed only while none of its five indexed texts has anything to split; a row
    listed wrongly would make the view hand FTS5 text it did not index."""
    store.save("w/a", "steps: []\n", name="alpha")
    store.save("w/b", "title: 東京\n")
    a, b = _rid(store, "w/a.blueprint.yaml"), _rid(store, "w/b.blueprint.yaml")
    assert _plain_rids(store) == {a}
    store.save("w/a", "steps: []\n", description="天気")  # the description
    store.save("w/b", "title: Tokyo\n")  # the content no longer
    assert _plain_rids(store) == {b}
    store.save("w/b", "title: Tokyo\n", tags=["予報"])  # a tag
    assert _plain_rids(store) == set()
    store.save("w/b", "title: Tokyo\n", tags=["forecast"])
    store.move("w/b", "東京/b")  # the path
    assert _plain_rids(store) == set()
    store.move("東京/b", "w/b")
    assert _plain_rids(store) == {b}
    store.delete("w/b")
    assert _plain_rids(store) == set()
    store.restore("w/b", 4)  # (rev 3 had the tag 予報)
    assert _plain_rids(store) == {b}
    assert store.index.integrity_check() == []
    assert [h.info.path for h in store.search("天気")] == ["w/a.blueprint.yaml"]


def test_an_index_of_schema_v5_gets_its_plain_list(home: Path) -> None:
    """The v6 migration lists the rows with nothing to split and calls the function for the
    rest: searches find both kinds and the index passes FTS5's check against the view."""
    from localstore.index import CORE_MIGRATIONS as migrations

    v4 = migrations[3]
    assert isinstance(v4, str)
    v4_view = v4[v4.index("CREATE VIEW") : v4.index("INSERT INTO blueprints_fts(rowid")]
    with localstore.open(home=home) as store:
        store.save("w/cjk", "title: 東京都の天気\n", name="weather")
        store.save("w/latin", "steps:\n  - run: deploy\n", name="deploy")
        with store.index.write() as cur:
            cur.execute("DROP VIEW blueprints_text")
            cur.execute("DROP TABLE fts_plain")
            cur.execute(v4_view)
            cur.execute("UPDATE component_versions SET version = 5 WHERE component = 'core'")
            cur.execute("PRAGMA user_version = 5")
    with localstore.open(home=home) as store:
        assert _plain_rids(store) == {_rid(store, "w/latin.blueprint.yaml")}
        assert store.index.integrity_check() == []
        assert [h.info.path for h in store.search("天気")] == ["w/cjk.blueprint.yaml"]
        assert "[天気]" in store.search("天気")[0].snippet
        assert [h.info.path for h in store.search("deploy")] == ["w/latin.blueprint.yaml"]


def test_check_fix_makes_a_wrong_plain_list_again(store) -> None:
    """A row listed although its text has something to split shows in the check (the view
    gives FTS5 other text than it indexed), and check --fix lists the rows again before it
    rebuilds the search index from the view."""
    store.save("w/cjk", "title: 東京都の天気\n")
    store.save("w/latin", "steps: []\n")
    cjk = _rid(store, "w/cjk.blueprint.yaml")
    with store.index.write() as cur:
        cur.execute("INSERT INTO fts_plain VALUES (?)", (cjk,))
    assert any("blueprints_fts" in p for p in store.index.integrity_check())
    report = store.check(fix=True)
    assert {f["kind"] for f in report.fixed} == {"search-index-rebuilt"}
    assert report.problems == []
    assert _plain_rids(store) == {_rid(store, "w/latin.blueprint.yaml")}
    assert [h.info.path for h in store.search("天気")] == ["w/cjk.blueprint.yaml"]
    store.save("w/cjk", "title: 大阪\n")  # removing the entry gives back what was indexed
    assert store.index.integrity_check() == []
