"""Unparsable edits a write replaces: kept in <data>/recovered/ first, and reported until removed.

A blueprint whose file (or meta file) does not parse is flagged: the index keeps its last good
revision, and the bytes on disk are in no revision (they cannot be one). A save, move, restore or
delete of that blueprint replaces or removes those files; the person's half-done edit was then
gone without a trace. The write still goes ahead (it is what the app asked for, and a restore is
how a person gets out of a broken file), but first the files whose bytes no revision holds are
copied durably to ``<data>/recovered/<UTC time>/<their paths>`` (as reconcile keeps a killed
save's temp), a warning is logged, the write's event says where they went, and ``check`` reports
each one as ``edit-kept`` until the person removes it from there. Refusing the write instead was
rejected: the app could not get past a file it cannot see (``load`` gives the last good
revision), nor could a restore repair it (see docs/architecture.md, "Unparsable edits").

The notes live in the index's ``settings`` table (``kept-edit:<file under recovered/>``), written
in the write's own transaction: a write that rolls back leaves no note (its put-back restores the
file, so the copy is only a spare). Reconcile's own keeps (a killed save's temp, an orphan meta
file edited by hand) leave the same notes (``note_kept``), so that ``check`` and ``doctor`` tell of
every file LocalStore put in <data>/recovered/ until the person removes it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore.blueprint import sha256_hex
from localstore.errors import LocalStoreError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, CheckReport, Row

log = logging.getLogger("localstore.store")

NOTE_PREFIX = "kept-edit:"
# The key range of the notes (';' follows ':'): an index range scan, not a scan of settings.
_NOTE_END = "kept-edit;"


def keep_flagged(
    store: BlueprintStore,
    cur: Any,
    row: Row,
    yaml_bytes: bytes | None,
    meta_bytes: bytes | None,
    doing: str,
) -> str:
    """Copy the files of flagged ``row`` (their bytes as read now) that no revision holds to
    <data>/recovered/, durably, before the write (``doing``: "a save replaced", "a delete
    removed") goes on; returns the sentence for the write's event ('' when every file is a
    recorded version). Raises StorageError (the write then fails and nothing is replaced)."""
    from localstore._reconcile import keep_recovered

    meta_rel = fs.meta_path_for(row.path)
    files = [
        (rel, data)
        for rel, data, recorded in (
            (row.path, yaml_bytes, row.yaml_sha256),
            (meta_rel, meta_bytes, row.meta_sha256),
        )
        if data is not None and sha256_hex(data) != recorded
    ]
    if not files:
        return ""
    kept = keep_recovered(store.paths.data, files)
    recovered = store.paths.data / "recovered"
    reason = row.flagged or "it does not parse"
    where = ", ".join(str(dest) for dest in kept)
    said = f"the version on disk did not parse ({reason}); kept at {where}"
    for (rel, _), dest in zip(files, kept, strict=True):
        detail = (
            f"kept: this file did not parse ({reason}) when {doing} it, so no revision "
            f"holds it; it is now {dest} (copy what you want from it into the blueprint, "
            "then remove that copy: check reports it until then)"
        )
        # With the blueprint, the revision the write followed and the event's sentence: another
        # process hears of this write from the index alone (sync._follow), and says it as well.
        note = {"path": rel, "detail": detail, "id": row.id, "after": row.rev, "event": said}
        _write_note(cur, recovered, dest, note)
    log.warning(
        "%s did not parse (%s); its bytes, in no revision, were kept at %s before %s them",
        row.path,
        reason,
        where,
        doing,
    )
    return said


def keep_set_aside(store: BlueprintStore, aside: str, rel: str) -> None:
    """Keep a file another program saved at ``rel`` (a YAML or meta file) that a write had to take
    off the name (files.TargetChangedError: that program saved twice while the write was
    putting its first save back) in <data>/recovered/, noted for ``check``, unless a revision
    holds its bytes; then remove it from ``aside`` (once the note is committed).

    Both of that program's versions are then kept: one at its name (the write records it and
    runs again), this one here. Raises StorageError, OSError."""
    from localstore._reconcile import Reconciler, keep_recovered

    path = Path(aside)
    try:
        data = fs.read_regular(path)
    except FileNotFoundError:
        return
    with store.index.write() as cur:
        if data and not Reconciler._version_known(cur, fs.folder_of(rel), data):
            (kept,) = keep_recovered(store.paths.data, [(rel, data)])
            detail = (
                f"kept: another program saved {fs.printable(rel)} twice while LocalStore was "
                f"writing it; the version at its name is recorded, and this one, which no "
                f"revision holds, is now {kept} (copy what you want from it into the "
                "blueprint, then remove that copy: check reports it until then)"
            )
            note_kept(cur, store.paths.data, kept, rel, detail)
            log.warning("%s changed twice during a write; kept a version at %s", rel, kept)
        store.index.after_commit(lambda: fs.remove_file(path))


def note_kept(
    cur: Any, data_dir: Path, dest: Path, rel: str, detail: str, *, acknowledged: bool = True
) -> None:
    """Record that reconcile kept bytes of ``rel`` (the file they were, or were a version of)
    at ``dest`` under <data>/recovered/, in ``cur``'s transaction: ``check`` reports it as
    ``edit-kept`` (``detail``) until the person removes it, as a write's kept edit.

    For reconcile's own keeps (an interrupted save's temp, a hand-edited orphan meta file):
    told only in that pass's report, which an app's open or a watcher's rescan shows no one,
    they were never heard of again. The note names no write (kept_by_writes passes it by):
    no blueprint's change moved these bytes. The caller removes the original only once this
    is committed, so that a pass that rolls back leaves it to be kept (and noted) again.

    ``acknowledged=False``: the bytes are a version no one was ever told was saved (an
    interrupted save's temp: the save never returned). Kept all the same, and listed by
    ``doctor`` (unacknowledged_kept), but not a problem ``check`` reports: a crash then left
    every check failing until the person found and deleted a copy of something LocalStore
    never promised to keep (the crash harness, tests/store/test_crash.py, requires check clean
    after every kill)."""
    note: dict[str, Any] = {"path": rel, "detail": detail}
    if not acknowledged:
        note["unacknowledged"] = True
    _write_note(cur, data_dir / "recovered", dest, note)


def _write_note(cur: Any, recovered: Path, dest: Path, note: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (NOTE_PREFIX + dest.relative_to(recovered).as_posix(), json.dumps(note)),
    )


def kept_by_writes(cur: Any, blueprint_id: str, *, since: int, upto: int) -> str:
    """What the events of the writes of ``blueprint_id`` after revision ``since`` up to ``upto``
    said of the edits they kept ('' when none kept any): for a change another process committed.

    Read from the notes, so a kept file the person removed (and ``check --fix`` forgot) is no
    longer told; notes written before they named their write tell nothing. One range scan of
    the notes, which are few (each until its file is removed)."""
    said: list[str] = []
    for (value,) in cur.execute(
        "SELECT value FROM settings WHERE key >= ? AND key < ? ORDER BY key",
        (NOTE_PREFIX, _NOTE_END),
    ):
        try:
            note = json.loads(value)
            after = int(note["after"])
            mine = note["id"] == blueprint_id and since <= after < upto
            sentence = str(note["event"])
        except (ValueError, TypeError, KeyError):
            continue  # (an older note: no write named)
        if mine and sentence not in said:  # (the pair's two files: one sentence)
            said.append(sentence)
    return "; ".join(said)


def report_kept(store: BlueprintStore, report: CheckReport, *, fix: bool) -> None:
    """Report each file still in <data>/recovered/ as ``edit-kept``: with its note's words (a
    write's, or one reconcile kept: see note_kept), or plainly for one without a note; with
    ``fix`` forget the notes of those the person has removed (nothing else is done to them:
    they are theirs).

    A file without a note is one whose note was lost: a write killed after keeping it and
    after its renames, but before its index commit (the note rolled back with it, the file it
    copied already replaced: the copy is then the only one), or one kept by a LocalStore from
    before the notes. Reported all the same, unless it is only a spare (see _spare): the
    folder holds nothing else, and a walk of it (few files, each until its person removes it)
    is all it costs."""
    recovered = store.paths.data / "recovered"
    notes = _all_notes(store)
    gone: list[str] = []
    for key, value in notes:
        if not _exists(recovered / str(key)[len(NOTE_PREFIX) :]):
            gone.append(str(key))
            continue
        note = json.loads(value)
        if note.get("unacknowledged"):
            continue  # (doctor lists those: see note_kept)
        report.problems.append(
            {"kind": "edit-kept", "path": str(note["path"]), "detail": str(note["detail"])}
        )
    noted = {str(key)[len(NOTE_PREFIX) :] for key, _ in notes}
    for rel in _files_under(recovered):
        if rel in noted:
            continue
        # <UTC time>/<the file's path in the blueprints folder>, as keep_recovered names it.
        was = rel.partition("/")[2] or rel
        if _spare(store, recovered, rel, was, noted):
            continue
        detail = (
            f"kept: {recovered / rel} is in data/recovered/ with no record of why (a write or "
            "a reconcile interrupted after keeping it, or an older LocalStore kept it); it may "
            "be the only copy of a version of this file: take what you need from it, then "
            "delete it (check reports it until then)"
        )
        report.problems.append({"kind": "edit-kept", "path": was, "detail": detail})
    if fix and gone:
        with store.index.write() as cur:
            cur.executemany("DELETE FROM settings WHERE key = ?", [(key,) for key in gone])


def _all_notes(store: BlueprintStore) -> list[tuple[Any, Any]]:
    """Every kept-edit note of the home: (settings key, JSON value), by key."""
    with store.index.read() as cur:
        return cur.execute(
            "SELECT key, value FROM settings WHERE key >= ? AND key < ? ORDER BY key",
            (NOTE_PREFIX, _NOTE_END),
        ).fetchall()


def unacknowledged_kept(store: BlueprintStore) -> list[str]:
    """The copies in <data>/recovered/ of versions no save acknowledged (interrupted saves'
    temps, see note_kept), still there: paths relative to the home's data folder."""
    recovered = store.paths.data / "recovered"
    notes = _all_notes(store)
    found = []
    for key, value in notes:
        rel = str(key)[len(NOTE_PREFIX) :]
        try:
            unacknowledged = bool(json.loads(value).get("unacknowledged"))
        except (ValueError, AttributeError):
            continue
        if unacknowledged and _exists(recovered / rel):
            found.append(f"recovered/{rel}")
    return found


def _spare(store: BlueprintStore, recovered: Path, rel: str, was: str, noted: set[str]) -> bool:
    """Whether the unnoted kept file ``rel`` is only a spare: its bytes are the file's at its
    path now (a write that rolled back put that file back), or a noted kept file's of the same
    path (a pass that rolled back kept it, the next one kept it again). Read only for the few
    files without a note."""
    try:
        data = fs.read_regular(recovered / rel)
    except (OSError, LocalStoreError):
        return False  # (unreadable: reported, the person can look)
    others = [store.root / was] + [
        recovered / key for key in noted if key.partition("/")[2] == was and key != rel
    ]
    for other in others:
        try:
            if fs.read_regular(other) == data:
                return True
        except (OSError, LocalStoreError):
            continue
    return False


def _files_under(folder: Path) -> list[str]:
    """The files under ``folder`` (paths relative to it, '/'-separated, sorted); hidden ones
    (a file manager's .DS_Store) left out. An unreadable subfolder is passed by."""
    found: list[str] = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(parent).relative_to(folder)
        found.extend(
            (base / name).as_posix()
            for name in names
            if not name.startswith(".") and os.path.isfile(os.path.join(parent, name))
        )
    return sorted(found)


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # (an unreadable folder: still there as far as anyone can tell)
        return True
