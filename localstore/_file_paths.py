"""Blueprint path rules: the file suffixes and name limits, ``normalize_path`` and
``check_new_name`` (what a blueprint path may be), ``path_key`` (the caseless key two paths
collide on), the pair's names, and ``resolve_inside`` (a path that stays inside the root).
"""

from __future__ import annotations

import functools
import os
import re
import stat
import unicodedata
from pathlib import Path, PurePath, PurePosixPath
from typing import TypeAlias

from localstore._os_errors import map_os_error
from localstore.errors import UnsafePathError

YAML_SUFFIX = ".blueprint.yaml"
META_SUFFIX = ".blueprint.meta.json"
TEMP_SUFFIX = ".lstmp"
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # what ext4, APFS, NTFS and most others allow for one directory entry
# A save writes ".<name>.<8 hex>.lstmp" temps beside the pair, and the meta's name is 5 bytes longer
# than the YAML's: a part is capped so those names fit too. (At 255 a YAML name passed the check,
# then its meta could not be written, and an external file that long made every open() fail.)
TEMP_NAME_OVERHEAD = len(f"..{'0' * 8}{TEMP_SUFFIX}")
MAX_SEGMENT_BYTES = MAX_NAME_BYTES - (len(META_SUFFIX) - len(YAML_SUFFIX)) - TEMP_NAME_OVERHEAD


_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$", re.IGNORECASE)
# The stricter rule for a name new on this device (see check_new_name). Microsoft's "Naming Files,
# Paths, and Namespaces" (learn.microsoft.com/windows/win32/fileio/naming-a-file) reserves CON,
# PRN, AUX, NUL, COM1-9, LPT1-9 and COM/LPT with the superscript digits ¹ ² ³ "in every
# directory", also "followed immediately by an extension" (NUL.txt and NUL.tar.gz are NUL);
# "Console Handles" (learn.microsoft.com/windows/console/console-handles) names CONIN$ and
# CONOUT$, which CreateFile opens as the console. Win32's path conversion also drops the spaces
# that end the part before the first dot, so `CON .yaml` is CON too (CPython's
# ntpath.isreserved tests ``name.partition('.')[0].rstrip(' ')`` for the same reason). COM0 and
# LPT0 stay refused as before (the page listed them for a while).
_DEVICE_STEM = re.compile(
    r"(con|prn|aux|nul|conin\$|conout\$|com[0-9¹²³]|lpt[0-9¹²³])", re.IGNORECASE
)
_FORBIDDEN_CHARS = set('<>:"|?*\\')
_CONTROL_CHAR = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"[A-Za-z]:")


# A blueprint path or reference as the API takes it: text, or a path object (see path_text).
StrPath: TypeAlias = "str | os.PathLike[str]"


def path_text(value: object) -> object:
    """``value`` as path text when it is a path object (``os.PathLike``), else ``value`` as given.

    The one place the API turns a path object into a blueprint path, reference or folder: a
    ``pathlib`` path of either flavour becomes its '/'-separated text (``as_posix()``, so a
    PureWindowsPath's backslashes too), another ``os.PathLike`` its ``os.fspath()`` with this
    system's separator made '/'. An absolute one keeps its root or drive, for the caller to
    refuse as it refuses that text. ``Path("")`` is ``"."``: given back as ``""``, the caller's
    "empty" error (not ``..blueprint.yaml``). Anything else (str, or a bytes path object) is
    returned untouched, for the caller's own type check.
    """
    if isinstance(value, PurePath):
        text = value.as_posix()
    elif isinstance(value, os.PathLike):
        raw = os.fspath(value)
        if not isinstance(raw, str):
            return value
        text = raw.replace(os.sep, "/")
    else:
        return value
    return "" if text == "." else text


def normalize_path(raw: StrPath) -> str:
    """Return the canonical relative path of a blueprint's YAML file.

    Accepts ``folder/name``, ``folder/name.blueprint.yaml`` or ``folder/name.blueprint.meta.json``,
    as text or as a relative path object (``pathlib.Path("folder/name")``, see path_text).
    Raises UnsafePathError for absolute paths, ``..``, backslashes, control characters, reserved device
    names, forbidden characters, over-long names and folders named like a blueprint's files.
    """
    if not isinstance(raw, str):  # (str skips this: the save path's hot loop)
        text = path_text(raw)
        if not isinstance(text, str):
            # (An int or bytes path was reported as "empty path".)
            raise UnsafePathError(
                f"the path must be a string, not {type(raw).__name__}",
                hint="give a path like 'folder/name' as text, or as a relative pathlib.Path",
            )
        raw = text
    if not raw.strip():
        raise UnsafePathError("empty path", hint="give a path like 'folder/name'")
    path = unicodedata.normalize("NFC", raw)
    if "\\" in path:
        raise UnsafePathError(f"path {raw!r} contains a backslash", hint="use '/' between folders")
    if path.startswith("/") or _DRIVE.match(path):
        raise UnsafePathError(
            f"path {raw!r} is absolute", hint="give a path relative to the blueprints folder"
        )
    if path.endswith(META_SUFFIX):
        path = path[: -len(META_SUFFIX)] + YAML_SUFFIX
    elif not path.endswith(YAML_SUFFIX):
        if path.endswith((".yaml", ".yml")):
            path = path.rsplit(".", 1)[0]
        path = path + YAML_SUFFIX
    if len(path) > MAX_PATH_CHARS:
        raise UnsafePathError(
            f"path is longer than {MAX_PATH_CHARS} characters",
            hint="use shorter folder and file names (Windows refuses longer paths)",
        )
    parts = path.split("/")
    controls = _CONTROL_CHAR.search(path) is not None  # one C scan, not a Python loop per part
    for seg in parts:
        _check_segment(seg, raw, controls)
    for seg in parts[:-1]:
        # A folder named like a blueprint file can sit beside that very file on this disk, but
        # not on the server or a case-insensitive disk: one path cannot be a file and a folder.
        if seg.casefold().endswith((YAML_SUFFIX, META_SUFFIX)):
            raise UnsafePathError(
                f"path {raw!r} has a folder named like a blueprint file ({seg!r})",
                hint=f"folder names may not end with {YAML_SUFFIX!r} or {META_SUFFIX!r}",
            )
    if parts[-1] == YAML_SUFFIX:
        raise UnsafePathError(
            f"path {raw!r} has no file name", hint="give a path like 'folder/name'"
        )
    return "/".join(parts)


def _check_segment(seg: str, raw: str, controls: bool = True) -> None:
    if seg in ("", ".", ".."):
        raise UnsafePathError(
            f"path {raw!r} has an empty, '.' or '..' part",
            hint="give a plain relative path inside the blueprints folder",
        )
    if controls and any(ord(c) < 32 or ord(c) == 127 for c in seg):
        raise UnsafePathError(
            f"path {raw!r} contains a control character",
            hint="remove tabs, newlines and other control characters from the name",
        )
    bad = _FORBIDDEN_CHARS.intersection(seg)
    if bad:
        raise UnsafePathError(
            f"path {raw!r} contains {''.join(sorted(bad))!r}",
            hint="these characters are not allowed on every OS",
        )
    if seg.endswith((" ", ".")):
        raise UnsafePathError(
            f"path part {seg!r} ends with a space or dot",
            hint="remove the trailing space or dot (Windows drops it, so two names would clash)",
        )
    # The rule older versions applied, kept here for names already held (a stricter one here
    # would flag them on the next open and refuse them in sync); new names get check_new_name.
    stem = seg.split(".", 1)[0]
    if _RESERVED.match(stem) or _RESERVED.match(seg):
        raise UnsafePathError(
            f"path part {seg!r} is a reserved device name on Windows",
            hint="rename it: CON, PRN, AUX, NUL and COM or LPT with a digit cannot be file names "
            "there, whatever the extension",
        )
    try:
        size = len(seg.encode("utf-8"))
    except UnicodeEncodeError as exc:
        # A name that is not UTF-8 on disk (a Latin-1 'café' from an old zip or a Samba share)
        # comes from os.scandir with surrogate escapes; it cannot be indexed or synced as is.
        raise UnsafePathError(
            f"path part '{printable(seg)}' is not valid UTF-8",
            hint="rename it to a UTF-8 name (convmv -f latin1 -t utf8 converts old names)",
        ) from exc
    if size > MAX_SEGMENT_BYTES:
        raise UnsafePathError(
            f"path part is longer than {MAX_SEGMENT_BYTES} bytes",
            hint=f"shorten it: the meta and temporary file names beside it must fit in "
            f"{MAX_NAME_BYTES} bytes",
        )


def windows_device_name(segment: str) -> bool:
    """True if Windows opens a device, not a file, for this path part (see _DEVICE_STEM)."""
    return _DEVICE_STEM.fullmatch(segment.partition(".")[0].rstrip(" ")) is not None


def check_new_name(rel: str) -> None:
    """Refuse a canonical path that is new here (a save to a new path, a move, an import, a
    server row this device does not hold yet) if a part of it is a Windows device name.

    Stricter than normalize_path, which keeps the rule older versions applied: a blueprint
    already held under such a name still opens, lists, reconciles and syncs (refusing it there
    would flag it or hide it), but no new one is made, here or by sync, that a Windows device
    could only write to a console or printer. Raises UnsafePathError.
    """
    for seg in rel.split("/"):
        if windows_device_name(seg):
            raise UnsafePathError(
                f"path part {seg!r} is a reserved device name on Windows",
                hint="rename it: CON, PRN, AUX, NUL, CONIN$, CONOUT$ and COM or LPT with a "
                "digit cannot be file or folder names there, with any extension and with spaces "
                "before the first dot",
            )


def printable(name: str) -> str:
    """A name as it can be shown and written as UTF-8 (undecodable bytes become ``\\xNN``)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_key(rel_path: str) -> str:
    """The key two paths collide on: one name on a case-insensitive Mac (APFS) or Windows (NTFS).

    The Unicode canonical caseless match (D145), stored composed: NFD, full case folding, then
    normalized again, which is what APFS compares (docs/portability.md, "Case and Unicode form
    of names"). ``casefold(NFC(path))``, the key before core v11, skipped the second
    normalization: casefold can leave marks out of order or uncomposed (Greek with dialytika and
    perispomeni), so ``ΐ`` (U+1FD3) and U+03AA U+0301, one name on a Mac, got two keys.
    """
    if rel_path.isascii():
        # Nearly every path (called per save and per lookup): for ASCII the three steps are
        # lower() and cost nothing more.
        return rel_path.lower()
    return _unicode_path_key(rel_path)


@functools.lru_cache(maxsize=4096)
def _unicode_path_key(rel_path: str) -> str:
    # Cached: the two normalizations cost 0.8 us a path against 0.2 us for the old key, and a
    # save or a sync round asks for the same few paths' keys several times.
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", rel_path).casefold())


def meta_path_for(yaml_rel: str) -> str:
    """The companion meta path of a canonical YAML path."""
    return yaml_rel[: -len(YAML_SUFFIX)] + META_SUFFIX


def yaml_path_for(meta_rel: str) -> str:
    """The YAML path of a canonical meta path."""
    return meta_rel[: -len(META_SUFFIX)] + YAML_SUFFIX


def display_name(yaml_rel: str) -> str:
    """A blueprint's default name: its file name without the suffix."""
    return PurePosixPath(yaml_rel).name[: -len(YAML_SUFFIX)]


def folder_of(yaml_rel: str) -> str:
    """The folder part of a canonical relative path ('' for the root)."""
    return yaml_rel.rpartition("/")[0]


def resolve_inside(root: Path, rel: str, *, real_root: Path | None = None) -> Path:
    """Join a checked relative path to the root, refusing anything that escapes it (symlinks too).

    ``real_root`` is the root's resolved path when the caller already knows it (the store, which
    resolved its root when it opened): then only the folders below the root are looked at, and
    only a link among them costs the full resolve.
    """
    target = root.joinpath(*rel.split("/"))
    if real_root is not None and _no_links_below(os.fspath(root), rel):
        return target
    try:
        real_root = real_root or root.resolve()
        real_parent = target.parent.resolve()
    except OSError as exc:
        raise map_os_error(exc, "cannot resolve", target) from exc
    except RuntimeError as exc:
        # pathlib reports a link loop (``a -> a``, ``a -> b -> a``) as RuntimeError, which left
        # save() with an untyped error and no hint.
        raise UnsafePathError(
            f"path {rel!r} leads through a symbolic link loop",
            hint="remove or fix the symbolic link, or use another folder",
        ) from exc
    if real_parent != real_root and real_root not in real_parent.parents:
        raise UnsafePathError(
            f"path {rel!r} leads outside the blueprints folder (through a link)",
            hint="remove the symbolic link or use another folder",
        )
    return target


def linked_folder(root: str, rel: str) -> str | None:
    """The first folder of ``rel`` below ``root`` that is a symbolic link, if any.

    The walk follows no link (walk_blueprint_files), so a blueprint under one is never seen by
    reconcile or the watcher. A folder that is missing (the save makes it) or cannot be looked
    at (the write says why) is none.
    """
    path = root
    parts = rel.split("/")[:-1]
    for n, part in enumerate(parts, 1):
        path = path + os.sep + part
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return "/".join(parts[:n])
        except OSError:
            return None
    return None


def _no_links_below(root: str, rel: str) -> bool:
    """True if every folder of ``rel`` below ``root`` is a real directory or does not exist yet.

    A save resolved its whole folder path (an lstat of every component from ``/``, six or more
    system calls and a tenth of a save's CPU) to learn what these one or two lstats tell: the
    folders outside the root are the root's own business, checked when the store opened it.
    Anything else (a link, a file in the way, an error) is left to the full resolve.
    """
    path = root
    for part in rel.split("/")[:-1]:
        path = path + os.sep + part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return True  # the rest is made by the save itself (ensure_dir): nothing to follow
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or getattr(st, "st_reparse_tag", None):
            return False  # (Windows: a junction is a directory that leads elsewhere)
    return True
