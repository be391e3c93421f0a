"""The base of ``sync._apply.Applier``: what one pass keeps (its stats, policy and the server's
answers about ancestors) and what it reads of local copies, bases and paths."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import localstore.store as _store_module
from localstore import files as fs
from localstore._revisions import revision_text
from localstore.blueprint import BlueprintMeta, content_hash
from localstore.errors import InvalidInputError, LocalStoreError, NotFoundError
from localstore.events import Event
from localstore.store import Row
from sync import _state as st
from sync._apply_paths import conflict_path, utc_stamp
from sync._apply_policy import contained
from sync.merge import ConflictPolicy, Judge, Resolution, Version
from sync.remote import RevisionMatch, ServerRow

if TYPE_CHECKING:
    from localstore.store import BlueprintStore

log = logging.getLogger("sync.engine")


@dataclass
class ApplyStats:
    """What one pass did to the local store."""

    applied: int = 0
    conflicts: int = 0
    merged: int = 0
    errors: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # (id, report line) of rows the applier parked itself (see Applier._out_of_view): they are
    # parked in the row's own transaction, since they also wrote files (a conflict copy).
    parked: list[tuple[str, str]] = field(default_factory=list)


class _ApplierReads:
    """The state of one pass, and its reads of the local copies, the bases and the paths."""

    def __init__(
        self,
        store: BlueprintStore,
        policy: ConflictPolicy,
        *,
        now: Callable[[], datetime],
        stats: ApplyStats,
        ancestors: Mapping[str, RevisionMatch] | None = None,
    ) -> None:
        self.store = store
        self.policy = contained(policy) if callable(policy) else policy
        self.now = now
        self.stats = stats
        # The server's answers to ancestor_probes for these rows, by id: revisions of a row
        # with the content hash of a local copy this device holds without a base.
        self.ancestors: Mapping[str, RevisionMatch] = ancestors or {}
        # Looked up once: a store module without batched saves makes every row take apply_row.
        self._request_type = getattr(_store_module, "SaveRequest", None)
        # The home's ignore rules, read once per pass (one Applier per pass) when a new path
        # needs them, as a save batch does.
        self._ignore_rules: fs.IgnoreRules | None = None
        # The merges' verdicts, by the text's bytes, from the store's memo: those judge_ahead
        # reached before the write lock are found there instead of being reached again inside.
        self._judge: Judge | None = store._merge_verdict if store.validator is not None else None

    # -- reading -------------------------------------------------------------------------------

    def _local_row(self, blueprint_id: str, cur: Any = None) -> Row | None:
        if cur is not None:
            # By id only, on the caller's cursor: store.row() resolves any reference (id, path,
            # prefix) and so runs four queries for an id it does not have (every row of a first
            # download).
            return self.store.row_by_id(blueprint_id, cur)
        try:
            return self.store.row(blueprint_id, include_deleted=True)
        except NotFoundError:
            return None

    def _fresh(self, local: Row, *, ingest: bool = True) -> Row | None:
        """Ingest an edit the watcher has not recorded yet, so it is never overwritten unseen.

        Returns ``local`` itself when the files match the index; with ``ingest=False`` returns
        None instead of ingesting when they do not.
        """
        try:
            y = os.stat(self.store.abspath(local.path))
        except FileNotFoundError:
            return local  # a vanished YAML is the watcher's call (editors delete briefly)
        try:
            m = os.stat(self.store.abspath(fs.meta_path_for(local.path)))
            meta_same = fs.stat_unchanged(
                m, local.meta_size, local.meta_mtime_ns, local.meta_ctime_ns, local.meta_ino
            )
        except FileNotFoundError:
            # Not "unchanged" (as the store's own check): a YAML edited while its meta went
            # missing was taken as clean, and a remote delete then deleted the edit.
            meta_same = local.meta_size == -1  # (-1: indexed without a meta, a flagged row)
        if meta_same and fs.stat_unchanged(
            y, local.yaml_size, local.yaml_mtime_ns, local.yaml_ctime_ns, local.yaml_ino
        ):
            return local
        if not ingest:
            return None
        from localstore._reconcile import Reconciler

        reconciler = Reconciler(self.store, origin="external")
        reconciler.ingest_path(local.path)
        return self._local_row(local.id) or local

    def _unrecorded_text(self, local: Row | None) -> str | None:
        """The YAML on disk of a live, parsed ``local`` whose files the index has not recorded
        (what _fresh would ingest), read for judging ahead; None when they are as recorded or
        it cannot be read (the ingest inside reports that)."""
        if local is None or local.deleted or local.flagged:
            return None
        try:
            if self._fresh(local, ingest=False) is local:
                return None
            raw = fs.read_regular(self.store.abspath(local.path), self.store.limits.max_bytes)
            return raw.decode("utf-8")
        except (LocalStoreError, OSError, UnicodeDecodeError):
            return None

    def _unindexed_text(self, path: str) -> str | None:
        """The YAML of a file at ``path`` where no live row is, read for judging ahead; None
        when there is none or it cannot be read (the save inside reports that).

        One lstat a pulled row, only with a validator: a first download of ten thousand rows
        pays some milliseconds, beside the parse and the app's rules it runs on every row's
        text ahead anyway. Left inside (as it was), one such file held every other writer of
        the home for as long as the validator ran on it."""
        try:
            rel = fs.normalize_path(path)
            if not os.path.lexists(self.store.root.joinpath(*rel.split("/"))):
                return None
            raw = fs.read_regular(self.store.abspath(rel), self.store.limits.max_bytes)
            return raw.decode("utf-8")
        except (LocalStoreError, OSError, UnicodeDecodeError):
            return None

    def _live_row_at(self, cur: Any, path: str) -> Row | None:
        """The live row at ``path`` (read ahead of the lock: apply_row looks again inside)."""
        try:
            return self.store._live_at(cur, fs.normalize_path(path))
        except LocalStoreError:
            return None

    def _text(self, cur: Any, local: Row) -> str:
        rows = cur.execute(
            "SELECT content FROM revisions WHERE id = ? AND rev = ?", (local.id, local.rev)
        ).fetchall()
        return revision_text(rows[0][0]) if rows else ""

    def _ancestor(
        self, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> RevisionMatch | None:
        """The server revision a local copy without a base is, when the server had it.

        Only without a base (a base says what this device last synced; the server's history
        adds nothing) and only while the local copy still has the hash that was asked about.
        """
        if item is not None and item.base_rev is not None:
            return None
        match = self.ancestors.get(r.id)
        if match is None or match.content_hash != local.content_hash:
            return None
        return match

    def _ancestor_base(
        self, local: Row, local_v: Version, item: st.ItemState | None, r: ServerRow
    ) -> st.Base | None:
        """A local copy without a base that the server's history holds is its own base.

        It is that server revision, unedited: the merge then sees only the server's side change
        (content and path) and takes it, instead of a keep-both of an ancestor. Its path is the
        revision's: the server prefers one at the local path, so a rename made here since (no
        revision at the local path) is kept and one made on the server is taken.
        """
        match = self._ancestor(local, item, r)
        if match is None:
            return None
        log.debug(
            "sync: %s is rev %d of the server's history; taking the server's rev %d",
            local.path,
            match.rev,
            r.rev,
        )
        return st.Base(match.rev, match.path, local_v.content, dict(local_v.meta))

    @staticmethod
    def _base_path(base: st.Base | None, item: st.ItemState | None) -> str | None:
        """The path to merge paths against: the content base's, else the recorded base path.

        A base taken back from the record kept besides the index (after `check --fix`) whose
        text this device no longer holds still says where the blueprint was: without it a
        rename made here lost against the server's unchanged path.
        """
        if base is not None:
            return base.path
        if item is not None and item.base_rev is not None and item.base_path:
            return item.base_path
        return None

    def _find_base(
        self, cur: Any, blueprint_id: str, item: st.ItemState | None, r: ServerRow
    ) -> st.Base | None:
        # The path keeps its own base: the recorded one (renames merge separately from content).
        known = item is not None and item.base_rev is not None
        stored = st.get_base(cur, blueprint_id) if known else None
        seen = st.local_revision_with_hash(cur, blueprint_id, r.content_hash)
        if seen is not None and self._descends_from_base(stored, seen, r):
            if r.device == self.store.device_id:
                # Our own write (a push whose response was lost): the server holds exactly what
                # this device had, path included. Pure moves keep the content hash, so ``seen``
                # (the newest revision with it) may be a later local move: as the base's path it
                # made that move look unchanged, and the server's older path won.
                path = r.path
            else:
                path = item.base_path if item is not None and item.base_path else seen.path
            return st.Base(seen.rev, path, r.content, dict(r.meta))
        if item is not None and item.base_rev is not None:
            return stored
        return None

    def _descends_from_base(self, stored: st.Base | None, seen: st.Base, r: ServerRow) -> bool:
        """True when the server's version, found at local revision ``seen``, is a better base.

        It is when the server row is one of this device's own writes (a push whose response was
        lost, then a further edit), or this device had that version after the stored base: then
        it is an ancestor of the local version and base = remote takes local without a spurious
        conflict. A version this device had *before* the base is not: another device set the
        blueprint back to it (A -> B -> A) and that is an edit; taking it as the base would read
        "remote unchanged" and drop that edit without a conflict.
        """
        if stored is None or r.device == self.store.device_id:
            return True  # no base to lose (a new account, a history that is gone), or our write
        return stored.local_rev is not None and seen.rev > stored.local_rev

    def _live_at(self, cur: Any, path: str) -> str | None:
        """The blueprint at exactly ``path``, else the one holding its key (another case); the
        store's own lookup, so that a blueprint core v11 kept under a key of its own beside one
        that is the same name on macOS and Windows (index._v11_path_keys) is updated where it is."""
        row = self.store._live_at(cur, path)
        return None if row is None else row.id

    def _taken(self, path: str, owner: str | None = None) -> bool:
        with self.store.index.read() as cur:
            holder = self._live_at(cur, path)
        if holder is not None and holder != owner:
            return True
        return holder is None and self.store.abspath(path).exists()

    def _conflict_path_for(
        self, path: str, *, stamp: str | None = None, owner: str | None = None
    ) -> str:
        return conflict_path(
            path,
            self.store.device_name,
            stamp or utc_stamp(self.now()),
            lambda p: self._taken(p, owner),
        )

    @staticmethod
    def _chosen(
        resolution: Resolution, local_v: Version, remote_v: Version
    ) -> tuple[str, dict[str, Any]]:
        if resolution.action == "take_local":
            return local_v.content, dict(local_v.meta)
        if resolution.action == "take_remote":
            return remote_v.content, dict(remote_v.meta)
        assert resolution.content is not None and resolution.meta is not None
        return resolution.content, dict(resolution.meta)

    def _hash(self, content: str, meta: dict[str, Any], blueprint_id: str) -> str:
        try:
            m = BlueprintMeta.from_dict({**meta, "id": blueprint_id})
        except InvalidInputError:
            return ""
        return content_hash(content.encode("utf-8"), m)

    def _conflict_event(self, blueprint_id: str, path: str, detail: str) -> None:
        self.stats.conflicts += 1
        self.stats.events.append(Event("conflict", blueprint_id, path, "remote", detail=detail))
