"""What a pass finds besides blueprint pairs: stale temps, files set aside, metas without a YAML.

Each is removed only when its bytes are a version the store has; otherwise it is kept in
``<data>/recovered/`` (``keep_recovered``) and noted for ``check`` and ``doctor``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore._kept_edits import note_kept
from localstore._reconcile_core import META_READ_LIMIT, _Scan, log
from localstore._reconcile_metas import _ReconcileMetas
from localstore._reconcile_moves import _ReconcileMoves
from localstore._reconcile_problems import cloud_stub
from localstore._revisions import revision_text
from localstore.blueprint import decode_meta, sha256_hex
from localstore.errors import InvalidMetaError, StorageError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, CheckReport


STALE_TEMP_SECONDS = 60.0


def keep_recovered(data_dir: Path, files: Sequence[tuple[str, bytes]]) -> list[Path]:
    """Write each ``(target, data)`` durably to a new file named like ``target`` in one new
    folder under <data>/recovered/ (a UTC time); returns their paths, in order.

    For bytes nothing else holds that LocalStore must move out of the way (an interrupted save's
    temp, a hand-edited orphan meta, an unparsable edit a save or delete replaces). Copied, not
    renamed: the data folder may be on another disk than the blueprints folder. Outside the
    blueprints folder so that the scan never takes it for a blueprint. The files of one pair
    (its YAML and meta) go to the same folder, under their files' names, ready to be put back
    as a pair. Raises StorageError.
    """
    base = data_dir / "recovered"
    # 0700 when made here: these are a person's edits (a private blueprint's too), and the index
    # that holds the same text is 0600 even in a data/ folder others can read (one LocalStore did
    # not make). An existing recovered/ keeps the mode its owner gave it.
    fs.ensure_dir(base, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        folder = base / (stamp if n == 0 else f"{stamp}-{n}")
        if not any((folder / target).exists() for target, _ in files):
            break
    kept: list[Path] = []
    for target, data in files:
        dest = folder / target
        fs.ensure_dir(dest.parent)
        if not fs.create_file(dest, data):
            raise StorageError(f"cannot keep a recovered file at {dest}: the name is taken")
        kept.append(dest)
    return kept


def orphan_home(cur: Any, rel: str, raw: bytes | None) -> tuple[str | None, bool]:
    """Where the blueprint of the meta file without its YAML at ``rel`` (``raw``: its bytes,
    None when gone) lives when that is another path (else None: its id is no live blueprint's,
    or it does not decode), and whether it is only the leftover of an interrupted move there:
    its bytes are that blueprint's live meta or one in its history (or gone).

    Reconcile removes only such a leftover, and keeps every other orphan meta; so does a write
    that must put a file at its name (BlueprintStore._keep_orphan_meta)."""
    try:
        meta = decode_meta(raw or b"", source=rel)
    except InvalidMetaError:
        return None, False
    rows = cur.execute(
        "SELECT path FROM blueprints WHERE id = ? AND deleted = 0", (meta.id,)
    ).fetchall()
    if not rows or rows[0][0] == fs.yaml_path_for(rel):
        return None, False
    return rows[0][0], raw is None or _ReconcileMetas._meta_known(cur, meta.id, raw)


def keep_orphan_meta(
    store: BlueprintStore, cur: Any, rel: str, raw: bytes, lives: str | None, when: str = ""
) -> tuple[Path, str]:
    """Copy the meta file without its YAML at ``rel`` (its bytes ``raw``; its blueprint living
    at ``lives``, see orphan_home) to <data>/recovered/, note it for ``check`` in ``cur``'s
    transaction and log a warning; returns the copy and the note's words. ``when``: what is
    about to take its name (a save), told in both. The caller removes or replaces the file.
    Raises StorageError."""
    (kept,) = keep_recovered(store.paths.data, [(rel, raw)])
    if lives is not None:
        what = (
            f"a meta file of a blueprint that lives at {fs.printable(lives)}, with changes the "
            "store does not have"
        )
        into = "into that blueprint's meta"
    else:
        what = f"a meta file {_whose(rel, raw)}, without its YAML"
        into = "into a blueprint"
    was = f", when {when}" if when else ""
    detail = (
        f"kept: {what}{was}; it is now {kept} (copy what you want from it {into}, then delete "
        "that copy: check reports it until then)"
    )
    note_kept(cur, store.paths.data, kept, rel, detail)
    log.warning("%s: %s%s; kept at %s", rel, what, was, kept)
    return kept, detail


def _whose(rel: str, raw: bytes) -> str:
    """Which blueprint a meta file names, for a person: its id, or that it names none."""
    try:
        return f"of blueprint {decode_meta(raw, source=rel).id}, which is not here"
    except InvalidMetaError:
        return "that does not parse"


def _linked_aside(temp: Path) -> bool:
    """Whether ``temp`` is the same file (a hard link) as a file set aside beside it (named by
    files.aside_name). Looked for only when the file has more than one name (rare: a kill
    between a save's swap and its flusher's unlink)."""
    try:
        st = os.lstat(temp)
        if st.st_nlink < 2:
            return False
        with os.scandir(temp.parent) as entries:
            for entry in entries:
                if (
                    entry.name.startswith(fs.ASIDE_PREFIX)
                    and entry.name.endswith(fs.TEMP_SUFFIX)
                    and os.path.samestat(st, entry.stat(follow_symlinks=False))
                ):
                    return True
    except OSError:
        return False  # (kept by the usual rule: a spare copy at worst, nothing lost)
    return False


def _save_temp_target(rel: str) -> str | None:
    """The blueprint file (YAML or meta) a save's temp ``.<name>.<8 hex>.lstmp`` was written
    for, or None for any other temp (a file set aside, the folder mark's)."""
    folder, _, name = rel.rpartition("/")
    stem = name.removesuffix(fs.TEMP_SUFFIX)
    body, _, token = stem.rpartition(".")
    if (
        not body.startswith(".")
        or len(token) != 8
        or not all(c in "0123456789abcdef" for c in token)
    ):
        return None
    target = body[1:]
    if not target.endswith((fs.YAML_SUFFIX, fs.META_SUFFIX)):
        return None
    return f"{folder}/{target}" if folder else target


class _ReconcileLeftovers(_ReconcileMoves):
    """Remove or keep stale temps, set-aside files and orphan metas."""

    def clear_stale_temp(self, rel: str, report: CheckReport) -> None:
        """Remove a stale temp file, unless it may be the only copy of a version (kept then).

        A save killed (a crash, a power cut) after its temps were flushed and before their
        renames leaves the new version in them, and nowhere else: the index rolled back, the
        files in place are the old ones. Removed as a leftover a minute later (the next open did
        it, without a word), that edit was gone. A temp of a blueprint file whose bytes are not
        the file's at its name is moved to ``<data>/recovered/`` under that file's name (so the
        pair can be put back as it is), reported here and logged, and listed by ``doctor`` until
        the person removes it (a note, see _kept_edits.note_kept: an open's or a rescan's report
        is shown to no one); not a problem of ``check``'s, as that save never returned: nothing
        acknowledged is missing, and a crash must leave check clean. Any other temp (ours, with
        nothing new in it: a file set aside, a version already in place) is removed as before.
        """
        root = self.store.root
        target = _save_temp_target(rel)
        if target is not None and _linked_aside(root / rel):
            # The file a save swapped out to its temp's name (files.replace_recorded) after
            # keeping it aside by a hard link (PendingWrites._keep), killed before its flusher
            # unlinked this name: the aside name holds the same file, which _kept_aside keeps
            # (or removes) by its own rule. Kept from here too, the edit was in
            # <data>/recovered/ twice. Only this name goes: no bytes with it.
            pass
        elif target is not None:
            if self._kept_save_temp(rel, target, report):
                return
        elif rel.rpartition("/")[2].startswith(fs.ASIDE_PREFIX) and self._kept_aside(rel, report):
            return
        fs.remove_file(root / rel)
        report.fixed.append({"kind": "temp-file", "path": rel, "detail": "removed"})

    def _kept_save_temp(self, rel: str, target: str, report: CheckReport) -> bool:
        """Keep the save temp ``rel`` of the blueprint file ``target`` in ``<data>/recovered/``
        if its bytes are a version the store does not have; True if kept (or gone since the
        scan), False if it is only a leftover to remove."""
        root = self.store.root
        try:
            data = fs.read_regular(root / rel)
        except FileNotFoundError:
            return True  # gone since the scan (another pass took it)
        try:
            current: bytes | None = fs.read_regular(root / target)
        except FileNotFoundError:
            current = None
        if not data or data == current or self._temp_version_known(target, data):
            return False
        temp = root / rel
        with self.store.index.write() as cur:
            (kept,) = keep_recovered(self.store.paths.data, [(target, data)])
            note_kept(
                cur,
                self.store.paths.data,
                kept,
                target,
                f"kept: a save that was interrupted (a crash) left a version of this "
                f"file that is not in the store (in {fs.printable(rel)}); it is now "
                f"{kept} (the save never returned, so nothing was promised: copy it "
                "into the blueprints folder, or save its content, to use it; delete "
                "it otherwise)",
                acknowledged=False,
            )
            # Removed once the note is committed (the pass's commit, when inside
            # one): a pass that rolls back leaves the temp, kept and noted next time,
            # not a copy nothing tells of.
            self.store.index.after_commit(lambda: fs.remove_file(temp))
        log.warning("%s: kept an interrupted save's version at %s", rel, kept)
        detail = (
            f"kept: a save that was interrupted (a crash) left this version of "
            f"{fs.printable(target)}, which is not in the store; it is now {kept} "
            "(copy it into the blueprints folder, or save its content, to use it; "
            "delete it otherwise)"
        )
        report.fixed.append({"kind": "temp-kept", "path": rel, "detail": detail})
        return True

    def _temp_version_known(self, target: str, data: bytes) -> bool:
        """Whether a save temp's bytes are a version the store has (see _version_known): a
        save killed between the swap that replaces a recorded file and the unlink of that
        file, now at the temp's name (files.replace_recorded), left the recorded version
        there, not a new one. Read only for a stale temp whose bytes differ from its file's."""
        with self.store.index.read() as cur:
            return self._version_known(cur, fs.folder_of(target), data)

    def _kept_aside(self, rel: str, report: CheckReport) -> bool:
        """Keep a file set aside (a delete's pair, a replaced file a save kept) in
        ``<data>/recovered/`` if its bytes are a version the store does not have; True if kept
        (or gone since the scan), False if it is only a leftover to remove.

        A write that found an edit nobody had recorded records it inside its own transaction,
        then sets the pair aside (a delete) or keeps the file it replaces (a save on a nearly
        full disk). Killed before the commit, the edit's revision rolled back, and the file set
        aside was its only copy: removed as a stale temp (as every leftover was), the edit was
        gone. Its target's name is not in the aside name, so its bytes are compared with every
        version of the blueprints whose files were in its folder.
        """
        temp = self.store.root / rel
        try:
            data = fs.read_regular(temp)
        except FileNotFoundError:
            return True  # gone since the scan (another pass took it)
        if not data:
            return False
        data_dir = self.store.paths.data
        with self.store.index.write() as cur:
            if self._version_known(cur, fs.folder_of(rel), data):
                return False
            name = self._aside_keep_name(cur, rel, data)
            (kept,) = keep_recovered(data_dir, [(name, data)])
            detail = (
                f"kept: a delete or save that was interrupted (a crash) had set aside a file "
                f"of {fs.printable(fs.folder_of(rel)) or 'the top folder'} holding a version "
                f"the store does not have (an edit not recorded yet); it is now {kept} (copy "
                "it into the blueprints folder, or save its content, to use it; then delete "
                "that copy: check reports it until then)"
            )
            note_kept(cur, data_dir, kept, name, detail)
            # (Removed once the note is committed: see clear_stale_temp.)
            self.store.index.after_commit(lambda: fs.remove_file(temp))
        log.warning("%s: kept a file an interrupted write had set aside at %s", rel, kept)
        report.fixed.append({"kind": "temp-kept", "path": rel, "detail": detail})
        return True

    @staticmethod
    def _version_known(cur: Any, folder: str, data: bytes) -> bool:
        """Whether ``data`` is a YAML or meta file of a blueprint (live or deleted) last in
        ``folder``: its recorded file, or a version in its history. Read only for a file set
        aside that a kill left (rare): the blueprints are found without an index (deleted rows
        too), and their revisions by id."""
        digest = sha256_hex(data)
        rows = cur.execute(
            "SELECT id, yaml_sha256, meta_sha256 FROM blueprints WHERE folder = ?", (folder,)
        ).fetchall()
        if any(digest in (y, m) for _, y, m in rows):
            return True
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return False  # (no revision holds bytes that are not UTF-8)
        for bp_id, _, _ in rows:
            for content, meta in cur.execute(
                "SELECT content, meta FROM revisions WHERE id = ?", (bp_id,)
            ):
                if text in (revision_text(content), revision_text(meta)):
                    return True
        return False

    @staticmethod
    def _aside_keep_name(cur: Any, rel: str, data: bytes) -> str:
        """The name to keep a file set aside under: its blueprint's meta name when it is a
        meta file of a known blueprint, else one made from the aside name (the target's name is
        not in it) that says which kind of file it is."""
        folder, _, name = rel.rpartition("/")
        stem = name.removeprefix(fs.ASIDE_PREFIX).removesuffix(fs.TEMP_SUFFIX)
        try:
            meta = decode_meta(data, source=rel)
        except InvalidMetaError:
            kept = f"set-aside-{stem}{fs.YAML_SUFFIX}"
        else:
            found = cur.execute("SELECT path FROM blueprints WHERE id = ?", (meta.id,)).fetchall()
            if found:
                return fs.meta_path_for(str(found[0][0]))
            kept = f"set-aside-{stem}{fs.META_SUFFIX}"
        return f"{folder}/{kept}" if folder else kept

    def _handle_orphan(self, cur: Any, rel: str, report: CheckReport) -> None:
        raw = self._read_meta(rel)
        # A read cut at the limit is never kept nor judged: its first megabyte kept and the file
        # removed lost the rest. (decode_meta refuses a meta file that large anyway; this does
        # not hang on that.) Such a file stays where it is, reported.
        whole = raw is None or len(raw) <= META_READ_LIMIT
        lives, leftover = orphan_home(cur, rel, raw) if whole else (None, False)
        if leftover:
            fs.remove_file(self.store.root / rel)
            report.fixed.append({"kind": "orphan-meta", "path": rel, "detail": "removed"})
            return
        if lives is not None and raw is not None:
            # It may hold edits made by hand (a pair's meta copied here and changed): removing
            # it lost them, so it is kept in <data>/recovered/ and reported, by every check
            # until removed. (One whose blueprint lives nowhere is left where it is: its YAML
            # may follow, a copy or a checkout not finished yet.)
            _, detail = keep_orphan_meta(self.store, cur, rel, raw, lives)
            # (Removed once the note is committed: see clear_stale_temp.)
            orphan = self.store.root / rel
            self.store.index.after_commit(lambda: fs.remove_file(orphan))
            report.fixed.append({"kind": "orphan-meta", "path": rel, "detail": detail})
            return
        report.problems.append(
            {"kind": "orphan-meta", "path": rel, "detail": "meta file without its YAML"}
        )

    def _orphan_metas(self, scan: _Scan) -> list[str]:
        return sorted(
            m
            for m in scan.metas
            if fs.yaml_path_for(m) not in scan.yamls
            and cloud_stub(self.store.root, fs.yaml_path_for(m)) is None  # (reported: evicted)
        )

    def _stale_temps(self, scan: _Scan) -> list[str]:
        # Aged by the later of mtime and change time: a file set aside (a delete's pair, a
        # replaced file kept on a nearly full disk) is renamed, which keeps its old mtime but
        # sets its change time. By mtime alone it was stale the moment it was set aside, and a
        # rescan landing before the index commit removed it: a failing commit could then not
        # put it back (the user told "nothing changed" of a file that was gone).
        now_ns = time.time_ns()
        bound = STALE_TEMP_SECONDS * 1e9
        # (On Windows the change time is the creation time, which a rename keeps: the time an
        # aside file's name holds covers it there.)
        return sorted(
            t
            for t, st in scan.temps.items()
            if now_ns - max(st.st_mtime_ns, st.st_ctime_ns, fs.aside_made_ns(t)) > bound
        )
