"""Reconcile the index with the files on disk (the files are the truth).

Used on open, by ``check``, by the watcher for every settled path and for rescans. The pass is
incremental: a pair whose size, mtime and change time match the index is not read at all
(``files.stat_unchanged``); others are hashed and compared, so touching a file without changing it
costs one read and records nothing.

Identity rules: the id in the meta file is the identity. A YAML that moved without its meta is re-paired
with the blueprint whose file vanished and whose YAML hash matches; a meta file whose YAML was renamed
by the user follows it; a copied pair (same id at two live paths) gets a new id for the copy.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
import unicodedata
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import apsw

from localstore import _late_meta as late_meta
from localstore import files as fs
from localstore._flag_words import flags_in_older_words, note_flag_words
from localstore._kept_edits import note_kept
from localstore._revisions import revision_text
from localstore.blueprint import (
    MAX_META_BYTES,
    BlueprintMeta,
    YamlLimits,
    check_yaml,
    decode_meta,
    encode_meta,
    file_hint,
    new_id,
    sha256_hex,
    utc_now,
)
from localstore.errors import (
    FolderAwayError,
    IndexStoreError,
    InvalidInputError,
    InvalidMetaError,
    LocalStoreError,
    StorageError,
    StoreClosedError,
)
from localstore.events import Event
from localstore.index import map_apsw_error

if TYPE_CHECKING:
    from localstore._presence import WatchPeriods
    from localstore.store import BlueprintStore, CheckReport, Row

log = logging.getLogger("localstore.reconcile")

STALE_TEMP_SECONDS = 60.0
# How much of a meta file is read: decode_meta's own cap (1 MiB), so that a bigger one is still
# reported as too large. max_yaml_bytes limits the YAML only; reading metas with it cut a meta
# with a long description short, reported it as invalid JSON, and the hint (delete the meta)
# then gave the blueprint a new id.
META_READ_LIMIT = MAX_META_BYTES


class _MetaChanged(Exception):
    """Another program saved a meta file between an ingest's read of it and the rename that
    was to put a flushed temp in its place (nothing replaced): the ingest reads it again."""


@dataclass
class _Scan:
    yamls: dict[str, fs.FileStat] = field(default_factory=dict)
    metas: dict[str, fs.FileStat] = field(default_factory=dict)
    temps: dict[str, fs.FileStat] = field(default_factory=dict)
    # YAML paths (of a YAML or meta file) that cannot be a blueprint's name here, and why.
    unsupported: dict[str, str] = field(default_factory=dict)
    # The ids in those names' meta files (read only when a live row's file is missing).
    carried: dict[str, str] | None = None
    # Folders (prefix, error) the walk could not list: what is under them is unknown, not gone.
    unlistable: list[tuple[str, OSError]] = field(default_factory=list)
    # Syncthing's conflict copies of blueprint files (never imported; reported).
    conflicts: list[str] = field(default_factory=list)


class RefusedPair(NamedTuple):
    """A new pair (no row) refused: its files' stats when judged (None: missing), and why."""

    yaml: fs.FileStat | None
    meta: fs.FileStat | None
    reason: str

    def unchanged(self, yaml: fs.FileStat | None, meta: fs.FileStat | None) -> bool:
        """Whether the pair still has the stats it was refused with (nothing to read again)."""
        return _same_file(self.yaml, yaml) and _same_file(self.meta, meta)


def _same_file(then: fs.FileStat | None, now: fs.FileStat | None) -> bool:
    if then is None or now is None:
        return then is now
    return fs.stat_unchanged(now, *then)


def _unsupported(rel: str) -> str | None:
    """Why a YAML path found on disk cannot be indexed as it is, or None if it can."""
    try:
        canonical = fs.normalize_path(rel)
    except InvalidInputError as exc:
        return str(exc)
    if canonical != rel:  # normalize_path changes nothing else in a name ending in YAML_SUFFIX
        return (
            "the name is not in Unicode NFC form (as copied from macOS); "
            f"rename it to {canonical!r}"
        )
    return None


# The blueprints folder the index describes, as "st_dev:st_ino" (see check_root).
ROOT_ID_SETTING = "blueprints_folder_id"
# A file the user creates in an empty blueprints folder to say its blueprints are really gone
# (hidden: the scan and the watcher pass it by). check_root removes it once it has answered.
CONFIRM_EMPTY_NAME = ".localstore-confirm-empty"
# The folder's own mark: a hidden file, written when the index records the folder. The
# (device, inode) pair alone did not tell the folder apart from a new one made at the same path:
# ext4 hands a freed inode number out again (``rm -rf blueprints; mkdir blueprints`` got the same
# one in a watcher run), and that empty folder then counted as the old one emptied: every
# blueprint was recorded deleted, and sync pushed the deletes. A folder the user empties keeps
# the mark (``rm blueprints/*`` is still an ordinary delete); a recreated one lacks it.
# Its text is the same in every store, so that copies of a folder (a bundle imported elsewhere,
# another device's folder) stay byte for byte alike; the index's setting says the folder was marked.
ROOT_MARK_NAME = ".localstore-folder"
ROOT_MARK_TEXT = (
    "LocalStore blueprints folder: keep this file (it tells this folder from a new one)"
)
ROOT_MARK_SETTING = "blueprints_folder_mark"


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


def _from_index(exc: BaseException) -> bool:
    """True for a storage error the index raised (a mapped apsw error), not a file's."""
    return isinstance(exc, StorageError) and isinstance(exc.__cause__, apsw.Error)


def check_root(store: BlueprintStore) -> None:
    """Make sure the blueprints folder is the one the index describes before anything compares
    them (one stat and one read when it is).

    The index keeps the folder's identity (device and inode). A home without live blueprints
    gets the folder (first run, ``init``). Another identity is accepted when the folder holds
    blueprint files (a restored backup, a store made before identities were kept, the index
    moved with its folder) or the user's confirmation file, and is then recorded.

    Raises StorageError when the folder is missing, or is another folder without any blueprint,
    while blueprints are indexed. Whether this open created the folder is not the test: other
    code (a login, ``localstore cred``) made it empty, an unmounted drive leaves its empty mount
    point, and a reconcile would then record every blueprint deleted and sync push the deletes.
    """
    root = store.root
    try:
        st = os.stat(root)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise root_loop_error(root) from exc
        raise fs.map_os_error(exc, "cannot open the blueprints folder", root) from exc
    ident = f"{st.st_dev}:{st.st_ino}" if st is not None else None
    mark = store.index.get_setting(ROOT_MARK_SETTING)
    if ident is not None and ident == store.index.get_setting(ROOT_ID_SETTING):
        if mark is None:
            # An index from before marks (or a folder the mark could not be written to): the
            # identity is all there is; mark the folder now.
            mark_root(store)
            return
        if read_root_mark(root) == mark:
            return
        # Same inode number, but not the folder that was marked: a new folder that got the
        # freed number. It is checked like any other folder below.
    with store.index.read() as cur:
        (live,) = cur.execute("SELECT count(*) FROM blueprints WHERE deleted = 0").fetchone()
    if st is None:
        if live:
            _refuse_root(store, live, "is missing")
        fs.ensure_dir(root)
        st = os.stat(root)
    elif not stat.S_ISDIR(st.st_mode):
        if live:
            _refuse_root(store, live, "is not a folder")
        # A fresh home whose blueprints "folder" is a file: init said Ready, and every save then
        # failed with "Not a directory (check the disk...)".
        raise StorageError(
            f"the blueprints folder {root} is a file, not a folder",
            hint="move that file away (LocalStore creates the folder), or choose another "
            "--home or LOCALSTORE_HOME",
        )
    confirmed = live > 0 and os.path.isfile(root / CONFIRM_EMPTY_NAME)
    if live and not confirmed and not _holds_blueprints(root):
        _refuse_root(store, live, "holds no blueprints (and is not the folder they were in)")
    adopt_root(store, f"{st.st_dev}:{st.st_ino}")


def adopt_root(store: BlueprintStore, ident: str) -> None:
    """Record the blueprints folder as the one the index describes: its identity
    (``st_dev:st_ino``) and mark; then remove the user's confirmation that it was emptied on
    purpose, which has answered (the blueprints it lacks are recorded deleted next: by the
    open's reconcile, or by a running watcher's rescan).

    Raises StorageError (or IndexStoreError) when the index or the confirmation cannot be
    written."""
    store.index.set_setting(ROOT_ID_SETTING, ident)
    mark_root(store)
    confirm = store.root / CONFIRM_EMPTY_NAME
    if os.path.isfile(confirm):
        log.warning("%s: confirmed; recording the blueprints missing from it deleted", confirm)
        fs.remove_file(confirm)


def refuse_a_vanished_root(store: BlueprintStore, cur: Any) -> None:
    """Raise StorageError before a write would go into a blueprints folder that is missing, or
    another folder without any blueprint, while blueprints are indexed (one stat and one read
    when the folder is the recorded one).

    A write made the folder again (``ensure_dir`` makes the parents): a pull applied while the
    folder was moved away or its drive unmounted, or an app's save, left a new folder with one
    blueprint in it, which the watcher adopts as a restored copy, recording every blueprint it
    lacks deleted, and sync pushed the deletes to every device. The watcher's own test for such
    a folder is the same (``Watcher._root_status``)."""
    root = store.root
    settings = dict(
        cur.execute(
            "SELECT key, value FROM settings WHERE key IN (?, ?)",
            (ROOT_ID_SETTING, ROOT_MARK_SETTING),
        ).fetchall()
    )
    recorded = settings.get(ROOT_ID_SETTING)
    if recorded is None:
        return  # an index that never recorded its folder: nothing to tell it from
    try:
        st = os.stat(root)
    except FileNotFoundError:
        what = "is missing (moved away, deleted, or on a drive not mounted)"
    except OSError:
        return  # the write itself says what is wrong with it
    else:
        mark = settings.get(ROOT_MARK_SETTING)
        if f"{st.st_dev}:{st.st_ino}" == recorded and (
            mark is None or read_root_mark(root) == mark
        ):
            return
        if _holds_blueprints(root) or os.path.isfile(root / CONFIRM_EMPTY_NAME):
            return  # a restored copy, or the user's confirmation: the watcher adopts it
        what = "was replaced by a folder without blueprints (a drive not mounted?)"
    (live,) = cur.execute("SELECT count(*) FROM blueprints WHERE deleted = 0").fetchone()
    if live:
        _refuse_root(store, live, what)


def _meta_not_a_file(meta_rel: str, what: str) -> dict[str, str]:
    """check's problem for a folder or link in a meta file's place (left as it is)."""
    detail = (
        f"not read: a {what} has this meta file's name (a link is never read or written "
        "through); move it away, and 'localstore check --fix' writes the blueprint's own meta"
    )
    return {"kind": "not-a-file", "path": meta_rel, "detail": detail}


def root_loop_error(root: Path) -> StorageError:
    """The blueprints folder is a symbolic link that leads back to itself (open() raised
    pathlib's untyped RuntimeError)."""
    return StorageError(
        f"the blueprints folder {root} is a symbolic link that loops (to itself, or through "
        "other links back to itself)",
        hint=f"fix or remove the link (ls -l {root} shows where it points), or choose another "
        "--home or LOCALSTORE_HOME",
    )


def read_root_mark(root: Path) -> str | None:
    """The text of the blueprints folder's mark file (None: missing or unreadable)."""
    try:
        raw = fs.read_bytes(root / ROOT_MARK_NAME, limit=256)
    except (OSError, LocalStoreError):
        return None
    return raw.decode("ascii", "replace").strip() or None


def mark_root(store: BlueprintStore) -> None:
    """Put the mark into the blueprints folder and record in the index that it is marked.

    A folder that cannot take it (read-only, a full disk) is not an error: it is then known by
    its identity alone, as before marks, and marking is tried again at the next open.
    """
    mark = ROOT_MARK_TEXT
    if read_root_mark(store.root) != mark:
        try:
            fs.atomic_write(store.root / ROOT_MARK_NAME, f"{mark}\n".encode("ascii"))
        except (OSError, LocalStoreError) as exc:
            log.warning("cannot mark the blueprints folder %s: %s", store.root, exc)
            return
    if store.index.get_setting(ROOT_MARK_SETTING) != mark:
        store.index.set_setting(ROOT_MARK_SETTING, mark)


def _holds_blueprints(root: Path) -> bool:
    """Whether any blueprint file (or a folder that cannot be read) is under ``root``."""
    unlistable: list[tuple[str, OSError]] = []
    walk = fs.walk_blueprint_files(root, fs.IgnoreRules.for_root(root), unlistable=unlistable)
    return any(not rel.endswith(fs.TEMP_SUFFIX) for rel, _ in walk) or bool(unlistable)


def _refuse_root(store: BlueprintStore, live: int, what: str) -> NoReturn:
    """A vanished or emptied blueprints folder is an unmounted disk or a moved folder far more
    often than a user deleting every blueprint: recording ``live`` deletes (which sync would then
    push to every device) is not a repair."""
    root = store.root
    raise FolderAwayError(
        f"the blueprints folder {root} {what}, but {live} blueprint(s) are indexed",
        hint="reconnect or restore the folder (or choose the right home with --home or "
        "LOCALSTORE_HOME); "
        f"if they were deleted on purpose, create an empty file {root / CONFIRM_EMPTY_NAME} "
        "(and its folder): a running watcher (the daemon's) then records them deleted, or the "
        "next open does",
    )


def _linked_folder(root: Path, rel: str) -> str | None:
    """The first folder of ``rel`` below ``root`` that is a symbolic link, if any."""
    return fs.linked_folder(os.fspath(root), rel)


class _Listed(NamedTuple):
    """What the whole-tree comparison needs of a live index row.

    Not a whole ``Row``: with its meta JSON, hashes and decoded tags one took about 1.5 KB and
    2 JSON decodes, so a reconcile of 100,000 blueprints held 150 MB of rows and spent 40 % of
    its time building them. The few rows that differ from the disk are read whole, one by one.
    """

    rid: int
    id: str
    path: str
    yaml_size: int
    yaml_mtime_ns: int
    meta_size: int
    meta_mtime_ns: int
    flagged: str | None
    yaml_ctime_ns: int | None
    meta_ctime_ns: int | None
    yaml_ino: int | None
    meta_ino: int | None


_LISTED_COLUMNS = (
    "rid, id, path, yaml_size, yaml_mtime_ns, meta_size, meta_mtime_ns, flagged, "
    "yaml_ctime_ns, meta_ctime_ns, yaml_ino, meta_ino"
)


# The stat recorded for a file no scan saw before it was read: matches no file (see _record).
_UNSEEN = fs.FileStat(-2, -2, -2, -2)


def _stat_columns(
    y: fs.FileStat | os.stat_result, m: fs.FileStat | os.stat_result
) -> tuple[int, ...]:
    """The values of the eight stat columns (SET yaml_size=?, ... meta_ino=?) for ``y``, ``m``."""
    return (
        y.st_size,
        y.st_mtime_ns,
        y.st_ctime_ns,
        fs.ino_key(y.st_ino),
        m.st_size,
        m.st_mtime_ns,
        m.st_ctime_ns,
        fs.ino_key(m.st_ino),
    )


_SET_STATS = (
    "yaml_size=?, yaml_mtime_ns=?, yaml_ctime_ns=?, yaml_ino=?, "
    "meta_size=?, meta_mtime_ns=?, meta_ctime_ns=?, meta_ino=?"
)


def stamp_inodes(
    store: BlueprintStore, scan: _Scan, unstamped: dict[str, int], changed: Container[str]
) -> None:
    """Record the scanned inodes of the rows in ``unstamped`` (path -> rid: rows with no
    inode yet, core v8 rows) whose pair the scan found and did not find ``changed``.

    Shared by the open's reconcile and the watcher's rescans: a store opened without a
    reconcile (``localstore watch``, an app's ``reconcile=False``) never stamped them, and its
    rows stayed without the inode check until some later open reconciled. Raises StorageError.
    """
    stamps = [
        (fs.ino_key(y.st_ino), fs.ino_key(m.st_ino), rid)
        for path, rid in unstamped.items()
        if path not in changed
        and (y := scan.yamls.get(path)) is not None
        and (m := scan.metas.get(fs.meta_path_for(path))) is not None
    ]
    if not stamps:
        return
    try:
        with store.index.write() as cur:
            # coalesce: a save by another process since the scan recorded its own inodes.
            cur.executemany(
                "UPDATE blueprints SET yaml_ino = coalesce(yaml_ino, ?), "
                "meta_ino = coalesce(meta_ino, ?) WHERE rid = ?",
                stamps,
            )
    except apsw.Error as exc:
        raise map_apsw_error(exc, "record the files' inodes in the index") from exc


def moved_first(
    paths: list[str], ino_of: Callable[[str], int | None], gone: Container[int]
) -> None:
    """Put first (in place, otherwise in the order given) the paths whose YAML is the very file
    a vanished pair had: its inode (``ino_of``, as ``fs.ino_key`` gives it) is among ``gone``,
    the inodes the index recorded for the YAMLs no longer at their paths. Moved, not copied.

    The first path ingested that carries a vanished blueprint's id (or its YAML's hash) takes
    its identity as a move; a later one finds it live and is a copy. In path order, ``cp m.*
    backup/; mv m.* z/`` gave the identity, the history and sync's record to the copy, and a
    new id to the original. A rename keeps the inode; a copy never has it. Shared by the full
    pass (Reconciler._fix) and the watcher's batches (Watcher._process_due).
    """
    paths.sort(key=lambda rel: ino_of(rel) not in gone)


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
    return rows[0][0], raw is None or Reconciler._meta_known(cur, meta.id, raw)


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


def _pair_stats(scan: _Scan, rel: str) -> list[fs.FileStat]:
    """The scanned stats of the YAML at ``rel`` and of its meta file (if scanned)."""
    m = scan.metas.get(fs.meta_path_for(rel))
    return [scan.yamls[rel]] if m is None else [scan.yamls[rel], m]


def _written_after(*stats: os.stat_result) -> int:
    """The time (ns) a save's meta temp beside these files was written at or after: the latest
    of their modification times that the wall clock has reached.

    A time in the future says nothing of when a file was written here: a meta file synced from a
    device whose clock runs ahead (Syncthing and rsync -t keep mtimes), restored from a backup,
    touched by hand, or written before this clock was stepped back. Taken as the bound, it
    refused the very temp of the update killed between its two renames, and reconcile recorded
    the new YAML with the old meta (the update's name, tags and description lost, its temp later
    swept as stale). Such a file counts by its change time instead (when it got here), or not at
    all when that too lies ahead.
    """
    now_ns = time.time_ns()
    bound = 0
    for st in stats:
        for t in (st.st_mtime_ns, st.st_ctime_ns):
            if t <= now_ns:
                bound = max(bound, t)
                break
    return bound


class Reconciler:
    """One reconcile pass over a store (or one path of it)."""

    def __init__(self, store: BlueprintStore, *, origin: str = "external") -> None:
        self.store = store
        self.origin = origin
        self.rules = fs.IgnoreRules.for_root(store.root)
        self.events: list[Event] = []
        # The full pass's paths to ingest, the ids their meta files carry (read on first need),
        # and rows moved off a path for a blueprint that takes it (see _park).
        self._changed: list[str] | None = None
        self._claims: dict[str, str] | None = None
        self._parked: dict[str, Row] = {}
        # Whether the ingest under way put the meta file in place itself (written, or a
        # flushed temp renamed): its stat is then taken after that, not the scan's (_record).
        self._meta_placed = False
        # The meta file the ingest under way read (what fs.write_checked compares; None: none
        # was there): its rewrite replaces only that file, not an edit saved since the read.
        self._meta_seen: fs.Recorded | None = None
        # The blueprint the path under way is taking from another path (a move), and those
        # whose move's ingest failed this pass: kept where they were, not recorded deleted.
        self._moving: str | None = None
        self._move_failed: set[str] = set()
        # Old meta files of moves, removed once their move is committed (_follow_meta).
        self._leaving: set[str] = set()
        # Whether the full pass reads every flagged file again, its flag reason perhaps in an
        # older localstore's words (_flag_words).
        self._reword = False
        # The new pairs refused with an ``invalid`` event, by YAML path: the stats of the YAML
        # and meta file it judged (None: none) and why, for a watcher's rescan to pass them by
        # until they change (told once, not every 600 s: Watcher._told).
        self.refused: dict[str, RefusedPair] = {}

    # -- scanning ----------------------------------------------------------------------------------

    @property
    def moving(self) -> str | None:
        """The id of the blueprint the last path given to ``ingest_locked`` was taking from
        another path (a move), once its ingest got that far, committed or not; else None. The
        watcher keeps such a blueprint at its old path while the move's ingest is retried."""
        return self._moving

    def scan(self, indexed: Container[str] = ()) -> _Scan:
        """Stat every blueprint file under the root (no reads).

        Paths in ``indexed`` were validated when they were saved; only new names get the full
        path check (most of a 10,000-file rescan otherwise).
        """
        scan = _Scan()
        walk = fs.walk_blueprint_files(
            self.store.root, self.rules, unlistable=scan.unlistable, conflicts=scan.conflicts
        )
        for rel, st in walk:
            if rel.endswith(fs.TEMP_SUFFIX):
                scan.temps[rel] = st
            elif rel.endswith(fs.YAML_SUFFIX):
                why = None if rel in indexed else _unsupported(rel)
                if why is None:
                    scan.yamls[rel] = st
                else:
                    scan.unsupported[rel] = why
            else:
                yaml_rel = fs.yaml_path_for(rel)
                why = None if yaml_rel in indexed else _unsupported(yaml_rel)
                if why is None:
                    scan.metas[rel] = st
                else:  # reported with its YAML's name, not as an orphan
                    scan.unsupported.setdefault(yaml_rel, why)
        return scan

    def _live_rows(self, cur: Any) -> dict[str, _Listed]:
        """Every live row by path: one read for the whole-tree comparison."""
        return {
            t[2]: _Listed(*t)
            for t in cur.execute(f"SELECT {_LISTED_COLUMNS} FROM blueprints WHERE deleted = 0")
        }

    # Per-path decisions look rows up one indexed query at a time, inside the caller's transaction,
    # so they see its earlier changes and cost O(1) per path instead of a reload of the table.
    def _at_path(self, cur: Any, rel: str) -> Row | None:
        return self.store._row_by(cur, "path = ? AND deleted = 0", (rel,))

    def _with_id(self, cur: Any, blueprint_id: str) -> Row | None:
        return self.store._row_by(cur, "id = ?", (blueprint_id,))

    @staticmethod
    def _stat_matches(row: Row | _Listed, y: fs.FileStat, m: fs.FileStat | None) -> bool:
        return (
            m is not None
            and fs.stat_unchanged(
                y, row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino
            )
            and fs.stat_unchanged(
                m, row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino
            )
        )

    def _candidates(
        self, scan: _Scan, by_path: dict[str, _Listed]
    ) -> tuple[list[str], list[_Listed]]:
        changed = [
            rel
            for rel, st in sorted(scan.yamls.items())
            if rel not in by_path
            or not self._stat_matches(by_path[rel], st, scan.metas.get(fs.meta_path_for(rel)))
            or (self._reword and by_path[rel].flagged is not None)
        ]
        missing = [row for path, row in sorted(by_path.items()) if path not in scan.yamls]
        return changed, missing

    # -- the full pass -----------------------------------------------------------------------------

    def run(self, *, fix: bool) -> CheckReport:
        """Compare everything; with ``fix`` apply the differences to the index (and missing metas)."""
        from localstore.store import CheckReport

        report = CheckReport()
        self._compare(report, fix=fix)
        self._parked_pairs(report, fix=fix)
        return report

    def _compare(self, report: CheckReport, *, fix: bool) -> None:
        """Compare the files with the index; with ``fix`` apply the differences."""
        if fix:
            check_root(self.store)  # the folder may have gone since the open checked it
        with self.store.index.read() as cur:
            by_path = self._live_rows(cur)
            self._reword = (
                fix
                and any(row.flagged is not None for row in by_path.values())
                and flags_in_older_words(cur)
            )
        scan = self.scan(by_path)
        changed, missing = self._candidates(scan, by_path)
        orphans = self._orphan_metas(scan)
        stale = self._stale_temps(scan)
        self._report_flagged(by_path, report)
        self._report_unsupported(scan, report)
        if fix:
            self._stamp_inodes(scan, by_path, changed)
        if not (changed or missing or orphans or stale):
            return
        if not fix:
            self._describe(scan, by_path, changed, missing, orphans, stale, report)
            return
        self._judge_ahead(changed)
        try:
            self._fix(report)
        except apsw.Error as exc:  # never leaks out of the public API (open, reconcile, check)
            raise map_apsw_error(exc, "reconcile the index with the files") from exc
        if self._reword:
            self._reworded(report)
        self.store.events.publish(self.events)

    def _reworded(self, report: CheckReport) -> None:
        """The pass's flagged lines in the words its fix flagged them anew with (they were
        taken before it: check --fix, the first thing run after an upgrade, showed the old)."""
        with self.store.index.read() as cur:
            for problem in report.problems:
                row = self._at_path(cur, problem["path"]) if problem["kind"] == "flagged" else None
                if row is not None and row.flagged:
                    problem["detail"] = row.flagged

    def _parked_pairs(self, report: CheckReport, *, fix: bool) -> None:
        """Report each blueprint core v11 kept under a key of its own (index._v11_path_keys)
        beside the one holding its path's key; with ``fix``, give it that key once it is free.

        Such a pair is one file on macOS and Windows, so it stays reported until one of the two
        is renamed. A rename of the kept one gives it its new path's key; a rename (or delete)
        of the other frees the key, which the next full pass gives back here, so that the
        blueprint is again found by its key and blocks the names it collides with.
        """
        parked: list[tuple[int, str, str, Row | None]] = []
        with self.store.index.read() as cur:
            # Keys that start with NUL, through the live-path index: no row, no cost. (Sorted
            # here: ORDER BY path made SQLite scan the whole listing index in path order.)
            for rid, path in sorted(
                cur.execute(
                    "SELECT rid, path FROM blueprints WHERE path_key < char(1) AND deleted = 0"
                ).fetchall(),
                key=lambda r: str(r[1]),
            ):
                key = fs.path_key(str(path))
                holder = self.store._row_by(cur, "path_key = ? AND deleted = 0", (key,))
                parked.append((int(rid), str(path), key, holder))
        for rid, path, key, holder in parked:
            if holder is not None:
                detail = f"differs only by case from {holder.path}; rename one of them"
                report.problems.append({"kind": "case-collision", "path": path, "detail": detail})
                continue
            if not fix:
                continue
            try:
                with self.store.index.write() as cur:
                    # (Taken meanwhile by another process's save: reported next time instead.)
                    cur.execute(
                        "UPDATE blueprints SET path_key = ? WHERE rid = ? AND deleted = 0 AND "
                        "NOT EXISTS (SELECT 1 FROM blueprints WHERE path_key = ? AND deleted = 0)",
                        (key, rid, key),
                    )
            except apsw.Error as exc:  # never leaks out of the public API (open, check)
                raise map_apsw_error(exc, "reconcile the index with the files") from exc

    def _judge_ahead(self, changed: list[str]) -> None:
        """Run the app's validator on the changed files before _fix takes the write lock, as
        the watcher does for its batch: inside it, a slow validator held every other process's
        writes to the home up (at open, after the app was closed a while: many files).

        The ingest inside uses a verdict only for the very bytes judged (BlueprintStore.
        _judge_ahead), so a file changed in between is judged again there; one that cannot be
        read or parsed here is left to the ingest, which reports it. A pair whose bytes are the
        row's (a touch: _restamp records its stats, nothing is judged) is not judged here either.
        At most JUDGED_AHEAD files are read: past that (a first open of a copied home) the rest
        are judged inside, as before, rather than every pair read twice.
        """
        from localstore.store import JUDGED_AHEAD

        store = self.store
        if store.validator is None or not changed:
            return
        texts: list[bytes] = []
        with store.index.read() as cur:
            for rel in changed[:JUDGED_AHEAD]:
                try:
                    yaml_bytes = self._read(rel)
                    if yaml_bytes is None:
                        continue
                    row = self._at_path(cur, rel)
                    if (
                        row is not None
                        and row.flagged is None
                        and sha256_hex(yaml_bytes) == row.yaml_sha256
                        and self._holds(row, rel, fs.meta_path_for(rel))
                    ):
                        continue  # a restamp
                except (LocalStoreError, OSError):
                    continue
                texts.append(yaml_bytes)
        store._judge_texts_ahead(texts)

    def _stamp_inodes(self, scan: _Scan, by_path: dict[str, _Listed], changed: list[str]) -> None:
        """Record the scanned inodes of unchanged pairs whose rows have none (core v8 rows).

        No read: the pair's size, mtime and change time matched, which is what core v8 took
        for unchanged, and the scan has already lstat'ed both files. Reading every pair once
        instead (as the v8 upgrade had to, for the change times) cost about 5 s at 10,000
        blueprints; it would only catch a same-tick rename made before the upgrade. A pair that
        differs goes the usual way (_restamp or an ingest), which records its inodes too. One
        write transaction, on the first open after the upgrade only (later opens find none).
        """
        unstamped = {
            path: row.rid
            for path, row in by_path.items()
            if row.yaml_ino is None or row.meta_ino is None
        }
        stamp_inodes(self.store, scan, unstamped, changed)

    def _fix(self, report: CheckReport) -> None:
        """Apply the differences found under the write lock, one path per savepoint."""
        with self.store.index.write() as cur:
            # Re-scan under the write lock: another process may have saved since the first look.
            by_path = self._live_rows(cur)
            scan = self.scan(by_path)
            changed, missing = self._candidates(scan, by_path)
            # A watcher of another process (the daemon's, an app's) waits for a write's close
            # and gives a vanished file a grace period: read now, half an editor's in-place save
            # that parses was recorded as a revision by any CLI command's open, and a file gone
            # for a moment in a save dance was recorded deleted (its new file then a new
            # blueprint). What it is still to record is its: left alone here, files new,
            # changed or gone alike.
            elsewhere = self._watching_elsewhere() if changed or missing else None
            left: set[str] = set()
            if elsewhere is not None:
                left = {rel for rel in changed if self._watchers_pair(cur, scan, rel, elsewhere)}
                left.update(
                    row.path
                    for row in missing
                    if fs.folder_changed_within(self.store.root, row.path, elsewhere.grace_s)
                )
                changed = [rel for rel in changed if rel not in left]
                missing = [row for row in missing if row.path not in left]
            self._moved_first(changed, scan, missing)
            self._changed = changed
            for rel in changed:
                with self._isolated(rel, report):
                    if not self._restamp(cur, rel, scan):
                        self._ingest_locked(cur, rel, scan, report)
            if self._reword:
                self._note_reworded(cur, by_path, left, report)
            for parked in list(self._parked.values()):
                with self._isolated(parked.path, report):
                    self._unpark(cur, parked, report)
            for row in missing:
                with self._isolated(row.path, report):
                    current = self._with_id(cur, row.id)
                    if current is None or current.deleted or current.path != row.path:
                        continue
                    if current.id in self._move_failed:
                        # Its files moved to a path whose ingest failed (reported as skipped):
                        # recorded deleted, with the meta left behind removed, the next pass
                        # gave the moved YAML a new id and dropped that meta's hand edits.
                        continue
                    kept = self._still_on_disk(current, scan)
                    if kept is not None:
                        report.problems.append(kept)
                    else:
                        self._delete_locked(cur, current, report)
            for rel in self._orphan_metas(self.scan()):
                if fs.yaml_path_for(rel) in left:
                    continue  # (its YAML, gone for a moment, is the watcher's to judge)
                if rel in self._leaving:
                    continue  # (a moved YAML's old meta, removed once the move is committed)
                if self._yaml_may_follow(rel):
                    continue
                with self._isolated(rel, report):
                    self._handle_orphan(cur, rel, report)
            for rel in self._stale_temps(scan):
                with self._isolated(rel, report):
                    self.clear_stale_temp(rel, report)

    @staticmethod
    def _note_reworded(
        cur: Any, by_path: dict[str, _Listed], left: set[str], report: CheckReport
    ) -> None:
        """Note the home's flags in today's words, unless a flagged file was not read again
        (skipped: unreadable; left to another process's watcher): the next pass tries again."""
        missed = left | {p["path"] for p in report.problems if p["kind"] == "skipped"}
        if not any(row.flagged and path in missed for path, row in by_path.items()):
            note_flag_words(cur)

    @staticmethod
    def _moved_first(changed: list[str], scan: _Scan, missing: Sequence[_Listed]) -> None:
        """``moved_first`` for the pass: the vanished pairs are its missing rows."""
        gone = {row.yaml_ino for row in missing if row.yaml_ino is not None}
        if gone:
            moved_first(changed, lambda rel: fs.ino_key(scan.yamls[rel].st_ino), gone)

    def _watchers_pair(self, cur: Any, scan: _Scan, rel: str, periods: WatchPeriods) -> bool:
        """Whether the changed pair at ``rel`` is the other process's watcher's to record now.

        A pair written within its ``write_quiet_s`` may be half written. A pair that would be a
        copy of a live one (``copied_from``) is held by that watcher for its delete grace
        (Watcher._copy_wait): a sync tool applying another device's move writes the new pair
        before it deletes the old one. Decided here once the pair was older than the quiet
        period (1 s) but younger than a ``delete_grace_ms`` set above it, the move became a
        copy: a new id written into the arriving meta (which synced back), the old id recorded
        deleted when the old pair went, and sync pushed a delete and a create. A YAML whose meta
        may have vanished within the grace is held likewise (below).
        """
        stats = _pair_stats(scan, rel)
        if fs.changed_within(stats, periods.write_quiet_s):
            return True
        if fs.meta_path_for(rel) not in scan.metas and fs.folder_changed_within(
            self.store.root, rel, periods.grace_s
        ):
            # Its meta may have gone just now, a pair deleted file by file (a sync tool's half
            # of a move; the watcher gives a vanished meta its grace too). Taken here, the YAML
            # left behind got a made-up id and a meta written beside it, recorded deleted once
            # the YAML went (a create and a delete, pushed by a sync pass run in between).
            return True
        return fs.changed_within(stats, periods.grace_s) and self.copied_from(cur, rel) is not None

    def _watching_elsewhere(self) -> WatchPeriods | None:
        """The periods of the watchers other processes run on this home, when no watcher runs
        on this store object (its own rescans and events decide then), else None."""
        if self.store._watched():
            return None
        return self.store._watching_elsewhere()

    def _yaml_may_follow(self, meta_rel: str) -> bool:
        """Whether a meta file without its YAML is a watcher's to judge: one runs in another
        process and the meta came within its ``write_quiet_s``, so a tool writing the pair file
        by file may bring the YAML next. A sync tool applying another device's move writes the
        new pair (in any order) before it deletes the old one: a command's open in between took
        the arriving meta, its id live at the old path, for a hand-edited copy and moved it to
        <data>/recovered/, and the YAML then came without it and got a new id."""
        periods = self._watching_elsewhere()
        if periods is None:
            return False
        try:
            st = os.lstat(self.store.root / meta_rel)
        except OSError:
            return False
        return fs.changed_within([st], periods.write_quiet_s)

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
        acknowledged is missing, and a crash must leave check clean. Any other temp (ours, with nothing new in it: a file set aside, a version
        already in place) is removed as before.
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
            try:
                data = fs.read_regular(root / rel)
            except FileNotFoundError:
                return  # gone since the scan (another pass took it)
            try:
                current: bytes | None = fs.read_regular(root / target)
            except FileNotFoundError:
                current = None
            if data and data != current and not self._temp_version_known(target, data):
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
                return
        elif rel.rpartition("/")[2].startswith(fs.ASIDE_PREFIX) and self._kept_aside(rel, report):
            return
        fs.remove_file(root / rel)
        report.fixed.append({"kind": "temp-file", "path": rel, "detail": "removed"})

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

    @contextlib.contextmanager
    def _isolated(self, rel: str, report: CheckReport) -> Iterator[None]:
        """Run one path's repair in its own savepoint; if that path fails, report it and go on.

        One file the pass cannot handle (unreadable, a name the disk refuses for its meta) made
        every open() fail, so a single bad file took the whole store, and the daemon, down. The
        index failing is not a bad file: that still ends the pass.
        """
        mark = len(self.events)
        parked = dict(self._parked)
        leaving = set(self._leaving)
        entered = False
        self._moving = None
        try:
            with self.store.index.write():
                entered = True
                yield
        except (StoreClosedError, IndexStoreError):
            raise  # (also a write SQLite rolled back whole: going on would commit piecemeal)
        except (OSError, LocalStoreError, apsw.ConstraintError) as exc:
            if not entered or _from_index(exc):
                # The savepoint could not start or end (a full disk under the index): the index
                # failing, not this path. Swallowed at the start, it also broke the pass with
                # "generator didn't yield" instead of the error.
                raise
            del self.events[mark:]  # rolled back with the savepoint: nothing to announce
            self._parked = parked
            self._leaving = leaving  # (their removals went with the savepoint)
            if self._moving is not None:
                self._move_failed.add(self._moving)
            log.warning("reconcile skipped %s: %s", rel, exc)
            report.problems.append({"kind": "skipped", "path": rel, "detail": str(exc)})

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

    # -- one path ----------------------------------------------------------------------------------

    def ingest_path(self, rel: str) -> list[Event]:
        """Reconcile one blueprint path (YAML or meta) in its own transaction; returns its events.

        A YAML that is gone removes its blueprint (the caller applies any grace period first).
        """
        if rel.endswith(fs.META_SUFFIX):
            rel = fs.yaml_path_for(rel)
        if not self.store.index.write_open:
            # Judged before the lock (the ingest takes the verdict for the very bytes judged):
            # inside a caller's transaction that would gain nothing, and read the file twice.
            self.store._judge_files_ahead([rel])
        with self.store.index.write() as cur:
            self.ingest_locked(cur, rel)
        self.store.events.publish(self.events)
        return list(self.events)

    def ingest_locked(
        self, cur: Any, rel: str, *, may_delete: bool = True, trust_stat: bool = True
    ) -> bool:
        """Reconcile one YAML path inside the caller's write transaction (events collect in
        ``self.events`` for the caller to publish after its commit).

        Returns False, changing nothing, if the file is missing and ``may_delete`` is false.
        Without ``trust_stat`` a pair whose size, mtime and change time match the index is still
        read and compared by hash (see ``_holds``).
        """
        from localstore.store import CheckReport

        report = CheckReport()
        self._moving = None
        try:
            y_st = os.stat(self.store.root / rel, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):  # (ENOTDIR: a folder of it is a file)
            if not may_delete:
                return False
            row = self._at_path(cur, rel)
            if (
                row is not None
                and self._nfc_alias(rel) is None
                and cloud_stub(self.store.root, rel) is None
            ):
                # (Renamed to its NFD form, or evicted by a sync client: kept; the full pass
                # reports it.)
                self._delete_locked(cur, row, report)
            return True
        if not stat.S_ISREG(y_st.st_mode):
            return True  # a folder or link with a blueprint's name: the scan skips it too
        scan = _Scan()
        scan.yamls[rel] = fs.FileStat.of(y_st)
        meta_rel = fs.meta_path_for(rel)
        with contextlib.suppress(FileNotFoundError):
            m_st = os.stat(self.store.root / meta_rel, follow_symlinks=False)
            if stat.S_ISREG(m_st.st_mode):  # (as the scan: a link is no meta file)
                scan.metas[meta_rel] = fs.FileStat.of(m_st)
        row = self._at_path(cur, rel)
        if (
            row is None
            or not self._stat_matches(row, scan.yamls[rel], scan.metas.get(meta_rel))
            or not (trust_stat or self._holds(row, rel, meta_rel))
        ):
            self._ingest_locked(cur, rel, scan, report)
        return True

    def _restamp(self, cur: Any, rel: str, scan: _Scan) -> bool:
        """Record the scanned stats of a pair whose bytes are the row's (a touch, a chmod, an
        index from before core v8 without change times); False, changing nothing, otherwise.

        Two reads and hashes instead of the whole ingest (parse, validation, lookups): the
        first open of an upgraded 10,000-blueprint home read every pair, and spent 6 s at it.
        The stats are the scan's, taken before the reads: a change after them is seen next time.
        """
        meta_rel = fs.meta_path_for(rel)
        y, m = scan.yamls[rel], scan.metas.get(meta_rel)
        if m is None:
            return False
        row = self._at_path(cur, rel)
        if row is None or row.flagged is not None or not self._holds(row, rel, meta_rel):
            return False
        cur.execute(
            f"UPDATE blueprints SET {_SET_STATS} WHERE rid=?", (*_stat_columns(y, m), row.rid)
        )
        return True

    def _holds(self, row: Row, rel: str, meta_rel: str) -> bool:
        """Whether the pair on disk has exactly the bytes the index recorded for ``row``.

        For a path an event says was written: the same size and mtime do not prove the same
        content where timestamps are coarse (FAT 2 s, exFAT 10 ms, SMB 1 s, kernels before 6.13
        one jiffy), so an edit of one character right after a save looked like the save itself
        and was never recorded. Two small reads; no write when the bytes are the same.
        """
        yaml_bytes = self._read(rel)
        meta_bytes = self._read_meta(meta_rel)
        return (
            yaml_bytes is not None
            and meta_bytes is not None
            and sha256_hex(yaml_bytes) == row.yaml_sha256
            and sha256_hex(meta_bytes) == row.meta_sha256
        )

    def _read(self, rel: str) -> bytes | None:
        """A YAML file's bytes, up to max_yaml_bytes + 1 (None: missing)."""
        try:
            return fs.read_regular(self.store.root / rel, self.store.limits.max_bytes)
        except FileNotFoundError:
            return None

    def _read_meta(self, rel: str) -> bytes | None:
        """A meta file's (or meta temp's) bytes, up to META_READ_LIMIT + 1 (None: missing, or
        not a regular file: a link is never read, like a YAML's)."""
        try:
            return fs.read_regular(self.store.root / rel, META_READ_LIMIT)
        except FileNotFoundError:
            return None

    def _ingest_locked(
        self,
        cur: Any,
        rel: str,
        scan: _Scan,
        report: CheckReport,
        *,
        retried: bool = False,
    ) -> None:
        try:
            self._ingest_once(cur, rel, scan, report, retried=retried)
        except _MetaChanged:
            # Another program saved the meta file after it was read and before a flushed temp
            # was renamed over it (nothing recorded yet): read the pair again, once (a later
            # race is the watcher's next event, or the next open).
            if not retried:
                self._ingest_locked(cur, rel, scan, report, retried=True)
        except (OSError, StorageError) as exc:
            if self._moving is None and not _from_index(exc):
                # Failed before its content could say whose it is (its YAML or meta cannot be
                # read): its inode can. The caller then keeps the old path's blueprint (see
                # ``moving``); without it, the old path was recorded deleted and its meta
                # removed, and the YAML, readable again, got a new id.
                self._moving = self._moved_here(cur, rel, scan)
            raise

    def _moved_here(self, cur: Any, rel: str, scan: _Scan) -> str | None:
        """The id of the live blueprint whose YAML ``rel`` is by inode: the one the index
        recorded at another path, which no longer holds that file (a rename keeps the inode;
        a copy does not, nor does a hard link left at both paths). None if there is none."""
        y = scan.yamls.get(rel)
        if y is None:
            return None
        ino = fs.ino_key(y.st_ino)
        rows = cur.execute(
            "SELECT id, path FROM blueprints WHERE yaml_ino = ? AND deleted = 0 AND path != ?",
            (ino, rel),
        ).fetchall()
        for bp_id, path in rows:
            try:
                there = os.stat(self.store.root / str(path), follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return str(bp_id)
            except OSError:
                continue  # (cannot tell: not taken as moved)
            if fs.ino_key(there.st_ino) != ino:
                return str(bp_id)
        return None

    def _ingest_once(
        self,
        cur: Any,
        rel: str,
        scan: _Scan,
        report: CheckReport,
        *,
        retried: bool = False,
    ) -> None:
        store = self.store
        self._meta_placed = False
        self._meta_seen = None
        # (The stats _record records are the scan's, taken before these reads.)
        yaml_bytes = self._read(rel)
        if yaml_bytes is None:
            return
        meta_rel = fs.meta_path_for(rel)
        try:
            meta_bytes, self._meta_seen = fs.read_regular_seen(
                store.root / meta_rel, META_READ_LIMIT
            )
        except fs.NotAFileError as exc:
            # A link (or folder) in the meta file's place: read through, a JSON file elsewhere
            # became this blueprint's meta (its id, name and tags), in history and synced; nor
            # is it replaced behind the user's back, as a YAML's link is not. Left as it is
            # and reported until it is moved away; the pair is then taken as one without meta.
            report.problems.append(_meta_not_a_file(meta_rel, exc.what))
            return
        except FileNotFoundError:
            meta_bytes = None
        row_at_path = self._at_path(cur, rel)
        if meta_bytes is None:
            meta_bytes = self._recover_meta_temp(meta_rel, report)
            if meta_bytes is None and row_at_path is not None:
                stub = cloud_stub(store.root, meta_rel)
                if stub is not None:
                    # Its meta is in iCloud, not gone: one written here (from the index) would
                    # make iCloud keep both once it downloads the real one. Left until it is back.
                    report.problems.append(_evicted(rel, stub))
                    return
        elif (
            row_at_path is not None
            and sha256_hex(meta_bytes) == row_at_path.meta_sha256
            and sha256_hex(yaml_bytes) != row_at_path.yaml_sha256
        ):
            # New YAML beside the indexed meta: an update may have died between its two
            # renames, its meta still in the (flushed) temp. Only a temp of the same blueprint
            # written after both files is that update's; an older leftover is not.
            y_st = os.stat(store.root / rel, follow_symlinks=False)
            m_st = os.stat(store.root / meta_rel, follow_symlinks=False)
            newer = self._recover_meta_temp(
                meta_rel,
                report,
                same_id=row_at_path.id,
                not_before=_written_after(y_st, m_st),
            )
            meta_bytes = newer or meta_bytes
        meta: BlueprintMeta | None = None
        write_meta = False
        if meta_bytes is not None:
            try:
                meta = decode_meta(meta_bytes, source=meta_rel)
            except InvalidMetaError as exc:
                report.problems.append(
                    {"kind": "invalid-meta", "path": meta_rel, "detail": str(exc)}
                )
                self._refuse(cur, row_at_path, flag_reason(exc, rel), scan, rel)
                return
            if row_at_path is None:
                recovered = self._finish_moving_update(
                    cur, rel, meta, meta_bytes, yaml_bytes, report
                )
                if recovered is not None:
                    meta_bytes, meta = recovered
        identity: Row | None = None
        replaced: Row | None = None
        copied = False  # (a live pair's meta, copied here: given a new id)
        if meta is not None:
            identity, meta, write_meta, copied = self._identity_by_meta(
                cur, rel, meta, yaml_bytes, row_at_path
            )
            if row_at_path is not None and (identity is None or row_at_path.id != identity.id):
                # Another pair was put over this path: the blueprint that lived here is gone.
                replaced = row_at_path
        else:
            write_meta = True
            identity = row_at_path or self._match_moved_yaml(cur, sha256_hex(yaml_bytes))
            if identity is not None:
                meta = identity.meta
                if identity.path != rel:
                    # A YAML moved alone: its meta file is still at the old name, and it may
                    # hold edits no pass has read yet (a name or tags changed by hand). Taken
                    # from the index instead, those were lost when that file was removed below.
                    meta = self._meta_left_behind(identity) or meta
            else:
                now = utc_now()
                meta = BlueprintMeta(
                    id=new_id(), name=fs.display_name(rel), created=now, modified=now
                )
        assert meta is not None
        if self._case_collision(cur, rel, identity, report):
            return
        arrived: bytes | None = None  # (the YAML as it arrived with the meta: _late_meta.py)
        if replaced is not None:
            # (A copy of a live pair's meta is no meta of this YAML's own come late: its new id
            # got the made-up id's first YAML as its first revision, and the retired id's event
            # named it as the one this YAML's own meta had brought.) A live blueprint moving here
            # is: a sync tool's move whose meta came after the YAML's quiet period (the watcher
            # held it as a copy until the old pair went). Taken for another pair put over this
            # one, the made-up id was recorded deleted with no reason given.
            own = not copied
            found = late_meta.made_up(cur, replaced) if own else None
            if self._moves_later(replaced, rel):
                self._park(cur, replaced)
            elif found is not None:
                arrived = late_meta.retire(self, cur, replaced, found, meta, report)
            else:
                self._delete_locked(cur, replaced, report)
        try:
            prepared = store._prepare(rel, yaml_bytes, meta, identity)
        except InvalidInputError as exc:
            detail = said_of_file(exc, rel)
            report.problems.append({"kind": "invalid-yaml", "path": rel, "detail": detail})
            live = identity if identity is not None and not identity.deleted else None
            self._refuse(cur, live, detail, scan, rel)
            return
        kept: tuple[str, str] | None = None  # (from, arriving id: a keep beside cut off)
        if identity is not None and not identity.deleted and identity.path != rel:
            self._moving = identity.id
            arriving = late_meta.kept_before(self, cur, identity, rel)
            kept = (identity.path, arriving) if arriving is not None else None
            # A moved pair brings its meta along; only a YAML moved alone needs one written
            # (write_meta is already set then). Rewriting every moved meta cost a durable write
            # per file on a folder rename and reformatted the user's file.
            self._follow_meta(identity.path, rel)
        if write_meta:
            if meta_bytes is not None:
                # Only over the meta file read (or the temp recovered into its place): another
                # program's save since (a tool finishing the pair it was copying, the person
                # typing a name) was replaced unrecorded by a plain rename.
                if not self._write_meta_over(meta_rel, prepared.meta_bytes):
                    if not retried:
                        self._ingest_locked(cur, rel, scan, report, retried=True)
                    return
            elif not fs.create_file(store.root / meta_rel, prepared.meta_bytes):
                # The pair's own meta came since it was read (a tool writing the pair file by
                # file): replacing it lost its id for good. Read the pair again, once (a later
                # race is the watcher's next event, or the next open).
                if not retried:
                    self._ingest_locked(cur, rel, scan, report, retried=True)
                return
            self._meta_placed = True
            report.fixed.append({"kind": "meta-written", "path": meta_rel, "detail": meta.id})
        if arrived is not None and sha256_hex(arrived) != sha256_hex(yaml_bytes):
            # An edit made under the made-up id: the version that arrived comes first.
            with contextlib.suppress(InvalidInputError):  # (then the edit alone, as before)
                self._record(cur, identity, store._prepare(rel, arrived, meta), rel, scan, report)
                identity = self._with_id(cur, meta.id)
        mark = len(self.events)
        self._record(cur, identity, prepared, rel, scan, report)
        if kept is not None:
            late_meta.explain_kept(self, mark, *kept, rel, report)

    def _identity_by_meta(
        self,
        cur: Any,
        rel: str,
        meta: BlueprintMeta,
        yaml_bytes: bytes,
        row_at_path: Row | None,
    ) -> tuple[Row | None, BlueprintMeta, bool, bool]:
        """Whose the pair at ``rel`` is, by the id its meta holds: (identity, meta to record,
        write the meta, a copy). None for a new blueprint.

        The identity rules of a pair with a meta, the same for the watcher (one path at a time)
        and for every reconcile pass (docs/architecture.md, "Identity across a pass"):

        - another pair's meta pasted over this path's unchanged YAML (its blueprint live or
          deleted): the blueprint here keeps its id and gets its own meta back;
        - the id live at another path whose meta still holds it: a copy, given a new id;
        - otherwise the id's own blueprint: moved here when it is live (its old pair gone), back
          from deleted, at this path, when it was recorded deleted, whatever this YAML holds. A
          sync tool applies a move as "delete the old pair, then create the new one", and a
          delete seen first (past its grace, or by an open in between) is recorded first; taken
          for a new blueprint instead, the id and history would split and sync push a delete and
          a create. The pair's meta is left as it came (rewritten, it would sync back).
        """
        identity = self._with_id(cur, meta.id)
        # (This path's blueprint when its YAML is unchanged: only the meta was put over it.)
        unchanged = row_at_path
        if row_at_path is not None and sha256_hex(yaml_bytes) != row_at_path.yaml_sha256:
            unchanged = None
        if self._live_elsewhere(identity, rel) and unchanged is not None:
            return unchanged, unchanged.meta, True, False
        if self._copy_source(identity, rel):
            # (Live elsewhere, but the file there no longer carries this id: two pairs swapped
            # names, or another file took the old name; the blueprint moved here.)
            return None, meta.replace(id=new_id(), created=utc_now()), True, True
        if (
            identity is not None
            and identity.deleted
            and unchanged is not None
            and late_meta.made_up(cur, unchanged) is None
        ):
            # The same paste, of a deleted blueprint's meta: taken as that blueprint come back,
            # the one here was recorded deleted (a delete sync pushed) and the other revived with
            # this YAML. A lone YAML's own meta come late (its id made up by the store) is no
            # paste: _late_meta gives the made-up id way below.
            return unchanged, unchanged.meta, True, False
        return identity, meta, False, False

    def _finish_moving_update(
        self,
        cur: Any,
        rel: str,
        meta: BlueprintMeta,
        meta_bytes: bytes,
        yaml_bytes: bytes,
        report: CheckReport,
    ) -> tuple[bytes, BlueprintMeta] | None:
        """The new meta of a save that moved a blueprint and changed it, if it died between
        renaming the new YAML and the new meta (the bytes and their meta, or None).

        Such a save first moves the old pair to the new path, then renames both new files over
        it: the new path held the new YAML beside the old meta, reconcile recorded that mix (a
        revision nobody saved) and swept the flushed meta temp away later. Recognised as for an
        update in place: the meta is exactly the one indexed for its blueprint, whose old path is
        gone, and the YAML differs; only a temp of that blueprint written after both files is
        taken.
        """
        moved = self._with_id(cur, meta.id)
        if (
            moved is None
            or moved.deleted
            or moved.path == rel
            or sha256_hex(meta_bytes) != moved.meta_sha256
            or sha256_hex(yaml_bytes) == moved.yaml_sha256
            or self._exact_exists(moved.path)  # (a case-only move on a case-blind disk too)
        ):
            return None
        root = self.store.root
        y_st = os.stat(root / rel, follow_symlinks=False)
        m_st = os.stat(root / fs.meta_path_for(rel), follow_symlinks=False)
        newer = self._recover_meta_temp(
            fs.meta_path_for(rel),
            report,
            same_id=moved.id,
            not_before=_written_after(y_st, m_st),
        )
        if newer is None:
            return None
        return newer, decode_meta(newer, source=fs.meta_path_for(rel))

    def _moves_later(self, row: Row, rel: str) -> bool:
        """Whether ``row``'s id is in the meta of another path this pass has yet to ingest.

        Two pairs that swapped names: the first path's blueprint is about to move to the other
        one, so it is not deleted (a delete revision and an event, then a re-creation).
        """
        if self._changed is None:
            return False  # one path at a time (watcher, load): nothing later to move it
        if self._claims is None:
            self._claims = {}
            for path in self._changed:
                found = self._meta_id_at(path)
                if found is not None:
                    self._claims.setdefault(found, path)
        later = self._claims.get(row.id)
        return later is not None and later != rel

    def _park(self, cur: Any, row: Row) -> None:
        """Free ``row``'s path for the blueprint taking it; its own ingest moves it (_record)."""
        # A key no real path has: the live-path unique index holds one row per key.
        cur.execute("UPDATE blueprints SET path_key = ? WHERE rid = ?", ("\x00" + row.id, row.rid))
        self._parked[row.id] = row

    def _unpark(self, cur: Any, row: Row, report: CheckReport) -> None:
        """A parked blueprint whose new path was not ingested after all: record it deleted (its
        files are elsewhere; a later pass that can read them brings it back with its id)."""
        del self._parked[row.id]
        current = self._with_id(cur, row.id)
        if current is not None and not current.deleted:
            self._delete_locked(cur, current, report)
        cur.execute(
            "UPDATE blueprints SET path_key = ? WHERE rid = ?", (fs.path_key(row.path), row.rid)
        )

    def _meta_id_at(self, yaml_rel: str, *, unreadable: str | None = None) -> str | None:
        """The id the meta file beside ``yaml_rel`` holds now: None if there is none or it is
        not valid, ``unreadable`` if it cannot be read."""
        meta_rel = fs.meta_path_for(yaml_rel)
        try:
            raw = self._read_meta(meta_rel)
        except StorageError:
            return unreadable
        try:
            return None if raw is None else decode_meta(raw, source=meta_rel).id
        except InvalidMetaError:
            return None

    def copied_from(self, cur: Any, rel: str) -> str | None:
        """The path of the live pair the pair at ``rel`` would be taken for a copy of now (the
        copy rule of ``_ingest_once``, ``_copy_source``), else None. For the watcher's copy
        hold; a meta that cannot be read or is not valid is none (the ingest reports it)."""
        meta_id = self._meta_id_at(rel)
        row = None if meta_id is None else self._with_id(cur, meta_id)
        return row.path if row is not None and self._copy_source(row, rel) else None

    def _live_elsewhere(self, row: Row | None, rel: str) -> bool:
        """Whether ``row`` is a live blueprint indexed at another path than ``rel`` whose YAML
        is still there."""
        return (
            row is not None
            and not row.deleted
            and row.path != rel
            and (self.store.root / row.path).exists()
        )

    def _copy_source(self, row: Row | None, rel: str) -> bool:
        """Whether a pair at ``rel`` whose meta holds ``row``'s id is a copy of ``row``: it is
        live at another path whose meta still holds that id (the same id at two live paths; a
        meta there that cannot be read is taken to hold it)."""
        return (
            row is not None
            and self._live_elsewhere(row, rel)
            and self._meta_id_at(row.path, unreadable=row.id) == row.id
        )

    def _case_collision(
        self, cur: Any, rel: str, identity: Row | None, report: CheckReport
    ) -> bool:
        """True (reported) if another live blueprint's path differs from ``rel`` only by case.

        Linux allows both names (a git checkout, a sync tool), but the index keeps one live path
        per case-folded key so that the store works on macOS and Windows folders too: the file
        already indexed keeps it, the other one is left alone (no meta written) and reported.
        """
        if identity is not None and not identity.deleted and identity.path == rel:
            # Indexed at this very path already: a pair core v11 found to be one name was
            # kept as it was (index._v11_path_keys), and its edits are recorded as any other's.
            # _parked_pairs reports it.
            return False
        holder = self.store._row_by(
            cur, "path_key = ? AND deleted = 0 AND path != ?", (fs.path_key(rel), rel)
        )
        if holder is None or (identity is not None and holder.id == identity.id):
            return False  # free, or this blueprint itself changing the case of its name
        if not self._exact_exists(holder.path):
            # The holder's file is gone (renamed to this case, edited and without its meta):
            # the files say it was deleted, which frees the key.
            self._delete_locked(cur, holder, report)
            return False
        log.warning("%s differs only by case from %s; it is not indexed", rel, holder.path)
        report.problems.append(
            {
                "kind": "case-collision",
                "path": rel,
                "detail": f"differs only by case from {holder.path}; rename one of them",
            }
        )
        return True

    def _exact_exists(self, rel: str) -> bool:
        """Whether a file of exactly this name exists (a case-insensitive disk also says yes to
        another case of it, which would hide a case rename)."""
        target = self.store.root / rel
        try:
            return target.name in os.listdir(target.parent)
        except OSError:
            return False

    def _recover_meta_temp(
        self,
        meta_rel: str,
        report: CheckReport,
        *,
        same_id: str | None = None,
        not_before: int = 0,
    ) -> bytes | None:
        """Finish a save that died between renaming its YAML and its meta file.

        Both temp files were flushed before the first rename, so the meta's temp beside the YAML
        is complete: renaming it into place keeps the blueprint's id (a new id would turn a pulled
        or imported blueprint into a duplicate) and, for an update, its new name, tags and so on
        (recording the new YAML with the old meta lost them, and the temp was later removed as
        stale). Only a temp with id ``same_id`` (if given) and an mtime from ``not_before`` on
        is taken. Saves write their temps under the index write lock that the caller holds, so
        a temp seen here is never one of a save in progress.
        """
        target = self.store.root / meta_rel
        prefix = f".{target.name}."
        try:
            temps = [
                e
                for e in os.scandir(target.parent)
                if e.name.startswith(prefix) and e.name.endswith(fs.TEMP_SUFFIX)
            ]
        except OSError:
            return None
        for entry in sorted(temps, key=lambda e: e.stat().st_mtime_ns, reverse=True):
            if entry.stat().st_mtime_ns < not_before:
                break  # sorted newest first: the rest are older still
            raw = self._read_meta(str(Path(meta_rel).parent / entry.name).removeprefix("./"))
            try:
                found = decode_meta(raw or b"", source=entry.name)
            except InvalidMetaError:
                continue
            if same_id is not None and found.id != same_id:
                continue
            self._move_temp_in(entry.path, meta_rel)
            fs.fsync_dir(target.parent)
            self._meta_placed = True
            report.fixed.append({"kind": "meta-recovered", "path": meta_rel, "detail": entry.name})
            return raw
        return None

    def _move_temp_in(self, temp: str, meta_rel: str) -> None:
        """Rename a flushed meta temp to ``meta_rel``, only over the meta file this ingest read
        (none: only to a free name). Raises _MetaChanged if another program saved the meta file
        since (it stays; a version of its taken off the name is kept), OSError.

        The plain rename replaced a meta file saved between the read and the rename (a sync
        client's download of the pair, the person's edit), lost in no revision."""
        target = str(self.store.root / meta_rel)
        seen = self._meta_seen
        if seen is None:
            if not fs.place_new(temp, target):
                raise _MetaChanged(meta_rel)
        else:
            st = os.lstat(temp)
            try:
                fs.replace_recorded(temp, target, seen, (st.st_ino, st.st_size, st.st_mtime_ns))
            except fs.TargetChangedError as changed:
                self._keep_taken_off(changed.set_aside, meta_rel)
                raise _MetaChanged(meta_rel) from changed
        with contextlib.suppress(OSError):
            self._meta_seen = fs.recorded_of(os.lstat(target))

    def _write_meta_over(self, meta_rel: str, data: bytes) -> bool:
        """Write ``data`` to ``meta_rel`` if it is still the meta file this ingest read (or a
        temp recovered into its place); False, changing nothing, if another program saved it
        since (a version of its taken off the name is kept). Raises StorageError."""
        try:
            fs.write_checked(self.store.root / meta_rel, data, self._meta_seen)
        except fs.TargetChangedError as changed:
            self._keep_taken_off(changed.set_aside, meta_rel)
            return False
        except fs.NameTakenError:
            return False
        return True

    def _keep_taken_off(self, files: Sequence[str], rel: str) -> None:
        """Keep the versions of another program's a checked write took off ``rel`` (it saved
        twice during the write, see files.TargetChangedError) unless a revision holds them."""
        from localstore._kept_edits import keep_set_aside

        for aside in files:
            try:
                keep_set_aside(self.store, aside, rel)
            except (OSError, LocalStoreError) as exc:
                # (Left beside it under an aside name: a later pass keeps it, see _kept_aside.)
                log.warning("could not keep %s (a version of %s): %s", aside, rel, exc)

    def _match_moved_yaml(self, cur: Any, digest: str) -> Row | None:
        """A YAML moved without its meta: the live blueprint with that hash whose file is gone."""
        from localstore.store import _ROW_COLUMNS, Row

        sql = f"SELECT {_ROW_COLUMNS} FROM blueprints WHERE yaml_sha256 = ? AND deleted = 0"
        for t in cur.execute(sql, (digest,)).fetchall():
            row = Row.from_tuple(t)
            if not (self.store.root / row.path).exists():
                return row
        return None

    @staticmethod
    def _meta_known(cur: Any, blueprint_id: str, raw: bytes) -> bool:
        """Whether ``raw`` is a meta file the store has: the live one, or one in history."""
        digest = sha256_hex(raw)
        live = cur.execute(
            "SELECT 1 FROM blueprints WHERE id = ? AND meta_sha256 = ?", (blueprint_id, digest)
        ).fetchall()
        if live:
            return True
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        for (value,) in cur.execute("SELECT meta FROM revisions WHERE id = ?", (blueprint_id,)):
            if revision_text(value) == text:
                return True
        return False

    def _meta_left_behind(self, row: Row) -> BlueprintMeta | None:
        """The meta file still at ``row``'s old path if it is valid and carries its id."""
        meta_rel = fs.meta_path_for(row.path)
        try:
            raw = self._read_meta(meta_rel)
            found = None if raw is None else decode_meta(raw, source=meta_rel)
        except (StorageError, InvalidMetaError):
            return None
        return found if found is not None and found.id == row.id else None

    def _follow_meta(self, old_rel: str, new_rel: str) -> None:
        """The user renamed the YAML: move its meta file along (we rewrite it at the new place).

        The old meta is removed once the move is committed, and only if it is still the file
        seen here. Removed at once, an ingest failing after it (the new meta refused, the index
        full) rolled the move back but not the unlink: hand edits in that meta that no pass had
        recorded (a name, tags) were lost, and the blueprint with them.
        """
        meta_rel = fs.meta_path_for(old_rel)
        old_meta = self.store.root / meta_rel
        old_yaml = self.store.root / old_rel
        try:
            seen = fs.recorded_of(os.lstat(old_meta))
        except FileNotFoundError:
            return
        if old_yaml.exists():
            return
        self._leaving.add(meta_rel)

        def remove() -> None:
            self._leaving.discard(meta_rel)
            try:
                st = os.lstat(old_meta)
            except FileNotFoundError:
                return
            # (Saved again since, or its YAML back: another program's, not this move's.)
            if fs.recorded_of(st) != seen or old_yaml.exists():
                return
            try:
                fs.remove_file(old_meta)
            except StorageError as exc:  # (committed: a later pass removes it as an orphan)
                log.warning("could not remove %s after its YAML moved: %s", meta_rel, exc)

        self.store.index.after_commit(remove)

    def _record(
        self,
        cur: Any,
        identity: Row | None,
        prepared: object,
        rel: str,
        scan: _Scan,
        report: CheckReport,
    ) -> None:
        from localstore.store import _Prepared, change_events

        assert isinstance(prepared, _Prepared)
        store = self.store
        meta_rel = fs.meta_path_for(rel)
        # The stats recorded are the scan's, taken before the files were read. Taken after (as
        # they were), an edit saved during the read was recorded with the old bytes' hash and
        # the new file's stat: the index took the file for unchanged, nothing read it again
        # while no watcher ran, and the next save overwrote the edit unrecorded. Such an edit
        # now leaves the recorded stat unlike the file's, so the next look (open, load, save,
        # the watcher) reads it. (A file the scan did not see gets a stat no file has: the
        # same.) A meta this ingest put in place itself is stat'ed after that, as a save's is.
        y_st: fs.FileStat | os.stat_result = scan.yamls.get(rel, _UNSEEN)
        m_st: fs.FileStat | os.stat_result = (
            os.lstat(store.root / meta_rel)
            if self._meta_placed
            else scan.metas.get(meta_rel, _UNSEEN)
        )
        if (
            identity is not None
            and not identity.deleted
            and identity.path == rel
            and identity.content_hash == prepared.content_hash
        ):
            # Same content (a touch, or only 'modified' changed): refresh the stat cache only.
            # A flagged row is healed the same way: it still holds that content as its last good
            # revision, so a file that was invalid for a moment (truncated, then written back)
            # is no new revision, nor an op id for sync to push. (Row.holds() is False while
            # flagged: it served here and recorded exactly such a revision.)
            cur.execute(
                f"UPDATE blueprints SET {_SET_STATS}, yaml_sha256=?, meta_sha256=?, meta_json=?, "
                "modified=?, flagged=NULL WHERE rid=?",
                (
                    *_stat_columns(y_st, m_st),
                    sha256_hex(prepared.yaml_bytes),
                    sha256_hex(prepared.meta_bytes),
                    encode_meta(prepared.meta).decode("utf-8"),
                    prepared.meta.modified,
                    identity.rid,
                ),
            )
            return
        rev = (identity.rev if identity else 0) + 1
        op_id = store.index.next_op_id(cur)
        store._upsert_row(cur, identity, prepared, rev, op_id, y_st, m_st)
        if identity is not None and self._parked.pop(identity.id, None) is not None:
            # (_upsert_row sets path_key only if the key of the path changed: set it here.)
            cur.execute(
                "UPDATE blueprints SET path_key = ? WHERE rid = ?", (fs.path_key(rel), identity.rid)
            )
        store._add_revision(
            cur,
            prepared.meta.id,
            rev,
            op_id,
            self.origin,
            rel,
            prepared.yaml_bytes,
            prepared.meta,
            False,
        )
        events = change_events(identity, prepared, rev, self.origin)
        self.events.extend(events)
        kind = events[0].kind
        report.fixed.append({"kind": kind, "path": rel, "detail": prepared.meta.id})

    def _refuse(self, cur: Any, row: Row | None, reason: str, scan: _Scan, rel: str) -> None:
        """The pair at ``rel`` is not taken for ``reason`` (flag_reason: what check and status
        say, with what to do): flag the live ``row`` it would update, or, when it is no recorded
        blueprint, tell subscribers with an ``invalid`` event of no id.

        The event has no id as status lists such a file: the meta's id, or one made up, was
        never recorded, and an app that looked it up was told "not found". A new pair whose
        meta file was refused got no event at all (one whose YAML was refused did): the app
        showed nothing of a file the user could see was not taken."""
        if row is not None:
            self._flag(cur, row, reason, scan, rel)
        else:
            meta = scan.metas.get(fs.meta_path_for(rel))
            self.refused[rel] = RefusedPair(scan.yamls.get(rel), meta, reason)
            self.events.append(Event("invalid", "", rel, self.origin, detail=reason))

    def _flag(self, cur: Any, row: Row, reason: str, scan: _Scan, rel: str) -> None:
        """Keep the last good revision indexed, remember why the file is not accepted."""
        y = scan.yamls.get(rel)
        m = scan.metas.get(fs.meta_path_for(rel))
        cur.execute(
            f"UPDATE blueprints SET flagged=?, {_SET_STATS} WHERE rid=?",
            (
                reason,
                y.st_size if y else row.yaml_size,
                y.st_mtime_ns if y else row.yaml_mtime_ns,
                y.st_ctime_ns if y else row.yaml_ctime_ns,
                fs.ino_key(y.st_ino) if y else row.yaml_ino,
                m.st_size if m else -1,
                m.st_mtime_ns if m else -1,
                m.st_ctime_ns if m else -1,
                fs.ino_key(m.st_ino) if m else None,
                row.rid,
            ),
        )
        if row.flagged != reason:
            self.events.append(
                Event("invalid", row.id, row.path, self.origin, row.rev, detail=reason)
            )

    def _delete_locked(self, cur: Any, row: Row, report: CheckReport, *, detail: str = "") -> None:
        content = self.store._revision_content(row.id, row.rev).encode("utf-8")
        meta_abs = self.store.root / fs.meta_path_for(row.path)
        if meta_abs.exists() and not (self.store.root / row.path).exists():
            fs.remove_file(meta_abs)
        rev = self.store._mark_deleted(cur, row, content, self.origin)
        self.events.append(
            Event(
                "deleted",
                row.id,
                row.path,
                self.origin,
                rev=rev,
                content_hash=row.content_hash,
                detail=detail,
            )
        )
        report.fixed.append({"kind": "deleted", "path": row.path, "detail": row.id})

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
