"""The structural merge of loaded YAML data: 3-way merge of values, mappings and lists (keyed by
``id``, else ``name``), the order of merged keys, and the deep equality the merge uses.

:func:`_merge_node` is the structural step's core (``sync.merge``); the line step's check runs it
with ``fill`` (the line result's data) to see whether the line merge lost a change.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

LIST_MATCH_KEYS = ("id", "name")


class _Missing:
    """A key or item absent on one side (distinct from a YAML null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
# The line step's check: a value no line result can be (``_filled``), so the check refuses it.
_REFUSED: Any = _Missing()
_NO_FILL: Any = _Missing()  # a structural merge proper, not the line step's check


def _merge_node(
    base: Any, local: Any, remote: Any, where: str, fill: Any = _NO_FILL
) -> tuple[Any, list[str]]:
    """3-way merge of one value; returns (merged or MISSING, conflicting paths).

    ``fill``, when given (the line step's check), is a line result's data at this path: where
    the merge conflicts, its value is taken instead of MISSING (``_filled``), so the result is
    the structural merge where that one settles and the line result's value where it conflicts.
    """
    if _same(local, remote):
        return local, []
    if _same(local, base):
        return remote, []
    if _same(remote, base):
        return local, []
    if isinstance(local, dict) and isinstance(remote, dict) and _dict_or_missing(base):
        return _merge_dicts({} if base is MISSING else base, local, remote, where, fill)
    if isinstance(local, list) and isinstance(remote, list) and _list_or_missing(base):
        return _merge_lists([] if base is MISSING else base, local, remote, where, fill)
    return _filled(base, local, remote, fill), [where or "<document>"]


def _merge_dicts(
    base: dict[Any, Any],
    local: dict[Any, Any],
    remote: dict[Any, Any],
    where: str,
    fill: Any = _NO_FILL,
) -> tuple[Any, list[str]]:
    merged: dict[Any, Any] = {}
    conflicts: list[str] = []
    owns = [_own_keys(side) for side in (base, local, remote)]
    for key in _ordered_union(local, remote):
        path = _join(where, str(key))
        value, found = _merge_node(
            base.get(key, MISSING),
            local.get(key, MISSING),
            remote.get(key, MISSING),
            path,
            _fill_at(fill, key),
        )
        conflicts.extend(found)
        b_key, l_key, r_key = (own.get(key, MISSING) for own in owns)
        spelled, clash = _merge_key(b_key, l_key, r_key, value is not MISSING)
        if clash:
            if path not in found:
                conflicts.append(path)
            # (the line step's check: no line result settles a key's type for it)
            value = MISSING if fill is _NO_FILL else _REFUSED
        if value is not MISSING:
            merged[spelled] = value
    # Mapping order carries no meaning in YAML, so two different reorders are not a conflict.
    order, _ = _merge_order(list(base), list(local), list(remote), set(merged), where)
    # (the keys as merged: ``order`` holds the sides' own, and ``1`` finds ``True`` in a dict)
    chosen = _own_keys(merged)
    return {chosen[key]: merged[key] for key in order}, conflicts


def _own_keys(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    """Each key of ``mapping`` by itself: the key object a dict holds for an equal one."""
    return {key: key for key in mapping}


def _merge_key(base: Any, local: Any, remote: Any, kept: bool) -> tuple[Any, bool]:
    """The key a merged entry is written with, its type merged 3-way, and whether the sides'
    changes of it conflict.

    ``1``, ``1.0`` and ``true`` are one key in a dict (``1 == 1.0 == True``) but three in YAML:
    a side that respelled ``1:`` as ``true:`` changed the data. Before, that change was not
    seen, and the other side's edit of the value took the other side's key with it. ``kept``:
    the entry's value is in the merge (else a respelling against a delete is the conflict).
    """
    local_changed = local is not MISSING and base is not MISSING and not _same_type(local, base)
    remote_changed = remote is not MISSING and base is not MISSING and not _same_type(remote, base)
    if not kept:
        return base, local_changed or remote_changed
    differ = local is not MISSING and remote is not MISSING and not _same_type(local, remote)
    if differ and (base is MISSING or (local_changed and remote_changed)):
        return local, True  # two respellings (or both sides added the key, as two types)
    if local_changed:
        return local, False
    if remote_changed:
        return remote, False
    return (local if local is not MISSING else remote), False


def _same_type(a: Any, b: Any) -> bool:
    return type(a) is type(b)


def _merge_lists(
    base: list[Any], local: list[Any], remote: list[Any], where: str, fill: Any = _NO_FILL
) -> tuple[Any, list[str]]:
    for match in LIST_MATCH_KEYS:
        if all(_keyed_by(items, match) for items in (base, local, remote)):
            return _merge_keyed(base, local, remote, match, where, fill)
    return _filled(base, local, remote, fill), [where or "<document>"]


def _merge_keyed(
    base: list[Any],
    local: list[Any],
    remote: list[Any],
    match: str,
    where: str,
    fill: Any = _NO_FILL,
) -> tuple[Any, list[str]]:
    by = [{item[match]: item for item in items} for items in (base, local, remote)]
    filled: Any = None
    if fill is not _NO_FILL:
        keyed = isinstance(fill, list) and _keyed_by(fill, match)
        filled = {item[match]: item for item in fill} if keyed else {}
    merged: dict[Hashable, Any] = {}
    conflicts: list[str] = []
    for key in _ordered_union(by[1], by[2]):
        value, found = _merge_node(
            by[0].get(key, MISSING),
            by[1].get(key, MISSING),
            by[2].get(key, MISSING),
            f"{where}[{match}={key!r}]",
            _NO_FILL if filled is None else filled.get(key, MISSING),
        )
        conflicts.extend(found)
        if value is not MISSING:
            merged[key] = value
    order, order_conflict = _merge_order(list(by[0]), list(by[1]), list(by[2]), set(merged), where)
    if order_conflict:
        conflicts.append(f"{where or '<document>'}: both sides reordered the list differently")
        if filled is not None:
            # No order settles here: the line result's, when it holds exactly the merged items.
            if set(filled) != set(merged):
                return _REFUSED, conflicts
            order = list(filled)
    return [merged[key] for key in order], conflicts


def _fill_at(fill: Any, key: Any) -> Any:
    """The line result's value under ``key`` (MISSING when it has none)."""
    if fill is _NO_FILL:
        return _NO_FILL
    return fill.get(key, MISSING) if isinstance(fill, dict) else MISSING


def _filled(base: Any, local: Any, remote: Any, fill: Any) -> Any:
    """What a conflicting path holds: MISSING in a merge, the line result's value in its check,
    when both sides hold a string there, or a list (lines of one value diff3 merged) in which
    each item is as often as the sides' changes make it.

    diff3 takes both sides' insertions of an equal item at different places in a list without
    ids: the item was in the result twice (a step run twice) though no side had it twice. And
    it sees an item moved on one side as a deleted line and an added one: with that item
    deleted on the other side, both deletions agree and the added line stays, so the deleted
    step came back (run again) in a clean merge. So an item a side holds as often as the base
    does must be in the result as often as the other side holds it (the other side's change,
    a delete or an addition, is kept); one both sides hold a different number of times, no
    more often than either side. Lines of a multi-line string are not counted: two sides adding
    ``fi`` or ``}`` to one script is ordinary, and the text merge of a scalar is diff3's by
    design (a line moved against its delete comes back there, as in git).
    """
    if fill is _NO_FILL:
        return MISSING
    if _both(str, local, remote):
        return fill if isinstance(fill, str) else _REFUSED
    if not _both(list, local, remote) or not isinstance(fill, list):
        # Not lines of one value that diff3 merged: an edit against a delete (diff3 saw a key
        # or step moved and edited on one side, deleted on the other, as two agreeing deletes
        # and one added text, and brought it back), or a value of another type changed on
        # both sides. The structural conflict stands.
        return _REFUSED
    lists = (base if isinstance(base, list) else [], local, remote, fill)
    b, lo, re_, got = (Counter(_canon(item) for item in items) for items in lists)
    for item in b.keys() | lo.keys() | re_.keys() | got.keys():
        if lo[item] == b[item]:
            ok = got[item] == re_[item]
        elif re_[item] == b[item]:
            ok = got[item] == lo[item]
        else:
            ok = got[item] <= max(lo[item], re_[item])
        if not ok:
            return _REFUSED
    return fill


def _both(kind: type, local: Any, remote: Any) -> bool:
    return isinstance(local, kind) and isinstance(remote, kind)


def _canon(value: Any) -> Hashable:
    """A hashable stand-in for a loaded value, equal exactly when ``_same`` says so."""
    if isinstance(value, dict):
        return ("map", frozenset((_canon(k), _canon(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("seq", tuple(_canon(v) for v in value))
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    try:
        hash(value)
    except TypeError:
        return ("other", repr(value))
    return (type(value), value)


def _merge_order(
    base: list[Any], local: list[Any], remote: list[Any], keep: set[Any], where: str
) -> tuple[list[Any], bool]:
    """Order the kept keys: a side that reordered wins; both reordering differently conflicts.

    Returns (order, conflict). Keys one side added go right after their predecessor on that side.
    """
    in_base = set(base)

    def reordered(side: list[Any]) -> bool:
        mine = set(side)
        return [k for k in side if k in in_base and k in keep] != [
            k for k in base if k in mine and k in keep
        ]

    conflict = False
    if not reordered(local):
        skeleton, extra_side = remote, local
    elif not reordered(remote):
        skeleton, extra_side = local, remote
    else:
        skeleton, extra_side = local, remote
        both = set(local) & set(remote) & keep
        conflict = [k for k in local if k in both] != [k for k in remote if k in both]
    order = [k for k in skeleton if k in keep]
    placed = set(order)
    for i, key in enumerate(extra_side):
        if key in placed or key not in keep:
            continue
        before = next((k for k in reversed(extra_side[:i]) if k in placed), MISSING)
        order.insert(0 if before is MISSING else order.index(before) + 1, key)
        placed.add(key)
    return order, conflict


# ---------------------------------------------------------------------------------------------------
# Helpers


def _same(a: Any, b: Any) -> bool:
    """Deep equality that tells true from 1 and 1 from 1.0, and NaN from nothing but NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return _same_keys(a, b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _same_keys(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    """The same keys, each of the same type: ``keys() ==`` takes ``1``, ``1.0`` and ``true`` for
    one key, and a side that respelled one had changed nothing for the merge."""
    if a.keys() != b.keys():
        return False
    own: dict[Any, Any] | None = None
    for key_a, key_b in zip(a, b, strict=True):
        if key_a is key_b or (type(key_a) is type(key_b) and key_a == key_b):
            continue  # (in the same order, as most are: no lookup)
        if own is None:
            own = _own_keys(b)
        if type(own[key_a]) is not type(key_a):
            return False
    return True


def _same_in_order(a: Any, b: Any) -> bool:
    """``_same``, and every mapping's keys in the same order."""
    if not _same(a, b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_in_order(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_in_order(x, y) for x, y in zip(a, b, strict=True))
    return True


def _keyed_by(items: list[Any], match: str) -> bool:
    """Every item is a mapping with a unique scalar ``match`` key."""
    keys = []
    for item in items:
        if not isinstance(item, dict):
            return False
        key = item.get(match, MISSING)
        if isinstance(key, bool) or not isinstance(key, str | int):
            return False
        keys.append(key)
    return len(keys) == len(set(keys))


def _ordered_union(first: Mapping[Any, Any], second: Mapping[Any, Any]) -> list[Any]:
    return [*first, *(k for k in second if k not in first)]


def _dict_or_missing(value: Any) -> bool:
    return value is MISSING or isinstance(value, dict)


def _list_or_missing(value: Any) -> bool:
    return value is MISSING or isinstance(value, list)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
