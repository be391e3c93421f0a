"""Search with what people type into a search box: punctuation inside words, stray control
characters, pasted walls of text. Each gives hits or a typed error with a hint, never a raw
SQLite error nor a search that holds the index for seconds."""

from __future__ import annotations

import time

import pytest

from localstore.errors import InvalidInputError, LimitExceededError


@pytest.fixture
def seeded(store):
    store.save(
        "ops/kube-deploy",
        "steps:\n  - run: kubectl apply -f config.yaml\n  - notify: ops@example.com v1.2\n",
    )
    store.save("ops/other", "steps:\n  - run: echo\n")
    return store


@pytest.mark.parametrize(
    "query",
    [
        "config.yaml",  # a file name
        "ops/kube-deploy",  # the blueprint's own path
        "ops@example.com",
        "v1.2",
        "example.com",
        "kube-deploy.blueprint.yaml",
    ],
)
def test_words_joined_by_punctuation_are_found(seeded, query: str) -> None:
    """The tokenizer splits 'config.yaml' into 'config' and 'yaml'; the query builder deleted the
    dot instead and searched for 'configyaml', which no blueprint holds."""
    assert [h.info.path for h in seeded.search(query)] == ["ops/kube-deploy.blueprint.yaml"]


def test_words_with_combining_marks_are_found(store) -> None:
    """Vowel signs of Devanagari are combining marks, not letters: deleting them searched for
    words no document holds (FTS5 splits the word at them, as it does the documents)."""
    store.save("lang/hi", "title: हिन्दी भाषा\n")
    assert [h.info.path for h in store.search("हिन्दी")] == ["lang/hi.blueprint.yaml"]


@pytest.mark.parametrize("query", ['"kube\x00deploy"', '"kube\x00', "kubectl \x00"])
def test_a_nul_character_in_the_query_is_ignored(seeded, query: str) -> None:
    """A NUL inside a quoted phrase ended FTS5's string early: an IndexStoreError 'unterminated
    string' whose hint sent the user to 'localstore check'."""
    assert [h.info.path for h in seeded.search(query)] == ["ops/kube-deploy.blueprint.yaml"]


def test_a_lone_surrogate_in_the_query_or_a_filter_is_typed(seeded) -> None:
    """Python decodes a command-line argument that is not UTF-8 into lone surrogates
    (``localstore search $'\\xff'`` in a non-UTF-8 locale); inside a phrase, or as a folder or tag
    filter, binding it to SQLite raised a raw UnicodeEncodeError."""
    assert [h.info.path for h in seeded.search('"kubectl\udcff apply"')] == [
        "ops/kube-deploy.blueprint.yaml"
    ]
    for call in (
        lambda: seeded.search("kubectl", folder="ops\udcff"),
        lambda: seeded.search("kubectl", tag="\udcff"),
        lambda: seeded.list(folder="ops\udcff"),
        lambda: seeded.list(tag="\udcff"),
    ):
        with pytest.raises(InvalidInputError, match="not valid Unicode") as info:
            call()
        assert info.value.hint


def test_a_query_of_too_many_words_is_refused_at_once(seeded) -> None:
    """FTS5's cost grows faster than linearly with the number of terms: 5,000 words pasted into
    a search box held the index (and so every other thread of the app) for 20 s."""
    pasted = " ".join(["kubectl"] * 5000)
    started = time.perf_counter()
    with pytest.raises(LimitExceededError, match="words") as info:
        seeded.search(pasted)
    assert time.perf_counter() - started < 2.0
    assert "fewer words" in info.value.hint
    with pytest.raises(LimitExceededError):
        seeded.search('"' + " ".join(f"w{i}" for i in range(65)) + '"')


@pytest.mark.parametrize("query", ["हिन्दी" * 22, '"' + "हिन्दी " * 22 + '"', "कि" * 65])
def test_a_word_the_tokenizer_cuts_in_many_counts_each_against_the_word_limit(
    seeded, query: str
) -> None:
    """SQLite's tokenizer cuts Devanagari at its vowel signs (हिन्दी is three terms) where Python
    sees one word: counted as one, 'हिन्दी' pasted 700 times (2,100 terms) passed the 64-word
    limit and held the index for 5 s on 5,000 blueprints."""
    with pytest.raises(LimitExceededError, match="more than the 64") as info:
        seeded.search(query)
    assert info.value.hint
    seeded.save("lang/hi", "title: हिन्दी भाषा\n")
    assert [h.info.path for h in seeded.search("हिन्दी" * 21)] == []  # (63 terms: searched)
    assert [h.info.path for h in seeded.search("हिन्दी")] == ["lang/hi.blueprint.yaml"]


def test_a_query_at_the_word_limit_still_searches(seeded) -> None:
    from localstore.store import SEARCH_MAX_WORDS

    query = " ".join(["kubectl"] * SEARCH_MAX_WORDS)
    assert [h.info.path for h in seeded.search(query)] == ["ops/kube-deploy.blueprint.yaml"]


@pytest.mark.parametrize("query", [5, None, b"deploy", ["deploy"]])
def test_a_query_that_is_not_text_says_so(seeded, query: object) -> None:
    """A non-string query was reported as 'empty search query'."""
    with pytest.raises(InvalidInputError, match="must be a string") as info:
        seeded.search(query)
    assert type(query).__name__ in str(info.value) and info.value.hint


def test_search_pages_with_offset_like_one_big_result(store) -> None:
    """search had no offset: an app could page only by asking for a larger limit. Pages join up
    to the one big answer, also where many hits tie in rank (identical blueprints) and across
    the whole-word and prefix tiers."""
    for i in range(30):
        store.save(f"same/d{i:02}", "run: deploy\n")  # all tie
    for i in range(7):
        store.save(f"more/x{i}", "run: deployment\n")  # prefix-only matches of 'deploy'
    whole = [h.info.id for h in store.search("deploy", limit=100)]
    assert len(whole) == 37 and len(set(whole)) == 37
    for size in (1, 4, 7, 20):
        paged = []
        for offset in range(0, 40, size):
            paged += [h.info.id for h in store.search("deploy", limit=size, offset=offset)]
        assert paged == whole, size
    # A page taken with a small limit is the start of a larger one (ties broken the same way).
    for size in range(1, 37):
        assert [h.info.id for h in store.search("deploy", limit=size)] == whole[:size]
    assert store.search("deploy", offset=37) == []
    assert store.search("deploy", offset=10**20) == []
    for bad in (-1, 1.5, "2", None, True):
        with pytest.raises(InvalidInputError, match="offset"):
            store.search("deploy", offset=bad)


def test_search_tier_pages_join_up_above_the_rank_cap(store, monkeypatch) -> None:
    """The tiered answer (more matches than SEARCH_RANK_CAP) pages the same way."""
    import localstore._store_search as store_search

    monkeypatch.setattr(store_search, "SEARCH_RANK_CAP", 5)
    for i in range(9):
        store.save(f"t/n{i}", "run: build\n", name="build" if i % 3 == 0 else f"n{i}")
    whole = [h.info.id for h in store.search("build", limit=100)]
    assert len(whole) == 9
    paged = []
    for offset in range(0, 9, 2):
        paged += [h.info.id for h in store.search("build", limit=2, offset=offset)]
    assert paged == whole
