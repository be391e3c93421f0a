"""A YAML 1.2 (core schema) reading of a document, for the tests: how GitHub Actions and other
YAML 1.2 parsers see a file that PyYAML reads with YAML 1.1's rules.

The syntax of the documents tested here is the same in both versions; what differs is how a
plain scalar resolves: ``on``, ``yes``, ``no``, ``off``, ``y`` and ``n`` are strings in 1.2
(booleans in 1.1), ``0755`` is 755 (1.1: octal 493), ``1e3`` is a float (1.1: a string), a
date is a string. So the document is composed with PyYAML and every plain scalar is resolved
again by the 1.2 core schema; quoted and block scalars are strings. ruamel.yaml would do the
same but is not a dependency of the project. Explicit tags are not supported (no test uses one).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_NULL = re.compile(r"null|Null|NULL|~|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")


def plain12(text: str) -> Any:
    """A plain scalar as the YAML 1.2 core schema reads it."""
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.fullmatch(text):
        return int(text, 10)
    if _INT8.fullmatch(text):
        return int(text[2:], 8)
    if _INT16.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if _NAN.fullmatch(text):
        return float("nan")
    return text


def load12(text: str) -> Any:
    """The document as a YAML 1.2 core-schema parser loads it (merge keys ``<<`` applied)."""
    return _build(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), {})


def _build(node: yaml.Node | None, done: dict[int, Any]) -> Any:
    if node is None:
        return None
    if id(node) in done:  # an alias: the anchor's value
        return done[id(node)]
    if isinstance(node, yaml.ScalarNode):
        # libyaml says "" for a plain scalar where PyYAML says None.
        return plain12(node.value) if not node.style else node.value
    if isinstance(node, yaml.SequenceNode):
        items: list[Any] = []
        done[id(node)] = items
        items.extend(_build(item, done) for item in node.value)
        return items
    assert isinstance(node, yaml.MappingNode)
    mapping: dict[Any, Any] = {}
    done[id(node)] = mapping
    own: dict[Any, Any] = {}
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge":
            merged = _build(value, done)
            for source in merged if isinstance(merged, list) else [merged]:
                for k, v in source.items():
                    mapping.setdefault(k, v)
        else:
            own[_build(key, done)] = _build(value, done)
    mapping.update(own)
    return mapping
