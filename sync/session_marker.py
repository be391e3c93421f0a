"""A file that changes whenever this home's cloud session is stored or removed (login, logout).

The session itself lives in the OS keychain. A running remote (daemon, ``localstore sync``, an
app's :class:`~sync.embed.EmbeddedSync`) must notice a ``logout``, or another user's ``login``,
made by another process, before it uses the old session again. Reading the keychain before every
sync cycle would notice it, but a keychain read is a D-Bus round trip to the Secret Service
(milliseconds, and a keychain that was locked meanwhile may pop up an unlock prompt), so instead
``login`` and ``logout`` replace ``state/cloud-session.changed`` after touching the keychain, and a
remote compares the file's signature (one ``os.stat``, a few microseconds) before each cycle and
reads the keychain only when it changed. The file holds no secret: a random token and the time.

The file is only a change signal, never trusted for *who* is logged in: that is always read from
the keychain. A login that dies between the keychain write and the marker is still caught by the
check a remote makes whenever it reloads the session (refresh): it never goes on with another
user's session (:class:`sync.errors.SessionChangedError`).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from localstore._state_temps import write_state_file
from localstore.config import Settings

__all__ = ["MARKER_FILE", "SessionMarker", "marker_path", "signature", "touch"]

MARKER_FILE = "cloud-session.changed"

Signature = tuple[int, int, int] | None


def marker_path(settings: Settings) -> Path:
    """The marker file of ``settings``' home."""
    return settings.paths.state / MARKER_FILE


def signature(path: Path) -> Signature:
    """(inode, size, mtime_ns) of the marker, None when absent. Every touch makes a new inode."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def touch(settings: Settings) -> None:
    """Replace the marker (after ``login``/``logout`` changed the keychain). Raises OSError."""
    path = marker_path(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A new file renamed over the old one: a new inode even when the clock did not move.
    # (Not flushed: a marker a power cut undoes is a change a reload of the session catches.)
    body = f"{secrets.token_hex(8)} {time.time():.6f}\n".encode("ascii")
    write_state_file(path, body, flush=False)


class SessionMarker:
    """Tells whether the marker changed since the last look (thread-safe enough: a stat)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = signature(path)

    @classmethod
    def for_settings(cls, settings: Settings) -> SessionMarker:
        """The marker of ``settings``' home, as it is now."""
        return cls(marker_path(settings))

    def changed(self) -> bool:
        """True once per change of the file since the last call (or since creation)."""
        now = signature(self.path)
        if now == self._seen:
            return False
        self._seen = now
        return True
