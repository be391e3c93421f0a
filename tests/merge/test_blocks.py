"""The structural step keeps the text of the key blocks it merges (``sync._blockmerge``).

Each case makes diff3 conflict (edits on touching lines) while the keys merge structurally into
data that is neither side's: before, the result was ``dump_yaml`` of it, every comment, blank
line and quoting choice of both sides gone.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import sync.merge
from localstore.blueprint import dump_yaml, parse_yaml
from localstore.errors import LocalStoreError
from sync._blockmerge import merge_blocks
from sync.merge import (
    _merge_node,
    _plain,
    _restyled,
    _same,
    _same_in_order,
    _style,
    merge3_text,
)
from tests.merge import test_properties as props
from tests.merge import test_realistic as realistic

PROFILE = settings.get_profile("localstore-merge")

BASE = """\
# Deploy workflow: edit with care
# (the runner reads it on every push)

# what the UI shows
name: deploy
# seconds before the step is killed
timeout: 30
env:
  # where it goes
  TARGET: staging
  LEVEL: info   # or debug
script: |
  make build
  # a comment inside the script, not a YAML comment
  make push

owner: "ops"  # quoted on purpose
"""


def swap(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def merged(base: str, local: str, remote: str, expected: str) -> None:
    """The merge is structural, its text is ``expected``, and so from either side."""
    for lo, ro in ((local, remote), (remote, local)):
        out = merge3_text(base, lo, ro)
        assert (out.status, out.step) == ("clean", "structural"), out.conflicts
        assert out.content == expected


def test_adjacent_keys_changed_on_both_sides_keep_both_sides_comments() -> None:
    local = swap(BASE, "name: deploy\n", "name: deploy-eu  # renamed for the EU region\n")
    remote = swap(
        BASE,
        "# seconds before the step is killed\ntimeout: 30\n",
        "# seconds before the step is killed (CI is slow)\ntimeout: 90\n",
    )
    expected = swap(
        local,
        "# seconds before the step is killed\ntimeout: 30\n",
        "# seconds before the step is killed (CI is slow)\ntimeout: 90\n",
    )
    merged(BASE, local, remote, expected)


def test_a_reorder_on_one_side_and_a_value_change_on_the_other_keep_the_text() -> None:
    # Local moves timeout (with its comment) to the end and renames; remote changes timeout.
    # (A reorder alone is no change to the data: the structural step keeps the other's order.)
    timeout = "# seconds before the step is killed\ntimeout: 30\n"
    local = swap(swap(BASE, timeout, "") + timeout, "name: deploy\n", "name: ship  # short\n")
    remote = swap(BASE, "timeout: 30\n", "timeout: 45  # measured in May\n")
    expected = swap(local, "timeout: 30\n", "timeout: 45  # measured in May\n")
    merged(BASE, local, remote, expected)
    assert list(yaml.safe_load(expected)) == ["name", "env", "script", "owner", "timeout"]


def test_both_sides_changing_one_mapping_merge_inside_it() -> None:
    local = swap(BASE, "  TARGET: staging\n", "  TARGET: production  # go live\n")
    remote = swap(BASE, "  LEVEL: info   # or debug\n", "  LEVEL: debug   # until it works\n")
    expected = swap(local, "  LEVEL: info   # or debug\n", "  LEVEL: debug   # until it works\n")
    merged(BASE, local, remote, expected)


def test_added_and_removed_keys_keep_their_places_and_comments() -> None:
    # Both add a key after timeout (diff3 cannot order two insertions at one place); remote also
    # drops name, whose comment goes with it. Local's key comes first, as with list items.
    local = swap(BASE, "timeout: 30\n", "timeout: 30\n# once more on a 5xx\nretries: 2\n")
    remote = swap(BASE, "timeout: 30\n", "timeout: 30\n# the cloud region\nregion: eu-west-1\n")
    remote = swap(remote, "# what the UI shows\nname: deploy\n", "")
    expected = swap(remote, "timeout: 30\n", "timeout: 30\n# once more on a 5xx\nretries: 2\n")
    out = merge3_text(BASE, local, remote)
    assert (out.status, out.step, out.content) == ("clean", "structural", expected)
    keys = ["timeout", "retries", "region", "env", "script", "owner"]
    assert list(yaml.safe_load(expected)) == keys


def test_the_header_a_document_marker_and_a_block_scalar_merge_as_text() -> None:
    base = "# header\n---\na: 1\nb: |+\n  keep\n  # text\n\nc: 3\n"
    local = swap(base, "a: 1\n", "a: 2  # two\n")
    remote = swap(base, "# header\n", "# header, reworded\n")
    remote = swap(remote, "b: |+\n  keep\n", "b: |+  # keep the breaks\n  kept\n")
    remote = swap(remote, "c: 3\n", "# about c\nc: 3\n")
    expected = swap(remote, "a: 1\n", "a: 2  # two\n")
    merged(base, local, remote, expected)
    assert yaml.safe_load(expected)["b"] == "kept\n# text\n\n"


def test_a_flow_mapping_is_one_block() -> None:
    base = "a: {x: 1, y: 2}\nb: 1\n"
    local = "a: {x: 1, y: 3}  # flow\nb: 1\n"
    remote = "a: {x: 1, y: 2}\nb: 2  # changed\n"
    merged(base, local, remote, "a: {x: 1, y: 3}  # flow\nb: 2  # changed\n")


def test_crlf_and_bom_are_put_back() -> None:
    base = "\ufeffa: 1\r\nb: 2\r\n"
    local = "\ufeffa: 5  # five\r\nb: 2\r\n"
    remote = "\ufeffa: 1\r\n# about b\r\nb: 7\r\n"
    merged(base, local, remote, "\ufeffa: 5  # five\r\n# about b\r\nb: 7\r\n")


def test_an_alias_to_another_block_falls_back_to_the_dump() -> None:
    base = "a: &x {p: 1}\nb: *x\nc: 1\n"
    local = "a: &x {p: 1}\nb: *x  # alias\nc: 2\n"
    remote = "a: &x {p: 1}\nb: *x\n# c\nc: 1\nd: 4\n"
    out = merge3_text(base, local, remote)
    assert (out.status, out.step) == ("clean", "structural")
    # The dump (comments gone, anchor renamed), keeping the flow style a side wrote
    # (test_spelling.py).
    assert out.content == "a: &id001 {p: 1}\nb: *id001\nc: 2\nd: 4\n"
    assert yaml.safe_load(out.content or "") == {"a": {"p": 1}, "b": {"p": 1}, "c": 2, "d": 4}


def test_an_anchor_used_within_its_own_block_is_kept() -> None:
    base = "a:\n  p: &x [1, 2]\n  q: *x\nb: 1\n"
    local = "a:\n  p: &x [1, 2]\n  q: *x  # same list\nb: 1\n"
    remote = "a:\n  p: &x [1, 2]\n  q: *x\nb: 2  # two\n"
    merged(base, local, remote, "a:\n  p: &x [1, 2]\n  q: *x  # same list\nb: 2  # two\n")


def test_a_comment_edited_above_a_key_whose_value_the_other_side_changed_is_kept() -> None:
    # The comment line and the value line touch: diff3 of the block conflicts, and the block of
    # the side whose value is merged was taken whole, the other side's comment edit dropped.
    local = swap(BASE, "timeout: 30\n", "timeout: 90\n")
    remote = swap(BASE, "# seconds before the step is killed\n", "# seconds (the runner's limit)\n")
    remote = swap(remote, 'owner: "ops"', 'owner: "sre"')
    expected = swap(
        local, "# seconds before the step is killed\n", "# seconds (the runner's limit)\n"
    )
    merged(BASE, local, remote, swap(expected, 'owner: "ops"', 'owner: "sre"'))
    # The data being one side's (a comment-only edit on the other) keeps both as well.
    only_comment = swap(BASE, "# seconds before the step is killed\n", "# seconds (limit)\n")
    merged(
        BASE,
        local,
        only_comment,
        swap(local, "# seconds before the step is killed\n", "# seconds (limit)\n"),
    )


def test_a_key_inserted_below_the_next_keys_comment_does_not_copy_that_comment() -> None:
    # Local inserts retries right below timeout's comment (the cut gives that comment to
    # retries), remote changes timeout: before, the comment was written twice, once above
    # retries, which it does not describe.
    comment = "# seconds before the step is killed\n"
    local = swap(BASE, comment, comment + "retries: 2\n")
    remote = swap(BASE, "timeout: 30\n", "timeout: 90\n")
    expected = swap(local, "timeout: 30\n", "timeout: 90\n")
    merged(BASE, local, remote, expected)
    assert expected.count(comment) == 1


def test_keys_both_sides_append_below_the_trailing_comment_do_not_copy_it() -> None:
    base = "name: deploy\ntimeout: 30\n# debug: true\n"
    local = base + "retries: 3\n"
    remote = base + "region: eu\n"
    out = merge3_text(base, local, remote)
    assert (out.status, out.step) == ("clean", "structural")
    assert out.content == base + "retries: 3\nregion: eu\n"
    back = merge3_text(base, remote, local)
    assert back.content == base + "region: eu\nretries: 3\n"


def test_a_key_moved_below_another_keys_comment_does_not_copy_it() -> None:
    # Local moves c up, right below b's comment; remote changes b. The structural step keeps
    # the base order (a reorder alone is no change): b's comment stays above b, once.
    base = "a: 1\n# about b\nb: 2\nc: 1\n"
    local = "a: 1\n# about b\nc: 1\nb: 2\n"
    remote = "a: 1\n# about b\nb: 3\nc: 1\n"
    merged(base, local, remote, "a: 1\n# about b\nb: 3\nc: 1\n")


def test_a_comment_a_side_wrote_twice_stays_twice() -> None:
    base = "a: 1\n# about b\nb: 2\nc: 1\n"
    local = "a: 1\n# about b\nx: 1\n# about b\nb: 2\nc: 1\n"  # its own choice
    remote = "a: 1\n# about b\nb: 3\nc: 1\n"
    out = merge3_text(base, local, remote)
    assert out.status == "clean"
    assert out.content == "a: 1\n# about b\nx: 1\n# about b\nb: 3\nc: 1\n"


@pytest.mark.parametrize(
    "candidate",
    [
        "a: 5\nb: 8\n",  # loads, to other data
        "b: 7\na: 5\n",  # the same data in another key order
        "a: [\n",  # does not load
        "a: 5\nb: 7\na: 5\n",  # a repeated key (loads as the right data)
    ],
)
def test_a_text_result_that_is_not_the_structural_data_is_not_taken(
    monkeypatch: pytest.MonkeyPatch, candidate: str
) -> None:
    # Fault injection: the block merge gets it wrong; the check after it must catch that.
    def wrong(*args: Any, **kwargs: Any) -> str:
        return candidate

    monkeypatch.setattr(sync.merge, "merge_blocks", wrong)
    out = merge3_text("a: 1\nb: 2\n", "a: 5  # five\nb: 2\n", "a: 1  # x\nb: 7\n")
    assert (out.status, out.step) == ("clean", "structural")
    assert out.content == dump_yaml({"a": 5, "b": 7})


def test_the_validator_judges_the_text_result() -> None:
    def no_debug(doc: Any) -> list[str]:
        return ["debug in production"] if doc.get("env", {}).get("LEVEL") == "debug" else []

    local = swap(BASE, "  TARGET: staging\n", "  TARGET: production  # go live\n")
    remote = swap(BASE, "  LEVEL: info   # or debug\n", "  LEVEL: debug   # until it works\n")
    out = merge3_text(BASE, local, remote, validator=no_debug)
    assert out.status == "conflict"
    assert out.conflicts == ["merged blueprint fails validation: debug in production"]


# ---------------------------------------------------------------------------------------------------
# Properties


@settings(PROFILE)
@given(st.data(), realistic.docs, realistic.formats)
def test_a_text_result_loads_as_the_structural_result_or_is_not_taken(
    data: st.DataObject, base: dict[str, Any], fmt: dict[str, Any]
) -> None:
    """On the realistic documents of test_realistic (comments, flow and block collections, ``|``
    scalars, CRLF, BOM, no final newline), edited on both sides: the outcome loads as the
    structural result; it is the block merge's text when that loads to exactly the structural
    result, key order included, and otherwise a side's text or the dump, as before."""
    fmts = data.draw(st.one_of(st.just((fmt, fmt, fmt)), st.tuples(*[realistic.formats] * 3)))
    sides = [base, data.draw(realistic.edited(base)), data.draw(realistic.edited(base))]
    b, lo, ro = (realistic.render(doc, f) for doc, f in zip(sides, fmts, strict=True))
    try:
        docs = tuple(parse_yaml(t) for t in (b, lo, ro))
    except LocalStoreError:
        assume(False)
        return
    structural, conflicts = _merge_node(docs[0], docs[1], docs[2], "")
    out = merge3_text(b, lo, ro)
    if conflicts or out.step != "structural":
        return
    texts = [b, lo, ro]
    mixed = any(_style(t).crlf is None for t in texts)
    plain = [_plain(t) for t in texts]
    three = (docs[0], docs[1], docs[2])
    candidate = (
        None if mixed else merge_blocks(plain[0], plain[1], plain[2], three, structural, same=_same)
    )
    text = None if candidate is None else _restyled(candidate, b, lo, ro)
    # A block merge can miss the structural key order when a side only reordered keys (no
    # change for the structural step): then the check refuses it.
    taken = text is not None and _loads_in_order(text, structural)
    event("no block text" if text is None else "block text" if taken else "block text refused")
    assert out.content is not None
    assert _same(parse_yaml(out.content), structural)
    # (but for the final line break, which the structural step merges 3-way on whichever text
    # it takes: test_final_newline.py)
    if taken:
        assert text is not None
        assert _body(out.content) == _body(text)
    else:
        # A side's text, or the dump (scalars spelled as the sides wrote them, test_spelling).
        assert _body(out.content) in (_body(ro), _body(lo)) or _same_in_order(
            parse_yaml(out.content), structural
        )


def _body(text: str) -> str:
    """The text without its final line break."""
    return text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")


def _loads_in_order(text: str, data: dict[str, Any]) -> bool:
    try:  # (both sides deleting every key the other kept leave only comments: no mapping)
        return _same_in_order(parse_yaml(text), data)
    except LocalStoreError:
        return False


KEYS = [f"k{i}" for i in range(6)]


def _commented(doc: dict[str, Any], who: dict[str, str]) -> str:
    """Block YAML with a comment above each key naming who wrote that key's value."""
    parts = ["# a blueprint\n"]
    for key, value in doc.items():
        body = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
        parts.append(f"# about {key} ({who.get(key, 'base')})\n{body}")
    return "".join([*parts, "# never empty\nlast: 0\n"])


@settings(PROFILE)
@given(st.data(), st.dictionaries(st.sampled_from(KEYS), props.values, min_size=2, max_size=6))
def test_every_kept_keys_comment_survives_a_merge_of_disjoint_edits(
    data: st.DataObject, base: dict[str, Any]
) -> None:
    """Each side changes, deletes or adds keys the other leaves alone, on touching lines as
    often as not; each key's comment names the side whose value it holds. Whatever step
    settles it, every key of the result keeps the comment of the side its value is from."""
    owner = {k: data.draw(st.sampled_from(["base", "local", "remote"])) for k in base}
    docs: dict[str, dict[str, Any]] = {}
    who: dict[str, dict[str, str]] = {}
    for side in ("local", "remote"):
        doc: dict[str, Any] = {}
        mine: dict[str, str] = {}
        for key, value in base.items():
            if owner[key] != side:
                doc[key] = value
            elif data.draw(st.booleans()):  # else deleted
                doc[key], mine[key] = data.draw(props.values), side
        for key in data.draw(st.lists(st.sampled_from([f"{side[0]}{i}" for i in range(3)]))):
            doc[key], mine[key] = data.draw(props.values), side
        docs[side], who[side] = doc, mine
    out = merge3_text(
        _commented(base, {}),
        _commented(docs["local"], who["local"]),
        _commented(docs["remote"], who["remote"]),
    )
    assert out.status == "clean", out.conflicts
    assert out.content is not None
    result = yaml.safe_load(out.content)
    event(f"step {out.step}")
    for key in set(result) - {"last"}:
        side = who["local"].get(key) or who["remote"].get(key) or "base"
        assert f"# about {key} ({side})\n" in out.content, (key, out.content)


@st.composite
def _lines(draw: st.DrawFn, base: list[str], side: str) -> list[str]:
    """A side's edit of a document of ``# about kI`` / ``kI: n`` line pairs: values changed,
    keys deleted or moved (with their comment), new keys inserted anywhere, right below a
    comment included (the cut then gives that comment to the new key)."""
    pairs: list[list[str]] = []
    for i in range(0, len(base), 2):
        comment, key = base[i], base[i + 1]
        action = draw(st.sampled_from(["keep", "keep", "edit", "delete", "move"]))
        if action == "delete":
            continue
        if action == "edit":
            key = f"{key.split(':')[0]}: {draw(st.integers(10, 99))}\n"
        at = draw(st.integers(0, len(pairs))) if action == "move" else len(pairs)
        pairs.insert(at, [comment, key])
    out = [line for pair in pairs for line in pair]
    for n in range(draw(st.integers(0, 2))):
        out.insert(draw(st.integers(0, len(out))), f"{side}{n}: 1\n")
    return out


@settings(PROFILE)
@given(st.data(), st.integers(2, 6))
def test_no_base_comment_is_written_more_often_than_a_side_has_it(
    data: st.DataObject, size: int
) -> None:
    """Keys inserted, moved and deleted on both sides around the comments above the base's keys:
    a clean merge has each base comment at most as often as one side has it (a key inserted
    below the next key's comment had that comment written twice)."""
    base = [line for i in range(size) for line in (f"# about k{i}\n", f"k{i}: {i}\n")]
    local = data.draw(_lines(base, "l"))
    remote = data.draw(_lines(base, "r"))
    texts = ["".join(base), "".join(local), "".join(remote)]
    out = merge3_text(*texts)
    event(f"{out.status} {out.step}")
    if out.content is None:
        return
    lines = out.content.splitlines(keepends=True)
    for comment in base[::2]:
        most = max(texts[1].count(comment), texts[2].count(comment))
        assert out.content.count(comment) <= most, (comment, texts, out.content)
        # Where it is, it describes its key: the next base key below it (past keys the sides
        # inserted and other comments) is that key, if the result has it.
        key = comment.removeprefix("# about ").strip()
        if comment not in lines or not any(line.startswith(f"{key}:") for line in lines):
            continue
        below = lines[lines.index(comment) + 1 :]
        next_key = next(x for x in below if x.startswith("k"))
        assert next_key.startswith(f"{key}:"), (comment, texts, out.content)
