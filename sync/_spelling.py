"""The structural step's dump, with each key and scalar written as a side wrote it.

The merged data is PyYAML's YAML 1.1 reading of the sides. Dumped as data, ``on:`` (GitHub
Actions' trigger key, a boolean in 1.1) became ``true:``, ``0755`` became ``493``, ``no``
became ``false`` and ``'1e3'`` (a string) became a plain ``1e3``. PyYAML loads that back to the
same data, but a YAML 1.2 reader (GitHub Actions, most parsers written since) read another
file: ``true`` is a boolean there and ``on`` a string, ``0755`` is 755, ``1e3`` is a float.

So the dump is built from nodes: a scalar (or key) that a side has at the same place with the
same loaded value is written with that side's text and quoting style (``on``, ``0755``,
``'1e3'``, a ``|`` block), and each collection keeps the flow or block style the sides gave it.
A scalar no side has there (rare: a key a merge key ``<<`` brought in) is represented as
PyYAML would, except that a string a YAML 1.2 reader would take for a number, boolean or null
when written plain (``1e3``, ``0o17``, ``09``) is quoted. Of the two ways to keep the readings
together (the source text, or quoting every scalar whose 1.1 and 1.2 readings differ), the
source text is the one that writes the file as its users wrote it: quoting ``on`` as ``'on'``
is a string in both versions, and PyYAML's data would change.

The caller checks that the text loads to the merged data and dumps plainly otherwise.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from localstore.blueprint import YAML_DUMPER, YAML_LOADER

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
# A plain scalar the YAML 1.2 core schema reads as null, a boolean, an integer or a float.
_CORE_12_NOT_STR = re.compile(
    r"null|Null|NULL|~|true|True|TRUE|false|False|FALSE"
    r"|[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)

Same = Callable[[Any, Any], bool]
# A side's node at one place of the merged document and that side's loaded value there; None
# where the side has nothing (or something of another kind) there. Always (base, local, remote).
Place = tuple[yaml.Node, Any] | None


class _IndentedDumper(yaml.SafeDumper):
    """PyYAML's dumper writing a block sequence indented under its key (``key:\\n  - item``),
    as most workflow files are written (libyaml's dumper cannot)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def dump_spelled(
    merged: dict[Any, Any], sides: Sequence[tuple[str, Any] | None], *, same: Same
) -> str:
    """``merged`` as block-style YAML (width 100, unicode kept), keys and scalars spelled as in
    ``sides`` (base, local, remote: each its text and loaded data, or None).

    Raises yaml.YAMLError when a side does not compose (the caller dumps plainly then).
    """
    roots: list[Place] = []
    for side in sides:
        node = None if side is None else yaml.compose(side[0], Loader=YAML_LOADER)
        roots.append(None if node is None or side is None else (node, side[1]))
    root = _Builder(same).build(merged, roots)
    dumper = _IndentedDumper if _indents_sequences(roots) else YAML_DUMPER
    return str(yaml.serialize(root, Dumper=dumper, allow_unicode=True, width=100))


def _pick3(base: Any, local: Any, remote: Any) -> Any:
    """A 3-way choice of one attribute (None: the side has none): the side that changed it
    from the base, the server's when both did or neither did."""
    if local is None:
        return remote if remote is not None else base
    if remote is None:
        return local
    return local if remote == base and local != base else remote


class _Builder:
    """Builds the node graph of the merged data, looking each place up in the sides' nodes."""

    def __init__(self, same: Same) -> None:
        self._same = same
        self._built: dict[int, yaml.Node] = {}  # an object met twice (an alias) is one node
        # Per side mapping node: loaded key -> (that key as loaded, key node, value node).
        self._entries: dict[int, dict[Any, tuple[Any, yaml.Node, yaml.Node]]] = {}
        self._constructor = yaml.constructor.SafeConstructor()

    def build(self, value: Any, places: list[Place]) -> yaml.Node:
        if isinstance(value, dict | list):
            done = self._built.get(id(value))
            if done is not None:
                return done
        if isinstance(value, dict):
            return self._mapping(value, places)
        if isinstance(value, list):
            return self._sequence(value, places)
        return self._scalar(value, places)

    def _mapping(self, value: dict[Any, Any], places: list[Place]) -> yaml.Node:
        maps = [
            p if p and isinstance(p[0], yaml.MappingNode) and isinstance(p[1], dict) else None
            for p in places
        ]
        node = yaml.MappingNode(_MAP, [], flow_style=self._flow(maps))
        self._built[id(value)] = node
        for key, item in value.items():
            entries = [None if p is None else self._entry(p, key) for p in maps]
            keys: list[Place] = [None if e is None else (e[0], key) for e in entries]
            items: list[Place] = [
                None if e is None or p is None else (e[1], p[1][key])
                for e, p in zip(entries, maps, strict=True)
            ]
            node.value.append((self._scalar(key, keys), self.build(item, items)))
        return node

    def _sequence(self, value: list[Any], places: list[Place]) -> yaml.Node:
        seqs = [
            p if p and isinstance(p[0], yaml.SequenceNode) and isinstance(p[1], list) else None
            for p in places
        ]
        node = yaml.SequenceNode(_SEQ, [], flow_style=self._flow(seqs))
        self._built[id(value)] = node
        matched = [None if p is None else self._items(value, p) for p in seqs]
        for i, item in enumerate(value):
            items = [None if m is None else m[i] for m in matched]
            node.value.append(self.build(item, items))
        return node

    def _scalar(self, value: Any, places: list[Place]) -> yaml.Node:
        spellings = [
            (p[0].tag, p[0].value, p[0].style)
            if p and isinstance(p[0], yaml.ScalarNode) and self._same(p[1], value)
            else None
            for p in places
        ]
        chosen = _pick3(*spellings)
        if chosen is not None:
            tag, text, style = chosen
            return yaml.ScalarNode(tag, text, style=style)
        node = yaml.representer.SafeRepresenter().represent_data(value)
        if (
            isinstance(node, yaml.ScalarNode)
            and node.tag == _STR
            and node.style is None
            and _CORE_12_NOT_STR.fullmatch(node.value)
        ):
            # PyYAML writes the string 1e3 plain (a string in YAML 1.1); 1.2 reads a float.
            node.style = "'"
        return node

    def _flow(self, places: list[Place]) -> bool:
        styles = [None if p is None else bool(getattr(p[0], "flow_style", False)) for p in places]
        return bool(_pick3(*styles))

    def _entry(self, place: tuple[yaml.Node, Any], key: Any) -> tuple[yaml.Node, yaml.Node] | None:
        """The (key node, value node) of ``key`` in a side's mapping, when the side sets it
        there itself (not through a merge key) and its loaded data has it."""
        node, data = place
        index = self._entries.get(id(node))
        if index is None:
            index = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE:
                    try:
                        loaded = self._constructor.construct_object(k)
                        index[loaded] = (loaded, k, v)  # the last of two equal keys, as loaded
                    except (yaml.YAMLError, ValueError, TypeError):
                        continue
            self._entries[id(node)] = index
        try:
            found = index.get(key)
        except TypeError:  # an unhashable key cannot be in the index
            return None
        # ``True`` finds the key ``1`` in a dict: the key must be the same as loaded, too.
        if found is None or key not in data or not self._same(found[0], key):
            return None
        return found[1], found[2]

    def _items(self, value: list[Any], place: tuple[yaml.Node, Any]) -> list[Place]:
        """The side's item at each index of the merged list: matched by ``id`` (else ``name``)
        when both lists are keyed so, else by index when both have as many items."""
        node, data = place
        pairs = list(zip(node.value, data, strict=False))
        if len(node.value) != len(data):
            return [None] * len(value)  # a merge key or something else not one node an item
        for match in ("id", "name"):
            mine = _keyed(data, match)
            theirs = _keyed(value, match)
            if mine is not None and theirs is not None:
                by = dict(zip(mine, pairs, strict=True))
                return [by.get(k) for k in theirs]
        if len(data) == len(value):
            return list(pairs)
        return [None] * len(value)


def _keyed(items: list[Any], match: str) -> list[Any] | None:
    """Each item's ``match`` key when every item is a mapping with a unique scalar one."""
    keys = []
    for item in items:
        key = item.get(match) if isinstance(item, dict) else None
        if isinstance(key, bool) or not isinstance(key, str | int):
            return None
        keys.append(key)
    return keys if len(set(keys)) == len(keys) else None


def _indents_sequences(roots: list[Place]) -> bool:
    """Whether the sides write a block sequence under a key indented (the server's side first):
    the first such sequence found, breadth first, decides."""
    for place in (roots[2], roots[1], roots[0]):
        if place is None:
            continue
        queue: deque[yaml.Node] = deque([place[0]])
        seen: set[int] = set()
        while queue:
            node = queue.popleft()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if isinstance(v, yaml.SequenceNode) and not v.flow_style and v.value:
                        return bool(v.start_mark.column > k.start_mark.column)
                    queue.append(v)
            elif isinstance(node, yaml.SequenceNode):
                queue.extend(node.value)
    return False
