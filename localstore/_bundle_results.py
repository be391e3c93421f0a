"""What an export or import reports: the result types of :mod:`localstore.archive`, and the
conflict policies and skip causes an import item names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localstore._bundle_read import BundleEntry
from localstore.blueprint import BlueprintMeta

CONFLICT_POLICIES = ("skip", "overwrite", "keep-both", "merge")


# Why an item is skipped, which says what lets the next import take it. A conflict: another
# --on-conflict policy. A file here that does not parse, or a rename onto a path another blueprint
# holds here: no policy; fixing the file, or moving one of the two, does.
SKIP_CAUSES = ("conflict", "unparsable", "path-held")
ORIGIN = "import"

Merger = Callable[[str | None, str, str], str | None]
"""``merger(base, local, incoming)`` -> merged YAML text, or None when it cannot merge cleanly.

The CLI passes the sync merge ladder when the ``sync`` package is installed; ``localstore`` itself
never imports ``sync``. ``base`` is None: a bundle carries no common ancestor.
"""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    count: int
    size: int
    encrypted: bool
    ids: tuple[str, ...]
    # Blueprints whose files here do not parse (flagged): exported as last indexed, which is not
    # what their files now hold.
    flagged: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "path": str(self.path),
            "count": self.count,
            "size": self.size,
            "encrypted": self.encrypted,
            "ids": list(self.ids),
            "flagged": list(self.flagged),
        }


@dataclass(slots=True)
class ImportItem:
    """One blueprint of a bundle and what import does (or did) with it."""

    id: str
    path: str
    # create | unchanged | move | skip | overwrite | restore | keep-both | merge | refused
    action: str
    reason: str = ""
    target_id: str = ""
    target_path: str = ""
    status: str = "planned"  # planned | done | failed
    error: str = ""
    rev: int = 0
    skip_cause: str = ""  # one of SKIP_CAUSES for a skip, else empty
    # Private to apply: where the content comes from and the revision the plan was made against.
    _entry: BundleEntry | None = field(default=None, repr=False)
    _content: bytes | None = field(default=None, repr=False)
    _meta: BlueprintMeta | None = field(default=None, repr=False)
    _expected_rev: int | None = field(default=None, repr=False)
    _src_hash: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "id": self.id,
            "path": self.path,
            "action": self.action,
            "reason": self.reason,
            "target_id": self.target_id,
            "target_path": self.target_path,
            "status": self.status,
            "error": self.error,
            "rev": self.rev,
            "skip_cause": self.skip_cause,
        }


@dataclass(slots=True)
class ImportResult:
    """The plan (dry run) or the outcome of an import."""

    bundle: dict[str, Any]
    policy: str
    dry_run: bool
    items: list[ImportItem]
    # Unlisted files under blueprints/ a file manager left (.DS_Store, Thumbs.db, desktop.ini,
    # ``._*``) and a Mac zip's __MACOSX/ entries (VerifiedBundle.ignored_entries): passed by
    # unread, named so that nothing is passed by without a word.
    ignored_entries: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of items per action (failed items counted under 'failed')."""
        out: dict[str, int] = {}
        for it in self.items:
            key = "failed" if it.status == "failed" else it.action
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def changed(self) -> int:
        """Number of blueprints this import changed (or would change)."""
        return sum(
            1
            for it in self.items
            if it.action not in ("unchanged", "skip") and it.status != "failed"
        )

    @property
    def conflicts_skipped(self) -> int:
        """Blueprints left as they were (skipped, for any cause): they need a person's attention."""
        return sum(1 for it in self.items if it.action == "skip")

    def skipped(self) -> dict[str, int]:
        """Number of skipped items per cause (SKIP_CAUSES), causes with none left out."""
        out: dict[str, int] = {}
        for it in self.items:
            if it.action == "skip":
                out[it.skip_cause] = out.get(it.skip_cause, 0) + 1
        return out

    @property
    def failed(self) -> int:
        """Items that could not be applied (the store changed under the import)."""
        return sum(1 for it in self.items if it.status == "failed")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view."""
        return {
            "bundle": self.bundle,
            "policy": self.policy,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "changed": self.changed,
            "items": [it.to_dict() for it in self.items],
            "ignored_entries": list(self.ignored_entries),
        }
