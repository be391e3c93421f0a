"""The blueprints folder's identity: whether the folder on disk is the one the index describes.

Its device and inode and its mark file (``ROOT_MARK_NAME``) are recorded in the index; an open
(``check_root``) and every write (``refuse_a_vanished_root``) refuse a folder that is missing, or
another folder without blueprints, while blueprints are indexed, instead of recording them all
deleted (an unmounted drive, a moved folder). ``CONFIRM_EMPTY_NAME`` is the user's way to say the
blueprints are really gone.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from localstore import files as fs
from localstore._reconcile_core import log
from localstore.errors import FolderAwayError, LocalStoreError, StorageError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore


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
