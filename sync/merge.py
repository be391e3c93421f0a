"""The 3-way merge ladder for blueprints, and the conflict policies built on it.

The ladder (DESIGN.md section 5), tried in order, each step only when the one before cannot settle:

1. ``identical`` / ``one_sided``: both sides are equal, or only one side changed: take it.
2. ``line``: a line-based 3-way merge (``merge3``, diff3 rules) that is clean and still a valid
   blueprint: it parses as a YAML mapping without duplicate keys and passes the app's validator.
   Keeps comments and formatting.
3. ``structural``: the three documents parsed and merged key by key; lists of mappings matched by
   ``id``, else by ``name``, else they must be equal. Clean means no key was changed differently
   on both sides. Its text is the sides' key blocks merged (``sync._blockmerge``), else a side's
   text when the result is that side's data, else a dump that loses comments and layout (keys
   and scalars keep their spelling, ``sync._spelling``):
   that is why it comes after the line step, and why the step that produced a result is recorded.
4. Otherwise a conflict, listing the conflicting keys; the policy decides.

Nothing is lost silently: a value changed on both sides differently, an edit against a delete, or a
reorder against a different reorder is a conflict, never a pick. The duplicate-key check matters
here: two non-adjacent insertions of the same key merge cleanly line by line, and a YAML loader would
quietly keep only the last one.

The meta object is merged alongside: ``tags`` as a 3-way set (additions and removals of both sides
kept), ``modified`` as the later of the two, every other key like a structural value.

The line diffs of one merge have a deterministic work budget (``sync._diffbudget``): past it the
merge is a conflict (``TOO_LARGE``), so a document with thousands of edits on each side cannot
hold up a sync cycle for minutes, and the engine keeps both versions.

Deletes are not merged here: the engine applies "an edit beats a delete" before calling in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import yaml

from localstore.blueprint import YAML_LOADER, Validator, dump_yaml, run_validator
from localstore.errors import LocalStoreError
from sync._blockmerge import merge_blocks
from sync._diffbudget import DiffBudget, DiffBudgetExceeded
from sync._merge_lines import (
    _line_merge_styled,
    _Loads,
    _loses_a_change,
    _made_duplicate_items,
    _plain,
    _problems,
    _restyled,
    _style,
)
from sync._merge_values import (
    LIST_MATCH_KEYS as LIST_MATCH_KEYS,  # (public before the split)
)
from sync._merge_values import (
    MISSING,
    _merge_node,
    _ordered_union,
    _same,
    _same_in_order,
)
from sync._spelling import dump_spelled
from sync.errors import MergeError

Step = Literal["identical", "one_sided", "line", "structural"]
MaxStep = Literal["one_sided", "line", "structural"]
Status = Literal["clean", "conflict"]
ResolutionAction = Literal["take_local", "take_remote", "take_merged", "keep_both"]
PolicyName = Literal["merge", "keep-both", "prefer-local", "prefer-remote"]

POLICIES: tuple[PolicyName, ...] = ("merge", "keep-both", "prefer-local", "prefer-remote")
_STEP_RANK = {"one_sided": 1, "line": 2, "structural": 3}
ALIASES_CHANGED = (
    "content: a side changed which values are aliases (*name) or merged in (<<) on a document"
    " both sides changed; the merge of the loaded data cannot tell what follows an anchor"
)
TOO_LARGE = (
    "content: too many edits on both sides of a large document to merge automatically"
    " (the line diffs' work is over the merge budget); both versions are kept"
)


@dataclass(frozen=True, slots=True)
class MergeOutcome:
    """What the ladder made of three versions: clean (content, meta, step) or a conflict."""

    status: Status
    content: str | None = None
    meta: dict[str, Any] | None = None
    step: Step | None = None
    conflicts: list[str] = field(default_factory=list)

    @classmethod
    def clean(cls, content: str, step: Step, meta: dict[str, Any] | None = None) -> MergeOutcome:
        """A settled merge."""
        return cls("clean", content, meta, step, [])

    @classmethod
    def conflict(cls, conflicts: Sequence[str]) -> MergeOutcome:
        """An unsettled merge, naming what conflicts."""
        return cls("conflict", None, None, None, list(conflicts) or ["content"])


@dataclass(frozen=True, slots=True)
class Version:
    """One side of a merge: the YAML text verbatim and the meta object."""

    content: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConflictCase:
    """What a callable policy is given: the three versions and the ladder's (conflict) outcome."""

    base: Version | None
    local: Version
    remote: Version
    outcome: MergeOutcome


@dataclass(frozen=True, slots=True)
class Resolution:
    """What the engine should do: keep local, take remote, write a merge, or keep both."""

    action: ResolutionAction
    content: str | None = None
    meta: dict[str, Any] | None = None
    step: Step | None = None
    conflicts: list[str] = field(default_factory=list)

    @classmethod
    def take_local(cls) -> Resolution:
        """Keep the local version (it is pushed over the remote one)."""
        return cls("take_local")

    @classmethod
    def take_remote(cls) -> Resolution:
        """Take the remote version (the local one stays in history)."""
        return cls("take_remote")

    @classmethod
    def take_merged(
        cls, content: str, meta: Mapping[str, Any], step: Step | None = None
    ) -> Resolution:
        """Write this merged version locally and push it."""
        return cls("take_merged", content, dict(meta), step)

    @classmethod
    def keep_both(cls, conflicts: Sequence[str] = ()) -> Resolution:
        """Remote keeps the id and path; local becomes a conflict copy (and a conflict record)."""
        return cls("keep_both", conflicts=list(conflicts))


ConflictPolicy = PolicyName | Callable[[ConflictCase], Resolution]
# The validator's verdict on a text the merge made, given the text and its loaded document: by
# default the validator run on the document; the sync engine passes the store's, which remembers
# verdicts by the text's bytes so that the merge it runs ahead of the write lock spares the one
# inside (and the save of its result) running the validator again (BlueprintStore._merge_verdict).
Judge = Callable[[str, Mapping[str, Any]], Sequence[str]]


# ---------------------------------------------------------------------------------------------------
# The ladder


def merge3_text(
    base: str | None,
    local: str,
    remote: str,
    *,
    validator: Validator | None = None,
    max_step: MaxStep = "structural",
    judge: Judge | None = None,
) -> MergeOutcome:
    """Merge three YAML texts with the ladder (steps up to ``max_step``); meta is left None.

    ``base`` None means no common ancestor: only identical texts settle at step 1, and the other
    steps merge against an empty document. Never raises for bad input: it is a conflict.
    ``judge``, when given, gives the validator's verdicts instead of ``validator`` (see Judge).
    """
    if local == remote:
        return MergeOutcome.clean(local, "identical")
    if base is not None and local == base:
        return MergeOutcome.clean(remote, "one_sided")
    if base is not None and remote == base:
        return MergeOutcome.clean(local, "one_sided")
    if _STEP_RANK[max_step] < _STEP_RANK["line"]:
        return MergeOutcome.conflict(["content: both sides changed"])
    budget = DiffBudget()
    if judge is None:
        judge = _validator_judge(validator)
    try:
        return _merge_steps(base, local, remote, judge, max_step, budget, _Loads())
    except DiffBudgetExceeded:
        # Thousands of edits on each side of a document of thousands of repeated lines made the
        # line diffs quadratic: minutes inline in a sync cycle. Past the (deterministic) budget
        # the merge is not attempted: a conflict, so the engine keeps both versions.
        return MergeOutcome.conflict([TOO_LARGE])


def _validator_judge(validator: Validator | None) -> Judge:
    def judge(text: str, document: Mapping[str, Any]) -> Sequence[str]:
        return run_validator(validator, document)

    return judge


def _merge_steps(
    base: str | None,
    local: str,
    remote: str,
    judge: Judge,
    max_step: MaxStep,
    budget: DiffBudget,
    loads: _Loads,
) -> MergeOutcome:
    """The line step, then the structural one (up to ``max_step``); raises DiffBudgetExceeded."""
    merged = _line_merge_styled(base, local, remote, budget)
    if merged is not None and not _problems(merged, judge, loads):
        data = loads(merged)  # (it loads: _problems said so) read once for both checks
        if not _made_duplicate_items(data, local, remote, loads) and not _loses_a_change(
            data, base, local, remote, loads
        ):
            return MergeOutcome.clean(merged, "line")
    if _STEP_RANK[max_step] < _STEP_RANK["structural"]:
        return MergeOutcome.conflict(["content: the line merge is not clean"])
    return _structural_merge(base, local, remote, judge, budget, loads)


def merge(
    base: Version | None,
    local: Version,
    remote: Version,
    *,
    validator: Validator | None = None,
    max_step: MaxStep = "structural",
    judge: Judge | None = None,
) -> MergeOutcome:
    """Merge two versions of a blueprint (content with the ladder, meta key by key)."""
    text = merge3_text(
        base.content if base else None,
        local.content,
        remote.content,
        validator=validator,
        max_step=max_step,
        judge=judge,
    )
    meta, meta_conflicts = merge_meta(base.meta if base else None, local.meta, remote.meta)
    if text.status == "conflict" or meta_conflicts:
        return MergeOutcome.conflict([*text.conflicts, *meta_conflicts])
    return replace(text, meta=meta)


def merge_meta(
    base: Mapping[str, Any] | None, local: Mapping[str, Any], remote: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Merge meta objects key by key: a key changed on one side only is that side's; changed on
    both, tags as a 3-way set, modified = the later, the rest as values.

    Returns the merged meta and the list of conflicting keys (empty when clean).
    """
    b = dict(base or {})
    out: dict[str, Any] = {}
    conflicts: list[str] = []
    for key in _ordered_union(local, remote):
        bv, lv, rv = b.get(key, MISSING), local.get(key, MISSING), remote.get(key, MISSING)
        if _same(lv, bv) or _same(rv, bv):
            # Changed on one side only (or on none): that side's value as it is. The set merge
            # put a reordered tag list back in the base's order, and "the later time" kept the
            # unchanged side's when the changed one's clock was behind: merge(b, b, x) was not x,
            # and the engine wrote and pushed a version nobody made.
            value: Any = lv if _same(rv, bv) else rv
        elif key == "tags" and _all_lists(bv, lv, rv):
            value = _merge_tags(bv, lv, rv)
        elif key == "modified":
            value = _later(lv, rv)
        else:
            value, found = _merge_node(bv, lv, rv, f"meta.{key}")
            conflicts.extend(found)
        if value is not MISSING:
            out[key] = value
    return out, conflicts


# ---------------------------------------------------------------------------------------------------
# Policies


def resolve(
    policy: ConflictPolicy,
    base: Version | None,
    local: Version,
    remote: Version,
    *,
    validator: Validator | None = None,
    judge: Judge | None = None,
) -> Resolution:
    """Decide what to do with diverged versions under ``policy``.

    ``merge``: the whole ladder, then keep both. ``keep-both``: step 1 only, then keep both.
    ``prefer-local`` / ``prefer-remote``: step 1, then that side. A callable: the whole ladder,
    then the callable decides. Raises MergeError for an unknown policy or a callable returning
    something other than a usable Resolution (exceptions it raises propagate unchanged).
    """
    if not callable(policy) and policy not in POLICIES:
        raise MergeError(f"unknown conflict policy {policy!r}", hint=f"use one of {POLICIES}")
    full = callable(policy) or policy == "merge"
    max_step: MaxStep = "structural" if full else "one_sided"
    outcome = merge(base, local, remote, validator=validator, max_step=max_step, judge=judge)
    if outcome.status == "clean":
        return _settled(outcome, local, remote)
    if policy in ("merge", "keep-both"):
        return Resolution.keep_both(outcome.conflicts)
    if policy == "prefer-local":
        return Resolution.take_local()
    if policy == "prefer-remote":
        return Resolution.take_remote()
    assert callable(policy)
    return _checked(policy(ConflictCase(base, local, remote, outcome)))


def _settled(outcome: MergeOutcome, local: Version, remote: Version) -> Resolution:
    """Name a clean outcome by what it equals, so the engine pushes or writes only what changed."""
    assert outcome.content is not None and outcome.meta is not None
    if outcome.content == local.content and _same(outcome.meta, local.meta):
        return Resolution.take_local()
    if outcome.content == remote.content and _same(outcome.meta, remote.meta):
        return Resolution.take_remote()
    return Resolution.take_merged(outcome.content, outcome.meta, outcome.step)


_ACTIONS: frozenset[str] = frozenset(("take_local", "take_remote", "take_merged", "keep_both"))


def _checked(result: object) -> Resolution:
    """``result`` if it is a Resolution the engine can carry out; else raises MergeError.

    A Resolution is a plain dataclass an app can build by hand: an unknown action, a merge
    whose content is not text, or conflicts that are not text failed deep inside the sync pass
    (an assert, ``.encode``, ``"; ".join``) and stopped the cycle at that row.
    """
    if not isinstance(result, Resolution):
        raise MergeError(f"the conflict policy returned {type(result).__name__}, not a Resolution")
    if result.action not in _ACTIONS:
        raise MergeError(
            f"the conflict policy returned unknown action {result.action!r}",
            hint=f"use one of {sorted(_ACTIONS)}",
        )
    if result.action == "take_merged":
        if result.content is None or result.meta is None:
            raise MergeError("the conflict policy returned take_merged without content and meta")
        if not isinstance(result.content, str):
            kind = type(result.content).__name__
            raise MergeError(f"the conflict policy returned content that is {kind}, not str")
        if not isinstance(result.meta, Mapping):
            kind = type(result.meta).__name__
            raise MergeError(f"the conflict policy returned meta that is {kind}, not a mapping")
    if not isinstance(result.conflicts, list) or not all(
        isinstance(c, str) for c in result.conflicts
    ):
        raise MergeError("the conflict policy returned conflicts that are not all str")
    return result


# ---------------------------------------------------------------------------------------------------
# Structural step


def _structural_merge(
    base: str | None,
    local: str,
    remote: str,
    judge: Judge,
    budget: DiffBudget,
    loads: _Loads,
) -> MergeOutcome:
    docs: list[Any] = []
    for side, text in (("base", base), ("local", local), ("remote", remote)):
        if text is None:
            docs.append(MISSING)
            continue
        try:
            docs.append(loads(text))
        except LocalStoreError as exc:
            return MergeOutcome.conflict([f"{side} YAML does not parse: {exc.message}"])
    shapes = [_alias_shape(text) for text in (base or "", local, remote)]
    if shapes[1] != shapes[0] or shapes[2] != shapes[0]:
        return MergeOutcome.conflict([ALIASES_CHANGED])
    merged, conflicts = _merge_node(docs[0], docs[1], docs[2], "")
    if conflicts:
        return MergeOutcome.conflict(conflicts)
    # The sides' texts merged key block by key block keep the comments of both sides, where a
    # dump dropped them all. Else the merged data may be one side's own: the other side changed
    # only comments or layout (or nothing the first did not change too), on lines touching the
    # first side's edits; that side's text is the result as written (the server's side first,
    # as with renames). Only data that is neither is dumped.
    text = _block_text(
        base, local, remote, (docs[0], docs[1], docs[2]), merged, judge, budget, loads
    )
    if text is None:
        pairs = ((remote, docs[2]), (local, docs[1]))
        text = next((t for t, d in pairs if _same(merged, d)), None)
    try:
        content = text if text is not None else _dumped(merged, (base, local, remote), docs, loads)
    except LocalStoreError as exc:
        return MergeOutcome.conflict([f"merged document cannot be written: {exc.message}"])
    content = _final_newline(content, base, local, remote, loads)
    problems = _problems(content, judge, loads)
    if problems:
        return MergeOutcome.conflict(problems)
    return MergeOutcome.clean(content, "structural")


def _final_newline(text: str, base: str | None, local: str, remote: str, loads: _Loads) -> str:
    """``text`` ending in a line break or not as the sides' texts say, 3-way (no base: local's
    unless both agree), as ``_restyled`` merges line endings.

    The line step's diff3 keeps a side's removal (or addition) of the final newline when the
    other side's edits are elsewhere, as a change of the last line. Where they touch it, the
    structural step's text took the last block (or the whole text) of whichever side it came
    from, and a side's removal was lost. Left as it is when the change would change the data
    (a ``|`` scalar at the end holds the final line break).
    """
    ends = [t.endswith("\n") for t in (base or "", local, remote)]
    b, lo, re_ = ends if base is not None else (ends[2], ends[1], ends[2])
    want = re_ if lo == b else lo
    if not text or text.endswith("\n") == want:
        return text
    if want:
        changed = text + ("\r\n" if _style(text).crlf else "\n")
    else:
        changed = text.removesuffix("\r\n") if text.endswith("\r\n") else text[:-1]
    try:
        if _same_in_order(loads(changed), loads(text)):
            return changed
    except LocalStoreError:
        pass  # (the text as it is: _problems says what is wrong with it, if anything)
    return text


def _dumped(
    merged: dict[Any, Any],
    texts: tuple[str | None, str, str],
    docs: list[Any],
    loads: _Loads,
) -> str:
    """The merged data dumped with each key and scalar written as a side wrote it
    (``sync._spelling``): ``on:`` stays ``on:`` and ``0755`` stays ``0755``, where a dump of the
    data wrote ``true:`` and ``493``, which a YAML 1.2 reader (GitHub Actions) reads otherwise.
    Taken only when it loads to exactly the merged data; else the plain dump.
    Raises LocalStoreError when the data cannot be dumped at all.
    """
    sides = [None if t is None else (t, d) for t, d in zip(texts, docs, strict=True)]
    try:
        text = dump_spelled(merged, sides, same=_same)
        if _same_in_order(loads(text), merged):
            return text
    except (yaml.YAMLError, LocalStoreError, RecursionError):
        pass  # the plain dump below says what is wrong, if anything is
    return dump_yaml(merged)


def _alias_shape(text: str) -> frozenset[tuple[Any, ...]]:
    """Where a text's values are aliases of which others, and its mappings' merge keys (``<<``)
    with the keys they set themselves (which override the merged ones).

    The structural step merges loaded data, where an alias is a copy: a side that pins a merged
    key to the value it had (``timeout: 10`` beside ``<<: *defaults``), writes out an alias's
    value, or makes a copy an alias, changed no data, and the other side's edit of the anchor
    flowed into that place in the merge: the change was dropped without a word. Empty for the
    texts without ``&`` (no anchor, no alias) and ``<<``, which are most, without composing.
    """
    if "&" not in text and "<<" not in text:
        return frozenset()
    try:
        root = yaml.compose(text, Loader=YAML_LOADER)
    except yaml.YAMLError:
        return frozenset({("unreadable",)})
    shape: set[tuple[Any, ...]] = set()
    first: dict[int, tuple[Any, ...]] = {}
    stack: list[tuple[tuple[Any, ...], Any]] = [((), root)] if root is not None else []
    while stack:
        path, node = stack.pop()
        if id(node) in first:  # composed aliases are the anchor's node itself
            shape.add(("alias", path, first[id(node)]))
            continue
        first[id(node)] = path
        if isinstance(node, yaml.MappingNode):
            keys = [k.value if isinstance(k, yaml.ScalarNode) else id(k) for k, _ in node.value]
            merge = [k.tag == "tag:yaml.org,2002:merge" for k, _ in node.value]
            if any(merge):
                own = frozenset(k for k, m in zip(keys, merge, strict=True) if not m)
                shape.add(("merge", path, own))
            stack.extend(((*path, k), v) for k, (_, v) in zip(keys, node.value, strict=True))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(((*path, i), v) for i, v in enumerate(node.value))
    return frozenset(shape)


def _block_text(
    base: str | None,
    local: str,
    remote: str,
    docs: tuple[Any, Any, Any],
    merged: dict[Any, Any],
    judge: Judge,
    budget: DiffBudget,
    loads: _Loads,
) -> str | None:
    """The sides' texts merged block by block (``sync._blockmerge``), or None.

    Accepted only when it loads, with the bounded loader, to exactly the structural result (key
    order included) and passes the line step's checks: a cut in the wrong place, a diff3 that
    got a block wrong, or an anchor it missed falls back to the dump instead of changing data.
    """
    texts = [base or "", local, remote]
    if any(_style(t).crlf is None for t in texts):
        return None
    plain = [_plain(t) for t in texts]
    text = merge_blocks(
        None if base is None else plain[0],
        plain[1],
        plain[2],
        docs,
        merged,
        same=_same,
        matcher=budget.matcher(),
    )
    if text is None:
        return None
    text = _restyled(text, base, local, remote)
    try:
        loaded = loads(text)
    except LocalStoreError:
        return None
    if not _same_in_order(loaded, merged) or _problems(text, judge, loads):
        return None
    return text


def _all_lists(*values: Any) -> bool:
    return all(v is MISSING or isinstance(v, list) for v in values)


def _merge_tags(base: Any, local: Any, remote: Any) -> list[Any]:
    """3-way set merge: a tag is kept unless a side removed it; additions of both sides kept."""
    b = [] if base is MISSING else base
    lo = [] if local is MISSING else local
    ro = [] if remote is MISSING else remote
    kept = [t for t in lo if t in ro or t not in b]
    return kept + [t for t in ro if t not in lo and t not in b and t not in kept]


def _later(local: Any, remote: Any) -> Any:
    """The later of two ISO timestamps (the present one if only one is)."""
    if local is MISSING or remote is MISSING:
        return remote if local is MISSING else local
    try:
        return local if _instant(local) >= _instant(remote) else remote
    except (TypeError, ValueError):
        return max(str(local), str(remote))


def _instant(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    # A naive timestamp is taken as UTC, the format localstore writes.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
