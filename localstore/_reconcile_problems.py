"""What ``check`` reports of files it cannot take, and the words ``--fix`` and the watcher share.

The problem dicts (``kind``, ``path``, ``detail``) and flag reasons for invalid, evicted (a sync
client's placeholder, ``cloud_stub``) and misnamed files; and ``_ReconcileProblems``, the layer of
``Reconciler`` that describes the differences without fixing them (``check`` without ``--fix``,
status's ``refused_new_pair``) and tells why a row whose file is missing is kept.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from localstore import files as fs
from localstore._reconcile_core import _Listed, _ReconcileCore, _Scan, log
from localstore.blueprint import YamlLimits, check_yaml, decode_meta, file_hint, sha256_hex
from localstore.errors import InvalidInputError, InvalidMetaError, LocalStoreError, StorageError

if TYPE_CHECKING:
    from localstore.store import CheckReport, Row


# Sync clients' placeholders of a file whose data they freed (the file gone, the placeholder
# beside it): its stub name for a file name, and the way back for check's detail.
_CLOUD_STUBS: tuple[tuple[str, str, str], ...] = (
    # iCloud Drive (macOS before 14, "Optimize Mac Storage"): a hidden ``.<name>.icloud``.
    (".{}.icloud", "iCloud Drive", "open it in Finder or run `brctl download` on it"),
    # Nextcloud's and ownCloud's desktop clients with virtual files in suffix mode (the mode
    # on Linux, an option elsewhere): "Free up local space" writes an empty ``<name>.nextcloud``
    # (``<name>.owncloud``) and removes the file. Taken for deletes, as iCloud's were.
    (
        "{}.nextcloud",
        "the Nextcloud client",
        "open it, or choose 'Always keep on this device' in the Nextcloud client",
    ),
    (
        "{}.owncloud",
        "the ownCloud client",
        "open it, or choose 'Always available locally' in the ownCloud client",
    ),
)


def cloud_stub(root: Path, rel: str) -> str | None:
    """The relative path of a sync client's placeholder of the file ``rel`` if one is there
    (the file's data freed to save space), else None.

    macOS before 14 with "Optimize Mac Storage" frees space by replacing a file with a hidden
    ``.<name>.icloud`` stub beside it; opening the file (Finder, ``brctl download``) brings it
    back. Nextcloud's and ownCloud's virtual files in suffix mode put ``<name>.nextcloud``
    (``.owncloud``) in its place. Its blueprint is not deleted: taken for a delete, it was
    recorded deleted and sync pushed the delete to every device.
    """
    folder, _, name = rel.rpartition("/")
    for pattern, _tool, _back in _CLOUD_STUBS:
        stub_name = pattern.format(name)
        stub = f"{folder}/{stub_name}" if folder else stub_name
        if os.path.lexists(root / stub):
            return stub
    return None


def _evicted(rel: str, stub: str) -> dict[str, str]:
    """The problem ``check`` reports for a blueprint whose file a sync client evicted."""
    tool, back = "a sync client", "bring it back with its sync client"
    stub_name = stub.rpartition("/")[2]
    for pattern, name, how in _CLOUD_STUBS:
        head, _, tail = pattern.partition("{}")
        if stub_name.startswith(head) and stub_name.endswith(tail):
            tool, back = name, how
            break
    detail = (
        f"kept: {tool} evicted its file to free space ({fs.printable(stub)} is in its "
        f"place); {back} to bring it back"
    )
    return {"kind": "evicted", "path": rel, "detail": detail}


def said_of_file(exc: LocalStoreError, rel: str) -> str:
    """``exc`` as check reports it of the blueprint file ``rel``: its hint in a file's words
    (file_hint), not the API's ("or pass the content as a str")."""
    hint = file_hint(exc, fs.printable(rel))
    return f"{exc.message} ({hint})" if hint else exc.message


def flag_reason(exc: LocalStoreError, rel: str) -> str:
    """The reason a row whose file ``rel`` was refused with ``exc`` is flagged with: what check's
    flagged line and the watcher's event say, hint included (kept without it, neither said what
    to do with the file)."""
    kind = "invalid-meta" if isinstance(exc, InvalidMetaError) else "invalid-yaml"
    return reason_of({"kind": kind, "path": rel, "detail": said_of_file(exc, rel)})


def reason_of(problem: dict[str, str]) -> str:
    """Why the YAML is not taken, by check's ``problem`` about its pair: a flag's words (status
    lists flagged and never-taken files side by side, by the YAML's path)."""
    detail = problem["detail"]
    return f"invalid meta file: {detail}" if problem["kind"] == "invalid-meta" else detail


def _yaml_refused(rel: str, yaml_bytes: bytes, limits: YamlLimits) -> dict[str, str] | None:
    """The invalid-yaml problem --fix (and the watcher) will report of the file ``rel``, with
    what to do; None when they can take it. What _prepare checks, without the validator."""
    try:
        check_yaml(yaml_bytes, limits)
    except InvalidInputError as exc:  # (InvalidYAMLError, LimitExceededError)
        return {"kind": "invalid-yaml", "path": rel, "detail": said_of_file(exc, rel)}
    return None


def _meta_not_a_file(meta_rel: str, what: str) -> dict[str, str]:
    """check's problem for a folder or link in a meta file's place (left as it is)."""
    detail = (
        f"not read: a {what} has this meta file's name (a link is never read or written "
        "through); move it away, and 'localstore check --fix' writes the blueprint's own meta"
    )
    return {"kind": "not-a-file", "path": meta_rel, "detail": detail}


def _linked_folder(root: Path, rel: str) -> str | None:
    """The first folder of ``rel`` below ``root`` that is a symbolic link, if any."""
    return fs.linked_folder(os.fspath(root), rel)


class _ReconcileProblems(_ReconcileCore):
    """Describe what differs between the files and the index, and why a file is not taken."""

    def _still_on_disk(self, row: Row | _Listed, scan: _Scan) -> dict[str, str] | None:
        """The problem to report instead of deleting ``row`` if its file is still there.

        The scan does not walk hidden or ignored folders; a blueprint saved into one (or a folder
        ignored later) is not deleted: that would drop it from the index and push a delete while
        the user's file is intact. Nor is one whose pair was renamed to a name the store cannot
        use (its NFD form, copied from macOS; a ':'): the user can rename it back.
        """
        for prefix, error in scan.unlistable:
            if row.path.startswith(prefix):
                # One unreadable folder (a sudo-made folder, a share's permissions, lost+found)
                # made every open fail; recording its blueprints deleted would be worse.
                detail = (
                    f"kept: the folder {fs.printable(prefix or '.')!r} cannot be read "
                    f"({error.strerror or error}); fix its permissions"
                )
                return {"kind": "unreadable-folder", "path": row.path, "detail": detail}
        try:
            mode: int | None = os.lstat(self.store.root / row.path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            # A folder or a link took the YAML's name: neither is read (a link could lead out of
            # the folder). Saying "hidden or ignored" sent the user looking for the wrong thing.
            what = "folder" if stat.S_ISDIR(mode) else "symbolic link or special file"
            detail = (
                f"kept: a {what} now has its YAML file's name; move it away or put the file "
                "back (its last version is in history)"
            )
            return {"kind": "not-a-file", "path": row.path, "detail": detail}
        stub = cloud_stub(self.store.root, row.path) if mode is None else None
        if stub is not None:
            return _evicted(row.path, stub)
        if mode is not None:
            link = _linked_folder(self.store.root, row.path)
            if link is not None:
                # The scan never walks into a link (it could lead out of the folder); saying
                # "hidden or ignored" sent the user looking for an ignore rule.
                detail = (
                    f"kept: its folder {fs.printable(link)!r} is a symbolic link, which the scan "
                    "does not follow; put the folder itself in the link's place"
                )
            else:
                detail = (
                    "kept: its files exist, but under a hidden or ignored name that the scan "
                    "skips; move it to a folder the scan sees"
                )
            return {"kind": "not-scanned", "path": row.path, "detail": detail}
        renamed = self._nfc_alias(row.path) or self._unsupported_ids(scan).get(row.id)
        if renamed is None:
            return None
        detail = (
            f"kept: its files are now named {fs.printable(renamed)!r}, which the store cannot "
            "use; rename them back"
        )
        return {"kind": "unsupported-name", "path": row.path, "detail": detail}

    def _nfc_alias(self, rel: str) -> str | None:
        """The path on disk whose NFC form is ``rel`` but whose bytes differ, if there is one.

        Linux compares names byte by byte: 'café' copied from macOS (decomposed, NFD) is another
        name than the NFC 'café' the index holds. Only called for a path that is not there.
        """
        found: list[str] = []
        folder = self.store.root
        for seg in rel.split("/"):
            if not os.path.lexists(folder / seg):
                if seg.isascii():
                    return None  # no other Unicode form: no listing (a mass delete lists none)
                try:
                    names = os.listdir(folder)
                except OSError:
                    return None
                same = [n for n in names if unicodedata.normalize("NFC", n) == seg]
                if not same:
                    return None
                seg = same[0]
            found.append(seg)
            folder = folder / seg
        alias = "/".join(found)
        return alias if alias != rel else None

    def _unsupported_ids(self, scan: _Scan) -> dict[str, str]:
        """Blueprint id -> unsupported YAML path, from the meta files of unsupported names."""
        if scan.carried is None:
            scan.carried = {}
            for rel in scan.unsupported:
                try:
                    raw = self._read_meta(fs.meta_path_for(rel))
                    if raw is not None:
                        scan.carried[decode_meta(raw, source=rel).id] = rel
                except (OSError, LocalStoreError):
                    continue  # no usable meta: nothing to recognise it by
        return scan.carried

    @staticmethod
    def _report_flagged(by_path: dict[str, _Listed], report: CheckReport) -> None:
        # A file that does not parse keeps its last good revision; it stays reported until fixed.
        for row in by_path.values():
            if row.flagged:
                report.problems.append({"kind": "flagged", "path": row.path, "detail": row.flagged})

    @staticmethod
    def _report_unsupported(scan: _Scan, report: CheckReport) -> None:
        # Never dropped in silence: the user sees which files the store does not take, and why.
        for rel, why in sorted(scan.unsupported.items()):
            shown = fs.printable(rel)
            log.warning("not a usable blueprint name, left alone: %s (%s)", shown, why)
            report.problems.append({"kind": "unsupported-name", "path": shown, "detail": why})
        for prefix, error in scan.unlistable:
            shown = fs.printable(prefix or ".")
            log.warning("cannot read the folder %s, left alone: %s", shown, error)
            detail = (
                f"cannot be read ({error.strerror or error}): its blueprints are left as they are"
            )
            report.problems.append({"kind": "unreadable-folder", "path": shown, "detail": detail})
        for rel in sorted(scan.conflicts):
            # A conflict copy is another device's version that a sync tool (syncing the
            # folder itself) could not merge. Imported, it became a second blueprint with a new
            # id, pushed to every device; ignored without a word, that version was lost from view.
            folder, _, name = rel.rpartition("/")
            original, tool = fs.conflict_copy(name) or (name, "sync tool")
            if folder:
                original = f"{folder}/{original}"
            which = "meta file (name, tags, description)" if rel.endswith("json") else "file"
            detail = (
                f"a {tool} conflict copy of {fs.printable(original)} (another device's "
                f"version of its {which}); it is not imported: compare the two, copy what you "
                "want to keep into the blueprint, then delete this copy"
            )
            report.problems.append(
                {"kind": "conflict-copy", "path": fs.printable(rel), "detail": detail}
            )

    def _describe(
        self,
        scan: _Scan,
        by_path: dict[str, _Listed],
        changed: list[str],
        missing: list[_Listed],
        orphans: list[str],
        stale: list[str],
        report: CheckReport,
    ) -> None:
        keys = {fs.path_key(p): p for p in by_path} if set(changed) - by_path.keys() else {}
        for rel in changed:
            listed = by_path.get(rel)
            meta_rel = fs.meta_path_for(rel)
            if meta_rel not in scan.metas:
                not_a_file = self._meta_not_regular(meta_rel)
                if not_a_file is not None:  # (new or indexed: the pair is not taken either way)
                    report.problems.append(not_a_file)
                    continue
            if listed is None:
                report.problems.append(self._new_pair_problem(keys, rel, meta_rel in scan.metas))
                continue
            try:
                yaml_bytes = fs.read_regular(self.store.root / rel)
                meta_raw = (self._read_meta(meta_rel) or b"") if meta_rel in scan.metas else b""
            except FileNotFoundError:
                continue
            except StorageError as exc:
                report.problems.append({"kind": "skipped", "path": rel, "detail": str(exc)})
                continue
            if meta_rel not in scan.metas:
                stub = cloud_stub(self.store.root, meta_rel) if listed is not None else None
                report.problems.append(
                    _evicted(rel, stub)
                    if stub is not None
                    else {"kind": "missing-meta", "path": rel, "detail": meta_rel}
                )
                continue
            with self.store.index.read() as cur:
                full = self._with_id(cur, listed.id)
            if full is None or full.deleted or full.path != rel:
                continue  # changed since the first look (another process): the next check sees it
            if sha256_hex(meta_raw) != full.meta_sha256:
                try:
                    decode_meta(meta_raw, source=meta_rel)
                except InvalidMetaError as exc:
                    report.problems.append(
                        {"kind": "invalid-meta", "path": meta_rel, "detail": str(exc)}
                    )
                    continue
                report.problems.append({"kind": "changed", "path": rel, "detail": "meta differs"})
            elif sha256_hex(yaml_bytes) != full.yaml_sha256 or full.flagged:
                report.problems.append(self._changed_problem(rel, yaml_bytes, full))
        for row in missing:
            kept = self._still_on_disk(row, scan)
            report.problems.append(kept or {"kind": "missing", "path": row.path, "detail": row.id})
        for rel in orphans:
            report.problems.append({"kind": "orphan-meta", "path": rel, "detail": "no YAML"})
        for rel in stale:
            report.problems.append({"kind": "temp-file", "path": rel, "detail": "leftover"})

    def _changed_problem(self, rel: str, yaml_bytes: bytes, row: Row) -> dict[str, str]:
        """What check reports of the indexed YAML ``rel`` whose file differs from ``row``: what
        --fix (and the watcher) will say of it, with what to do.

        It said "changed: content differs" of a file --fix then refused as invalid-yaml and
        flagged: the user ran --fix to repair a file only an editor can."""
        refused = _yaml_refused(rel, yaml_bytes, self.store.limits)
        if refused is not None:
            return refused
        if sha256_hex(yaml_bytes) == row.yaml_sha256:  # (a flagged file put back: --fix heals it)
            return {"kind": "changed", "path": rel, "detail": "back to its last good version"}
        return {"kind": "changed", "path": rel, "detail": "content differs"}

    def _new_pair_problem(self, keys: dict[str, str], rel: str, has_meta: bool) -> dict[str, str]:
        """What check reports of the YAML ``rel`` that has no row: what --fix (and the watcher)
        find when they try to index it, in their order (the meta file, a case twin, the YAML).

        It said "unindexed: not in index" of a file --fix refused as invalid: the user ran
        --fix, which reported the file invalid, and check then said "unindexed" again. Reads
        the new pair (a check of a folder full of new files reads each once, as --fix does)."""
        meta_rel = fs.meta_path_for(rel)
        try:
            raw = self._read_meta(meta_rel) if has_meta else None
            if raw is not None:
                decode_meta(raw, source=meta_rel)
            holder = self._case_twin(keys, rel)
            if holder is not None:
                detail = f"differs only by case from {holder}; rename one of them"
                return {"kind": "case-collision", "path": rel, "detail": detail}
            yaml_bytes = self._read(rel)
            refused = (
                None if yaml_bytes is None else _yaml_refused(rel, yaml_bytes, self.store.limits)
            )
            if refused is not None:
                return refused
        except InvalidMetaError as exc:
            return {"kind": "invalid-meta", "path": meta_rel, "detail": str(exc)}
        except InvalidInputError as exc:  # (InvalidYAMLError, LimitExceededError)
            return {"kind": "invalid-yaml", "path": rel, "detail": said_of_file(exc, rel)}
        except (OSError, StorageError) as exc:
            return {"kind": "skipped", "path": rel, "detail": str(exc)}
        return {"kind": "unindexed", "path": rel, "detail": "not in index"}

    def refused_new_pair(
        self, scan: _Scan, keys: dict[str, str], rel: str
    ) -> dict[str, str] | None:
        """What check, --fix and the watcher report of the YAML ``rel`` that has no row (``keys``:
        path_key -> indexed path) when they cannot index it; None when they can. For status,
        which judged such files on its own (the YAML before the meta, without the hint)."""
        meta_rel = fs.meta_path_for(rel)
        has_meta = meta_rel in scan.metas
        problem = None if has_meta else self._meta_not_regular(meta_rel)
        problem = problem or self._new_pair_problem(keys, rel, has_meta)
        return None if problem["kind"] == "unindexed" else problem

    def _meta_not_regular(self, meta_rel: str) -> dict[str, str] | None:
        """The problem to report if a folder or link has the name of a meta file the scan did
        not find (it said "missing-meta", or "unindexed" for a new pair)."""
        try:
            mode = os.lstat(self.store.root / meta_rel).st_mode
        except OSError:
            return None
        return None if stat.S_ISREG(mode) else _meta_not_a_file(meta_rel, fs.kind_of(mode))

    def _case_twin(self, keys: dict[str, str], rel: str) -> str | None:
        """The indexed path (of ``keys``: path_key -> path) that differs from ``rel`` by case."""
        path = keys.get(fs.path_key(rel))
        return path if path is not None and path != rel and self._exact_exists(path) else None
