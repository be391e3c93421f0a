"""What a person does about the problems ``check`` reports, one step a kind of problem.

The CLI's ``check`` closing line and ``doctor`` said "run `localstore check --fix`" whatever was
left, and after a ``--fix`` that had repaired all it could: the person ran it again, and the same
files were reported again. Only the kinds in :data:`FIX_REPAIRS` are ``--fix``'s; the others are
the person's, and each line's detail names the file and says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterable

FIX_COMMAND = "`localstore check --fix`"

# What `check --fix` repairs: the index follows the files (and writes a missing meta back). Left
# after a --fix, such a problem is a file changed while it ran.
FIX_REPAIRS = frozenset(
    {"changed", "missing", "missing-meta", "unindexed", "temp-file", "index-integrity"}
)

_SAYS = "`localstore check` says of it"

# What --fix repairs only sometimes: an orphan meta file is removed when it is the leftover of an
# interrupted move, or of a YAML deleted behind the index's back; any other is the person's.
FIX_MAY_REPAIR = frozenset({"orphan-meta"})

# The person's step for each kind --fix leaves as it is (the line's detail says which file).
_YOURS = {
    "invalid-yaml": f"fix or re-save each file as {_SAYS}",
    "flagged": f"fix each file as {_SAYS} (its last good version is kept meanwhile)",
    "invalid-meta": f"fix each meta file as {_SAYS}, or delete it (its blueprint then gets a new "
    "id)",
    "case-collision": "rename one of each two files whose names differ only by case",
    "conflict-copy": "compare each conflict copy with its file, copy what you want to keep into "
    "the blueprint, then delete the copy",
    "edit-kept": "look at the edits `localstore check` lists as kept under data/recovered/, take "
    "what you need, then delete those copies",
    "orphan-meta": "put each meta file's YAML back beside it, or delete the meta file",
    "unsupported-name": f"rename each file to a name the store takes ({_SAYS} why)",
    "unreadable-folder": "make each folder `localstore check` names readable (its permissions)",
    "not-a-file": "move each folder or link away from the meta file name `localstore check` gives",
    "not-scanned": f"move each blueprint to a folder the scan sees, as {_SAYS}",
    "evicted": "bring each evicted file back with its sync client",
    "late-meta": "merge the two blueprints `localstore check` names, then delete one",
    "skipped": "see what `localstore check` says (a file that could not be read, a write that "
    "failed), then run " + FIX_COMMAND,
    "index-not-vacuumed": "free disk space, then run " + FIX_COMMAND,
}


def check_steps(kinds: Iterable[str], *, after_fix: bool = False) -> list[tuple[str, str]]:
    """The steps for check's problems of ``kinds``, as (the kinds, what to do): ``check --fix``
    first when it repairs some of them, then the person's own, one a kind. ``after_fix``: the
    report of a ``--fix``, whose problems it could not repair (a repairable kind left then
    changed while it ran)."""
    kinds = sorted(set(kinds))
    fixes = FIX_REPAIRS if after_fix else FIX_REPAIRS | FIX_MAY_REPAIR
    repairable = ", ".join(k for k in kinds if k in fixes)
    steps = []
    if repairable:
        what = f"run {FIX_COMMAND}"
        if after_fix:
            what = f"changed while --fix ran: {what} again"
        steps.append((repairable, what))
    steps += [(k, _YOURS.get(k, f"as {_SAYS}")) for k in kinds if k not in fixes]
    return steps
