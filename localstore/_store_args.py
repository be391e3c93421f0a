"""Checks of the store's arguments, and what a save is given made canonical.

Each check raises InvalidInputError saying what to pass, before anything is read or written: a
limit or offset, a flag, a tag or folder filter, an origin, a batch's requests. The rest makes a
save's input canonical (NFC names and descriptions, normalized tags, the content as bytes).
"""

from __future__ import annotations

import builtins
import dataclasses
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from localstore import files as fs
from localstore._listing import TIME_SORTS, sorts_by_moment
from localstore._store_types import SaveRequest
from localstore._time_key import time_order_sql
from localstore.blueprint import (
    MAX_TAG_CHARS,
    MAX_TAGS,
    BlueprintMeta,
    dump_yaml,
    normalize_tags,
    tag_problem,
)
from localstore.errors import (
    AmbiguousRefError,
    InvalidInputError,
    InvalidMetaError,
    LocalStoreError,
    UnsafePathError,
    wrong_type,
)

E = TypeVar("E", bound=LocalStoreError)


SORT_COLUMNS = {"path": "path", "name": "name", "modified": "modified", "created": "created"}


# Where a change came from, as history records it (docs/architecture.md, "History"); sync tells its
# own writes ("remote") from the user's by it, so a typo must not become a new origin.
ORIGINS = ("local", "external", "remote", "merge", "import")


# The meta fields a save NFC-normalizes when they come from the app (see _composed_request).
_TEXT_FIELDS = ("name", "description")


_SQL_INT_MAX = 2**63 - 1


def _count_arg(name: str, value: Any) -> int:
    """A limit or offset: a whole number >= 0 (a negative one used to mean "no limit" to
    SQLite, a float was truncated, None leaked a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"{name} must be a whole number, not {type(value).__name__} {value!r}",
            hint=f"pass an int >= 0 as {name}",
        )
    if value < 0:
        raise InvalidInputError(
            f"{name} must be >= 0, not {value}", hint=f"pass 0 or more as {name}"
        )
    # SQLite binds 64-bit integers (a raw OverflowError above); no store holds that many rows,
    # so a larger limit or offset means the same as the largest.
    return min(value, _SQL_INT_MAX)


def _rev_arg(name: str, value: Any) -> int:
    """A revision number: an int (int() made "x" a raw ValueError and 1.7 or True revision 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            f"{name} must be a whole number, not {type(value).__name__} {value!r}",
            hint="give a revision number as an int; 'localstore history REF' lists them",
        )
    return value


def _text_arg(name: str, value: Any) -> Any:
    """A folder or tag filter: a string or None (a list was handed to SQLite as is)."""
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(
            f"{name} must be a string, not {type(value).__name__}",
            hint=f"pass one {name} as text"
            + ("; filter by one tag at a time" if name == "tag" else ""),
        )
    if value is not None and not value.isascii():
        try:
            value.encode("utf-8")  # (SQLite binds text as UTF-8: a raw UnicodeEncodeError)
        except UnicodeEncodeError as exc:
            raise _not_unicode(f"the {name} filter", exc, InvalidInputError) from exc
    return value


def _tag_arg(value: Any) -> str | None:
    """A tag filter: None for no filter, else a tag a blueprint can have.

    An empty (or blank) tag was taken as no filter and answered every blueprint, where the caller
    asked for those with a tag no save keeps (saves drop empty tags): refused instead."""
    tag = _text_arg("tag", value)
    if tag is not None and not tag.strip():
        raise InvalidInputError(
            f"the tag filter is empty ({tag!r}): no blueprint has an empty tag",
            hint="pass tag=None (leave --tag out) for every blueprint, or give a tag",
        )
    return tag


def _folder_arg(value: Any) -> str | None:
    """A folder filter as the index stores folders: None for no filter, else NFC like every
    stored path (macOS hands out NFD names) without its outer slashes ("" for "/": the top
    folder). A form a save refuses holds no blueprint: refused too, not answered [].

    An empty or blank folder is refused, as the CLI's ``--folder ''`` is: taken as "no filter"
    it answered every blueprint to an app whose folder variable was left unset."""
    folder = _text_arg("folder", fs.path_text(value))
    if folder is None:
        return None
    if not folder.strip():
        raise InvalidInputError(
            f"the folder filter is empty ({value!r})",
            hint="pass folder=None for every blueprint, or folder='/' for the top folder only",
        )
    folder = unicodedata.normalize("NFC", folder).strip("/")
    if not folder:
        return ""
    if "\\" in folder:
        raise InvalidInputError(
            f"the folder filter {value!r} contains a backslash",
            hint="use '/' between folders, as in 'team/ops'",
        )
    for seg in folder.split("/"):
        try:
            fs._check_segment(seg, str(value))
        except UnsafePathError as exc:
            raise InvalidInputError(
                f"the folder filter {value!r} names no folder a blueprint can be in: {exc.message}",
                hint=exc.hint or "give the folder as 'localstore ls' shows paths: 'team/ops'",
            ) from exc
        if seg.casefold().endswith((fs.YAML_SUFFIX, fs.META_SUFFIX)):
            raise InvalidInputError(
                f"the folder filter {value!r} names a blueprint's file, not a folder",
                hint="give the folder the blueprint is in (the path without its file name)",
            )
    return folder


def _tag_forms(tag: str | None) -> builtins.list[str]:
    """The forms of a tag filter to match: saves store tags NFC, but rows saved before that and
    meta files written by other tools may hold them NFD (a migration would rewrite every such
    row, its meta file and its content hash; two keys of an index lookup cost nothing)."""
    if not tag:
        return []
    if tag.isascii():
        return [tag]
    forms = dict.fromkeys(
        (unicodedata.normalize("NFC", tag), unicodedata.normalize("NFD", tag), tag)
    )
    return builtins.list(forms)


def _flag_arg(name: str, value: Any) -> bool:
    """A bool flag of the public API: True or False (``descending="no"`` counted as true)."""
    if not isinstance(value, bool):
        raise InvalidInputError(
            f"{name} must be True or False, not {type(value).__name__} {value!r}",
            hint=f"pass a bool as {name}",
        )
    return value


def _requests_arg(requests: Any) -> builtins.list[SaveRequest]:
    """save_many()'s items: SaveRequest objects (a dict of save()'s arguments failed deep in the
    save path with an AttributeError), from a list or any other iterable."""
    if isinstance(requests, str | bytes | Mapping | SaveRequest) or not isinstance(
        requests, Iterable
    ):
        raise InvalidInputError(
            f"save_many() takes a list of SaveRequest items, not a {type(requests).__name__}",
            hint="pass [localstore.SaveRequest(path=..., content=...), ...]",
        )
    items = builtins.list(requests)
    for i, item in enumerate(items):
        if not isinstance(item, SaveRequest):
            raise InvalidInputError(
                f"save_many() item {i} is a {type(item).__name__}, not a SaveRequest",
                hint="build each item as localstore.SaveRequest(path=..., content=...), with "
                "the arguments save() takes",
            )
        if not isinstance(item.fields, Mapping):
            raise wrong_type(
                f"save_many() item {i}: fields",
                item.fields,
                "a mapping",
                hint="pass fields={'name': ..., 'tags': [...]} (save()'s meta keywords)",
            )
    return items


def _hook_arg(hook: Any) -> None:
    """A tx_hook: called as hook(cursor, blueprint) inside the index transaction (one that was
    not callable failed there with a raw TypeError, after the files were written)."""
    if not callable(hook):
        raise wrong_type(
            "tx_hook",
            hook,
            "callable",
            hint="pass a function taking (cursor, blueprint), or leave tx_hook out",
        )


def _no_nul(name: str, value: str) -> None:
    if "\x00" in value:
        # (Saved, it could never sync: the cloud's jsonb holds no NUL and quarantined it.)
        raise InvalidMetaError(
            f"{name} {value!r} contains a NUL character",
            hint=f"remove the NUL ('\\x00') from {name}",
        )


def _ambiguous_prefix(prefix: str, paths: builtins.list[str], count: int) -> AmbiguousRefError:
    """The error for an id prefix that ``count`` blueprints have, naming the first ``paths``.

    "matches more than one blueprint" alone left the person to find which, with 'ls' and ids
    cut to 8 characters that may all start alike."""
    more = f" and {count - len(paths)} more" if count > len(paths) else ""
    return AmbiguousRefError(
        f"id prefix {prefix!r} matches {count} blueprints: {', '.join(paths)}{more}",
        hint="give more characters of the id, or the blueprint's path",
    )


def _meta_text_arg(name: str, value: Any) -> None:
    """A text meta field given to save (name, description, author, version)."""
    if not isinstance(value, str):
        raise InvalidMetaError(
            f"{name} must be a string, not {type(value).__name__} {value!r}",
            hint=f"pass {name} as text (str({value!r}) if that is what you mean)",
        )
    _no_nul(name, value)


def _tags_arg(tags: Any) -> str | builtins.list[str]:
    """save's tags: one tag as a str, or a list (any iterable but a mapping) of str."""
    if isinstance(tags, str):
        _no_nul("the tag", tags)
        _new_tag(tags)
        return tags
    if isinstance(tags, Mapping | bytes) or not isinstance(tags, Iterable):
        raise InvalidMetaError(
            f"tags must be a list of strings, not {type(tags).__name__}",
            hint="pass tags=['a', 'b'] (or leave tags out to keep them)",
        )
    tags = builtins.list(tags)  # (a generator is read once, here)
    for tag in tags:
        if not isinstance(tag, str):
            raise InvalidMetaError(
                f"tags must be strings, not {type(tag).__name__} {tag!r}",
                hint="pass each tag as text, e.g. tags=['a', 'b']",
            )
        _no_nul("the tag", tag)
        _new_tag(tag)
    count = len(normalize_tags(tags))
    if count > MAX_TAGS:
        raise InvalidMetaError(
            f"{count:,} tags, over the limit of {MAX_TAGS} a blueprint has",
            hint="keep the tags to a few labels; the description holds longer text",
        )
    return tags


def _new_tag(tag: str) -> None:
    """Refuse a tag given to a save that is empty, too long or not on one line.

    An empty one (tags="", `--tag ""` from an unset variable) was dropped, and so cleared every
    tag the blueprint had."""
    problem = tag_problem(tag)
    if problem:
        raise InvalidMetaError(
            f"the tag {tag[:60]!r}{'...' if len(tag) > 60 else ''} {problem}",
            hint=f"give each tag as a label of 1-{MAX_TAG_CHARS} characters on one line "
            "(tags=[] removes them all)",
        )


def _origin_arg(origin: Any) -> str:
    """The origin of a change: one of ORIGINS (history and sync read it)."""
    if origin not in ORIGINS or not isinstance(origin, str):
        raise InvalidInputError(
            f"unknown origin {origin!r}",
            hint=f"use one of {', '.join(ORIGINS)} (an app's own changes are 'local')",
        )
    return origin


def _nfc(text: Any) -> Any:
    """Text in composed form (NFC); anything else as it is, for the checks further on."""
    if type(text) is not str or text.isascii():
        return text
    return unicodedata.normalize("NFC", text)


def _composed_meta(meta: Any) -> Any:
    """A meta given by the app with its name, description and tags in NFC."""
    if isinstance(meta, BlueprintMeta):
        changes = {k: _nfc(getattr(meta, k)) for k in _TEXT_FIELDS}
        return meta.replace(tags=[_nfc(t) for t in meta.tags], **changes)
    if isinstance(meta, Mapping):
        out = dict(meta)
        for key in _TEXT_FIELDS:
            if key in out:
                out[key] = _nfc(out[key])
        if isinstance(out.get("tags"), list):
            out["tags"] = [_nfc(t) for t in out["tags"]]
        return out
    return meta


def _content_bytes(content: str | bytes | Mapping[str, Any]) -> bytes:
    """The YAML bytes a save writes for ``content`` (raises UnicodeEncodeError for a lone
    surrogate, InvalidInputError for another type)."""
    if isinstance(content, Mapping):
        return dump_yaml(content).encode("utf-8")
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    raise wrong_type(
        "content",
        content,
        "YAML text or a mapping",
        hint="pass the YAML as a str or bytes, or the document as a dict",
    )


def _composed_request(req: SaveRequest) -> SaveRequest:
    """A save request with the meta text it sets in NFC (see BlueprintStore._save_batch)."""
    fields = dict(req.fields)
    for key in _TEXT_FIELDS:
        if key in fields:
            fields[key] = _nfc(fields[key])
    tags = fields.get("tags")
    if isinstance(tags, str):
        fields["tags"] = _nfc(tags)
    elif tags is not None and isinstance(tags, Sequence):
        fields["tags"] = [_nfc(t) for t in tags]
    return dataclasses.replace(req, fields=fields, meta=_composed_meta(req.meta))


def _not_unicode(what: str, exc: UnicodeEncodeError, kind: type[E]) -> E:
    """The error for text holding a lone surrogate, which cannot be written as UTF-8."""
    return kind(
        f"{what} is not valid Unicode text: it holds the lone surrogate {exc.object[exc.start]!r}",
        hint="decode the text from its real encoding (errors='surrogateescape' keeps the"
        " bytes of a file name or argument that is not UTF-8 as such surrogates)",
    )


def _order_sql(cur: Any, sort: str, descending: bool, *, paged: bool, offset: int) -> str:
    """A listing's ORDER BY, LIMIT and OFFSET (their values are bound by the caller).

    A stamp sorts by its text, unless the store holds one not in its own form: then by the
    moment each names (localstore._time_key; the cached listing sorts alike). Ties by path.
    """
    column = f"b.{SORT_COLUMNS[sort]}"
    if sort in TIME_SORTS:
        column = time_order_sql(column, by_moment=sorts_by_moment(cur))
    sql = f"ORDER BY {column} {'DESC' if descending else 'ASC'}"
    if sort != "path":
        sql += ", b.path"
    if paged:
        return sql + " LIMIT ? OFFSET ?"
    # (SQLite has no OFFSET without a LIMIT; -1 = none)
    return sql + " LIMIT -1 OFFSET ?" if offset else sql
