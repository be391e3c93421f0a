"""A large blueprint's snippet is made from a window of its content around the first place a
query word appears (localstore._snippets): FTS5's snippet() of the whole text costs the square of
its hits (a 1 MB blueprint with a searched word on each line: 1.4 s, docs/benchmarks/store.md).
The window's snippet must be the one the whole text gives whenever the window holds what the
whole text's snippet shows, and must still show a hit deep in a large text."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

import localstore._snippets as snippets
from localstore.store import SearchHit
from tests.store.search_corpus import TEXTS

QUERIES = [
    "deploy",
    "deploy build",
    '"deploy build"',
    "kube",  # a prefix only: kubernetes, kubectl
    "東京",
    "天気",
    "café",
    "cafe",  # found through the tokenizer's folding only
    "ops",  # a word of the paths
    "lint",
]
PAGES = [(20, 0), (3, 0), (3, 2)]


@pytest.fixture
def corpus(store: Any) -> Any:
    texts = TEXTS
    for n in range(30):
        store.save(
            f"ops/bp{n}" if n % 2 else f"web/bp{n}",
            texts[n % len(texts)],
            name=f"deploy-{n}" if n % 5 == 0 else f"job-{n}",
            tags=["ci"] if n % 3 == 0 else [],
            description="builds and deploys" if n % 6 == 0 else "",
        )
    return store


def _answers(store: Any) -> list[list[tuple[str, float, str, Any]]]:
    def shape(hits: list[SearchHit]) -> list[tuple[str, float, str, Any]]:
        return [(h.info.id, h.score, h.snippet, h.snippet_parts) for h in hits]

    return [
        shape(store.search(query, limit=limit, offset=offset))
        for query in QUERIES
        for limit, offset in PAGES
    ]


def test_the_window_gives_the_whole_texts_snippet_when_it_holds_the_whole_text(
    corpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every blueprint here is shorter than a window: made through the window (bound 0) or from
    # the whole text, each snippet must be the same, on the first page and past it.
    whole = _answers(corpus)
    monkeypatch.setattr(snippets, "SNIPPET_WHOLE_MAX", 0)
    windowed = _answers(corpus)
    assert windowed == whole
    assert sum(len(a) for a in whole) > 50 and any("[" in h[2] for a in whole for h in a)


def _big(first: str, line: str, last: str, size: int) -> str:
    lines = [first]
    while sum(len(x) + 1 for x in lines) < size:
        lines.append(line.format(n=len(lines)))
    return "\n".join([*lines, last]) + "\n"


def test_a_hit_deep_in_a_large_blueprint_is_shown_in_its_snippet(store: Any) -> None:
    filler = "  - {{id: s{n}, run: make step {n} of the pipeline}}"
    size = 4 * snippets.SNIPPET_WHOLE_MAX
    store.save("big/late", _big("steps:", filler, "  - {id: end, run: kubectl rollout}", size))
    store.save(
        "big/everywhere",
        _big("steps:", "  - {{id: e{n}, run: deploy build {n}}}", "  - {id: z}", size),
    )
    (late,) = store.search("rollout")
    assert late.info.path.startswith("big/late")
    assert "[rollout]" in late.snippet and "kubectl" in late.snippet
    assert ("rollout", True) in late.snippet_parts
    (every,) = store.search("deploy build")
    assert "[deploy] [build]" in every.snippet
    # A prefix, and a phrase.
    assert "[kubectl]" in store.search("kubect")[0].snippet
    assert "[deploy build]" in store.search('"deploy build"')[0].snippet or (
        "[deploy] [build]" in store.search('"deploy build"')[0].snippet
    )


def test_a_large_blueprint_found_by_its_name_or_by_folding_still_gets_a_snippet(
    store: Any,
) -> None:
    size = 4 * snippets.SNIPPET_WHOLE_MAX
    body = _big("steps:", "  - {{id: s{n}, run: step {n}}}", "  - {id: end, note: café}", size)
    store.save("big/named", body, name="rollout plan")
    (named,) = store.search("rollout")
    assert "[rollout]" in named.snippet  # from the name column
    # "cafe" matches "café" only through the tokenizer's folding: the window is then the start
    # of the content, and the snippet says what it can (no error, no empty answer).
    (folded,) = store.search("cafe")
    assert folded.info.path.startswith("big/named")
    assert folded.snippet


# A large blueprint whose content holds one hit of the query, deep in it, only as the tokenizer
# folds it (case, diacritics, a prefix, a word joined by an underscore) or in another script: the
# window must be around that hit, so its snippet is the one the whole text's snippet() gives. A
# decoy early in the text looks like a query word to a plain search but is no hit.
FOLDED = [
    ("cafe", "note: café au lait", ""),
    ("cafe", "note: " + unicodedata.normalize("NFD", "café") + " au lait", ""),
    ("CAFÉ", "note: Café au lait", ""),
    ("straße", "where: Straße", "where: STRASSE"),  # casefold() makes ß "ss", the tokenizer not
    ("istanbul", "where: İstanbul", ""),
    ("resum", "file: the résumé of it", ""),  # a prefix, matched through the folding only
    ("cafe resum", "file: résumé, café", ""),
    ("build", "run: deploy_build now", ""),  # '_' separates tokens, but is a word character for re
    ("cafe build", "run: café build", "run: cafeteria"),  # "cafe" is no prefix here
    ("ὁδός", "δρόμος: Ὁδός", ""),
    ("москва", "город: МОСКВА", ""),  # noqa: RUF001
    ("東京", "title: 東京都の天気", ""),
    ('"au lait"', "note: café AU LAIT", ""),
]


@pytest.mark.parametrize(("query", "line", "decoy"), FOLDED)
def test_a_hit_found_through_the_tokenizers_folding_gets_the_whole_texts_snippet(
    store: Any, monkeypatch: pytest.MonkeyPatch, query: str, line: str, decoy: str
) -> None:
    size = 4 * snippets.SNIPPET_WHOLE_MAX
    filler = "  - {{id: s{n}, run: make step {n} of the pipeline}}"
    text = _big("steps:", filler, f"  - {decoy or 'x: y'}", size // 4)
    text = _big(text + "  - {id: gap}", filler, f"  - {line}", size // 2)
    store.save(
        "big/folded", _big(text + "  - {id: gap}", filler, "  - {id: end}", size), name="big one"
    )
    (windowed,) = store.search(query)
    monkeypatch.setattr(snippets, "SNIPPET_WHOLE_MAX", 2 * size)
    (whole,) = store.search(query)
    assert "[" in whole.snippet and whole.snippet != "[big] one"
    assert (windowed.snippet, windowed.snippet_parts) == (whole.snippet, whole.snippet_parts)
