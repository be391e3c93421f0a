"""Blueprint models, the YAML and meta codecs, validation and content hashing.

YAML is parsed with the C safe loader when present, after a size check, and the composed node graph is
measured before anything is constructed: the *expanded* node count (aliases counted every time they are
used) and the nesting depth are bounded, so a 400-byte alias bomb is rejected in microseconds instead of
exhausting memory when some later code walks it.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
import sys
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring as _json_str  # C, as json.dumps uses
from typing import Any, NamedTuple

import yaml

from localstore.errors import (
    InvalidMetaError,
    InvalidYAMLError,
    LimitExceededError,
    LocalStoreError,
    wrong_type,
)

try:  # pragma: no branch - depends on how PyYAML was built
    _Loader: Any = yaml.CSafeLoader
    _Dumper: Any = yaml.CSafeDumper
    _Parser: Any = yaml.CSafeLoader.__mro__[1]  # yaml._yaml.CParser
    _WITH_LIBYAML = True
except AttributeError:  # pragma: no cover - pure-Python PyYAML
    _Loader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper
    _Parser = None
    _WITH_LIBYAML = False
# The fastest safe loader and dumper this PyYAML has, for every module that reads or writes YAML
# (a node graph from compose, or data whose size was already bounded by parse_yaml).
YAML_LOADER: Any = _Loader
YAML_DUMPER: Any = _Dumper

META_FIELDS = (
    "id",
    "name",
    "description",
    "author",
    "created",
    "modified",
    "version",
    "tags",
    "public",
    "encrypted",
)

Validator = Callable[[Mapping[str, Any]], Sequence[str]]
"""An app's validator: returns a list of problems (empty when valid)."""

# What a validator says is kept in the blueprint's index row (read with every list) and sent in
# each `invalid` event, also to apps over the daemon's control API (frames up to 256 KiB). One
# that reported a problem per node of a big document, or a whole dump, stored megabytes there
# and made an event larger than a frame. 20 problems of 500 characters tell a person what to fix.
MAX_PROBLEMS = 20
MAX_PROBLEM_CHARS = 500


_SECOND: tuple[int, str] = (-1, "")  # the last whole second formatted, reused within it


def utc_now() -> str:
    """The current time as ISO-8601 UTC with a Z suffix and microseconds."""
    global _SECOND
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    last = _SECOND  # one read: another thread may swap the tuple, never half of it
    if last[0] != sec:
        last = _SECOND = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{last[1]}.{us:06d}Z"


def new_id() -> str:
    """A new blueprint id (UUID4 string)."""
    return str(uuid.uuid4())


_CANONICAL_UUID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE | re.ASCII
)


def is_uuid(value: str) -> bool:
    """True for a canonical UUID string (8-4-4-4-12 hex digits, any case)."""
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


# ---------------------------------------------------------------------------------------------------
# YAML


@dataclass(frozen=True, slots=True)
class YamlLimits:
    """Bounds on what the YAML loader accepts."""

    max_bytes: int = 8 * 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 200_000


def _measure(root: yaml.Node, limits: YamlLimits) -> None:
    """Reject graphs whose expanded size or depth exceed the limits (aliases are shared nodes)."""
    sizes: dict[int, int] = {}
    # Iterative post-order walk: deep documents must not hit Python's recursion limit.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    on_path: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(c)] for c in _children(node))
            if total > limits.max_nodes:
                raise LimitExceededError(
                    f"YAML expands to more than {limits.max_nodes} nodes (alias bomb?)",
                    hint="remove repeated aliases or split the document",
                )
            sizes[key] = total
            continue
        if depth > limits.max_depth:
            raise LimitExceededError(
                f"YAML is nested deeper than {limits.max_depth} levels",
                hint="flatten the document",
            )
        if key in sizes:
            continue
        if key in on_path:
            raise LimitExceededError("YAML contains a recursive alias")
        on_path.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


# The hint of an error for YAML bytes that are not UTF-8 (said of a file in other words, see
# file_hint: a command line or a file in the folder cannot pass a str).
NOT_UTF8_HINT = "save it as UTF-8, or pass the content as a str"


def file_hint(exc: LocalStoreError, name: str = "it") -> str:
    """``exc``'s hint as said of the file ``name``: the API's NOT_UTF8_HINT also says to pass
    the content as a str, which a person with a file (in the blueprints folder, or named on a
    command line) cannot do. Other hints already speak of the file's content."""
    if exc.hint != NOT_UTF8_HINT:
        return exc.hint
    return "save it as UTF-8" if name == "it" else f"re-save {name} as UTF-8 in your editor"


# How much of a document is looked at for UTF-16 without a byte order mark.
_UTF16_SAMPLE = 512


def decode_yaml(raw: bytes) -> str:
    """Decode a blueprint document's bytes as UTF-8.

    Raises InvalidYAMLError (hint NOT_UTF8_HINT) for bytes that are not UTF-8, naming UTF-16.
    """
    utf16 = _utf16_words(raw)
    if utf16:
        raise InvalidYAMLError(f"YAML {utf16}, not UTF-8", hint=NOT_UTF8_HINT)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidYAMLError(
            f"YAML is not UTF-8 ({exc.reason} at byte {exc.start})", hint=NOT_UTF8_HINT
        ) from exc


def _utf16_words(raw: bytes) -> str:
    """What shows ``raw`` is UTF-16 ("" when nothing does)."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        # Notepad's "Unicode" and Windows PowerShell's `>` write UTF-16 with a byte order mark:
        # "invalid start byte at byte 0" did not say what the file is.
        return "is UTF-16 (it starts with a UTF-16 byte order mark)"
    if raw.find(b"\0", 0, _UTF16_SAMPLE) == -1:
        return ""
    # Without one, UTF-16 of ASCII text is valid UTF-8 with a NUL every other byte: the parser
    # refused the first NUL as "a control character", which did not say what the file is.
    # Mostly one byte of each pair NUL, seldom the other: text mostly in Latin script.
    sample = raw[:_UTF16_SAMPLE]
    share = [part.count(0) / max(len(part), 1) for part in (sample[0::2], sample[1::2])]
    if max(share) >= 0.75 and min(share) <= 0.25:
        return "looks like UTF-16 (a NUL byte every other byte)"
    return ""


def parse_yaml(text: str | bytes, limits: YamlLimits | None = None) -> dict[str, Any]:
    """Parse a blueprint document into a mapping, within limits.

    Raises InvalidYAMLError (malformed, empty, or not a mapping) and LimitExceededError.
    """
    limits = limits or YamlLimits()
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > limits.max_bytes:
        # No size in the message: a file is read only up to the limit and one byte more, so
        # len(raw) would claim the file has exactly that many bytes (limit + 1).
        raise LimitExceededError(
            f"YAML is over the limit of {limits.max_bytes} bytes",
            hint="split the blueprint or raise max_yaml_bytes in config.yaml",
        )
    source = decode_yaml(raw)
    loader = _Loader(source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidYAMLError("YAML document is empty", hint="a blueprint is a YAML mapping")
        _measure(node, limits)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _unparsable(exc, source) from exc
    except ValueError as exc:  # SafeConstructor on 2024-13-45 or 0b_: a scalar it cannot build
        raise InvalidYAMLError(f"YAML does not parse: a scalar cannot be read ({exc})") from exc
    except RecursionError as exc:
        raise LimitExceededError("YAML is nested too deeply", hint="flatten the document") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        # In YAML's words, not Python's: "not a str" named a type a YAML author never wrote.
        kind = "a list" if isinstance(data, list) else "a single value"
        raise InvalidYAMLError(
            f"the top level of a blueprint must be a mapping, not {kind}",
            hint="start the document with 'key: value' lines",
        )
    return data


# Plain scalars SafeConstructor may refuse: timestamps with impossible dates (2024-13-45), numbers
# that are only underscores after a prefix (0b_), ``=`` and ``<<`` (merge keys, and merge as a value
# has no constructor at all). The timestamp pattern
# is the loader's own, so the two can never disagree.
_NUMERIC_START = frozenset("0123456789+-.")
_TIMESTAMP_RE = next(
    regexp
    for tag, regexp in yaml.resolver.Resolver.yaml_implicit_resolvers["0"]
    if tag == "tag:yaml.org,2002:timestamp"
)


def check_yaml(text: str | bytes, limits: YamlLimits | None = None) -> None:
    """Check that a blueprint document would parse, without building it (the save path's check).

    Raises exactly what :func:`parse_yaml` raises for the same input. One pass over libyaml's event
    stream bounds the size, depth and alias expansion, and refuses a second document or a top level
    that is not a mapping; constructing Python objects is most of ``parse_yaml``'s time, so it is
    skipped unless the scan saw something the constructor might refuse (an explicit tag, an anchor
    or alias, a merge key, a complex key, a timestamp-like or ``=`` scalar). Then ``parse_yaml``
    decides, with the bounds already known to hold.
    """
    limits = limits or YamlLimits()
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > limits.max_bytes:
        parse_yaml(raw, limits)  # the size error, worded once
        return
    source = decode_yaml(raw)
    if _plainly_fine(raw, limits):
        return
    parser = _Loader(source)
    try:
        unusual = _scan_events(parser, limits)
    except yaml.YAMLError as exc:
        raise _unparsable(exc, source) from exc
    finally:
        parser.dispose()
    if unusual:
        parse_yaml(raw, limits)


# Text that could make the event scan or the constructor decide differently from a plain syntax
# check. Conservative: a hit only sends the document down the event scan (slower, exact). Each
# pattern runs only if a byte it needs is present (one alternation over the text was 0.5 ms), and
# each starts with its literal, with what must come before it as a lookbehind: the regex engine
# then jumps from one occurrence of the literal to the next. Led by ``(?:^|[\s...])``, it tried
# the pattern at every byte: 60-100 us for a 2 KB blueprint, per pattern, where 2-6 us now (a
# snake_case key, a ``%`` or a ``...`` anywhere in the text was enough to pay it on every save).
# ``(?<![^X]c)`` reads "c at the start, or after an X": equivalence is tested in tests/store.
_NEEDS_EVENTS: tuple[tuple[bytes, re.Pattern[bytes]], ...] = (
    # Anchors and aliases. libyaml starts a token only after a separator (whitespace, a flow or
    # value indicator), never right after a letter or digit, and its anchor names are
    # [0-9A-Za-z_-]+: "cd x && make", "?a=1&b=2" and "*.py" hold none (at a token start, "&&"
    # and "*." are syntax errors, which raw_parse reports too).
    (b"&", re.compile(rb"&(?<![0-9A-Za-z]&)[0-9A-Za-z_-]")),
    (b"*", re.compile(rb"\*(?<![0-9A-Za-z]\*)[0-9A-Za-z_-]")),
    (b"!", re.compile(rb"!(?<![0-9A-Za-z]!)")),  # tags ("done!" is none)
    # Merge keys: a plain scalar that is exactly "<<" ("cat <<EOF" is a longer one).
    (b"<<", re.compile(rb"<<(?=[\s:,\]}]|\Z)")),
    (b"=", re.compile(rb"=(?<![^\s\[{,]=)(?=[\s\]},]|$)", re.M)),  # a '=' scalar
    (b"?", re.compile(rb"\?(?<![^\s\[{,]\?)(?=[\s\]},]|$)", re.M)),  # a complex-key indicator
    (b"]", re.compile(rb"\][ \t]*:")),  # a flow sequence as a key
    (b"}", re.compile(rb"\}[ \t]*:")),  # a flow mapping as a key
    # numbers with underscores (0b_ cannot be built)
    (b"_", re.compile(rb"_(?:(?<=[0-9.]_)|(?<=0[bBxXoO]_))")),
    (b"-", re.compile(rb"-[0-9]{1,2}-[0-9]")),  # timestamp-like (2024-13-45), and more
    (b"---", re.compile(rb"---(?<![^\r\n]---)")),  # document markers and directives
    (b"...", re.compile(rb"\.\.\.(?<![^\r\n]\.\.\.)")),
    (b"%", re.compile(rb"%(?<![^\r\n]%)")),
)


def _needs_events(raw: bytes) -> bool:
    for needle, pattern in _NEEDS_EVENTS:  # a loop, not any(genexpr): this runs on every save
        if needle in raw and pattern.search(raw) is not None:
            return True
    return False


# Where each line's block entries start: the indentation plus a run of "- " indicators.
_ENTRY_COLUMN = re.compile(rb"\n *(?:- +)*")  # a literal first: the regex engine skips ahead
_INDENT_RUNS: dict[int, re.Pattern[bytes]] = {}


def _indent_run(width: int) -> re.Pattern[bytes]:
    """A line starting with at least ``width`` spaces or dashes, searched in ``b"\n" + text``
    (one search, no match list). A newline first, not ``^`` in MULTILINE mode: the engine then
    skips ahead to each newline instead of trying the anchor at every byte (22 us -> 3 us for a
    1.7 KB blueprint; ``^`` also matched after a newline only)."""
    pattern = _INDENT_RUNS.get(width)
    if pattern is None:
        pattern = _INDENT_RUNS.setdefault(width, re.compile(rb"\n[ -]{%d}" % width))
    return pattern


def _plainly_fine(raw: bytes, limits: YamlLimits) -> bool:
    """True when a syntax check in C settles what the event scan would (most blueprints).

    libyaml's ``raw_parse`` checks the syntax without making an event object, a quarter of the
    scan's time. It answers for the scan when the text has none of _NEEDS_EVENTS (so no aliases:
    the expanded size is the node count, below the event count) and its nesting is provably within
    the limit: block entries nest deeper only at a greater column, except a sequence under a mapping
    key (at most every other level), so block depth <= 2 * (deepest entry column + 1); in flow
    context each bracket opens at most two levels (``[a: [b: c]]``: a sequence, then an implicit
    one-pair mapping). Anything else takes the exact path.
    """
    if not _WITH_LIBYAML or _needs_events(raw):
        return False
    budget = limits.max_depth // 2 - 2 - raw.count(b"[") - raw.count(b"{")  # the deepest column
    if budget < 0:
        return False
    if _indent_run(budget + 1).search(b"\n" + raw) is not None:
        # Some line starts with a long run of spaces and dashes: measure the entries exactly
        # (every entry's column is such a run, so without one the bound holds).
        column = max(map(len, _ENTRY_COLUMN.findall(b"\n" + raw))) - 1
        if column > budget:
            return False
    # One parser over the bytes (a str would be encoded again): the first three events are stream
    # start, document start and the root, which must be a mapping; raw_parse counts the rest.
    parser = _Parser(raw)  # the bare C parser: no constructor or resolver to set up
    try:
        parser.get_event()
        parser.get_event()
        if not isinstance(parser.get_event(), yaml.MappingStartEvent):
            return False  # the scan words the error
        events = 3 + parser.raw_parse()
    except yaml.YAMLError:
        return False  # the scan words the error
    finally:
        parser.dispose()
    return events <= limits.max_nodes


def _scan_events(parser: Any, limits: YamlLimits) -> bool:
    """Walk the event stream once; raise on bounds, return True when construction must decide.

    Each open collection is ``[size, is_mapping, next_is_key, anchor]``; a closed collection adds
    its size to its parent, and an alias adds its anchor's size, so ``size`` is the expanded node
    count :func:`_measure` computes on the composed graph.
    """
    get = parser.get_event
    stack: list[list[Any]] = []
    anchors: dict[str, int] = {}
    open_anchors: set[str] = set()
    unusual = False
    documents = 0
    root_size = 0
    while True:
        ev = get()
        kind = type(ev)
        if kind is yaml.ScalarEvent or kind is yaml.AliasEvent:
            leaf = _scan_leaf(ev, stack, anchors, open_anchors, limits)
            if leaf is None:
                return True
            unusual = unusual or leaf
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            opened = _scan_open(ev, stack, anchors, open_anchors, limits)
            if opened is None:
                return True
            unusual = unusual or opened
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            size = _scan_close(stack, anchors, open_anchors, limits)
            if not stack:
                root_size = size
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                return True  # the composer words "expected a single document"
            anchors.clear()
        elif kind is yaml.StreamEndEvent:
            break
    if documents == 0 or root_size == 0:
        return True  # empty
    return unusual


def _scan_leaf(
    ev: Any,
    stack: list[list[Any]],
    anchors: dict[str, int],
    open_anchors: set[str],
    limits: YamlLimits,
) -> bool | None:
    """Count a scalar or an alias into its collection (see _scan_events); whether construction
    must look at it, or None when it must decide outright (it words the error)."""
    if type(ev) is yaml.AliasEvent:
        if ev.anchor in open_anchors:
            raise LimitExceededError("YAML contains a recursive alias")
        if ev.anchor not in anchors:
            return None  # the composer words "found undefined alias"
        size, unusual = anchors[ev.anchor], True
    else:
        size, unusual = 1, _unusual_scalar(ev)
        if ev.anchor is not None:
            if ev.anchor in anchors or ev.anchor in open_anchors:
                return None  # the composer words "found duplicate anchor"
            anchors[ev.anchor] = 1
    if len(stack) + 1 > limits.max_depth:
        raise _too_deep(limits)
    if not stack:
        return None  # a scalar (or alias) at the top: not a mapping, let parse_yaml say so
    parent = stack[-1]
    parent[0] += size
    if parent[1]:
        parent[2] = not parent[2]
    if parent[0] > limits.max_nodes:
        raise _too_many(limits)
    return unusual


def _unusual_scalar(ev: Any) -> bool:
    """Whether the constructor might refuse or change a scalar: a tag, an anchor, a merge key,
    a ``=``, or a number with underscores or a timestamp's shape."""
    if ev.tag is not None:
        return True
    if ev.implicit[0]:
        value = ev.value
        if (
            value == "="
            or value == "<<"
            or (
                value[:1] in _NUMERIC_START
                and ("_" in value or _TIMESTAMP_RE.match(value) is not None)
            )
        ):
            return True
    return ev.anchor is not None


def _scan_open(
    ev: Any,
    stack: list[list[Any]],
    anchors: dict[str, int],
    open_anchors: set[str],
    limits: YamlLimits,
) -> bool | None:
    """Open a mapping or a sequence (see _scan_events); whether construction must look at it, or
    None when it must decide outright (it words the error)."""
    if len(stack) + 1 > limits.max_depth:
        raise _too_deep(limits)
    unusual = ev.tag is not None
    is_mapping = type(ev) is yaml.MappingStartEvent
    if stack:
        parent = stack[-1]
        if parent[1]:
            if parent[2]:
                unusual = True  # a collection as a mapping key: unhashable
            parent[2] = not parent[2]
    elif not is_mapping:
        return None  # a top level that is not a mapping
    if ev.anchor is not None:
        unusual = True
        if ev.anchor in anchors or ev.anchor in open_anchors:
            return None
        open_anchors.add(ev.anchor)
    stack.append([1, is_mapping, True, ev.anchor])
    return unusual


def _scan_close(
    stack: list[list[Any]], anchors: dict[str, int], open_anchors: set[str], limits: YamlLimits
) -> int:
    """Close the innermost collection: add its size to its parent's; its size."""
    size, _, _, anchor = stack.pop()
    if size > limits.max_nodes:
        raise _too_many(limits)
    if anchor is not None:
        open_anchors.discard(anchor)
        anchors[anchor] = size
    if stack:
        stack[-1][0] += size
        if stack[-1][0] > limits.max_nodes:
            raise _too_many(limits)
    return size


def _too_deep(limits: YamlLimits) -> LimitExceededError:
    return LimitExceededError(
        f"YAML is nested deeper than {limits.max_depth} levels", hint="flatten the document"
    )


def _too_many(limits: YamlLimits) -> LimitExceededError:
    return LimitExceededError(
        f"YAML expands to more than {limits.max_nodes} nodes (alias bomb?)",
        hint="remove repeated aliases or split the document",
    )


def _short(exc: yaml.YAMLError) -> str:
    text = " ".join(str(exc).split())
    return text[:300]


def _unparsable(exc: yaml.YAMLError, source: str) -> InvalidYAMLError:
    """The parser's complaint with the line and column a person opens the file at.

    str() of PyYAML's error reads 'while parsing a flow sequence in "<unicode string>", line 1,
    column 4 did not find expected ...': its source name means nothing to the user, and the line
    that is wrong comes last. ``source``: the text parsed, to place a reader error (which has
    only a character offset) at its line and column.
    """
    if isinstance(exc, yaml.reader.ReaderError):
        # A NUL or other control character (a binary file piped to `save`): PyYAML said
        # '"<unicode string>", position 5', a name and an offset nobody can open a file at.
        # libyaml gives the character as a number and the offset in UTF-8 bytes; PyYAML's own
        # reader gives a str and a character offset.
        char, pos = exc.character, exc.position
        if isinstance(char, int):
            before = source.encode("utf-8")[:pos].decode("utf-8", errors="replace")
        else:
            before = source[:pos]
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        code = char if isinstance(char, int) else ord(char)
        what = f"NUL, U+{code:04X}" if code == 0 else f"U+{code:04X}"
        return InvalidYAMLError(
            f"YAML holds a control character ({what}) at line {line}, column {column}; "
            "blueprints must be text",
            hint="remove it: it comes from a binary file, or text pasted from one",
        )
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or not problem or mark is None:
        return InvalidYAMLError(f"YAML does not parse: {_short(exc)}", hint=_FIX_YAML)
    problem = problem.removeprefix("but ")  # ("expected a single document" ... "but found another")
    text = f"YAML does not parse at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, where = exc.context, exc.context_mark
    if context and where is not None and (where.line, where.column) == (mark.line, mark.column):
        pass  # (the same place twice says nothing more)
    elif context and where is not None:
        text += f" ({context} at line {where.line + 1}, column {where.column + 1})"
    elif context:
        text += f" ({context})"
    return InvalidYAMLError(" ".join(text.split())[:400], hint=_FIX_YAML)


_FIX_YAML = "fix the YAML there; a blueprint is a mapping of 'key: value' lines"


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Serialise a mapping as block-style YAML, keeping key order."""
    try:
        return str(
            yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        )
    except yaml.YAMLError as exc:
        raise InvalidYAMLError(
            f"cannot represent the blueprint as YAML: {_short(exc)}",
            hint="use plain values (str, int, float, bool, None, dates, lists and dicts), "
            "e.g. str() or float() of a Decimal, or pass the YAML as text",
        ) from exc
    except RecursionError as exc:  # the dumper recurses per level; a save refuses >64 anyway
        raise LimitExceededError(
            "the mapping is nested too deeply to save as YAML",
            hint="flatten it: a blueprint may nest at most max_depth levels (64 by default)",
        ) from exc


# ---------------------------------------------------------------------------------------------------
# Meta


@dataclass(frozen=True, slots=True)
class BlueprintMeta:
    """The companion ``.meta.json``: identity and descriptive fields. Unknown keys are kept in extra."""

    id: str
    name: str
    description: str = ""
    author: str = ""
    created: str = ""
    modified: str = ""
    version: str = ""
    tags: tuple[str, ...] = ()
    public: bool = False
    encrypted: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to the meta file."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "author": self.author,
            "created": self.created,
            "modified": self.modified,
            "version": self.version,
            "tags": list(self.tags),
            "public": self.public,
            "encrypted": self.encrypted,
        }
        for k, v in self.extra.items():
            if k not in out:
                out[k] = v
        return out

    def replace(self, **changes: Any) -> BlueprintMeta:
        """Return a copy with some fields changed."""
        if "tags" in changes:
            changes["tags"] = normalize_tags(changes["tags"])
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "meta") -> BlueprintMeta:
        """Validate and build from a decoded meta object. Raises InvalidMetaError."""
        if not isinstance(data, Mapping):
            raise InvalidMetaError(f"{source}: must be a JSON object")
        ident = data.get("id")
        if not isinstance(ident, str) or not is_uuid(ident):
            raise InvalidMetaError(
                f"{source}: 'id' must be a UUID string, got {ident!r}",
                hint="restore the id from history, or delete the meta file to get a new one",
            )
        kwargs: dict[str, Any] = {"id": ident.lower()}
        for key in ("name", "description", "author", "created", "modified", "version"):
            value = data.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise InvalidMetaError(f"{source}: {key!r} must be a string, got {value!r}")
            kwargs[key] = value
        for key in ("public", "encrypted"):
            value = data.get(key, False)
            if not isinstance(value, bool):
                raise InvalidMetaError(f"{source}: {key!r} must be true or false")
            kwargs[key] = value
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidMetaError(f"{source}: 'tags' must be a list of strings")
        kwargs["tags"] = normalize_tags(tags)
        extra = {k: v for k, v in data.items() if k not in _META_FIELD_SET}
        # The meta object is level 1, so its values may nest MAX_META_DEPTH - 1 more.
        if extra and _nested_too_deep(extra.values(), MAX_META_DEPTH - 1):
            raise InvalidMetaError(
                f"{source}: nested deeper than {MAX_META_DEPTH} levels",
                hint="flatten the extra keys of the meta file",
            )
        kwargs["extra"] = extra
        return cls(**kwargs)


# (A set for from_dict's test of each key: a tuple was scanned key by key, per blueprint.)
_META_FIELD_SET = frozenset(META_FIELDS)


def normalize_tags(tags: Sequence[str] | str | None) -> tuple[str, ...]:
    """Strip, drop empties and duplicates, keep first-seen order."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = [tags]
    seen: dict[str, None] = {}
    for t in tags:
        t = str(t).strip()
        if t:
            seen.setdefault(t, None)
    return tuple(seen)


# Limits on the tags a save is given (tags=, `save --tag`): a tag is a short label on one line.
# A newline broke `ls`'s row per blueprint, and 5,000-character or 20,000 tags saved until the
# meta file's size limit. Tags that arrive otherwise (a pulled or imported meta, a meta file
# edited by hand) are kept as they are: refusing them would lose another device's change.
MAX_TAG_CHARS = 128  # (as the app-data store's)
MAX_TAGS = 100
# Unicode categories refused in a new tag: control characters (C0, DEL, C1: a newline, a tab, an
# escape sequence) and the line and paragraph separators, which also break a line.
_TAG_REFUSED = frozenset({"Cc", "Zl", "Zp"})


def tag_problem(tag: str) -> str:
    """What is wrong with ``tag`` as a new tag ("is empty", ...), or "" when it may be saved.

    Judged as saved: stripped (normalize_tags)."""
    text = tag.strip()
    if not text:
        return "is empty"
    if len(text) > MAX_TAG_CHARS:
        return f"is {len(text):,} characters long, over the limit of {MAX_TAG_CHARS}"
    if not text.isprintable() and any(unicodedata.category(c) in _TAG_REFUSED for c in text):
        return "holds a control character (a newline, a tab, an escape)"
    return ""


def _plain_meta(m: BlueprintMeta) -> bool:
    """No extra keys and every field of its declared type: the JSON can be written by hand."""
    plain = (m.id, m.name, m.description, m.author, m.created, m.modified, m.version, *m.tags)
    return (
        not m.extra
        and type(m.public) is bool
        and type(m.encrypted) is bool
        and all(type(v) is str for v in plain)
    )


def tags_json(tags: Sequence[str]) -> str:
    """``json.dumps(list(tags), ensure_ascii=False)``, written out for the usual all-string case
    (the index stores tags so, and the save path made it three times per blueprint)."""
    if all(type(t) is str for t in tags):
        return "[" + ", ".join(map(_json_str, tags)) + "]"
    return json.dumps(list(tags), ensure_ascii=False)


# The largest meta file read (decode_meta) and so written (a save refuses a bigger one).
MAX_META_BYTES = 1024 * 1024


def encode_meta(meta: BlueprintMeta) -> bytes:
    """The meta file's bytes: pretty JSON, UTF-8, trailing newline (compact JSON when indenting
    would take it past MAX_META_BYTES).

    Exactly ``json.dumps(meta.to_dict(), indent=2, ensure_ascii=False) + "\\n"``; written out by
    hand when there are no extra keys, because with ``indent`` json encodes in pure Python (a
    quarter of a batch save's JSON time went here).
    """
    m = meta
    if not _plain_meta(m):
        pretty = (json.dumps(meta.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        if len(pretty) <= MAX_META_BYTES:
            return pretty
        # Indented, a meta another device or tool wrote compactly can grow past what any store
        # reads (each item of a long list on its own line: 3.5x); the compact form is what it was.
        return (
            json.dumps(meta.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
        ).encode("utf-8")
    q = _json_str
    tags = "[\n    " + ",\n    ".join(map(q, meta.tags)) + "\n  ]" if meta.tags else "[]"
    return (
        f'{{\n  "id": {q(meta.id)},\n  "name": {q(meta.name)},\n'
        f'  "description": {q(meta.description)},\n  "author": {q(meta.author)},\n'
        f'  "created": {q(meta.created)},\n  "modified": {q(meta.modified)},\n'
        f'  "version": {q(meta.version)},\n  "tags": {tags},\n'
        f'  "public": {"true" if meta.public else "false"},\n'
        f'  "encrypted": {"true" if meta.encrypted else "false"}\n}}\n'
    ).encode()


# The deepest nesting a meta file may hold (the object itself is level 1), as YAML's max_depth.
# json recurses per level in C and in Python: a meta of 100,000 brackets raised RecursionError out
# of every read (an import, opening the store), and one just under the interpreter's limit read
# at a shallow stack failed later, encoded or loaded from the index at a deeper one.
MAX_META_DEPTH = 64
# A \uD800-\uDFFF escape: a lone one decodes to a str no UTF-8 encoder takes (pairs are fine).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_META_HINT = "fix the JSON, or delete the meta file so a new one is created"


def decode_meta(raw: bytes, *, source: str = "meta file") -> BlueprintMeta:
    """Parse meta file bytes. Raises InvalidMetaError.

    Only what RFC 8259 calls JSON and UTF-8 can hold is taken: NaN and Infinity (which Python's
    json accepts) cannot be stored by the cloud tier nor sent by its client, and a lone surrogate
    escape failed the first time the meta was hashed or written, as an error outside the tree.
    """
    if len(raw) > MAX_META_BYTES:
        raise InvalidMetaError(
            f"{source}: larger than 1 MiB",
            hint="remove what you added to it, or delete the meta file so a new one is created",
        )
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except RecursionError as exc:
        raise InvalidMetaError(
            f"{source}: nested deeper than {MAX_META_DEPTH} levels", hint=_META_HINT
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError, _NotJSON) as exc:
        raise InvalidMetaError(f"{source}: not valid JSON ({exc})", hint=_META_HINT) from exc
    except ValueError as exc:  # json's only other one: an integer int() refuses to convert
        raise InvalidMetaError(
            f"{source}: holds a number of more than {sys.get_int_max_str_digits()} digits",
            hint=_META_HINT,
        ) from exc
    if _SURROGATE_ESCAPE.search(raw) is not None:
        try:  # rare (an escaped emoji is a pair): only then is the whole object re-encoded
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidMetaError(
                f"{source}: holds a lone UTF-16 surrogate escape (\\u{ord(exc.object[exc.start]):04x}), "
                "which is no character",
                hint=_META_HINT,
            ) from exc
    try:
        return BlueprintMeta.from_dict(data, source=source)
    except InvalidMetaError as exc:
        if exc.hint:
            raise
        # A field of the wrong type said what is wrong, not what to do (check, status and the
        # watcher's event showed no hint). Given here, not in from_dict: that also reads the
        # API's and the server's metas, which are no file a person can fix or delete.
        raise InvalidMetaError(exc.message, hint=_META_HINT) from exc


class _NotJSON(ValueError):
    """What Python's json reads but JSON has not: NaN, Infinity, a number past a double's range."""


def _refuse_constant(name: str) -> Any:
    raise _NotJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _NotJSON(f"{text[:40]} is out of range for a JSON number")
    return value


def _nested_too_deep(values: Iterable[Any], limit: int) -> bool:
    """True if any of ``values`` nests more than ``limit`` levels of lists and objects."""
    stack = [(v, 1) for v in values]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((c, depth + 1) for c in children)
    return False


# ---------------------------------------------------------------------------------------------------
# Hashing


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def content_hash(yaml_bytes: bytes, meta: BlueprintMeta) -> str:
    """The hash of a pair's content: the YAML bytes and the meta without its volatile ``modified``.

    Two devices holding the same document agree on this hash whenever the content agrees, whatever
    the save times; it is what sync compares.
    """
    m = meta
    if _plain_meta(m):  # the same JSON written out: json.dumps was a tenth of a batch save
        q = _json_str
        meta_bytes = (
            f'{{"author":{q(m.author)},"created":{q(m.created)},'
            f'"description":{q(m.description)},"encrypted":{"true" if m.encrypted else "false"},'
            f'"id":{q(m.id)},"name":{q(m.name)},"public":{"true" if m.public else "false"},'
            f'"tags":[{",".join(map(q, m.tags))}],"version":{q(m.version)}}}'
        )
    else:
        semantic = meta.to_dict()
        semantic.pop("modified", None)
        meta_bytes = json.dumps(semantic, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    h = hashlib.sha256()
    h.update(b"lsbp1\0")
    h.update(len(yaml_bytes).to_bytes(8, "big"))
    h.update(yaml_bytes)
    h.update(meta_bytes.encode("utf-8"))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Blueprint


@dataclass(frozen=True, slots=True)
class Blueprint:
    """One stored blueprint: its path, the YAML text verbatim, meta, revision and validity."""

    path: str
    content: str
    meta: BlueprintMeta
    rev: int = 0
    content_hash: str = ""
    valid: bool = True
    problems: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """The immutable identity (from the meta file)."""
        return self.meta.id

    @property
    def name(self) -> str:
        """The display name."""
        return self.meta.name

    def data(self, limits: YamlLimits | None = None) -> dict[str, Any]:
        """The parsed YAML document."""
        return parse_yaml(self.content, limits)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for --json output and events)."""
        return {
            "id": self.id,
            "path": self.path,
            "rev": self.rev,
            "content_hash": self.content_hash,
            "valid": self.valid,
            "problems": list(self.problems),
            "meta": self.meta.to_dict(),
            "content": self.content,
        }


class BlueprintInfo(NamedTuple):
    """A listing row: a blueprint's identity and meta without its content.

    A named tuple rather than a frozen dataclass: just as immutable, and a listing builds one per
    blueprint (a frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``,
    which was half the time of listing 10,000).
    """

    id: str
    path: str
    name: str
    description: str
    tags: tuple[str, ...]
    author: str
    version: str
    created: str
    modified: str
    rev: int
    content_hash: str
    valid: bool
    size: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "id": self.id,
            "path": self.path,
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "author": self.author,
            "version": self.version,
            "created": self.created,
            "modified": self.modified,
            "rev": self.rev,
            "content_hash": self.content_hash,
            "valid": self.valid,
            "size": self.size,
        }


def check_validator(validator: Any) -> None:
    """Refuse a validator that cannot be called (at open, not as a problem on every save)."""
    if validator is not None and not callable(validator):
        raise wrong_type(
            "the validator",
            validator,
            "callable",
            hint="pass a function taking the parsed mapping and returning a list of problems",
        )


def run_validator(validator: Validator | None, data: Mapping[str, Any]) -> tuple[str, ...]:
    """Run an app's validator; a validator that raises counts as one problem, not a crash.

    It returns a list (any iterable) of problems; None or an empty one means valid. A single
    string counts as one problem (iterated, it became one problem per character); a result
    that is not iterable counts as one problem saying so.
    """
    if validator is None:
        return ()
    try:
        problems = validator(data)
        if problems is None:
            return ()
        if isinstance(problems, str):
            return _bounded([problems]) if problems else ()
        if isinstance(problems, bytes | bytearray | Mapping) or not isinstance(problems, Iterable):
            return (f"validator returned {type(problems).__name__}, not a list of problems",)
        return _bounded([str(p) for p in problems])
    except Exception as exc:  # noqa: BLE001 - an app's validator is foreign code: report its failure as a problem
        return _bounded([f"validator raised {type(exc).__name__}: {exc}"])


def _bounded(problems: list[str]) -> tuple[str, ...]:
    """At most MAX_PROBLEMS problems of about MAX_PROBLEM_CHARS, each cut saying what was left out."""
    kept = tuple(
        p
        if len(p) <= MAX_PROBLEM_CHARS
        else f"{p[:MAX_PROBLEM_CHARS]}... ({len(p) - MAX_PROBLEM_CHARS:,} more characters)"
        for p in problems[:MAX_PROBLEMS]
    )
    if len(problems) > MAX_PROBLEMS:
        kept += (f"... and {len(problems) - MAX_PROBLEMS:,} more problems",)
    return kept
