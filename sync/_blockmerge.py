"""The structural step's text: a 3-way merge of a mapping's key blocks, keeping comments.

When the structural merge's data is neither side's own, dumping it dropped every comment, blank
line and quoting choice of both sides. Here each block-style mapping is cut into blocks of its
text, one per key: the comment and blank lines attached above the key, the key's line, its
nested lines (block scalars included) and the more indented comments after them. The blocks are
merged 3-way as text, in the structural result's key order:

- a block changed on one side only (or the same way on both) is that side's, verbatim;
- a key one side added is that side's block; a key the result drops is left out;
- a block both sides changed differently is merged again one level down when its value is a
  block mapping on every side (its key line and the lines above its first key are the nested
  header); else diff3 of the two blocks' lines; else the comment lines above the key merged
  3-way on their own over the key's lines of a side whose value is the merged value. Failing
  these, there is no text result.

A comment that a side's new or moved key carried off (a key inserted right below another key's
comment is cut with that comment above it) is written once, in its first place in the result,
and back atop its own key when the key it moved above no longer comes right before that one.

Lines before the first key's comments (a leading comment header, ``%`` directives, ``---``) and
after the last key's content (trailing comments, ``...``) merge as text too. Anything this
cannot cut safely gives no text: a flow-style mapping, a complex or non-scalar key, keys at
different indents on different sides, two keys on one line, a key sharing the ``---`` line, an
alias whose anchor is in another top-level block, anchors inside a block both sides changed,
and line breaks other than LF (CRLF and a BOM are taken off by the caller, as in the line step).

The result is a candidate only: the caller accepts it when it loads to exactly the structural
result (key order included) and passes the same checks as a line merge, and dumps otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any

import merge3
import yaml

from localstore.blueprint import YAML_LOADER

# Line breaks str.splitlines() or YAML count that "\n" alone does not: with one of them in the
# text, the loader's line numbers and ours would disagree.
_OTHER_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_ABSENT: Any = object()
_TRAILER: Any = object()  # the trailer's place among a region's keys

Same = Callable[[Any, Any], bool]


class _Unsplittable(Exception):
    """The text cannot be cut into key blocks safely (the caller dumps instead)."""


@dataclass(frozen=True, slots=True)
class _Region:
    """A block mapping's text cut into header, one block per key, and trailer (lists of lines)."""

    column: int
    header: list[str]
    blocks: dict[Hashable, list[str]]
    # Each key by itself: the side's own key where ``1`` finds its ``true:`` (1 == True).
    keys: dict[Hashable, Hashable]
    spans: dict[Hashable, tuple[int, int]]
    values: dict[Hashable, yaml.Node]
    anchored: dict[Hashable, bool]
    trailer: list[str]


# One side of a mapping: the whole text's lines, the mapping's region, its loaded data.
_Part = tuple[list[str], _Region, dict[Any, Any]]


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every level of one merge shares: the equality, the sequence matcher for diff3."""

    same: Same
    matcher: Any


def merge_blocks(
    base: str | None,
    local: str,
    remote: str,
    docs: tuple[Any, Any, Any],
    merged: dict[Any, Any],
    *,
    same: Same,
    matcher: Any = None,
) -> str | None:
    """The texts (LF, no BOM) merged block by block into ``merged``'s keys; None if they cannot be.

    ``docs`` are the three loaded documents (base may be absent), ``same`` the merge's equality,
    ``matcher`` the sequence matcher the diff3 merges use (None: difflib's; the ladder passes
    one charging its work budget, whose DiffBudgetExceeded propagates).
    """
    try:
        b = None if base is None else _side(base, docs[0])
        lo, ro = _side(local, docs[1]), _side(remote, docs[2])
        parts = _shared_header([b, lo, ro])
        assert parts[1] is not None and parts[2] is not None
        return "".join(_merge_region(parts[0], parts[1], parts[2], merged, _Ctx(same, matcher)))
    except _Unsplittable:
        return None


# ---------------------------------------------------------------------------------------------------
# Cutting


def _side(text: str, data: Any) -> _Part:
    if any(ch in _OTHER_BREAKS for ch in text) or not isinstance(data, dict):
        raise _Unsplittable
    lines = text.splitlines(keepends=True)
    try:
        root = yaml.compose(text, Loader=YAML_LOADER)
        events = list(yaml.parse(text, Loader=YAML_LOADER))
    except yaml.YAMLError as exc:  # the caller parsed it already; be safe anyway
        raise _Unsplittable from exc
    region = _cut(lines, root, 0, len(lines))
    return lines, replace(region, anchored=_anchored(events, lines, region)), data


def _cut(lines: list[str], node: Any, start: int, end: int) -> _Region:
    """Cut lines[start:end], which hold the block mapping ``node``, into a region."""
    if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
        raise _Unsplittable
    column = node.value[0][0].start_mark.column
    keys: list[Hashable] = []
    key_lines: list[int] = []
    ends: list[int] = []
    previous_end = start - 1
    for key_node, value_node in node.value:
        line = key_node.start_mark.line
        if (
            not isinstance(key_node, yaml.ScalarNode)
            or key_node.start_mark.column != column
            or line <= previous_end
            or lines[line][:column].strip()  # '--- a: 1', '? a', '- a: 1'
        ):
            raise _Unsplittable
        keys.append(_key(key_node))
        key_lines.append(line)
        previous_end = max(line, _last_line(value_node))
        ends.append(previous_end)
    if len(set(keys)) != len(keys) or previous_end >= end:
        raise _Unsplittable
    starts = [_attached_start(lines, key_lines[0], start, column, first=True)]
    for i in range(1, len(keys)):
        starts.append(_attached_start(lines, key_lines[i], ends[i - 1] + 1, column, first=False))
    tail = ends[-1] + 1
    while tail < end and _comment(lines[tail]) and _indent(lines[tail]) > column:
        tail += 1  # a commented-out nested line stays with its key
    bounds = [*starts, tail]
    return _Region(
        column=column,
        header=lines[start : starts[0]],
        blocks={k: lines[bounds[i] : bounds[i + 1]] for i, k in enumerate(keys)},
        keys={k: k for k in keys},
        spans={k: (bounds[i], bounds[i + 1]) for i, k in enumerate(keys)},
        values={k: v for k, (_, v) in zip(keys, node.value, strict=True)},
        anchored={k: False for k in keys},
        trailer=lines[tail:end],
    )


def _shared_header(parts: list[_Part | None]) -> list[_Part | None]:
    """Move the comment lines every side has at its top, above its first key, to the header.

    A document's leading comment right above the first key (no blank line between) is cut as
    that key's comment; when one side deletes or moves that key, its first key is another one,
    so the two sides' first blocks both differ from the base and the comment went with the key.
    """
    present = [p for p in parts if p is not None]
    tops = [lines[: _key_line(region)] for lines, region, _ in present]
    shared = 0
    while all(len(top) > shared and top[shared] == tops[0][shared] for top in tops):
        shared += 1
    return [None if p is None else _with_header(p, shared) for p in parts]


def _key_line(region: _Region) -> int:
    """The line of the region's first key (its block starts with comment lines only)."""
    first = next(iter(region.blocks))
    start = region.spans[first][0]
    return start + next(i for i, line in enumerate(region.blocks[first]) if not _comment(line))


def _with_header(part: _Part, length: int) -> _Part:
    lines, region, data = part
    if length <= len(region.header):
        return part
    first = next(iter(region.blocks))
    end = region.spans[first][1]
    blocks = {**region.blocks, first: lines[length:end]}
    spans = {**region.spans, first: (length, end)}
    return lines, replace(region, header=lines[:length], blocks=blocks, spans=spans), data


def _attached_start(lines: list[str], key_line: int, floor: int, column: int, first: bool) -> int:
    """Where the lines attached above a key start: comments no deeper than the key, and blank
    lines (for the first key, only the comments right above it: the rest is the header)."""
    at = key_line
    while at > floor:
        line = lines[at - 1]
        if not line.strip():
            if first:
                break
        elif not (_comment(line) and _indent(line) <= column):
            break
        at -= 1
    return at


def _last_line(node: yaml.Node) -> int:
    """The last line holding this value's content: scalars and flow collections know their end;
    a block collection's end mark is the next token, past any comment after it."""
    last = node.start_mark.line
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        mark = current.end_mark
        if isinstance(current, yaml.ScalarNode) or getattr(current, "flow_style", False):
            # A block scalar's end is the start of the line after its (kept) trailing breaks.
            ends_line = mark.column == 0 and mark.line > current.start_mark.line
            last = max(last, mark.line - 1 if ends_line else mark.line)
        if isinstance(current, yaml.MappingNode):
            stack.extend(n for pair in current.value for n in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return last


def _key(node: yaml.ScalarNode) -> Hashable:
    """The key as the loader keys its dict (``1`` and ``0x1`` are one key)."""
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node)
        hash(value)
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # '<<', an unbuildable scalar
        raise _Unsplittable from exc
    return value


def _anchored(events: list[yaml.Event], lines: list[str], region: _Region) -> dict[Hashable, bool]:
    """Which top-level blocks hold an anchor or alias (taken whole, never merged inside).

    Raises _Unsplittable for an alias whose anchor is in another block (or the header): taking
    the two from different sides would change what the alias stands for.
    """
    owner = [-1] * len(region.header)
    for i, block in enumerate(region.blocks.values()):
        owner += [i] * len(block)
    owner += [len(region.blocks)] * (len(lines) - len(owner))
    defined: dict[str, int] = {}
    held: set[int] = set()
    for event in events:
        anchor = getattr(event, "anchor", None)
        if anchor is None or event.start_mark is None:
            continue
        where = owner[event.start_mark.line]
        held.add(where)
        if not isinstance(event, yaml.AliasEvent):
            defined[anchor] = where
        elif defined.get(anchor) != where:
            raise _Unsplittable
    return {k: i in held for i, k in enumerate(region.blocks)}


def _comment(line: str) -> bool:
    return line.lstrip(" ").startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


# ---------------------------------------------------------------------------------------------------
# Merging


def _merge_region(
    base: _Part | None, local: _Part, remote: _Part, merged: dict[Any, Any], ctx: _Ctx
) -> list[str]:
    """Header, the merged keys' blocks in ``merged``'s order, trailer."""
    b_region = base[1] if base else None
    lo_region, ro_region = local[1], remote[1]
    if lo_region.column != ro_region.column or (b_region and b_region.column != lo_region.column):
        raise _Unsplittable  # blocks from both sides would sit at two indents
    out = _merge_lines(
        b_region.header if b_region else None, lo_region.header, ro_region.header, ctx.matcher
    )
    pieces: list[tuple[Hashable, list[str]]] = [
        (key, _merge_block(key, value, base, local, remote, ctx)) for key, value in merged.items()
    ]
    trailer = _merge_lines(
        b_region.trailer if b_region else None, lo_region.trailer, ro_region.trailer, ctx.matcher
    )
    pieces.append((_TRAILER, trailer))
    if b_region is not None:
        _drop_carried_copies(pieces, b_region, (lo_region, ro_region))
    for _, piece in pieces:
        if piece:
            _append(out, piece)
    return out


def _drop_carried_copies(
    pieces: list[tuple[Hashable, list[str]]], base: _Region, sides: tuple[_Region, _Region]
) -> None:
    """Keep only the first copy of a base comment that a side's new or moved key carried off.

    A key inserted right below the comment of the key after it (or below the document's
    trailing comments) is cut with that comment above it, as its own: the comment is in the
    inserted key's block and no longer in the next key's (or the trailer). When the other side
    kept that comment where it was (it edited the next key), or carried it off too (it inserted
    a key at the same place), both copies were in the result: one comment written twice, one
    copy above a key it does not describe.
    """
    atop: dict[tuple[str, ...], list[Hashable]] = {}
    for key in (*base.blocks, _TRAILER):
        atop.setdefault(tuple(_attached(_piece(base, key))), []).append(key)
    claims: dict[tuple[Hashable, tuple[str, ...]], list[int]] = {}
    for i, (key, piece) in enumerate(pieces):
        found = [_carried(key, piece, base, side, atop) for side in sides]
        for carried in dict.fromkeys(c for c in found if c is not None):  # (in order: no set)
            claims.setdefault(carried, []).append(i)
    where = {key: i for i, (key, _) in enumerate(pieces)}
    for (owner, lines), holders in claims.items():
        n = len(lines)
        at = where.get(owner)
        kept = at is not None and tuple(pieces[at][1][:n]) == lines
        copies = sorted({*holders, *([at] if kept and at is not None else [])})
        for i in copies[1:]:
            key, piece = pieces[i]
            if tuple(piece[:n]) == lines:  # (an earlier claim may have cut it)
                pieces[i] = (key, piece[n:])
        if kept or at is None or not copies:
            continue
        # The one copy is above a key the side moved or added. Where that key is not right
        # before the block they came from (the result keeps the base's order, or the other
        # side's), the lines go back atop that block: above another key they would describe it.
        first = copies[0]
        between = set(range(first + 1, at))
        if first < at and between <= set(holders):
            continue
        key, piece = pieces[first]
        if tuple(piece[:n]) == lines:
            pieces[first] = (key, piece[n:])
            pieces[at] = (owner, [*lines, *pieces[at][1]])


def _carried(
    key: Hashable,
    piece: list[str],
    base: _Region,
    side: _Region,
    atop: dict[tuple[str, ...], list[Hashable]],
) -> tuple[Hashable, tuple[str, ...]] | None:
    """(the base key or trailer they came from, the lines) when ``piece`` is ``side``'s block of
    ``key`` (or its trailer) and starts with the comment lines that were atop one other key's
    block in the base (or were the trailer), not atop this one, and that the side no longer has
    there: a key inserted or moved below another key's comment, or moved above its own.
    ``atop``: the base's blocks by the lines atop them."""
    if (side.trailer if key is _TRAILER else side.blocks.get(key)) != piece:
        return None
    attached = _attached(piece)
    own = _attached(_piece(base, key)) if key is _TRAILER or key in base.blocks else []
    if own and attached[len(attached) - len(own) :] == own:
        attached = attached[: len(attached) - len(own)]
    if not any(line.strip() for line in attached):
        return None
    candidates = atop.get(tuple(attached), [])
    # (Lines atop several base blocks, a separator: whose they are is unclear. The length test
    # first keeps this constant time when thousands of blocks share one such comment.)
    sources = [] if len(candidates) > 2 else [k for k in candidates if k != key]
    if len(sources) != 1:
        return None
    owner = sources[0]
    if owner is not _TRAILER and owner not in side.blocks:
        return owner, tuple(attached)
    if _piece(side, owner)[: len(attached)] == attached:  # there too: the side's own choice
        return None
    return owner, tuple(attached)


def _piece(region: _Region, key: Hashable) -> list[str]:
    return region.trailer if key is _TRAILER else region.blocks[key]


def _attached(block: list[str]) -> list[str]:
    """The comment and blank lines at the top of a block, above its key (or its content)."""
    at = 0
    while at < len(block) and (not block[at].strip() or _comment(block[at])):
        at += 1
    return block[:at]


def _merge_block(
    key: Hashable, value: Any, base: _Part | None, local: _Part, remote: _Part, ctx: _Ctx
) -> list[str]:
    b = base[1].blocks.get(key) if base else None
    lo, ro = local[1].blocks.get(key), remote[1].blocks.get(key)
    if lo is None or ro is None:  # added on one side (a delete against an edit is a conflict)
        side, block = (remote, ro) if lo is None else (local, lo)
        if block is None or not _holds(side, key, value, ctx):
            raise _Unsplittable
        return block
    if lo in (b, ro):
        return ro
    if ro == b:
        return lo
    nested = _merge_nested(key, value, base, local, remote, ctx)
    if nested is not None:
        return nested
    line_merged = _line_merge(b or [], lo, ro, ctx.matcher)
    if line_merged is not None:
        return line_merged  # the caller's check refuses it if diff3 got the data wrong
    # The comment lines above the key and the key's own lines, merged apart: one side's edit of
    # the comment above a key touches the other's edit of its value, a conflict for diff3 of
    # the whole block, where the comment went with whichever side's value was taken.
    top = _merge_top(b, lo, ro, ctx.matcher)
    for side, block in ((remote, ro), (local, lo)):
        if _holds(side, key, value, ctx):
            if top is not None:
                return [*top, *block[len(_attached(block)) :]]
            return block  # the other side's edits of this block's comments are not kept
    raise _Unsplittable


def _holds(side: _Part, key: Hashable, value: Any, ctx: _Ctx) -> bool:
    """The side's block of ``key`` holds the merged entry: its value, under a key of the merged
    key's type. (Both sides set one value, one also respelled ``1:`` as ``true:``: the other
    side's block has the value, and wrote the key back as ``1``; the caller then refused the
    text, and the dump dropped every comment.)"""
    own = side[1].keys.get(key, _ABSENT)
    return type(own) is type(key) and ctx.same(side[2].get(key, _ABSENT), value)


def _merge_top(b: list[str] | None, lo: list[str], ro: list[str], matcher: Any) -> list[str] | None:
    """The comment and blank lines atop a key's block on both sides, merged 3-way; None when
    they conflict."""
    try:
        return _merge_lines(
            None if b is None else _attached(b), _attached(lo), _attached(ro), matcher
        )
    except _Unsplittable:
        return None


def _merge_nested(
    key: Hashable, value: Any, base: _Part | None, local: _Part, remote: _Part, ctx: _Ctx
) -> list[str] | None:
    """Both sides changed one key's block: merge its nested mapping's blocks, if it has them."""
    parts: list[_Part | None] = []
    for part in (base, local, remote):
        if part is None or key not in part[1].blocks:
            parts.append(None)
            continue
        lines, region, data = part
        if region.anchored[key] or not isinstance(data[key], dict) or not isinstance(value, dict):
            return None
        try:
            nested = _cut(lines, region.values[key], *region.spans[key])
        except _Unsplittable:
            return None
        parts.append((lines, nested, data[key]))
    b, lo, ro = parts
    if lo is None or ro is None:
        return None
    try:
        return _merge_region(b, lo, ro, value, ctx)
    except _Unsplittable:
        return None


def _merge_lines(
    base: list[str] | None, local: list[str], remote: list[str], matcher: Any
) -> list[str]:
    if local in (base, remote):
        return list(remote)
    if remote == base:
        return list(local)
    merged = _line_merge(base or [], local, remote, matcher)
    if merged is None:
        raise _Unsplittable
    return merged


def _line_merge(
    base: list[str], local: list[str], remote: list[str], matcher: Any
) -> list[str] | None:
    """diff3 of lists of lines; None when a region conflicts."""
    out: list[str] = []
    for group in merge3.Merge3(base, local, remote, sequence_matcher=matcher).merge_groups():
        if group[0] == "conflict":
            return None
        out.extend(group[1])
    return out


def _append(out: list[str], piece: list[str]) -> None:
    """Add a piece; a last line without its newline gets one when something follows it."""
    if out and piece and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out.extend(piece)
