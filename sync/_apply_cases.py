"""The decisions of ``sync._apply.Applier`` by local state: a clean take, edit beats delete, the
merge ladder and keep-both, a row out of this home's view, a local file that does not parse."""

from __future__ import annotations

import json
import logging
from datetime import UTC
from typing import Any

from localstore import files as fs
from localstore.errors import UnsafePathError
from localstore.store import Row
from sync import _state as st
from sync._apply_paths import copy_id_for, merge_path, utc_stamp
from sync._apply_writes import _ApplierWrites
from sync._kept_merges import highest_kept
from sync.merge import Resolution, Version, resolve
from sync.remote import ServerRow

log = logging.getLogger("sync.engine")


def _out_of_view_message(
    path: str,
    away: UnsafePathError,
    local: Row | None,
    copy: tuple[str, str, int] | None,
    linked: str | None = None,
) -> str:
    """The quarantine message of a row at a path this home never scans: why, and what to do.

    ``linked``: the folder of ``path`` that is a symbolic link here, if that is why."""
    hidden = any(part.startswith(".") for part in path.split("/")[:-1])
    parts = [f"{away.message}; it was put there elsewhere, so this device does not keep it"]
    if local is not None and not local.deleted:
        parts.append(f"; {local.path} was removed here (its history keeps it)")
    if copy is not None and local is not None:
        parts.append(
            f". Your edit is kept at {copy[1]} (conflict #{copy[2]}; `localstore conflicts "
            f"resolve {copy[2]} --take local` puts it back at {local.path} on every device)"
        )
    if hidden:
        parts.append(
            ". To have it here again, move it out of the hidden folder with the client that put "
            "it there: the next sync brings it back"
        )
    elif linked is not None:
        parts.append(
            f". To have it here, replace the link {linked!r} by a folder and run `localstore "
            "sync --retry-quarantined` (or move it elsewhere on another device)"
        )
    else:
        parts.append(
            f". To have it here, remove the pattern from this home's {fs.IGNORE_FILE_NAME} and "
            "run `localstore sync --retry-quarantined` (or move it elsewhere on another device)"
        )
    return "".join(parts)


class _ApplierCases(_ApplierWrites):
    """One method per case of local state against a server row."""

    # -- the cases -----------------------------------------------------------------------------

    def _take_clean(self, cur: Any, local: Row | None, r: ServerRow) -> None:
        if r.deleted:
            if local is not None and not local.deleted:
                self.store.delete(local.id, origin="remote", tx_hook=self._hook(r))
                self.stats.applied += 1
            elif local is not None:
                self._record(cur, r, synced=True)
            else:
                # Never held here: nothing to delete or record. An earlier row of it that could
                # not be stored (parked, direction "pull") is history now, as a newer live row
                # makes it (record_base); left, it stayed listed as needing attention for good.
                st.drop_pull_parked(cur, r.id)
            return
        self._save_remote(cur, r)

    def _local_delete_vs(
        self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> None:
        if r.deleted:
            self._record(cur, r, synced=True)  # deleted on both sides
            return
        if item is not None and item.base_rev is not None and r.content_hash == item.base_hash:
            # The server only moved it (no edit): the local delete still applies to this rev.
            self._record(cur, r, synced=False)
            return
        if r.device == self.store.device_id:
            # The server's edit is this device's own (a push whose response was lost), made
            # before the delete: nobody else's edit to keep, the delete applies to this rev.
            self._record(cur, r, synced=False)
            return
        self._save_remote(cur, r)  # an edit beats a delete: revive with the remote edit
        self._conflict_event(local.id, r.path, "a remote edit revived a locally deleted blueprint")

    def _local_edit_vs_delete(
        self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> None:
        known = item is not None and item.base_rev is not None
        # A tombstone carries the content hash the deleting device last had. With no base here
        # (an index rebuilt by `check --fix`, a new account), a local copy with exactly that
        # hash is the version that was deleted, not an edit: reviving it undid the delete on
        # every device.
        deleted_hash = item.base_hash if known and item is not None else r.content_hash
        # The base's hash is the server's, which another client computes its own way (and
        # whose minimal meta is stored filled in, see stored_meta): the local revision that
        # stored the base has its own hash. Only compared with the server's, a mere move of
        # such a row was an edit, and it revived the row the other client had deleted.
        held = st.held_hash(cur, r.id, item.base_rev) if known and item is not None else None
        if local.content_hash in (deleted_hash, held) or self._ancestor(local, item, r) is not None:
            # (Or, with no base, a version the server had before the deleted one: no edit.)
            # Local only moved it (no edit): the remote delete applies.
            self.store.delete(local.id, origin="remote", tx_hook=self._hook(r))
            self.stats.applied += 1
            return
        # An edit beats a delete: build on the tombstone; the next push revives the row.
        self._record(cur, r, synced=False)
        self._conflict_event(local.id, local.path, "a local edit revives a remotely deleted one")

    def _three_way(self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow) -> None:
        local_v = Version(self._text(cur, local), json.loads(local.meta_json))
        remote_v = Version(r.content, dict(r.meta))
        base = self._ancestor_base(local, local_v, item, r) or self._find_base(
            cur, local.id, item, r
        )
        base_v = Version(base.content, dict(base.meta)) if base is not None else None
        resolution = resolve(
            self.policy,
            base_v,
            local_v,
            remote_v,
            validator=self.store.validator,
            judge=self._judge,
        )
        if resolution.action == "keep_both":
            base_rev = item.base_rev if item is not None else None
            self._keep_both(cur, local, local_v, base_v, base_rev, r, resolution)
            return
        content, meta = self._chosen(resolution, local_v, remote_v)
        path = merge_path(self._base_path(base, item), local.path, r.path)
        if path == r.path and self._hash(content, meta, r.id) == r.content_hash:
            self._save_remote(cur, r)
            return
        self._ensure_path_free(cur, path, local.id, r)
        self.store.save(path, content, meta=meta, id=local.id, origin="merge")
        self._record(cur, r, synced=False)
        self.stats.merged += 1

    def _keep_both(
        self,
        cur: Any,
        local: Row,
        local_v: Version,
        base_v: Version | None,
        base_rev: int | None,
        r: ServerRow,
        resolution: Resolution,
    ) -> None:
        copy_id, copy_path = self._save_copy(cur, local, local_v, r)
        self._save_remote(cur, r)
        cid = st.add_conflict(
            cur,
            blueprint_id=r.id,
            path=r.path,
            copy_id=copy_id,
            copy_path=copy_path,
            reason="; ".join(resolution.conflicts) or "content",
            base=base_v.content if base_v else None,
            local=local_v.content,
            remote=r.content,
            base_rev=base_rev,
            remote_rev=r.rev,
            above=highest_kept(self.store.paths.state),
        )
        self._conflict_event(r.id, r.path, f"conflict #{cid}: local version kept at {copy_path}")

    def _save_copy(self, cur: Any, local: Row, local_v: Version, r: ServerRow) -> tuple[str, str]:
        """Write the local version as a new blueprint next to ``local``; returns (id, path)."""
        copy_id = copy_id_for(local.id, local.content_hash, r.rev, self.store.device_id)
        kept = self.store.row_by_id(copy_id, cur)
        if kept is not None and not kept.deleted:
            # An apply run again after a kill that came after the copy's files (reconcile
            # adopted them): that is the copy. A name made again from this clock moved it to
            # another second's name and wrote it again, over any edit of it since.
            return copy_id, kept.path
        stamp = utc_stamp(self.now())
        copy_path = self._conflict_path_for(local.path, stamp=stamp, owner=copy_id)
        name = f"{local.name} (conflict {self.store.device_name} {stamp})"
        now = self.now().astimezone(UTC).isoformat().replace("+00:00", "Z")
        meta = {**local_v.meta, "id": copy_id, "name": name, "created": now, "modified": now}
        self.store.save(copy_path, local_v.content, meta=meta, id=copy_id, origin="merge")
        return copy_id, copy_path

    def _out_of_view(
        self,
        cur: Any,
        local: Row | None,
        item: st.ItemState | None,
        r: ServerRow,
        away: UnsafePathError,
        *,
        dirty: bool,
    ) -> None:
        """A live server row at a path this home never scans: a hidden folder or an ignored name.

        Another client (an older version, another app) or another device with other ignore
        rules put the blueprint there. Its files cannot live here: reconcile would record them
        as deleted at the next open. Parking the row, as before, also parked this device's own
        edit of it, for good: every push met the same row, every retry refused it again.

        So: the row is recorded as this device's base (it builds on it, it just does not hold
        it), and the local copy leaves this device's view as it left the server's: removed
        here (history keeps it). A local edit is kept first as a conflict copy next to it,
        which syncs like any new blueprint, with a conflict record. The row is parked as
        ``unscanned_path`` with what to do: when it comes out of that folder (a later row) it
        is applied as usual and the entry goes; a retry applies it again (``force``), which
        stores it if this home scans that path by then (an ignore pattern removed).
        """
        # A local delete is not pushed over it: a kill after this removed the local copy and
        # before the commit leaves a delete that reconcile records, and pushing that deleted a
        # blueprint the other client only meant to move. Out of this device's view it stays.
        copy: tuple[str, str, int] | None = None
        if local is not None and not local.deleted:
            base_hash = item.base_hash if item is not None and item.base_rev is not None else ""
            if (
                dirty
                and local.content_hash not in (base_hash, r.content_hash)
                and self._ancestor(local, item, r) is None
            ):
                copy = self._keep_edit_out_of_view(cur, local, item, r)
            self.store.delete(local.id, origin="remote")
        self._record(cur, r, synced=True)
        linked = fs.linked_folder(str(self.store.root), r.path)
        message = _out_of_view_message(r.path, away, local, copy, linked)
        st.quarantine(
            cur, r.id, st.current_op_id(cur, r.id), r.path, "pull", "unscanned_path", message
        )
        self.stats.parked.append((r.id, message))
        log.warning("sync: %s", message)

    def _keep_edit_out_of_view(
        self, cur: Any, local: Row, item: st.ItemState | None, r: ServerRow
    ) -> tuple[str, str, int]:
        """Keep a local edit of a blueprint that moved out of view as a conflict copy."""
        local_v = Version(self._text(cur, local), json.loads(local.meta_json))
        base = self._find_base(cur, local.id, item, r)
        copy_id, copy_path = self._save_copy(cur, local, local_v, r)
        cid = st.add_conflict(
            cur,
            blueprint_id=r.id,
            path=r.path,
            copy_id=copy_id,
            copy_path=copy_path,
            reason=f"moved to {r.path}, which this device does not look inside",
            base=base.content if base is not None else None,
            local=local_v.content,
            remote=r.content,
            base_rev=item.base_rev if item is not None else None,
            remote_rev=r.rev,
            above=highest_kept(self.store.paths.state),
        )
        self._conflict_event(r.id, copy_path, f"conflict #{cid}: local edit kept at {copy_path}")
        return copy_id, copy_path, cid

    def _wait_for_parse(self, cur: Any, local: Row, r: ServerRow) -> None:
        """The blueprint's file does not parse (an edit in progress): park the row, write nothing.

        Writing the server's version over it (or deleting it for a tombstone) kept the person's
        bytes only in a conflict record in the index, which `check --fix` loses, replaced the
        file under an editor that still had it open, and left `--take local` refusing the bytes
        as invalid YAML. So the file is never touched, as a file blocking another blueprint's
        path is not (``path_blocked``). The row waits, parked as ``unparsable_local``: once
        the file parses again it is an edit, whose push meets the server's row and merges with
        it (or revives it: an edit beats a delete), and the entry goes with that newer base.
        """
        message = (
            f"{local.path} does not parse here ({local.flagged}); the server's change of it "
            f"(rev {r.rev}{', a delete' if r.deleted else ''}) waits, the file is left as it "
            "is: fix the file (its edit then merges with the server's) or delete it, then sync"
        )
        st.quarantine(
            cur, r.id, st.current_op_id(cur, r.id), local.path, "pull", "unparsable_local", message
        )
        self.stats.parked.append((r.id, message))
        log.warning("sync: %s", message)
