"""check_yaml (the save path's event scan) must agree with parse_yaml (compose, measure, construct).

The store skips building Python objects when no validator is set, so any document one of them
accepts and the other refuses would be a blueprint saved that cannot be read back, or a valid one
refused. Differential tests: hand-picked edge cases plus generated documents.
"""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from localstore.blueprint import (
    _NEEDS_EVENTS,
    YamlLimits,
    _needs_events,
    check_yaml,
    dump_yaml,
    parse_yaml,
)
from localstore.errors import InvalidYAMLError, LimitExceededError
from tests.conftest import STRESS

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)

EDGE_CASES = [
    "a: 1\n",
    "",
    "---\n",
    "~\n",
    "- a\n- b\n",
    "just text\n",
    "a: 1\n---\nb: 2\n",
    "a: [1, 2\n",
    "a: 0b_\n",
    "a: 0x_\n",
    "a: 1_000\n",
    "a: 2024-13-45\n",
    "a: 2024-01-05\n",
    "a: 2024-01-05T10:11:12Z\n",
    "a: =\n",
    "<<: 1\n",
    "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n",
    "? [1]\n: 2\n",
    "? {a: 1}\n: 2\n",
    "a: !custom x\n",
    "a: !!binary aGVsbG8=\n",
    "a: !!str 1\n",
    "a: &x 1\nb: *x\n",
    "a: *nope\n",
    "a: &x 1\nb: &x 2\n",
    "a: &x [*x]\n",
    "a: &x [&x 1]\n",
    ALIAS_BOMB,
    "a: " + "[" * 200 + "]" * 200 + "\n",
    "a: " + "[" * 63 + "]" * 63 + "\n",
    "a: " + "[" * 62 + "]" * 62 + "\n",
    "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)),
    "a: -x_y\nb: .5\nc: +1\nd: ._\ne: -\n",
    "a: 'quoted: =' \nb: \"2024-13-45\"\n",
    "a: [=, 0b_]\n",
    "%YAML 1.1\n---\na: 1\n",
    "a: 1\n...\n",
    "\ufeffa: 1\n",
    "a: b: c\n",
    "a: 1\na: 2\n",
    "{a: 1, b: [x, {c: d}]}\n",
    # The syntax-only fast path must hand these to the exact scan.
    "a: 1\r---\rb: 2\r",
    "a: 1\r\n---\r\nb: 2\r\n",
    "a: x\n--- \nb: y\n",
    "a: [=]\n",
    "a: {b: =}\n",
    "a: b = c\n",
    "a: 1\n? b\n: 2\n",
    "[a]: 1\n",
    "{a: 1}: 2\n",
    "a: 1_0\nb: 0o_\n",
    "a: 2024-1-5\n",
    "a: x\n...\nb: y\n",
    "a: x\n%TAG ! tag:x,2024:\n",
    "k:\n" + "".join("  " * i + "- k:\n" for i in range(1, 40)),
    "a:\n  " + "- " * 70 + "x\n",
    "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 70)) + " " * 70 + "v: 1\n",
    "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 30)) + " " * 30 + "v: 1\n",
    "a: |\n" + "".join(" " * i + "text\n" for i in range(1, 90)),
    "a: [" * 40 + "]" * 40 + "\n",
    "a:\n  - b: [1, {c: [2, {d: e}]}]\n",
    # Anchors, aliases, tags and merge keys, and text that only looks like them.
    "a: cd x && make\n",
    "a: https://h/p?x=1&y=2\nb: https://h/p?x=1&ab=2\n",
    "a: '**/*.py'\nb: rm -rf *.o build/*\n",
    "a: *.o\n",
    "a: && b\n",
    "a: x&y *z\n",
    "a: done!\nb: x != y\n",
    "a: ! x\n",
    "a: != b\n",
    "a: !x!y z\n",
    "run: cat <<EOF\nb: << EOF\n",
    "a: <<\n",
    "{<<: {x: 1}, y: 2}\n",
    "a: &x1 1\nb: *x1\n",
    "a: &x_y-z [1]\nb: *x_y-z\n",
    "a: [&x 1, *x]\n",
    '{"a":&x 1, b: *x}\n',
    "{'a':*x}\n",
    "[?&x a, b]\n",
    "- &x a\n- *x\n",
    "a:\n- &x\n  b: 1\n- *x\n",
    "a: 1\n&x b: 2\nc: *x\n",
    "a: \ufeff&x 1\n",
    "a: [1]&x\n",
    "a: 'q'&x\n",
]


def _outcome(fn, text: str, limits: YamlLimits | None = None) -> tuple[str, str]:
    try:
        fn(text, limits)
    except (InvalidYAMLError, LimitExceededError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", ""


def _agree(text: str, limits: YamlLimits | None = None) -> None:
    expected = _outcome(parse_yaml, text, limits)
    got = _outcome(check_yaml, text, limits)
    # The same verdict and the same kind of error; messages agree except where the scan finds a
    # bound before the composer would (both then name the same limit).
    assert got[0] == expected[0], (text[:200], expected, got)
    if expected[0] == "InvalidYAMLError":
        assert got == expected, (text[:200], expected, got)


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_check_yaml_agrees_with_parse_yaml_on_edge_cases(text: str) -> None:
    _agree(text)


@pytest.mark.parametrize("max_nodes", [1, 2, 3, 5, 10, 30])
@pytest.mark.parametrize("max_depth", [1, 2, 3, 4])
def test_the_bounds_are_the_same_at_every_limit(max_nodes: int, max_depth: int) -> None:
    limits = YamlLimits(max_depth=max_depth, max_nodes=max_nodes)
    for text in [
        "a: 1\n",
        "a: [1, 2]\nb: {c: d}\n",
        "a: &x [1, 2]\nb: *x\nc: *x\n",
        "a: {b: {c: {d: 1}}}\n",
    ]:
        _agree(text, limits)


@pytest.mark.parametrize("depth", [1, 2, 3, 10, 30, 31, 32, 33, 62, 63, 64, 65, 66, 100])
def test_nesting_by_indentation_and_compact_sequences_is_bounded_alike(depth: int) -> None:
    by_indent = "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "v: 1\n"
    compact = "a:\n  " + "- " * depth + "x\n"
    # k0: / - k1: / "  - k2:" ...: each key's sequence sits at the key's own column.
    seq_under_keys = "k0:\n" + "".join("  " * (i - 1) + f"- k{i}:\n" for i in range(1, depth))
    seq_under_keys += "  " * max(0, depth - 1) + "- x\n"
    for text in (by_indent, compact, seq_under_keys):
        _agree(text)
        _agree(text, YamlLimits(max_depth=max(1, depth // 2)))


def test_an_alias_bomb_is_refused_without_being_built() -> None:
    with pytest.raises(LimitExceededError, match="alias"):
        check_yaml(ALIAS_BOMB)


scalars = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["=", "<<", "0b_", "2024-13-45", "2024-01-05", "~", "-", "._", "1_0"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6) | st.sampled_from(["<<", "="]), children, max_size=4),
    ),
    max_leaves=25,
)


# LOCALSTORE_STRESS runs 20x more examples.
@settings(max_examples=6000 if STRESS else 300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), documents, min_size=1, max_size=5))
def test_generated_documents_agree(doc: dict) -> None:
    text = dump_yaml(doc)
    _agree(text)
    # The same document with its scalars written plainly (unquoted), where resolution matters.
    plain = yaml.dump(doc, default_style=None, default_flow_style=True, allow_unicode=True)
    _agree(plain)
    _agree(plain.replace("'", ""))


@settings(max_examples=20_000 if STRESS else 1_500, deadline=None)
@given(st.text(alphabet="ab: -[]{},\n\r\t'\"&*!#=?|>019._%<", max_size=60))
def test_random_yaml_like_text_gets_the_same_verdict(text: str) -> None:
    """Fuzz the syntax-only fast path: any text it lets through must be one parse_yaml accepts."""
    _agree(text)


# The pre-check's patterns as first written: each led by an alternation (``^`` or a class), which
# the regex engine tried at every byte. The fast forms in blueprint._NEEDS_EVENTS (the literal
# first, what precedes it as a lookbehind) must match exactly the same texts.
_PLAIN_FORMS = {
    b"=": re.compile(rb"(?:^|[\s\[{,])=(?=[\s\]},]|$)", re.M),
    b"?": re.compile(rb"(?:^|[\s\[{,])\?(?=[\s\]},]|$)", re.M),
    b"_": re.compile(rb"[0-9.]_|0[bBxXoO]_"),
    b"---": re.compile(rb"(?:^|[\r\n])---"),
    b"...": re.compile(rb"(?:^|[\r\n])\.\.\."),
    b"%": re.compile(rb"(?:^|[\r\n])%"),
}
_FAST_FORMS = {needle: pattern for needle, pattern in _NEEDS_EVENTS if needle in _PLAIN_FORMS}


def test_every_rewritten_pattern_has_its_plain_form() -> None:
    assert _FAST_FORMS.keys() == _PLAIN_FORMS.keys()


@pytest.mark.parametrize(
    "text",
    [
        b"=",
        b"a: =\n",
        b"a=b",
        b"[=]",
        b"{a: =}",
        b"x,=,",
        b"? a\n",
        b"a: b?\n",
        b"1_000",
        b"._",
        b"0x_",
        b"a_b",
        b"---",
        b"a: 1\n---\n",
        b"a: b---c\n",
        b"\r...",
        b"a ...",
        b"%YAML",
        b"a: 100%\n",
        b"\n%",
    ],
)
def test_fast_patterns_find_what_the_plain_forms_find(text: bytes) -> None:
    for needle, plain in _PLAIN_FORMS.items():
        expected = plain.search(text) is not None
        assert (_FAST_FORMS[needle].search(text) is not None) is expected, (needle, text)


_PATTERN_BYTES = [bytes([c]) for c in b" \t\r\n[]{},=?_.-%0bBxXoOa:#"]


@settings(max_examples=50_000 if STRESS else 3_000, deadline=None)
@given(st.lists(st.sampled_from(_PATTERN_BYTES), max_size=24).map(b"".join))
def test_fast_patterns_agree_with_the_plain_forms(text: bytes) -> None:
    for needle, plain in _PLAIN_FORMS.items():
        assert (_FAST_FORMS[needle].search(text) is None) is (plain.search(text) is None), needle


def _has_node_properties(text: str) -> bool:
    """Does libyaml's parse of ``text`` hold an anchor, an alias, an explicit tag or a merge key?

    Raises YAMLError for text that does not parse: every event is read first, since a merge key
    can come before the error (``{<<[``), and raw_parse refuses such text anyway."""
    for ev in list(yaml.parse(text, Loader=yaml.CSafeLoader)):
        if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) is not None:
            return True
        if isinstance(ev, yaml.ScalarEvent):
            if ev.tag is not None or (ev.value == "<<" and ev.implicit[0]):
                return True
        elif isinstance(ev, yaml.CollectionStartEvent) and ev.tag is not None:
            return True
    return False


@settings(max_examples=40_000 if STRESS else 3_000, deadline=None)
@given(st.text(alphabet="ab1_-: \n\t[]{},?'\"&*!<#|>.", max_size=40))
@example("{<<[")  # found by Hypothesis: a merge key, then a parse error
def test_every_anchor_alias_tag_and_merge_key_takes_the_exact_path(text: str) -> None:
    """The pre-check may send plain text down the event scan, never the reverse: a document with
    node properties that reached raw_parse would have its aliases and merge keys unchecked."""
    try:
        special = _has_node_properties(text)
    except yaml.YAMLError:
        return  # not YAML: raw_parse refuses it too, and the scan words the error
    if special:
        assert _needs_events(text.encode()), text


@pytest.mark.parametrize(
    "text",
    [
        '{"a":&x 1}\n',
        "{'a':*x}\n",
        "[?&x a]\n",
        "[a,&x b]\n",
        "{a: 1,*x : 2}\n",
        "a: [<<]\n",
        "a: {<<}\n",
        "a: [x, <<]\n",
        "<<: {x: 1}\n",
        "a: !x y\n",
        "- !!str 1\n",
        "a: 'q'&x\n",
        "a: [1]&x\n",
        "\tb: &x 1\n",
    ],
)
def test_node_properties_after_any_separator_take_the_exact_path(text: str) -> None:
    assert _needs_events(text.encode()), text
