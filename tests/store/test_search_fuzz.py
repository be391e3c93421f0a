"""Search and listing with arbitrary input (Hypothesis), over a real store of varied text: ASCII,
accents in both Unicode forms, CJK, emoji, code full of FTS5's own syntax, a line of 100,000
characters, a blueprint over the whole-text snippet limit.

The promise (docs/architecture.md, "Search" and "Filters"): whatever is typed, search() and
list() answer with blueprints that exist, or refuse with InvalidInputError and a hint; never an
apsw/FTS5 syntax error, an IndexError or a UnicodeError. FTS5's query language (quotes, ``*``,
``^``, ``NEAR(``, ``AND``/``OR``/``NOT``, column filters, parentheses, ``-``, ``+``) must reach
FTS5 as words, never as syntax. The CLI's ``search`` and ``ls`` turn the same input into a
documented exit code, never a traceback. LOCALSTORE_STRESS=1 runs 20x more examples.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import localstore
from localstore._fts_text import GAP_MAX, HIT_CLOSE, HIT_OPEN, shown
from localstore.cli import cli
from localstore.errors import InvalidInputError
from localstore.store import SearchHit
from tests.conftest import STRESS

SETTINGS = settings(
    max_examples=4000 if STRESS else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI_SETTINGS = settings(SETTINGS, max_examples=1000 if STRESS else 40)

# A snippet is a fragment around the hits (FTS5's 12 tokens), not the blueprint: whatever the
# text, a hit's snippet stays well under this.
SNIPPET_MAX = 4096

CORPUS = {
    "plain/kube-deploy": "steps:\n  - run: kubectl apply -f config.yaml\n  - notify: ops@example.com\n",
    "plain/lint": "steps:\n  - run: lint\n",
    "accents/nfc": "title: café crème Straße naïve déjà\n",
    "accents/nfd": "title: " + unicodedata.normalize("NFD", "café résumé") + "\n",
    "cjk/weather": "title: 東京都の天気\nko: 서울 날씨\nth: ภาษาไทย\n",
    "emoji/party": "title: deploy 😀🚀 party 👩‍👩‍👧\n",
    "code/syntax": (
        "code: 'if (a && b) { x = y[0] * \"q\" ^ 2; } // NEAR(a b) AND OR NOT name: - + *'\n"
        "sql: \"SELECT * FROM t WHERE {name content}: 'x'\"\n"
    ),
    "long/line": "line: " + "word " * 20_000 + "\n",
    "long/token": "k: alpha " + "x" * 20_000 + " omega\n",
    "long/gap": "k: beta " + "-" * 20_000 + " gamma\n",
    "long/big": "x: |\n" + "".join(f"  line {i} deploy build café\n" for i in range(2_000)),
    "😀 folder/inside": "k: deploy\n",
}
TAGS = ["ops", "café", "東京", "😀", "a b"]

# Pieces of queries: FTS5's syntax, words of the corpus, characters that need care in SQL, in
# UTF-8 and in FTS5 strings.
_FRAGMENTS = [
    '"', "'", "*", "^", "(", ")", "{", "}", ":", "-", "+", ".", ",", "/", "\\", "%", "_",
    " ", "\t", "\n", "\x00", "\x01", "\x7f", "\u200b", "\ud800", "\udfff", "\uffff", "\ufff9",
    "\ufffb", "\ufffe", "AND", "OR", "NOT", "NEAR", "NEAR(", "NEAR/3", "name:", "content:",
    "{name content}:", "-name:", "kube", "deploy", "café", "cafe", "e\u0301", "東", "京", "天気",
    "😀", "word", "line", "x" * 300, "a", "1", "0x1F",
]  # fmt: skip
queries = st.one_of(
    st.text(max_size=40),  # any code point, surrogates included
    st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=6).map(" ".join),
)
folders = st.one_of(
    st.none(),
    st.sampled_from(["plain", "/", "//", "/plain/", "cjk", "😀 folder", "nope", "a/../b", "a\\b"]),
    st.text(max_size=12),
)
tags = st.one_of(st.none(), st.sampled_from([*TAGS, "nope", " ", ""]), st.text(max_size=8))
counts = st.one_of(
    st.integers(min_value=-3, max_value=30),
    st.sampled_from([2**31, 2**63, 2**70, -(2**70)]),
    st.booleans(),
    st.floats(allow_nan=True),
    st.none(),
    st.sampled_from(["3", b"3", [3]]),
)
sorts = st.one_of(
    st.sampled_from(["path", "name", "modified", "created", "PATH", " path", ""]),
    st.none(),
    st.just([]),
    st.just({}),
    st.just(b"path"),
    st.integers(),
)


@pytest.fixture(scope="module")
def corpus_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home holding CORPUS (built once: searches and listings change nothing)."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    with localstore.open(home=home) as store:
        for n, (path, text) in enumerate(CORPUS.items()):
            store.save(
                path,
                text,
                tags=[TAGS[n % len(TAGS)], TAGS[(n + 2) % len(TAGS)]],
                name=f"{path.split('/')[-1]} (NEAR {n})",
                description=text[:60],
            )
    return home


@pytest.fixture
def corpus(corpus_home: Path) -> Iterator[Any]:
    with localstore.open(home=corpus_home) as store:
        yield store


def _check_hits(store: Any, hits: list[SearchHit]) -> None:
    """Each hit is a live blueprint as the listing has it, once, with a bounded str snippet."""
    live = {info.id: info for info in store.list()}
    assert len({h.info.id for h in hits}) == len(hits)
    for hit in hits:
        assert live.get(hit.info.id) == hit.info
        assert isinstance(hit.snippet, str) and len(hit.snippet) <= SNIPPET_MAX, len(hit.snippet)
        assert isinstance(hit.score, float)
        shown = "".join(f"[{text}]" if is_hit else text for text, is_hit in hit.snippet_parts)
        assert shown == hit.snippet


def _refused_with_a_hint(exc: InvalidInputError) -> None:
    assert exc.message and exc.hint, (exc.message, exc.hint)


@SETTINGS
@example(query='"kube')
@example(query="alpha")
@example(query="gamma")
@example(query='"東京都の天気" NEAR(a b')
@example(query="{name content}: deploy")
@example(query="-name: kube*")
@example(query='"' + "東" * 200 + '"')
@example(query="a" * 10_000)
@example(query="..., ;; --")
@example(query="AND OR NOT")
@example(query="the a of")
@example(query=" \t\n")
@example(query="\x00")
@example(query="\ud800kube")
@given(query=queries)
def test_any_query_answers_hits_or_a_typed_refusal(corpus: Any, query: str) -> None:
    try:
        hits = corpus.search(query)
    except InvalidInputError as exc:
        _refused_with_a_hint(exc)
        return
    _check_hits(corpus, hits)
    # The same query twice: the same hits, in the same order, with the same scores.
    assert corpus.search(query) == hits


@SETTINGS
@example(query="deploy", folder="😀 folder", tag=None, limit=5, offset=1)
@example(query="line", folder=None, tag="café", limit=2**70, offset=2**70)
@given(query=queries, folder=folders, tag=tags, limit=counts, offset=counts)
def test_search_with_any_filters_and_paging(
    corpus: Any, query: str, folder: Any, tag: Any, limit: Any, offset: Any
) -> None:
    try:
        hits = corpus.search(query, folder=folder, tag=tag, limit=limit, offset=offset)
    except InvalidInputError as exc:
        _refused_with_a_hint(exc)
        return
    _check_hits(corpus, hits)
    assert len(hits) <= limit
    wanted = {i.id for i in corpus.list(folder=folder, tag=tag)}
    assert {h.info.id for h in hits} <= wanted
    # A page is the tail of the longer answer (docs/architecture.md, "Pages and ties").
    if offset > 0 and limit + offset < 1000:
        whole = corpus.search(query, folder=folder, tag=tag, limit=limit + offset)
        assert [h.info.id for h in hits] == [h.info.id for h in whole[offset:]]


@SETTINGS
@example(folder=None, tag=None, sort=[], descending=False, limit=None, offset=0)
@example(folder=None, tag=None, sort={}, descending=False, limit=None, offset=0)
@example(folder="/", tag="ops", sort="name", descending=True, limit=2**70, offset=1)
@given(
    folder=folders,
    tag=tags,
    sort=sorts,
    descending=st.one_of(st.booleans(), st.none(), st.integers(0, 1), st.just("no")),
    limit=counts,
    offset=counts,
)
def test_list_with_any_filters_sort_and_paging(
    corpus: Any, folder: Any, tag: Any, sort: Any, descending: Any, limit: Any, offset: Any
) -> None:
    try:
        page = corpus.list(
            folder=folder, tag=tag, sort=sort, descending=descending, limit=limit, offset=offset
        )
    except InvalidInputError as exc:
        _refused_with_a_hint(exc)
        return
    whole = corpus.list(folder=folder, tag=tag, sort=sort, descending=descending)
    end = None if limit is None else offset + limit
    assert page == whole[offset:end]
    live = {i.id for i in corpus.list()}
    assert {i.id for i in whole} <= live
    if folder is None and tag is None:
        assert len(whole) == len(CORPUS)


@pytest.mark.parametrize(
    ("query", "path"),
    [("omega", "long/token"), ("gamma", "long/gap")],
)
def test_a_snippet_is_a_fragment_around_its_hits_not_a_whole_long_line(
    corpus: Any, query: str, path: str
) -> None:
    """FTS5's snippet() keeps all the text between the 12 tokens it picks: 'gamma' after 20,000
    dashes gave a snippet of 20 KB. The long part is cut, an ellipsis where text was left out."""
    (hit,) = corpus.search(query)
    assert hit.info.path == f"{path}.blueprint.yaml"
    assert len(hit.snippet) < 300 and "…" in hit.snippet
    assert [text for text, is_hit in hit.snippet_parts if is_hit] == [query]


def test_a_hit_of_one_long_token_is_cut_too() -> None:
    text, parts = shown(f"k: {HIT_OPEN}{'x' * 20_000}{HIT_CLOSE} {'-' * 20_000} end")
    assert parts == (
        ("k: ", False),
        ("x" * GAP_MAX, True),
        ("… " + "-" * (GAP_MAX - 1) + "…", False),
    )
    assert text == f"k: [{'x' * GAP_MAX}]… {'-' * (GAP_MAX - 1)}…"


def _cli(home: Path, *args: str) -> Any:
    # --debug: an unexpected error raises (the runner keeps it) instead of its one-line report,
    # so a bug cannot pass as the documented exit 1.
    return CliRunner().invoke(cli, ["--debug", "--home", str(home), *args])


def _check_exit(result: Any) -> None:
    assert result.exit_code in (0, 1, 2, 4), (result.exit_code, result.output)
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 1:
        assert result.stderr.startswith("error: ") and "(" in result.stderr, result.stderr


# argv cannot hold a NUL; click hands a surrogate (bytes not UTF-8) on as it came.
_cli_text = st.text(st.characters(exclude_characters="\x00"), max_size=30)
cli_queries = st.one_of(_cli_text, queries.map(lambda q: q.replace("\x00", " ")))


@CLI_SETTINGS
@example(query="-name:", options=[])
@example(query='"kube', options=["--limit", "-1"])
@example(query="deploy", options=["--offset", "99999999999999999999999"])
@given(
    query=cli_queries,
    options=st.lists(
        st.sampled_from(
            [
                "--limit", "--offset", "--folder", "--tag", "0", "-1", "3", "x", "2.5", "",
                "plain", "/", "ops", "😀", "a\\b", "--json", "--", "99999999999999999999999",
            ]
        ),
        max_size=4,
    ),
)  # fmt: skip
def test_cli_search_exits_with_a_documented_code(
    corpus_home: Path, query: str, options: list[str]
) -> None:
    _check_exit(_cli(corpus_home, "search", *options, "--", query))


@CLI_SETTINGS
@given(
    options=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "--folder", "--tag", "--sort", "--limit", "--offset", "--desc", "0", "-1",
                    "name", "PATH", "x", "", "/", "ops", "😀 folder", "2.5",
                    "99999999999999999999999",
                ]
            ),
            _cli_text,
        ),
        max_size=5,
    )
)  # fmt: skip
def test_cli_ls_exits_with_a_documented_code(corpus_home: Path, options: list[str]) -> None:
    _check_exit(_cli(corpus_home, "ls", *options))
