"""Search in a folder has two plans: a small folder's row ids are gathered first and each match of
the words is tested against them; a big folder's matches are each looked up in the index (see
_Search._source). Both must give the same answer: the same hits, in the same order, with the
same scores (BM25 over the whole store's statistics) and snippets."""

from __future__ import annotations

from typing import Any

import pytest

import localstore._store_search as store_search
from localstore.store import SearchHit
from tests.store.search_corpus import TEXTS

FOLDERS = ["/", "ops", "ops/deep", "opsx", "web", "東京", "ops/😀", "one", "nowhere"]
QUERIES = [
    "deploy",
    "deploy build",
    '"deploy build"',
    "kube",  # a prefix only: kubernetes, kubectl
    "dep",
    "東京",
    "天気",
    "café",
    "ops",  # a word of the paths
    "nothing-has-this",
]
PAGES = [(20, 0), (3, 0), (3, 2), (100, 0)]


@pytest.fixture
def corpus(store: Any) -> Any:
    """Blueprints in the top folder, a folder and its sub-folders (one named from above
    U+FFFF), a sibling whose name starts with the folder's, a CJK folder; named, tagged and
    described with the searched words or not; identical twins (tied scores); deleted ones."""
    texts = TEXTS
    places = {
        "": 3,
        "ops": 9,
        "ops/deep": 5,
        "ops/deep/er": 2,
        "ops/😀": 3,
        "opsx": 4,
        "web": 14,
        "東京": 3,
        "one": 1,
    }
    n = 0
    for folder, count in places.items():
        for i in range(count):
            n += 1
            path = f"{folder}/bp{i}" if folder else f"bp{i}"
            store.save(
                path,
                texts[n % len(texts)],
                name=f"deploy-{n}" if n % 5 == 0 else f"job-{n}",
                tags=["ci"] if n % 3 == 0 else ["deploy"] if n % 4 == 0 else [],
                description="builds and deploys" if n % 6 == 0 else "",
            )
    store.save("ops/twin-a", texts[0])  # identical: tied scores, newest first
    store.save("ops/twin-b", texts[0])
    store.delete("ops/bp1")
    store.delete("web/bp2")
    return store


def _answers(store: Any, monkeypatch: pytest.MonkeyPatch, bound: int) -> list[list[SearchHit]]:
    monkeypatch.setattr(store_search, "_SEARCH_FOLDER_ROWS", bound)
    return [
        store.search(query, folder=folder, tag=tag, limit=limit, offset=offset)
        for query in QUERIES
        for folder in FOLDERS
        for tag in (None, "ci")
        for limit, offset in PAGES
    ]


@pytest.mark.parametrize("rank_cap", [store_search.SEARCH_RANK_CAP, 4])
def test_both_plans_of_a_folder_search_give_the_same_answer(
    corpus: Any, monkeypatch: pytest.MonkeyPatch, rank_cap: int
) -> None:
    """With a rank cap of 4, folders above it are counted and answered in tiers (described
    blueprints first, then the rest newest first) by either plan; below it ranked whole."""
    monkeypatch.setattr(store_search, "SEARCH_RANK_CAP", rank_cap)
    by_lookup = _answers(corpus, monkeypatch, -1)  # no folder is small: every match looked up
    by_rid = _answers(corpus, monkeypatch, 10**9)  # every folder is small: its ids gathered
    assert sum(len(hits) for hits in by_rid) > 500  # (not a comparison of empty answers)
    assert by_rid == by_lookup


def test_a_small_folder_search_ranks_over_the_whole_store(corpus: Any) -> None:
    """The gathered ids only filter the matches: BM25's statistics (how many blueprints hold a
    word, their average length) stay the whole store's, so a hit scores as it does unfiltered."""
    whole = {h.info.id: h.score for h in corpus.search("build", limit=1000)}
    inside = corpus.search("build", folder="ops/deep")
    assert inside and all(h.info.path.startswith("ops/deep/") for h in inside)
    assert {h.info.id: h.score for h in inside}.items() <= whole.items()
