"""Writing a server row through the store (``sync._apply.Applier``'s layer over its reads): the
checks that can refuse it first, the room it needs (a local blueprint moved off its path), and
the base recorded in the save's own transaction."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore.blueprint import BlueprintMeta
from localstore.errors import AlreadyExistsError, InvalidInputError, UnsafePathError
from localstore.store import Row
from sync import _state as st
from sync._apply_reads import _ApplierReads
from sync._apply_rows import refuse_unreadable, stored_meta
from sync._kept_merges import highest_kept
from sync.remote import ServerRow

if TYPE_CHECKING:
    from localstore.blueprint import Blueprint


class UnparsedInTheWay(AlreadyExistsError):
    """A local blueprint must leave a path (the server gives it to another), but its files do not
    parse here: an edit in progress (a half-typed YAML), or a meta that went bad.

    Moving it re-reads and re-checks its files (``store.move`` is a save at a new path), which
    refused them (InvalidYAMLError) and stopped every sync cycle at the same blueprint until the
    person fixed the file: nothing else synced meanwhile. Moving the pair as bytes would keep
    them but take the file away from under the editor that has it open (its next save then
    writes the finished text over the server's blueprint at the old path). So it is left
    exactly as it is, as an ``unparsable_local`` row leaves it (Applier._wait_for_parse): a
    pulled row that needs its path is parked (``path_blocked``, an AlreadyExistsError: it runs
    again once the file parses, see :func:`path_unblocked`), and a push that met the path taken
    is parked (``unparsable_local``, see the engine's ``_path_taken``). Once the file parses, it
    moves aside as any blueprint in the way does.
    """

    def __init__(self, local: Row, path: str, taker: str) -> None:
        super().__init__(
            f"{local.path} does not parse here ({local.flagged}) and {taker} needs its path "
            f"{path}: the file is left exactly as it is, and moves aside once it parses",
            hint="fix the file (or move it), then sync",
        )
        self.local = local


class _ApplierWrites(_ApplierReads):
    """Write server rows, and move local blueprints out of their way."""

    def move_for_path_conflict(
        self, cur: Any, blueprint_id: str, winner: ServerRow, *, reason: str = "path_taken"
    ) -> str | None:
        """Move a local blueprint off a path the server gave to ``winner``; returns its new path."""
        local = self._local_row(blueprint_id)
        if local is None or local.deleted:
            return None
        local = self._fresh(local) or local  # the record keeps the text on disk, edit included
        if local.deleted:
            # Recording the files retired it: the unrecorded change was its own meta come late
            # (localstore/_late_meta.py; the arriving id holds this path now, and its own push or
            # this pass's pull meets the server's row), or another pair's meta put over it.
            # Nothing is left to move: moving it anyway failed this pass, and every pass after
            # it, on a deleted id.
            return None
        if local.flagged:
            raise UnparsedInTheWay(local, winner.path, f"the server's blueprint {winner.id}")
        text = self._text(cur, local)
        item = st.get_item(cur, local.id)
        # A blueprint the server already has is moved, not copied: resolving must keep it.
        synced = item is not None and item.base_rev is not None and not item.base_deleted
        new_path = self._conflict_path_for(local.path)
        self.store.move(local.id, new_path, origin="merge")
        st.add_conflict(
            cur,
            blueprint_id=winner.id,
            path=winner.path,
            copy_id=local.id,
            copy_path=new_path,
            reason=reason,
            base=None,
            local=text,
            remote=winner.content,
            base_rev=None,
            remote_rev=winner.rev,
            copy_synced=synced,
            above=highest_kept(self.store.paths.state),
        )
        self._conflict_event(
            local.id, new_path, f"{local.path} is taken on the server by {winner.id}; moved here"
        )
        return new_path

    # -- writing -------------------------------------------------------------------------------

    def _save_remote(self, cur: Any, r: ServerRow) -> Blueprint:
        """Write the server version (content, meta, path) under its id, with the base recorded."""
        meta = BlueprintMeta.from_dict(stored_meta(r), source=f"server row {r.id}")
        if meta.id != r.id:
            raise InvalidInputError(f"server row {r.id} carries meta id {meta.id}")
        path = fs.normalize_path(r.path)
        self._ensure_path_free(cur, path, r.id, r)
        bp = self.store.save(
            path, r.content, meta=meta, id=r.id, origin="remote", tx_hook=self._hook(r)
        )
        self.stats.applied += 1
        return bp

    def _check_row(self, r: ServerRow, local: Row | None) -> UnsafePathError | None:
        """Raise what :meth:`_save_remote` would raise for this live row (InvalidInputError).

        A path this home never scans is returned, not raised: the row is valid, it just cannot
        be held here (:meth:`_out_of_view`).
        """
        refuse_unreadable(r)
        meta = BlueprintMeta.from_dict(r.meta, source=f"server row {r.id}")
        if meta.id != r.id:
            raise InvalidInputError(f"server row {r.id} carries meta id {meta.id}")
        path = fs.normalize_path(r.path)
        away = None
        if local is None or local.deleted or local.path != path:
            # The store refuses a hidden or ignored new path (an older client's row, or another
            # device's .localstoreignore) only in the save, after a conflict copy is written.
            away = self._unscanned(path)
            if away is None:
                # A name new here that Windows reserves (an older client made it): refused,
                # so the row is quarantined and any copy this device holds stays as it is.
                fs.check_new_name(path)
        if away is None:
            self._check_path_shape(path)
        self.store.check_yaml(r.content.encode("utf-8"))  # remembered: the save skips it
        return away

    def _unscanned(self, path: str) -> UnsafePathError | None:
        """Why reconcile and the watcher never look at this normalized path, or None."""
        if self._ignore_rules is None:
            self._ignore_rules = fs.IgnoreRules.for_root(self.store.root)
        try:
            self.store.check_scanned(path, self._ignore_rules)
        except UnsafePathError as exc:
            return exc
        return None

    def unscanned(self, path: str) -> bool:
        """True when a server path is valid but lies where this home never looks (see
        :meth:`_out_of_view`); such a row refused by ``save_many`` goes through apply_row."""
        try:
            normalized = fs.normalize_path(path)
        except InvalidInputError:
            return False
        return self._unscanned(normalized) is not None

    def _check_path_shape(self, path: str) -> None:
        """Raise UnsafePathError when this home cannot hold ``path``'s files as they are named.

        A folder on the way that is a file here, or a file name that is a folder here (another
        server row, or a person's folder, uses the name the other way round).
        """
        parts = path.split("/")
        here = self.store.root
        for segment in parts[:-1]:
            here = here / segment
            if os.path.lexists(here) and not os.path.isdir(here):
                raise UnsafePathError(
                    f"{path} needs a folder where this device has a file: {here}",
                    hint="rename one of them on the device that has both",
                )
        for rel in (path, fs.meta_path_for(path)):
            target = self.store.root.joinpath(*rel.split("/"))
            if os.path.isdir(target) and not os.path.islink(target):
                raise UnsafePathError(
                    f"{rel} is a folder on this device, not a file",
                    hint="rename the folder or the blueprint",
                )

    def _ensure_path_free(self, cur: Any, path: str, owner: str, r: ServerRow) -> None:
        other = self._live_at(cur, path)
        if other is None and os.path.lexists(self.store.root.joinpath(*path.split("/"))):
            # A file an editor wrote that the watcher has not indexed yet: index it now, so it
            # moves aside like any local blueprint (the save would refuse the path otherwise).
            from localstore._reconcile import Reconciler

            Reconciler(self.store, origin="external").ingest_path(path)
            other = self._live_at(cur, path)
        if other is None or other == owner:
            return
        if self._left_on_server(cur, other, path, r):
            self._move_aside(cur, other, r)
            return
        self.move_for_path_conflict(cur, other, r)

    @staticmethod
    def _left_on_server(cur: Any, holder: str, path: str, r: ServerRow) -> bool:
        """True when the server itself moved ``holder`` off ``path`` (or deleted it) since.

        The server last had ``holder`` at ``path`` and now gives ``path`` to row ``r``; paths are
        unique there, so ``holder`` has a newer row of its own that this pull has not reached
        yet (rows come in seq order). Its local copy is not in anyone's way: no collision.
        """
        if r.deleted or fs.path_key(r.path) != fs.path_key(path):
            return False
        item = st.get_item(cur, holder)
        # The server's own uniqueness key (lower(path)), not path_key: two server paths that
        # differ only in Unicode form or case folding (NFD/NFC, 'ß'/'ss') can both be live
        # there and collide only here; that is a real collision (it never moves by itself).
        return (
            item is not None
            and item.base_rev is not None
            and not item.base_deleted
            and item.base_path.lower() == r.path.lower()
        )

    def _move_aside(self, cur: Any, holder: str, r: ServerRow) -> None:
        """Park a blueprint the server moved away at a free path until its own row arrives.

        No conflict record (it is nobody's copy: resolving one deleted the blueprint everywhere)
        and no push: a clean one stays clean, so its row puts it where the server has it.
        """
        local = self._local_row(holder)
        if local is None or local.deleted:
            return
        # An unrecorded edit is recorded first (it makes the blueprint dirty: pushed, not parked
        # as clean); the store refuses a remote move over it (ChangedOnDiskError), which stopped
        # every cycle and rolled the recorded edit back with the row's savepoint.
        local = self._fresh(local) or local
        if local.flagged:
            # Its own row (which moves it away) waits for the file to parse, parked as
            # unparsable_local; the store refused to move its files (see UnparsedInTheWay).
            raise UnparsedInTheWay(local, r.path, f"the server's blueprint {r.id}")
        item = st.get_item(cur, holder)
        clean = local.op_id <= (item.synced_op_id if item is not None else 0)
        self.store.move(holder, self._conflict_path_for(local.path), origin="remote")
        if clean:
            st.mark_synced(cur, holder, st.current_op_id(cur, holder))

    def _hook(self, r: ServerRow) -> Callable[[Any, Blueprint], None]:
        def hook(cur: Any, bp: Blueprint) -> None:
            # A delete's Blueprint is the tombstone: its base keeps the last live content.
            self._record(cur, r, synced=True, held_hash=None if r.deleted else bp.content_hash)

        return hook

    def _record(
        self, cur: Any, r: ServerRow, *, synced: bool, held_hash: str | None = None
    ) -> None:
        if not synced:
            # Still dirty, on a new base: the next push must not replay an earlier op's answer.
            st.renew_push_op(cur, r.id, self.store.index.next_op_id(cur))
        st.record_base(
            cur,
            r.id,
            rev=r.rev,
            seq=r.seq,
            content_hash=r.content_hash,
            path=r.path,
            deleted=r.deleted,
            content=None if r.deleted else r.content,
            meta=None if r.deleted else dict(r.meta),
            synced_op_id=st.current_op_id(cur, r.id) if synced else None,
            held_hash=held_hash,
        )
