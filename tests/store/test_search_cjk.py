"""Search in scripts written without spaces between words (Chinese, Japanese, Korean particles,
Thai), snippets whose hits a bracket in the text cannot be mistaken for, and pages past the
first. A real store in a temporary home, real SQLite."""

from __future__ import annotations

from pathlib import Path

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
