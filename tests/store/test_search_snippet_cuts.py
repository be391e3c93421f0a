"""A snippet's long parts are cut (GAP_MAX characters, localstore._fts_text), and a cut never
falls inside what a reader sees as one character: between a letter and its combining accent (NFD
text, as macOS file names hand it out), after an emoji before its variation selector, or inside
an emoji sequence joined by zero-width joiners. Cut by code points, the part after a cut began with a lone combining
accent (drawn on the "…") and the part before one ended with the bare letter ("e" where the
text has "é"). A real store in a temporary home, real SQLite.
"""

from __future__ import annotations

import unicodedata

import pytest

from localstore._fts_text import GAP_MAX

# Characters that continue the character before them (none may start a part, nor follow its end).
_ZWJ = "\u200d"


def _continues(c: str) -> bool:
    return (
        unicodedata.category(c).startswith("M")
        or c == _ZWJ
        or "\U0001f3fb" <= c <= "\U0001f3ff"  # skin-tone modifiers
    )


@pytest.mark.parametrize(
    "run",
    [
        unicodedata.normalize("NFD", "é") * 200,  # 400 code points, 200 characters
        "❤\ufe0f" * 150,  # a variation selector (a combining mark) after each heart
        "👩\u200d👩\u200d👧" * 60,  # a family: three emoji joined by zero-width joiners
        "a" + unicodedata.normalize("NFD", "ệ") * 130,  # two marks on each letter
    ],
    ids=["nfd-accents", "variation-selectors", "zwj-sequences", "two-marks"],
)
def test_a_cut_part_of_a_snippet_keeps_each_character_whole(store, run: str) -> None:
    content = f"k: {run} {run} target {run} {run}\n"
    store.save("s/a", content)
    (hit,) = store.search("target")
    texts = [text for text, is_hit in hit.snippet_parts if not is_hit]
    assert len(hit.snippet) < len(content) // 2, "the snippet was not cut: the test shows nothing"
    for text in texts:
        for piece in text.split("…"):
            if not piece:
                continue
            assert not _continues(piece[0]), f"a part starts inside a character: {piece[:3]!r}"
            at = content.find(piece)
            assert at >= 0, f"{piece[:10]!r}... is not text of the blueprint"
            assert content[at - 1] != _ZWJ, f"a part starts inside a sequence: {piece[:3]!r}"
            after = content[at + len(piece) : at + len(piece) + 1]
            assert not after or not _continues(after), (
                f"a part ends inside a character: ...{piece[-3:]!r} then {after!r}"
            )
    # (Each part stays about GAP_MAX characters.)
    assert all(len(t) <= GAP_MAX + 2 for t, _ in hit.snippet_parts)
