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

from localstore._fts_text import GAP_MAX, HIT_CLOSE, HIT_OPEN, shown

# Characters that continue the character before them (none may start a part, nor follow its end).
_ZWJ = "\u200d"


_FLAG_DE, _FLAG_FR = "\U0001f1e9\U0001f1ea", "\U0001f1eb\U0001f1f7"  # regional indicator pairs
# England's flag: a black flag, five tag characters (g b e n g) and the cancel tag.
_ENGLAND = "\U0001f3f4" + "".join(map(chr, (0xE0067, 0xE0062, 0xE0065, 0xE006E, 0xE0067, 0xE007F)))


def _continues(c: str) -> bool:
    return (
        unicodedata.category(c).startswith("M")
        or c == _ZWJ
        or "\U0001f3fb" <= c <= "\U0001f3ff"  # skin-tone modifiers
        or "\U000e0020" <= c <= "\U000e007f"  # tag characters (subdivision flags)
    )


def _regional(c: str) -> bool:
    return "\U0001f1e6" <= c <= "\U0001f1ff"


def _inside_a_flag(content: str, at: int) -> bool:
    """True if ``at`` is between the two regional indicators of one flag."""
    if at >= len(content) or not _regional(content[at]):
        return False
    before = 0
    while at - before > 0 and _regional(content[at - before - 1]):
        before += 1
    return before % 2 == 1


@pytest.mark.parametrize(
    "run",
    [
        unicodedata.normalize("NFD", "é") * 200,  # 400 code points, 200 characters
        "❤\ufe0f" * 150,  # a variation selector (a combining mark) after each heart
        "👩\u200d👩\u200d👧" * 60,  # a family: three emoji joined by zero-width joiners
        "a" + unicodedata.normalize("NFD", "ệ") * 130,  # two marks on each letter
        _FLAG_DE * 75 + _FLAG_FR * 76,  # flags: pairs of regional indicators, none between
    ],
    ids=["nfd-accents", "variation-selectors", "zwj-sequences", "two-marks", "flags"],
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
            assert not _inside_a_flag(content, at), f"a part starts inside a flag: {piece[:3]!r}"
            assert not _inside_a_flag(content, at + len(piece)), f"...{piece[-3:]!r} cuts a flag"
            after = content[at + len(piece) : at + len(piece) + 1]
            assert not after or not _continues(after), (
                f"a part ends inside a character: ...{piece[-3:]!r} then {after!r}"
            )
    # (Each part stays about GAP_MAX characters.)
    assert all(len(t) <= GAP_MAX + 2 for t, _ in hit.snippet_parts)


def test_a_snippet_that_starts_mid_text_starts_with_a_whole_character(store) -> None:
    """FTS5 starts a snippet at a word of its tokenizer, whose Unicode tables (6.1) predate the
    skin-tone modifiers: it took one as a word and began the snippet with it, cut from its
    emoji ("…🏽 w13"). What continues a character is left out after the opening ellipsis."""
    thumbs = "\U0001f44d\U0001f3fd"
    words = [f"w{i}{thumbs}" for i in range(30)]
    words[15] = "target " + words[15]
    store.save("s/b", f"k: '{' '.join(words)}'\n")
    (hit,) = store.search("target")
    assert hit.snippet.startswith("…"), "the snippet starts at the text's start: shows nothing"
    assert not _continues(hit.snippet[1]), f"it starts inside a character: {hit.snippet[:4]!r}"
    assert hit.snippet_parts[0][0][0] == "…"
    assert hit.snippet_parts[0][0][1:] in " ".join(words)


@pytest.mark.parametrize("before", ["", "x", "xy", "xyz"])
def test_a_cut_keeps_a_subdivision_flag_whole(before: str) -> None:
    """A subdivision flag is seven characters (a black flag, then tags); a cut among its tags
    left a black flag and loose tags. (FTS5 itself ends a snippet after a black flag, a word to
    its tokenizer's tables, so the text around a real hit shows that: the trim is tested alone.)"""
    text, _ = shown(f"{HIT_OPEN}target{HIT_CLOSE} {before}{_ENGLAND * 40}…")
    kept = text.removeprefix("[target] ").removesuffix("…")
    assert len(kept) < len(_ENGLAND) * 40, "nothing was cut: the test shows nothing"
    assert kept.removeprefix(before).replace(_ENGLAND, "") == "", f"...{kept[-3:]!r}"
