"""Where a write may put a pair: a path the ignore rules do not hide and no other blueprint
holds (in any case or Unicode form), and folders spelled as they are on disk (case-insensitive
file systems). The layer above ``_StoreRefs``.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from typing import Any

from localstore import files as fs
from localstore._store_refs import _StoreRefs
from localstore._store_types import _UNKNOWN, Row, _Batch, _Unknown
from localstore.errors import AlreadyExistsError, LocalStoreError, UnsafePathError

# The hint of a save onto a path another blueprint holds (a move re-hints it: see move).
_TAKEN_HINT = "choose another path, or save with that blueprint's id"


def _case_clash_hint(held: str, rel: str, *, moving: bool) -> str:
    """What to do about a path one name with the blueprint at ``held``: a save meant that
    blueprint (its spelling) or a new case for it (renamed first); a move needs another path."""
    why = "paths that differ only by case collide on macOS and Windows"
    if moving:
        return f"{why}: choose another path, or first move or delete the blueprint at {held}"
    return f"{why}: use its spelling, {held}, or rename it first with 'localstore mv {held} {rel}'"


def _ignore_match(rules: fs.IgnoreRules, rel: str) -> tuple[str, str]:
    """The part of ``rel`` and the pattern that ignore it, for the error message only (the
    decision is IgnoreRules.ignored's)."""
    return rules.reason(rel) or (rel, "?")


class _StorePaths(_StoreRefs):
    """Where a write may put a pair (the layer above ``_StoreRefs``)."""

    def check_scanned(self, path: fs.StrPath, rules: fs.IgnoreRules | None = None) -> None:
        """Refuse ``path`` as a save to a new path would: a place reconcile and the watcher never
        look at (a hidden folder, a name matching an ignore pattern). Sync checks a server row
        with it before writing anything for the row (a conflict copy, a blueprint moved aside),
        and an import plan checks each new path (passing ``rules`` read once for all of them).

        Raises UnsafePathError naming the folder or pattern, or for a path the rules refuse.
        """
        rules = rules if rules is not None else fs.IgnoreRules.for_root(self.root)
        self._check_scanned(fs.normalize_path(path), rules)

    def _check_scanned(self, rel: str, rules: fs.IgnoreRules) -> None:
        """Refuse a path that reconcile and the watcher never look at (a hidden folder, a name
        matching an ignore pattern, a folder that is a symbolic link): its blueprint would be
        recorded as deleted on the next open although its files are intact. The rules are the
        walk's own (files.IgnoreRules).

        Raises UnsafePathError naming the folder or pattern."""
        hidden = next((f for f in rel.split("/")[:-1] if f.startswith(".")), None)
        if hidden is not None:
            raise UnsafePathError(
                f"{rel}: the folder {hidden!r} is hidden (its name starts with '.'), and "
                "LocalStore does not look inside hidden folders",
                hint="use a folder name that does not start with '.'",
            )
        # A link to a folder inside the root passed resolve_inside, and the files landed in
        # the link's target: the walk, which follows no link, then found them there as new
        # blueprints (new ids: every one twice, pushed twice) and kept the saved one as
        # not-scanned. (An lstat a folder of a new path; an indexed path is not asked.)
        link = fs.linked_folder(self._root_str, rel)
        if link is not None:
            self.abspath(rel)  # (a link that leads outside, or loops, is refused as such first)
            raise UnsafePathError(
                f"{rel}: the folder {link!r} is a symbolic link, and LocalStore does not look "
                "inside linked folders",
                hint="save under the folder the link leads to, or replace the link by a folder",
            )
        for path in (rel, fs.meta_path_for(rel)):
            if rules.ignored(path):
                part, pattern = _ignore_match(rules, path)
                custom = pattern not in fs.DEFAULT_IGNORE_PATTERNS
                raise UnsafePathError(
                    f"{rel}: {part!r} matches the ignore pattern {pattern!r}"
                    f"{f' of {fs.IGNORE_FILE_NAME}' if custom else ' (editor temp and backup files)'}"
                    ", so LocalStore would never see this blueprint's files",
                    hint=f"rename it, or remove the pattern from {fs.IGNORE_FILE_NAME}"
                    if custom
                    else "give that folder or file another name",
                )

    def _refuse_not_files(self, rel: str, *, indexed: bool = True) -> None:
        """Refuse a save to the pair at ``rel`` if a folder, a link or a special file has the
        name of one of its files (AlreadyExistsError naming it).

        A rename over a folder failed with "Is a directory (check the disk and try again)" after
        the other file was written; one over a link replaced the link (a git checkout's, say),
        and a move renamed a folder in the YAML's place to the new name. Two lstats, only on the
        paths where a stat already differed from the index (a cost per save was rejected).
        """
        for name in (rel, fs.meta_path_for(rel)):
            try:
                mode = os.lstat(self.abspath(name)).st_mode
            except OSError:
                continue  # (missing; or unreadable: the write says why)
            if not stat.S_ISREG(mode):
                what = fs.kind_of(mode)
                kept = " (the blueprint's last version is in history)" if indexed else ""
                raise AlreadyExistsError(
                    f"{name} is taken by a {what}: LocalStore keeps a blueprint's files as "
                    "regular files, and never reads or writes through a link",
                    hint=f"move the {what} away{kept}, or save under another path",
                )

    def _new_path_check(self) -> Callable[[str], bool]:
        """Whether a save may create a path (not ignored, a valid new name): only such a path of
        a batch is recorded ahead (an ingest does not look at the ignore rules; the save refuses
        the others before it records anything there). The rules are read once."""
        rules = fs.IgnoreRules.for_root(self.root)

        def may_create(rel: str) -> bool:
            try:
                self._check_scanned(rel, rules)
                fs.check_new_name(rel)
            except LocalStoreError:
                return False
            return True

        return may_create

    def _check_path_free(
        self,
        cur: Any,
        rel: str,
        owner_id: str | None,
        batch: _Batch | None = None,
        target: str | None = None,
        holder: Row | _Unknown | None = _UNKNOWN,
    ) -> None:
        other = (
            self._row_by(cur, "path_key = ? AND deleted = 0", (fs.path_key(rel),))
            if isinstance(holder, _Unknown)
            else holder
        )
        if other is not None and other.id != owner_id:
            if other.path == rel:
                raise AlreadyExistsError(
                    f"{rel} is already taken by blueprint {other.id}",
                    hint=_TAKEN_HINT,
                )
            raise UnsafePathError(
                f"{rel} differs only by case from {other.path}",
                hint=_case_clash_hint(other.path, rel, moving=owner_id is not None),
            )
        if other is not None:
            return  # the only file that can collide by case is this blueprint's own
        self._check_file_case(rel, batch.folders if batch is not None else None, target)

    def _check_file_case(
        self, rel: str, folders: dict[str, dict[str, str]] | None, target: str | None = None
    ) -> None:
        """Refuse a name that differs only by case from a file on disk the index does not know
        yet (created while nothing ran). ``folders``: the listings a batch (or a plan) keeps."""
        folder, name = os.path.split(target or str(self.abspath(rel)))
        names = self._folder_names(folder, folders)
        existing = names.get(fs.path_key(name))
        if existing is not None and existing != name:
            other = posixpath.join(posixpath.dirname(rel), existing)
            raise UnsafePathError(
                f"{rel} differs only by case from {other}, a file here not recorded yet",
                hint="rename one of them",
            )

    def _check_folders_case(
        self,
        cur: Any,
        rel: str,
        folders: dict[str, dict[str, str]] | None,
        leaving: str | None = None,
    ) -> None:
        """Refuse a new folder whose name differs only by case from one beside it.

        The file check above looks in the file's own folder, which for ``team/b`` beside an
        existing ``Team/`` does not exist yet: both were made, one folder on macOS and Windows
        (a device there syncing both mixes two folders' blueprints into one). A folder a live
        blueprint is in exists already, with this exact case; otherwise each level is looked up.
        ``leaving``: the path a moved blueprint leaves. Its own folder in another case is no
        neighbour once nothing else stays in it (the move fixes a folder's letter case).
        """
        folder = rel.rpartition("/")[0]
        if (
            not folder
            or cur.execute(
                "SELECT 1 FROM blueprints WHERE folder = ? AND deleted = 0 LIMIT 1", (folder,)
            ).fetchall()
        ):
            return
        parent = str(self.paths.blueprints)
        done = ""
        for seg in folder.split("/"):
            names = self._folder_names(parent, folders)
            existing = names.get(fs.path_key(seg))
            if existing is not None and existing != seg:
                self._refuse_folder_case(rel, seg, posixpath.join(done, existing), leaving)
            if existing is None:
                names[fs.path_key(seg)] = (
                    seg  # (made by this save: a later one in the batch sees it)
                )
            parent = os.path.join(parent, seg)
            done = posixpath.join(done, seg)

    def _folder_as_here(self, folder: str, folders: dict[str, dict[str, str]] | None) -> str:
        """``folder`` with each part spelled as the folder of that name (files.path_key) is
        here, where there is one: the spelling _check_folders_case lets a new path take."""
        parent, parts = str(self.paths.blueprints), []
        for seg in folder.split("/") if folder else []:
            seg = self._folder_names(parent, folders).get(fs.path_key(seg), seg)
            parts.append(seg)
            parent = os.path.join(parent, seg)
        return "/".join(parts)

    def _refuse_folder_case(self, rel: str, seg: str, other: str, leaving: str | None) -> None:
        """Raise UnsafePathError for ``rel``'s folder ``seg`` beside ``other`` (its folder
        of another case), unless ``other`` is the folder the move from ``leaving`` empties."""
        name = other.rpartition("/")[2]
        stays = None
        if leaving is not None and leaving.startswith(other + "/"):
            stays = self._left_behind(other, leaving)
            if stays is None:
                return
        message = (
            f"{rel}: the folder {seg!r} differs only by case from the folder {name!r} beside it"
        )
        if stays is None:
            raise UnsafePathError(
                message,
                hint=f"use {name!r}, or rename that folder first: see 'localstore mv --help'",
            )
        raise UnsafePathError(
            f"{message}, which holds {stays} too",
            hint=f"move the rest of {name!r} elsewhere first with 'localstore mv', or keep {name!r}",
        )

    def _left_behind(self, folder: str, leaving: str) -> str | None:
        """The first thing under ``folder`` that is not the pair at ``leaving`` (a path below
        it) or a folder on the way to it: what a move of that pair would leave there."""
        parts = leaving[len(folder) + 1 :].split("/")
        for depth, seg in enumerate(parts):
            last = depth == len(parts) - 1
            wanted = {seg, fs.meta_path_for(seg)} if last else {seg}
            try:
                names = sorted(os.listdir(self.abspath(folder)))
            except OSError:
                return None  # (gone: nothing stays)
            stays = next((n for n in names if n not in wanted), None)
            if stays is not None:
                return fs.printable(posixpath.join(folder, stays))
            folder = posixpath.join(folder, seg)
        return None

    @staticmethod
    def _may_exist(target: str, batch: _Batch) -> bool:
        """Whether something may be at ``target``: False when this batch listed its folder and
        no name there has the target's key (the listing holds what the batch staged since), else
        an lstat. A download creates thousands of new names in a few folders: one listing per
        folder and batch replaces an lstat of a missing name per blueprint (each a search of the
        whole folder). The listing is as old as the batch, which holds the write lock; an editor
        (which takes no lock of ours) creating the name later in the batch is not renamed over:
        such a name is placed with files.place_new, and the batch runs again if it was taken
        (see _save_batch)."""
        folder, _, name = target.rpartition(os.sep)
        listed = batch.folders.get(folder)
        if listed is not None and fs.path_key(name) not in listed:
            return False
        return os.path.lexists(target)

    @staticmethod
    def _folder_names(folder: str, folders: dict[str, dict[str, str]] | None) -> dict[str, str]:
        """Key (files.path_key) -> name of a folder's entries; listed once per batch (the batch
        holds the write lock, and adds what it stages; ``folders`` is its listings), so a batch
        into one folder stays linear."""
        if folders is not None and folder in folders:
            return folders[folder]
        try:
            names = {fs.path_key(n): n for n in os.listdir(folder)}
        except OSError:
            names = {}
        if folders is not None:
            folders[folder] = names
        return names

    def _match_folder_case(self, old_rel: str, new_rel: str) -> None:
        """Give the folders a move leaves their new letter case where both spellings are one
        folder (macOS, Windows): renamed alone, the files stayed in the old spelling the
        index no longer held. Only a folder holding nothing but this pair (the rule save
        checks; a move sync applies is not checked, and renaming a folder that holds more
        would move the rest unrecorded). Raises StorageError."""
        old_dirs, new_dirs = old_rel.split("/")[:-1], new_rel.split("/")[:-1]
        for depth, (was, now) in enumerate(zip(old_dirs, new_dirs, strict=False)):
            if fs.path_key(was) != fs.path_key(now):
                return
            folder = "/".join(old_dirs[: depth + 1])
            here, there = self.abspath(folder), self.abspath("/".join(new_dirs[: depth + 1]))
            if was == now or not fs.same_file(here, there):
                continue  # (two folders: the files move to the new one, the old one is pruned)
            if self._left_behind(folder, old_rel) is not None:
                return
            try:
                fs.rename_case(here, there)
            except OSError as exc:
                raise fs.map_os_error(exc, "cannot rename the folder", here) from exc
