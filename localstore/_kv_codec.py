"""App-data values and arguments: the json/yaml/binary codecs, and the checks of keys, tags,
metadata and expiries run before anything is written (each raising a typed error with a hint).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml

from localstore.blueprint import YAML_DUMPER, YAML_LOADER
from localstore.errors import InvalidInputError, KVFormatError, LimitExceededError, wrong_type

MAX_KEY_CHARS = 1024
MAX_TAG_CHARS = 128


_JSON_KEY_HINT = (
    "JSON object keys are strings: convert them (str(k)) before saving, or save with "
    "format='yaml', which keeps int, float, bool and None keys"
)


def _non_str_key(value: Any) -> tuple[str, int] | None:
    """The first dict key in ``value`` that is not a str: (its type name, its dict's depth).

    json.dumps turns int, float, bool and None keys into strings without a word, so
    ``{1: "x"}`` came back as ``{"1": "x"}`` (and ``{1: "a", "1": "b"}`` as one key).
    """
    return _first_bad_key(value, lambda k: isinstance(k, str), sets=False)


def _tuple_key(value: Any) -> tuple[str, int] | None:
    """The first dict key or set member in ``value`` that is a tuple (see _first_bad_key).

    YAML writes a tuple as a sequence and reads a sequence back as a list, which cannot be a
    key: ``{(1, 2): "x"}`` (or ``{(1, 2)}``) was saved, then every load of it raised
    KVFormatError ("not valid yaml"), for good.
    """
    return _first_bad_key(value, lambda k: not isinstance(k, tuple), sets=True)


def _first_bad_key(value: Any, ok: Callable[[Any], bool], *, sets: bool) -> tuple[str, int] | None:
    """The first dict key (and, with ``sets``, set member) in ``value`` that ``ok`` refuses:
    (its type name, its container's depth).

    Iterative, so depth stays the encoder's problem (RecursionError, mapped by the callers);
    shared and cyclic containers are visited once (the encoders refuse the cycle themselves).
    Only the type and depth are reported, never key text: the value may be a secret.
    """
    kinds: tuple[type[Any], ...] = (
        (dict, list, tuple, set, frozenset) if sets else (dict, list, tuple)
    )
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, kinds) or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            for k, v in node.items():
                if not ok(k):
                    return type(k).__name__, depth
                stack.append((v, depth + 1))
        elif isinstance(node, set | frozenset):
            for member in node:
                if not ok(member):
                    return type(member).__name__, depth
        else:
            stack.extend((v, depth + 1) for v in node)
    return None


def _where(depth: int, container: str = "dict") -> str:
    if depth == 0:
        return f"the top-level {container}"
    return f"a {container} nested {depth} level(s) deep"


def _encode(key: str, value: Any, fmt: str) -> bytes:
    try:
        if fmt == "json":
            bad = _non_str_key(value)
            if bad is not None:
                raise KVFormatError(
                    f"cannot encode {key!r} as json: {_where(bad[1])} has a key of type"
                    f" {bad[0]}, which JSON would turn into a string",
                    hint=_JSON_KEY_HINT,
                )
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode("utf-8")
        if fmt == "yaml":
            bad = _tuple_key(value)
            if bad is not None:
                raise KVFormatError(
                    f"cannot encode {key!r} as yaml: {_where(bad[1], 'dict or set')} has a key"
                    f" or member of type {bad[0]}, which YAML would load back as a list (and a"
                    " list cannot be a key)",
                    hint="turn tuple keys into strings or numbers before saving (for example"
                    " ','.join(...)), or store the pairs as a list of [key, value] lists",
                )
            out: str = yaml.dump(value, Dumper=YAML_DUMPER, allow_unicode=True, sort_keys=False)
            return out.encode("utf-8")
    except (TypeError, ValueError, yaml.YAMLError) as exc:
        raise KVFormatError(
            f"cannot encode {key!r} as {fmt}: {type(exc).__name__}",
            hint="store plain data (dicts, lists, str, numbers, bools, None) or use binary",
        ) from exc
    except RecursionError as exc:  # both encoders recurse once per nesting level
        raise KVFormatError(
            f"cannot encode {key!r} as {fmt}: the value is nested too deeply",
            hint="flatten the value (a few hundred levels at most), or store it as binary",
        ) from exc
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise KVFormatError(
        f"binary value of {key!r} must be bytes, not {type(value).__name__}",
        hint="pass bytes (text.encode() for a str), or leave format out to store it as JSON",
    )


def _decode(key: str, data: bytes, fmt: str) -> Any:
    try:
        if fmt == "json":
            return json.loads(data)
        if fmt == "yaml":
            return yaml.load(data, Loader=YAML_LOADER)  # YAML_LOADER is a SafeLoader
    except (ValueError, yaml.YAMLError) as exc:
        raise KVFormatError(f"stored value of {key!r} is not valid {fmt}") from exc
    except RecursionError as exc:  # written by another program: too deep to decode here
        raise KVFormatError(
            f"stored value of {key!r} is nested too deeply to decode as {fmt}",
            hint="delete the key (KVStore.delete) and store a flatter value",
        ) from exc
    return data


def _aad(key: str) -> bytes:
    # Binds a ciphertext to its key: swapping two encrypted rows in the database fails to decrypt.
    return b"localstore:kv:" + key.encode("utf-8")


def _check_utf8(what: str, text: str) -> None:
    # A lone surrogate cannot be encoded as UTF-8: SQLite (and the AAD) would raise a raw
    # UnicodeEncodeError at bind time instead of a typed error before anything is written.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} {ascii(text)[:80]} is not valid Unicode (it has a lone surrogate)",
            hint="decode bytes with errors='replace' or use only encodable characters",
        ) from None


def _check_key(key: str) -> None:
    if not isinstance(key, str):
        raise wrong_type(
            "an app-data key",
            key,
            "a string",
            hint=f"pass the key as text of 1-{MAX_KEY_CHARS} characters",
        )
    if not 1 <= len(key) <= MAX_KEY_CHARS or "\x00" in key:
        raise InvalidInputError(
            f"an app-data key must be 1-{MAX_KEY_CHARS} characters, no NUL",
            hint="use a short text key such as 'settings/theme'",
        )
    _check_utf8("the app-data key", key)


def _check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise wrong_type(
            "tags", tags, "a list of strings", hint="pass tags=['a', 'b'], or leave it out for none"
        )
    out: dict[str, None] = {}
    for tag in tags:
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_CHARS:
            raise InvalidInputError(
                f"a tag must be a string of 1-{MAX_TAG_CHARS} characters, not {tag!r}",
                hint="pass tags as a list of short texts, e.g. tags=['a', 'b']",
            )
        _check_utf8("the tag", tag)
        out[tag] = None
    return tuple(sorted(out))


def _finite(name: str, value: Any) -> float:
    """Return ``value`` as a finite float. Raises InvalidInputError."""
    # SQLite stores NaN as NULL (an item that never expires), and a str or bytes would be stored
    # as is and make every later load of the item raise a raw TypeError or ValueError.
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:  # an int too large for a float
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(
            f"{name} must be a finite number of seconds, not {value!r:.40}",
            hint="leave it out (None) for an item that never expires",
        )
    return number


def _metadata_json(metadata: Mapping[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    hint = "metadata is a small JSON object: str keys; str, number, bool, None, list, dict values"
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("metadata must be a mapping", hint=hint)
    bad = _non_str_key(dict(metadata))
    if bad is not None:
        # Stored as JSON: a non-str key would come back as a string (see _non_str_key).
        raise InvalidInputError(
            f"metadata: {_where(bad[1])} has a key of type {bad[0]}; JSON would turn it into"
            " a string",
            hint=hint,
        )
    try:
        text = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata is not JSON-serializable: {exc}", hint=hint) from exc
    except RecursionError as exc:
        raise InvalidInputError("metadata is nested too deeply", hint=hint) from exc
    # ensure_ascii=False keeps a lone surrogate as is: SQLite would then raise a raw
    # UnicodeEncodeError when the text is bound, inside the write.
    _check_utf8("the metadata", text)
    return text


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[low, high) key range of a prefix (BINARY collation compares UTF-8, i.e. code points)."""
    if not prefix:
        return "", None
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return prefix, None
    # Keys hold no surrogates (they are not UTF-8), so U+D7FF's successor is U+E000; chr(0xD800)
    # as the bound could not even be bound as a parameter.
    following = 0xE000 if last == 0xD7FF else last + 1
    return prefix, prefix[:-1] + chr(following)


def _too_large(key: str, value_bytes: int, meta_bytes: int, limit: int) -> LimitExceededError:
    """The error for an item over SQLite's length limit (``value_bytes`` as stored: encrypted,
    the envelope's size)."""
    return LimitExceededError(
        f"app-data item {key!r} is too large for the index ({value_bytes} bytes of value,"
        f" {meta_bytes} of metadata; SQLite's limit is {limit} per item)",
        hint="keep large data in files and store their path; app data is for small values",
    )
