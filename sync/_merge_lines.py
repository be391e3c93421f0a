"""The line step of the merge ladder: diff3 of the texts (their BOM and line endings merged apart),
and the checks a line result must pass: it loads, repeats no key, passes the validator, makes no
list item twice, and loses no change the structural merge of the data keeps.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import merge3
import yaml

from localstore.blueprint import YAML_LOADER, parse_yaml
from localstore.errors import LocalStoreError
from sync._diffbudget import DiffBudget
from sync._merge_values import LIST_MATCH_KEYS, MISSING, _join, _merge_node, _same

if TYPE_CHECKING:
    from sync.merge import Judge


# ---------------------------------------------------------------------------------------------------
# Line step


@dataclass(frozen=True, slots=True)
class _Style:
    """A text's byte-order mark and line endings (None: mixed, so it has no one style)."""

    bom: bool
    crlf: bool | None


def _style(text: str) -> _Style:
    body = text.removeprefix("\ufeff")
    cr, crlf = body.count("\r"), body.count("\r\n")
    if cr == 0:
        return _Style(len(body) != len(text), False)
    if cr == crlf == body.count("\n"):
        return _Style(len(body) != len(text), True)
    return _Style(len(body) != len(text), None)


def _line_merge_styled(base: str | None, local: str, remote: str, budget: DiffBudget) -> str | None:
    """diff3 merge of the texts without their BOM and with LF line endings, the style put back.

    A device that saves CRLF (or adds a BOM) changes every line for diff3: the line step
    conflicted everywhere and the structural step settled it, dropping every comment of both
    sides, and an edit that was only a comment. Line endings carry no meaning in YAML (a line
    break in a scalar loads as LF either way), so the lines are compared without them and the
    result gets the style each side agreed on, or the one a single side changed to (a 3-way
    merge of the style itself). A text with mixed line endings has no style to put back: then
    the texts are merged as they are.
    """
    texts = [base or "", local, remote]
    if any(_style(t).crlf is None for t in texts):
        return _line_merge(texts[0], texts[1], texts[2], budget)
    plain = [_plain(t) for t in texts]
    merged = _line_merge(plain[0], plain[1], plain[2], budget)
    return None if merged is None else _restyled(merged, base, local, remote)


def _plain(text: str) -> str:
    """The text without a byte-order mark and with LF line endings."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def _restyled(merged: str, base: str | None, local: str, remote: str) -> str:
    """A merge of plain texts given the BOM and line endings of the sides: the style both agree
    on, or the one a single side changed to (no base: local's unless both agree)."""
    styles = [_style(t) for t in (base or "", local, remote)]
    b, lo, re_ = styles if base is not None else (styles[2], styles[1], styles[2])
    bom = re_.bom if lo.bom == b.bom else lo.bom
    crlf = re_.crlf if lo.crlf == b.crlf else lo.crlf
    return ("\ufeff" if bom else "") + (merged.replace("\n", "\r\n") if crlf else merged)


def _line_merge(base: str, local: str, remote: str, budget: DiffBudget) -> str | None:
    """diff3 merge of lines; None when any region conflicts."""
    m = merge3.Merge3(
        base.splitlines(True),
        local.splitlines(True),
        remote.splitlines(True),
        sequence_matcher=budget.matcher(),
    )
    out: list[str] = []
    for group in m.merge_groups():
        if group[0] == "conflict":
            return None
        out.extend(group[1])
    return "".join(out)


class _Loads:
    """``parse_yaml`` of each text once per merge: the line step's checks and the structural step
    read the same three sides (and the checks the text they accept), and on a document of
    megabytes each load is a second. The documents loaded are only read, never changed."""

    def __init__(self) -> None:
        self._done: dict[str, tuple[dict[str, Any] | None, LocalStoreError | None]] = {}

    def __call__(self, text: str) -> dict[str, Any]:
        """The loaded document; raises what ``parse_yaml`` raises for it."""
        done = self._done.get(text)
        if done is None:
            try:
                done = (parse_yaml(text), None)
            except LocalStoreError as exc:
                done = (None, exc)
            self._done[text] = done
        data, error = done
        if error is not None:
            raise error
        assert data is not None
        return data


def _problems(text: str, judge: Judge, loads: _Loads) -> list[str]:
    """Why ``text`` is not an acceptable merge result (empty when it is)."""
    try:
        data = loads(text)
    except LocalStoreError as exc:
        return [f"merged YAML is invalid: {exc.message}"]
    duplicates = _duplicate_keys(text)
    if duplicates:
        return [f"merged YAML repeats key {key!r}" for key in duplicates]
    return [f"merged blueprint fails validation: {p}" for p in judge(text, data)]


def _duplicate_keys(text: str) -> list[str]:
    """Scalar keys that appear twice in one mapping (a loader would silently keep the last)."""
    node = yaml.compose(text, Loader=YAML_LOADER)
    found: list[str] = []
    seen_nodes: set[int] = set()
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:  # aliases share nodes; parse_yaml already bounded them
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            seen: dict[Any, str] = {}
            for k, _ in current.value:
                if not isinstance(k, yaml.ScalarNode):
                    continue
                loaded = _loaded_key(k)
                if loaded in seen:
                    first = seen[loaded]
                    found.append(first if first == k.value else f"{first} (as {k.value})")
                else:
                    seen[loaded] = k.value
            stack.extend(n for pair in current.value for n in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return sorted(set(found))


def _loaded_key(node: yaml.ScalarNode) -> Hashable:
    """A mapping key as the loader keys its dict: ``1``, ``true``, ``0x1`` and ``1.0`` are one
    key, and so are ``on`` and ``yes`` (YAML 1.1 booleans). Comparing their text, the line step
    took two sides' keys that load as one for two keys, and the loader kept only one value."""
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node)
        hash(value)
    except (yaml.YAMLError, ValueError, TypeError):  # a merge key (<<), a scalar it cannot build
        return (node.tag, node.value)
    return value


def _made_duplicate_items(merged: Any, local: str, remote: str, loads: _Loads) -> bool:
    """True when the line merge put one list item id (or name) twice where no side had it twice.

    Both sides adding an item with the same ``id`` at different places is clean for diff3, and
    the result holds two items with that id: with different contents one edit is silently
    shadowed (which one wins is up to the app), with equal ones the item is duplicated. The
    structural step matches items by id and decides (one item, or a conflict). Parses the sides
    only when the merged data (``merged``, loaded) has such a duplicate at all.
    """
    found = _duplicate_items(merged)
    if not found:
        return False
    had: set[tuple[str, str, Any]] = set()
    for side in (local, remote):
        try:
            had |= _duplicate_items(loads(side))
        except LocalStoreError:
            return True  # cannot tell: let the structural step decide
    return not found <= had


def _loses_a_change(merged: Any, base: str | None, local: str, remote: str, loads: _Loads) -> bool:
    """True when the line merge's data (``merged``, loaded) is not the structural merge's on
    every path that one settles, or writes an item both sides added to a list twice.

    diff3 sees a moved key as a deleted line and an added one: with the key moved on one side
    and deleted on the other, both deletions agree and the added line stays, so the deleted key
    came back (a side's change silently undone). Where the data merges key by key without a
    conflict, that merge is what both sides' changes add up to; a line result with other data
    is refused and the structural step settles it. Where the data conflicts (both sides edited
    one ``|`` scalar or one list without ids, on different lines), diff3 is all there is: the
    line result's value stands there (``fill``), and only there. Before session 16 one such
    conflict anywhere let every other path through unchecked.
    """
    try:
        docs = [
            MISSING if base is None else loads(base),
            loads(local),
            loads(remote),
        ]
    except LocalStoreError:
        return False  # a side the structural step cannot read: the line merge is all there is
    structural, _ = _merge_node(docs[0], docs[1], docs[2], "", fill=merged)
    return not _same(merged, structural)


def _duplicate_items(doc: Any, where: str = "") -> set[tuple[str, str, Any]]:
    """(list path, match key, value) of every item id (else name) repeated within one list.

    A list counts when every item is a mapping with a scalar ``id`` (else ``name``), as the
    structural step matches them.
    """
    out: set[tuple[str, str, Any]] = set()
    stack: list[tuple[str, Any]] = [(where, doc)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            stack.extend((_join(path, str(k)), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[]", v) for v in node)
            for match in LIST_MATCH_KEYS:
                keys = [_item_key(item, match) for item in node]
                if node and all(k is not MISSING for k in keys):
                    seen: set[Any] = set()
                    for k in keys:
                        if k in seen:
                            out.add((path, match, k))
                        seen.add(k)
                    break
    return out


def _item_key(item: Any, match: str) -> Any:
    if not isinstance(item, dict):
        return MISSING
    key = item.get(match, MISSING)
    if isinstance(key, bool) or not isinstance(key, str | int):
        return MISSING
    return key
