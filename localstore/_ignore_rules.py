"""What a scan passes by: the default ignore patterns (editors', Office's and sync tools' side
files, our temps), the user's ``.localstoreignore`` (``IgnoreRules``), and sync tools' conflict
copies (``conflict_copy``), which are reported, never imported.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from localstore._file_paths import META_SUFFIX, TEMP_SUFFIX, YAML_SUFFIX

# Editor temp/backup files and our own temp files; fnmatch patterns against the base name.
# Only names that end in a blueprint suffix (and folders) are ever looked at, so most side files
# (``X~``, ``.X.swp``, ``.~lock.X#``, ``X.orig``, ``X.rej``, ``.X.tmp.1234``, ``Thumbs.db``) are
# passed by on their suffix alone; a pattern is needed for those that keep the suffix (``.#X``,
# Office's ``~$X`` owner file) and for folders. Hidden folders (``.git``, Syncthing's
# ``.stfolder``/``.stversions``, ``.dropbox.cache``) are never walked into (``walks_into``).
DEFAULT_IGNORE_PATTERNS: tuple[str, ...] = (
    f"*{TEMP_SUFFIX}",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    "4913",
    ".#*",
    "#*#",
    ".goutputstream-*",
    "*___jb_tmp___",
    "*___jb_old___",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "*.tmp",
    "*.bak",
    "*.orig",
    ".~lock.*",
    "*.crswap",
    # Microsoft Office's owner (lock) file beside a document it opened: "~$" + the name (its
    # first two characters replaced when the name is long), 162 bytes of user name. It keeps
    # the suffix, so it was taken for a blueprint: reported "invalid" by the watcher and
    # "unindexed" by check, or imported when its bytes happened to parse.
    "~$*",
    # Syncthing's conflict copies (``X.sync-conflict-<date>-<time>-<device>.<ext>``). Not
    # imported: see conflict_copy_of; check() reports them instead.
    "*.sync-conflict-*",
    # Dropbox's and Nextcloud's/ownCloud's (``X (Bob's conflicted copy 2026-11-23).<ext>``,
    # ``X (conflicted copy 2026-11-23 123456).<ext>``, older ownCloud ``X_conflict-<date>-
    # <time>.<ext>``), for the forms that keep the suffix; the same reasons.
    "* (*[Cc][Oo][Nn][Ff][Ll][Ii][Cc][Tt][Ee][Dd] [Cc][Oo][Pp][Yy]*)*",  # (any case, as conflict_copy)
    "*_conflict-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]*",
)
IGNORE_FILE_NAME = ".localstoreignore"


class _IgnorePattern(NamedTuple):
    """One line of the rules. ``text``: as written (named in errors); ``glob``: without the
    slashes that only say where it applies; ``folders``: a trailing '/' (folders only, as in a
    .gitignore); ``whole``: matched against the path from the blueprints folder (a '/' inside,
    or a leading one, as in a .gitignore), else against each name."""

    text: str
    glob: str
    folders: bool
    whole: bool

    @classmethod
    def parse(cls, text: str) -> _IgnorePattern | None:
        folders = text.endswith("/")
        glob = text.rstrip("/")
        whole = glob.startswith("/") or "/" in glob.lstrip("/")
        glob = glob.lstrip("/")
        return cls(text, glob, folders, whole) if glob else None

    def matches(self, name: str, sub: str, *, folder: bool) -> bool:
        """Whether this pattern ignores ``name``, at ``sub`` (its path from the root)."""
        if self.folders and not folder:
            return False
        return fnmatch.fnmatchcase(sub if self.whole else name, self.glob)


def _either(globs: Iterable[str]) -> re.Pattern[str] | None:
    globs = list(globs)
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)) if globs else None


class IgnoreRules:
    """Default editor/temp patterns plus the user's ``.localstoreignore`` (fnmatch, one per line).

    A pattern is matched against each name on a path; one with a '/' inside, or a leading
    '/', against the path from the blueprints folder; one ending in '/' matches folders only
    (the last two as in a .gitignore: ``archive/`` matched nothing, the whole folder was
    imported). The patterns are compiled into regexes and folder answers are cached: a rescan
    asks about every part of every path, and fnmatch per pattern per part was most of a
    10,000-file rescan.
    """

    def __init__(self, patterns: Iterable[str] = DEFAULT_IGNORE_PATTERNS) -> None:
        self.patterns = tuple(patterns)
        parsed = [q for p in self.patterns if (q := _IgnorePattern.parse(p)) is not None]
        self._parsed = tuple(parsed)
        # Per name, and per path from the root: for a file, and for a folder (which the
        # folders-only patterns match too). One regex each, as before the slash rules.
        self._file = (
            _either(q.glob for q in parsed if not q.whole and not q.folders),
            _either(q.glob for q in parsed if q.whole and not q.folders),
        )
        self._folder = (
            _either(q.glob for q in parsed if not q.whole),
            _either(q.glob for q in parsed if q.whole),
        )
        self._dirs: dict[str, bool] = {"": False}

    @classmethod
    def for_root(cls, root: Path) -> IgnoreRules:
        """Rules for a blueprints root, reading its ``.localstoreignore`` if present."""
        extra: list[str] = []
        try:
            text = (root / IGNORE_FILE_NAME).read_text(encoding="utf-8")
        except OSError:
            text = ""
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                extra.append(line)
        return cls((*DEFAULT_IGNORE_PATTERNS, *extra))

    def _part(self, part: str, sub: str, *, folder: bool) -> bool:
        name_re, sub_re = self._folder if folder else self._file
        return bool(
            (name_re is not None and name_re.match(part))
            or (sub_re is not None and sub_re.match(sub))
        )

    def folder_ignored(self, prefix: str, name: str) -> bool:
        """Whether folder ``prefix + name`` is ignored (``prefix`` is '' or ends with '/')."""
        sub = prefix + name
        cached = self._dirs.get(sub)
        if cached is None:
            parent_sub = prefix.rstrip("/")
            parent = self._dirs.get(parent_sub)
            if parent is None:
                head, _, last = parent_sub.rpartition("/")
                parent = self.folder_ignored(f"{head}/" if head else "", last)
            cached = parent or self._part(name, sub, folder=True)
            self._dirs[sub] = cached
        return cached

    def file_ignored(self, prefix: str, name: str) -> bool:
        """Whether file ``prefix + name`` is ignored, given that its folder was walked into."""
        return self._dirs.get(prefix.rstrip("/"), False) or self._part(
            name, prefix + name, folder=False
        )

    def reason(self, rel_path: str) -> tuple[str, str] | None:
        """The part of ``rel_path`` (a file's path) and the pattern, as written, that ignore it;
        None if none does. For error messages: the same rules as ``ignored``, one pattern at a
        time."""
        parts = rel_path.split("/")
        sub = ""
        for i, part in enumerate(parts):
            sub = f"{sub}/{part}" if sub else part
            for pattern in self._parsed:
                if pattern.matches(part, sub, folder=i < len(parts) - 1):
                    return part, pattern.text
        return None

    def ignored(self, rel_path: str) -> bool:
        """True if the path or any of its folders matches a pattern."""
        prefix = ""
        parts = rel_path.split("/")
        for part in parts[:-1]:
            if self.folder_ignored(prefix, part):
                return True
            prefix += part + "/"
        return self.file_ignored(prefix, parts[-1])

    # What counts as a blueprint file, in one place: the full scan (walk_blueprint_files, used
    # by reconcile and the watcher's rescans), the watcher's events (``scans``) and its check of
    # the folders inotify watches (``walks_into``) all ask these.

    def walks_into(self, prefix: str, name: str) -> bool:
        """Whether the scan walks into folder ``prefix + name``: not hidden (``.git``,
        ``.stversions``, ``.dropbox.cache``), not ignored."""
        return not name.startswith(".") and not self.folder_ignored(prefix, name)

    def takes_file(self, prefix: str, name: str) -> bool:
        """Whether file ``name`` in a walked folder ``prefix`` is a blueprint's YAML or meta
        file (and not an editor's, Office's or a sync tool's side file that keeps the suffix)."""
        return name.endswith((YAML_SUFFIX, META_SUFFIX)) and not self.file_ignored(prefix, name)

    def scans(self, rel_path: str) -> bool:
        """Whether ``rel_path`` is a blueprint file the scan would find (``walks_into`` every
        folder on the way, ``takes_file`` the name)."""
        prefix = ""
        parts = rel_path.split("/")
        for part in parts[:-1]:
            if not self.walks_into(prefix, part):
                return False
            prefix += part + "/"
        return self.takes_file(prefix, parts[-1])


# Syncthing names the losing side of a conflict ``<name>.sync-conflict-<YYYYMMDD>-<HHMMSS>-
# <device id>.<ext>`` (the last extension kept): ``plan.blueprint.sync-conflict-20261122-
# 101010-ABCDEF1.yaml``. Versions before 0.14 left the device id out. The suffix-keeping form is
# matched too (a tool or a person moving the marker before ``.blueprint.yaml``).
_SYNC_CONFLICT = re.compile(r"^(.*)\.sync-conflict-\d{8}-\d{6}(?:-[A-Za-z0-9]+)?((?:\.[^.]*)*)$")
# Dropbox puts `` (<who>'s conflicted copy <date>)`` before the last extension (``plan.blueprint
# (Bob's conflicted copy 2026-11-23).yaml``), a second one gets `` (1)`` after it; Nextcloud and
# ownCloud since 2.5 `` (conflicted copy <date> <time>)``, older ownCloud ``_conflict-<date>-
# <time>``. Those that keep no blueprint suffix were passed by without a word: the other
# device's version sat in the folder and check() said nothing.
_CONFLICTED_COPY = re.compile(
    r"^(.*?)(?: \([^()]*conflicted copy[^()]*\)(?: \(\d+\))?|_conflict-\d{8}-\d{6})"
    r"((?:\.[^.]*)*)$",
    re.IGNORECASE,
)


def conflict_copy(name: str) -> tuple[str, str] | None:
    """The blueprint file name a sync tool's conflict copy was made of, and the tool's name
    (Syncthing, or Dropbox or Nextcloud); None if ``name`` is not such a copy.

    Such a copy is never imported (it would become a second blueprint with a new id, synced to
    every device, while the tool shows the same copy on the other side); ``check`` reports it
    so the user merges it by hand and deletes it.
    """
    for pattern, tool in (
        (_SYNC_CONFLICT, "Syncthing"),
        (_CONFLICTED_COPY, "Dropbox or Nextcloud"),
    ):
        match = pattern.match(name)
        if match is not None:
            original = match[1] + match[2]
            if original.endswith((YAML_SUFFIX, META_SUFFIX)):
                return original, tool
    return None


def conflict_copy_of(name: str) -> str | None:
    """The blueprint file name a sync tool's conflict copy was made of, or None (see
    ``conflict_copy``)."""
    found = conflict_copy(name)
    return None if found is None else found[0]


def _maybe_conflict_copy(name: str) -> bool:
    """A cheap test before the regexes (a scan asks it of every file that is no blueprint)."""
    return "conflict" in name.lower() and conflict_copy(name) is not None
