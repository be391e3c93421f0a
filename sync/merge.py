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

import math
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import merge3
import yaml

from localstore.blueprint import Validator, dump_yaml, parse_yaml, run_validator
from localstore.errors import LocalStoreError
from sync._blockmerge import merge_blocks
from sync._diffbudget import DiffBudget, DiffBudgetExceeded
from sync._spelling import dump_spelled
from sync.errors import MergeError

Step = Literal["identical", "one_sided", "line", "structural"]
MaxStep = Literal["one_sided", "line", "structural"]
Status = Literal["clean", "conflict"]
ResolutionAction = Literal["take_local", "take_remote", "take_merged", "keep_both"]
PolicyName = Literal["merge", "keep-both", "prefer-local", "prefer-remote"]

POLICIES: tuple[PolicyName, ...] = ("merge", "keep-both", "prefer-local", "prefer-remote")
LIST_MATCH_KEYS = ("id", "name")
_STEP_RANK = {"one_sided": 1, "line": 2, "structural": 3}
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ALIASES_CHANGED = (
    "content: a side changed which values are aliases (*name) or merged in (<<) on a document"
    " both sides changed; the merge of the loaded data cannot tell what follows an anchor"
)
TOO_LARGE = (
    "content: too many edits on both sides of a large document to merge automatically"
    " (the line diffs' work is over the merge budget); both versions are kept"
)


class _Missing:
    """A key or item absent on one side (distinct from a YAML null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
# The line step's check: a value no line result can be (``_filled``), so the check refuses it.
_REFUSED: Any = _Missing()
_NO_FILL: Any = _Missing()  # a structural merge proper, not the line step's check


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
    node = yaml.compose(text, Loader=_Loader)
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
        root = yaml.compose(text, Loader=_Loader)
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


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
