"""Private places for a bundle's plaintext, and sweeping what killed exports and imports left.

An import stages verified YAML (and an encrypted bundle's decrypted zip) in a folder under the
home's cache; an encrypted export writes its plaintext zip there first, or, for a read-only home,
in a folder of its own in the user's temp folder. Each folder is held by its maker
(localstore._held_temps), so a later export or import removes only what a dead one left.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from localstore import files as fs
from localstore._held_temps import HeldFolder, make_held_folder, process_alive, remove_if_dead
from localstore.errors import StorageError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore

log = logging.getLogger(__name__)

STAGING_PREFIX = "import-staging-"
# The plaintext zip of an encrypted export, in the cache: export-<pid>-XXXX/plaintext.lstmp (an
# older version's: the file export-<pid>-XXXX.lstmp).
EXPORT_TEMP_PREFIX = "export-"
# A read-only home's encrypted export: its plaintext zip in a folder of its own in the user's temp
# folder, localstore-export-<pid>-XXXX/ (_read_only_export_temp). Each of these folders,
# and the import's staging folder, is held by its maker (localstore._held_temps).
READ_ONLY_EXPORT_PREFIX = "localstore-export-"


def private_cache(root: Path) -> None:
    """Make the cache folder (0700 when made here) and take write access off group and others.

    It holds what the user meant to keep encrypted: the decrypted zip of an import, the plaintext
    zip of an encrypted export. Their files are 0600 in a 0700 staging folder, but in a folder
    others may write, another user can rename that staging folder (or the export's temp file)
    away between its creation and its use and put one of their own in its place, which we would
    then fill with plaintext. A folder made under umask 000 (Paths.ensure follows the umask for
    the cache) or opened up since is such a folder. A sticky folder (like /tmp) is safe: others
    cannot rename what they do not own there.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "nt":  # pragma: no cover - no POSIX modes
        return
    try:
        st = root.stat()
    except OSError:  # pragma: no cover - gone since mkdir; its first use will say
        return
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o022 or mode & stat.S_ISVTX:
        return
    try:
        root.chmod(mode & ~0o022)
    except OSError as exc:
        raise StorageError(
            f"the cache folder {root} can be written by other users (mode {mode:o}) and cannot "
            f"be made private: {exc.strerror or exc}",
            hint=f"run `chmod go-w '{root}'`: decrypted bundles are staged there",
        ) from exc
    log.warning(
        "cache folder %s had mode %o (others could swap the files that hold decrypted bundles); "
        "made it %o",
        root,
        mode,
        mode & ~0o022,
    )


def sweep_stale_temps(root: Path) -> None:
    """Remove staging folders left by imports, and plaintext zips left by encrypted exports, that
    were killed: both may hold what the user meant to keep encrypted.

    A ``finally`` cannot run after SIGKILL or power loss; each folder's lock (_held_temps) tells
    a leftover from a concurrent import or export that is still running, in any pid namespace.
    """
    for prefix in (STAGING_PREFIX, EXPORT_TEMP_PREFIX):
        for leftover in root.glob(f"{prefix}*"):
            if leftover.is_dir():
                remove_if_dead(leftover, prefix)
            elif prefix == EXPORT_TEMP_PREFIX and leftover.name.endswith(fs.TEMP_SUFFIX):
                _remove_old_export_temp(leftover)


def _remove_old_export_temp(leftover: Path) -> None:
    """An older version's plaintext zip, a file ``export-<pid>-XXXX.lstmp`` with no lock: its pid
    decides, as it did."""
    pid_text = leftover.name[len(EXPORT_TEMP_PREFIX) :].split("-", 1)[0]
    if pid_text.isdigit() and not process_alive(int(pid_text)):
        try:
            leftover.unlink()
        except OSError:  # removed by another export or import meanwhile
            pass


def _private_temp(store: BlueprintStore) -> HeldFolder:
    """The folder for the plaintext zip of an encrypted export, held until it is removed.

    Never next to the destination (a USB stick, a shared folder): in the home's cache, readable
    by the user only, and removed after the export. What a killed export left there is removed
    by the next export or import (and this export removes what a killed import of an encrypted
    bundle left): each folder is held by its maker (localstore._held_temps).
    """
    if store.read_only_reason is not None:
        return _read_only_export_temp()
    cache = store.paths.cache
    private_cache(cache)
    sweep_stale_temps(cache)
    try:
        return make_held_folder(cache, EXPORT_TEMP_PREFIX)
    except OSError as exc:  # (a raw PermissionError reached the CLI as "unexpected")
        raise fs.map_os_error(exc, "cannot write the export's temporary file in", cache) from exc


def _read_only_export_temp() -> HeldFolder:
    """The plaintext zip's place for a read-only home, whose cache may not be written: a folder
    of its own (0700, a random name: mkdtemp) in the user's temp folder (TMPDIR).

    Not the temp folder itself: a name there another user may have taken first, or may swap in
    a folder they own (/tmp is sticky, but a folder's owner may rename what is in it). Not the
    destination's folder (a USB stick, a shared folder). Refusing the export (as once) left a
    backup snapshot's blueprints no way out but in plaintext. The next such export removes what
    a killed one left (``_sweep_read_only_temps``).
    """
    root = Path(tempfile.gettempdir())
    _sweep_read_only_temps(root)
    try:
        return make_held_folder(root, READ_ONLY_EXPORT_PREFIX)
    except OSError as exc:
        raise fs.map_os_error(exc, "cannot write the export's temporary file in", root) from exc


def _sweep_read_only_temps(root: Path) -> None:
    """Remove this user's folders of killed read-only encrypted exports. Their lock, not their
    pid, tells them from live ones: the temp folder may be shared with another pid namespace (a
    container), where a live export's pid is no process here, or another one."""
    for leftover in root.glob(f"{READ_ONLY_EXPORT_PREFIX}*"):
        try:
            st = leftover.lstat()
        except OSError:  # removed by another export meanwhile
            continue
        mine = sys.platform == "win32" or st.st_uid == os.getuid()
        if mine and stat.S_ISDIR(st.st_mode):
            remove_if_dead(leftover, READ_ONLY_EXPORT_PREFIX)
