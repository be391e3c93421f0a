"""The text full-text search indexes, and the snippets it gives back.

FTS5's ``unicode61`` tokenizer makes a whole run of letters one token, and Chinese, Japanese and
Thai put no spaces between words: ``東京都の天気`` was one token, so a search for ``東京`` found
nothing. Search therefore indexes each character of those scripts (and of Korean, whose particles
are written onto their nouns) as a token of its own, by putting a separator the tokenizer skips
(:data:`SPLIT`) around each run's characters; a query's run gets the same treatment, so FTS5
takes it as a phrase of consecutive characters (a substring). Text without such characters is
returned as it is, so everything else is indexed, ranked and shown exactly as before.

Rejected: a tokenizer written in Python (apsw). FTS5 runs the tokenizer on every save (twice for an
update: the old entry is removed by tokenizing it again) and on every hit's text for its snippet;
calling back into Python for each of a 2 KB blueprint's ~330 tokens cost about 100 us per
document, which is 3 ms more for a page of 20 snippets (against ~1.2 ms for the whole search).

The separator and the snippet's hit markers are characters ``unicode61`` treats as separators
and that text practically never holds (two noncharacters and the interlinear annotation marks);
any that a text does hold becomes a space in what is indexed (the tokens stay the same), so a
marker in a snippet is always one FTS5 put there.
"""

from __future__ import annotations

import re
from unicodedata import category as _category

# Put around each character of a run to split (a noncharacter: never interchanged as text).
SPLIT = "\uffff"
# What snippet() puts around a hit (the interlinear annotation anchor and terminator).
HIT_OPEN, HIT_CLOSE = "\ufff9", "\ufffb"
# The most characters of one part of a snippet (the text before, between or after its hits, or
# one hit). FTS5's snippet() picks 12 tokens but keeps all the text between them: a line of
# 20,000 dashes, or one 20,000-letter token, made a snippet of 20 KB for three words (a big
# blueprint's window snippet, localstore._snippets, was cut at its window's 4 KB instead).
GAP_MAX = 120
# The characters above plus two other noncharacter/annotation separators; blanked in indexed text.
_RESERVED = "\ufff9-\ufffb\ufffe\uffff"
# Scripts written without spaces between words, one token per character: Thai, Lao, Myanmar,
# Khmer; Hangul (jamo, compatibility jamo, syllables, half-width); CJK ideographs (the unified
# blocks and their extensions, compatibility ideographs) and the ideographic iteration and closing
# marks and number zero (U+3005-U+3007); kana (hiragana, katakana, half-width katakana, the phonetic
# extensions and supplements) and bopomofo. (The CJK and Kangxi radicals, U+2E80-U+2FDF, are
# symbols, which the tokenizer skips already.) None is in U+2000-U+2FFF, see indexed_text().
_SCRIPTS = (
    "\u0e00-\u0eff"
    "\u1000-\u109f"
    "\u1100-\u11ff"
    "\u1780-\u17ff"
    "\u3005-\u3007"
    "\u3040-\u31ff"
    "\u3400-\u4dbf"
    "\u4e00-\u9fff"
    "\ua960-\ua97f"
    "\uac00-\ud7ff"
    "\uf900-\ufaff"
    "\uff66-\uffdc"
    "\U0001b000-\U0001b2ff"
    "\U00020000-\U0003ffff"
)
# Every byte that can start the UTF-8 form of a character listed above (E0-F4), but E2.
_NOT_LEAD = bytes(b for b in range(256) if not 0xE0 <= b <= 0xF4)
_RUN = re.compile(f"[{_SCRIPTS}]+")
_WORK = re.compile(f"[{_SCRIPTS}{_RESERVED}]")
_BLANK = re.compile(f"[{_RESERVED}]")
_HIT = re.compile(f"{HIT_OPEN}([^{HIT_CLOSE}]*){HIT_CLOSE}")
# What continues the character before it, for a cut (_whole): a combining mark (category M, which
# holds the variation selectors), the zero-width joiner of emoji sequences, the skin-tone
# modifiers, the tag characters of a subdivision flag (England's: a black flag and seven tags);
# looked for this far from the cut. A flag of a country is two regional indicators, none
# between: a cut after an odd number of them split two flags into two others or none.
_ZWJ = "\u200d"
_MODIFIERS = frozenset(map(chr, [*range(0x1F3FB, 0x1F400), *range(0xE0020, 0xE0080)]))
_REGIONAL = frozenset(map(chr, range(0x1F1E6, 0x1F200)))
_WHOLE_SCAN = 32


def _split_run(m: re.Match[str]) -> str:
    run = m.group()
    return SPLIT + SPLIT.join(run) + SPLIT


def indexed_text(text: str) -> str:
    """The text search indexes for ``text``: itself unless it holds characters of a script
    written without spaces (each then made a token of its own) or a reserved character."""
    if text.isascii():  # most blueprints: one C pass
        return text
    # A regular expression's scan costs about 10 ns a character (20-35 us for 2 KB); these two
    # C passes (7-10 us) clear most other text first: every character to split or blank takes
    # three or four bytes in UTF-8, and none starts with E2 (U+2000-U+2FFF: the dashes, quotes,
    # bullets, arrows and symbols of European prose).
    leads = text.encode("utf-8", "surrogatepass").translate(None, _NOT_LEAD)
    if not leads.strip(b"\xe2") or _WORK.search(text) is None:
        return text
    return _RUN.sub(_split_run, _BLANK.sub(" ", text))


def shown(snippet: str) -> tuple[str, tuple[tuple[str, bool], ...]]:
    """A snippet made with HIT_OPEN/HIT_CLOSE as it is shown: the text with hits marked ``[``
    and ``]``, and the same as parts (text, is a hit), which no bracket in the text confuses.
    A part longer than GAP_MAX is cut (see _trimmed)."""
    if SPLIT in snippet:
        snippet = snippet.replace(SPLIT, "")
    if snippet.startswith("…"):
        # FTS5 opens a snippet at a word of its tokenizer, whose tables (Unicode 6.1) take the
        # later skin-tone modifiers for letters: the snippet began with one, cut from its emoji.
        snippet = "…" + snippet[_whole(snippet, 1, 1) :]
    # With its group, split() alternates text between hits and hits (FTS5 closes each it opens).
    pieces = _HIT.split(snippet)
    parts = tuple((piece, i % 2 == 1) for i, piece in enumerate(pieces) if piece)
    if any(len(text) > GAP_MAX for text, _ in parts):
        parts = _trimmed(parts)
        return "".join(f"[{text}]" if hit else text for text, hit in parts), parts
    return snippet.replace(HIT_OPEN, "[").replace(HIT_CLOSE, "]"), parts


def _whole(text: str, at: int, step: int) -> int:
    """``at``, or the nearest place towards ``step`` (-1: back, 1: on) within a few characters
    where a cut keeps each character whole: not before a combining mark (NFD text, as macOS file
    names give it: the mark was left on the "…", its letter shown bare), an emoji's skin-tone
    modifier or a zero-width joiner, nor after a joiner. ``at`` as it is when there is none near
    (a letter under dozens of marks)."""
    for _ in range(_WHOLE_SCAN):
        if at <= 0 or at >= len(text):
            return at
        c = text[at]
        if not (
            _category(c)[0] == "M"
            or c == _ZWJ
            or c in _MODIFIERS
            or text[at - 1] == _ZWJ
            or (c in _REGIONAL and _in_flag(text, at))
        ):
            return at
        at += step
    return at - step * _WHOLE_SCAN


def _in_flag(text: str, at: int) -> bool:
    """True if the regional indicator at ``at`` is the second of a flag: an odd number of them
    runs up to it."""
    start = at
    while start > 0 and text[start - 1] in _REGIONAL:
        start -= 1
    return (at - start) % 2 == 1


def _trimmed(parts: tuple[tuple[str, bool], ...]) -> tuple[tuple[str, bool], ...]:
    """``parts`` with each one over GAP_MAX characters cut, an ellipsis where text was left out:
    the text before the first hit keeps its end, the text after the last its start, text between
    two hits both, and a hit (one long token) its start."""
    half, last = GAP_MAX // 2, len(parts) - 1
    cut: list[tuple[str, bool]] = []
    for i, (text, hit) in enumerate(parts):
        if len(text) <= GAP_MAX:
            cut.append((text, hit))
        elif hit:
            cut += [(text[: _whole(text, GAP_MAX, -1)], True), ("…", False)]
        elif i == 0 and last > 0:
            cut.append(("…" + text[_whole(text, len(text) - GAP_MAX, 1) :], False))
        elif i == last:
            cut.append((text[: _whole(text, GAP_MAX, -1)] + "…", False))
        else:
            head, tail = _whole(text, half, -1), _whole(text, len(text) - half, 1)
            cut.append((text[:head] + "…" + text[tail:], False))
    merged: list[tuple[str, bool]] = []
    for text, hit in cut:  # (the ellipsis after a cut hit joins the text that follows it)
        if merged and not hit and not merged[-1][1]:
            merged[-1] = (merged[-1][0] + text, False)
        else:
            merged.append((text, hit))
    return tuple(merged)
