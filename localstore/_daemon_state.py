"""Is a daemon running for this home? (standard library only, no network)

The daemon holds an flock on ``state/daemon.lock`` for its whole life (the kernel drops it when the
process dies, even by SIGKILL) and writes ``state/daemon.json`` (pid, port, token). An embedding app
asks :func:`daemon_running` to decide whether to leave sync to the daemon. ``sync.embed`` builds the
lock itself on these same pieces; they live here because ``localstore`` never imports ``sync``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from localstore import _durable
from localstore import files as fs
from localstore.config import Settings, settings_arg

LOCK_FILE = "daemon.lock"
STATE_FILE = "daemon.json"

# `localstore daemon` exit codes a service manager must not answer with a restart (the systemd
# unit lists them in RestartPreventExitStatus=; docs/daemon.md, "Exit codes"). Taken from
# sysexits.h so they do not collide with the CLI's own codes (0-4, 130).
EXIT_HOME_GONE = 66  # EX_NOINPUT: the home's index vanished under the running daemon
EXIT_HOME_LOCKED = 75  # EX_TEMPFAIL: another process (an app, another daemon) syncs this home
# EX_NOPERM: the home is read-only (a snapshot, a disk mounted or remounted read-only). Restarted
# every 5 s, the daemon refused it again and logged it, forever; only the user's fix helps.
EXIT_HOME_READ_ONLY = 77
# EX_CONFIG: the home's index was written by a newer localstore (NewerIndexError). Only an
# upgrade helps: restarted, the daemon would refuse it again every few seconds, forever.
EXIT_INDEX_NEWER = 78

# A `pause` of the daemon's sync, kept until `resume` (docs/daemon.md, "Pause"): someone who
# paused on a metered connection and then rebooted expects it to stay paused.
PAUSE_FILE = "sync-paused.json"
PAUSED_DETAIL = "paused until resumed (kept across restarts): `localstore daemon --resume`"


def read_pause(state_dir: Path) -> dict[str, Any] | None:
    """The recorded pause (``{"since": epoch seconds}``), or None when sync is not paused.

    A file that is there but cannot be read or parsed still means "paused" (an empty dict): on a
    metered connection a wrong "paused" costs a `resume`, a wrong "not paused" the data.
    """
    try:
        text = (Path(state_dir) / PAUSE_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def write_pause(state_dir: Path) -> float:
    """Record a pause (atomically: a crash leaves the old file or the new one); returns its time.

    Keeps the time of a pause already recorded. Raises OSError.
    """
    state_dir = Path(state_dir)
    since = (read_pause(state_dir) or {}).get("since")
    if isinstance(since, int | float):
        return float(since)
    now = time.time()
    # A pause is acknowledged to the user ("sync paused") and must outlive a power cut, not only
    # a restart: without these flushes the file (or its new state/ folder) could be gone after
    # one, and the daemon came back syncing what the user had paused.
    fs.make_dirs(state_dir, mode=0o700)
    # (Imported here: _state_temps' sweep imports this module's process probe.)
    from localstore._state_temps import write_state_file

    body = json.dumps({"since": now}).encode("utf-8")
    write_state_file(state_dir / PAUSE_FILE, body, flush_dir=True)
    return now


def clear_pause(state_dir: Path) -> None:
    """Forget the recorded pause (no-op when there is none). Raises OSError."""
    try:
        fs.unlink_file(Path(state_dir) / PAUSE_FILE)
    except (FileNotFoundError, NotADirectoryError):
        return
    # (A resume undone by a power cut left sync paused with nobody knowing why.)
    fs.flush_dir(state_dir)


def lock_is_held(state_dir: Path, name: str = LOCK_FILE) -> bool:
    """Whether any process (this one included) holds the flock of ``state_dir/name`` (the home's
    daemon lock by default). No side effects."""
    path = Path(state_dir) / name
    try:
        fd = os.open(path, os.O_RDONLY | _durable.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        # (flock on POSIX; a byte-range lock on Windows, which has no fcntl module: importing it
        # here made `import localstore` fail there.)
        return _durable.lock_taken(fd)
    finally:
        os.close(fd)  # also drops the probe's shared lock at once


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """``state/daemon.json`` as written by the daemon, or None (missing or unreadable)."""
    try:
        data = json.loads((Path(state_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lock_file_pid(state_dir: Path, name: str = LOCK_FILE) -> int | None:
    """The pid the lock's holder wrote into ``state_dir/name`` (None if unreadable)."""
    try:
        text = (Path(state_dir) / name).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def lock_held_by(state_dir: Path, pid: object, name: str = LOCK_FILE) -> bool:
    """Whether process ``pid`` is alive and holds the flock of ``state_dir/name`` (the pid its
    holder wrote into the file). A state file's pid is trusted only this way: after a reboot or
    a SIGKILL the pid it names can be any process of the user's, which a `stop` would kill."""
    if not isinstance(pid, int) or not pid_alive(pid) or not lock_is_held(state_dir, name):
        return False
    return _lock_file_pid(state_dir, name) == pid


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie (the local cloud uses it too)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        # kill(pid, 0) is no probe there: signal 0 is CTRL_C_EVENT, sent to the pid's group.
        return _durable.pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): kill(0) said it exists


# CreateProcess flags (winbase.h); subprocess has names for them only on Windows.
def open_private_append(path: Path | str) -> int:
    """Open ``path`` to append (a raw fd, closed on exec), created 0600 whatever the umask, with
    group and other bits taken off an existing file: the daemon's logs and captured output name
    blueprints, folders and errors of this user's data.

    state/ is 0700 already; this holds too when the user opened it up (or a copied home brought
    its mode along). Raises OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | _durable.O_CLOEXEC, 0o600)
    try:
        _make_private(fd, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _make_private(fd: int, st: os.stat_result) -> int | None:
    """fchmod ``fd`` to 0600 when group or others have any bit; its old mode when it did."""
    mode = stat.S_IMODE(st.st_mode)
    if sys.platform == "win32" or not mode & 0o077:  # (no POSIX modes there)
        return None
    os.fchmod(fd, 0o600)
    return mode


def make_output_private(fd: int) -> int | None:
    """Make the daemon's inherited stdout or stderr ``fd`` 0600 when it is a regular file this
    user owns (as :func:`open_private_append` makes ``--detach``'s daemon.out); its old mode when
    it was looser, else None.

    launchd opens the agent's StandardOutPath itself, 0666 less its umask (0644, readable by
    everyone on the Mac), and a copied sample plist or a shell redirection does the same. A
    terminal, a pipe, /dev/null or someone else's file is never changed: their modes are not
    this daemon's to choose (as root, an fchmod of /dev/null would change it for the whole
    machine). Raises OSError.
    """
    if sys.platform == "win32":
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        return None
    return _make_private(fd, st)


_DETACHED_PROCESS = 0x00000008
_CREATE_NEW_PROCESS_GROUP = 0x00000200


def background_popen_options(platform: str | None = None) -> dict[str, Any]:
    """``subprocess.Popen`` options for a process that must outlive the command starting it.

    POSIX: a session of its own, so the terminal's Ctrl-C and hang-up do not reach it.
    ``start_new_session`` does nothing on Windows, where the child would stay attached to the
    console: closing the terminal window (or Ctrl-C in it) would end the daemon started by
    ``localstore daemon --detach``. There it gets no console and a process group of its own.
    """
    if (platform or sys.platform) == "win32":
        return {"creationflags": _DETACHED_PROCESS | _CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def daemon_running(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's state (pid, port, token, ...) for this home, or None.

    Reads ``state/daemon.json`` and trusts it only while its pid is alive, the home's flock is
    held, and the holder is that pid (the pid the holder wrote into the lock file), so a file left
    by a SIGKILLed daemon is ignored. "Alive and someone holds the lock" was not enough: after a
    reboot the dead daemon's pid can name any process, and with an app syncing in-process holding
    the lock, `localstore daemon --stop` sent SIGTERM to that process. No network I/O.
    """
    settings_arg(settings, "pass store.settings, or localstore.load_settings(home=...)")
    state_dir = settings.paths.state
    state = read_state(state_dir)
    if state is None:
        return None
    return state if lock_held_by(state_dir, state.get("pid")) else None


# The daemon's watcher's write-quiet period when daemon.json does not say (written by a daemon
# before session 16): the watcher's default (watcher.DEFAULT_WRITE_QUIET_MS, not imported: this
# module is standard library only), which the daemon always used.
_DEFAULT_WRITE_QUIET_MS = 1000


def daemon_write_quiet_s(settings: Settings) -> float | None:
    """The write-quiet period (seconds) of the watcher a daemon in ANOTHER process runs on this
    home, or None when no such daemon runs (or this process is the daemon: its own watcher
    answers for itself).

    A daemon always runs a watcher (docs/daemon.md), and records its write-quiet period in
    daemon.json as ``write_quiet_ms``. ``BlueprintStore.load`` and the open's reconcile leave a
    change younger than that to it (through ``localstore._presence.watching_elsewhere``, which
    also reads the marks every running watcher holds; daemon.json still answers where there are
    none: Windows). A few syscalls (no network); called only when a change is to be recorded and
    no watcher runs on the store object.
    """
    state = daemon_running(settings)
    if state is None or state.get("pid") == os.getpid():
        return None
    quiet = state.get("write_quiet_ms", _DEFAULT_WRITE_QUIET_MS)
    if not isinstance(quiet, int | float) or isinstance(quiet, bool) or quiet < 0:
        quiet = _DEFAULT_WRITE_QUIET_MS
    return float(quiet) / 1000


# What to do about a daemon older than the home's index: only a daemon running this (newer)
# localstore can write to it (docs/daemon.md, "A newer localstore upgraded the home").
OUTDATED_DAEMON_FIX = (
    "restart the daemon, so that this localstore serves the home: `localstore daemon --stop`, "
    "then `localstore daemon --detach` (as a service: `systemctl --user restart localstore`, "
    "or log out and in)"
)


def outdated_daemon(state: dict[str, Any], index_core: int) -> str | None:
    """Why the running daemon of ``state`` (its daemon.json) cannot write to this home's index,
    whose core schema is ``index_core``, or None when it can.

    A daemon records the core schema it writes (``core_schema``); one that records none is from
    a localstore older than the version that added it, so older than any that asks.
    """
    pid, version = state.get("pid", "?"), state.get("version", "?")
    known = state.get("core_schema")
    if isinstance(known, int) and not isinstance(known, bool):
        if known >= index_core:
            return None
        return (
            f"the daemon (pid {pid}) runs localstore {version}, older than this home's index "
            f"(core schema v{index_core}; it writes up to v{known}): it can no longer record "
            "edits or sync them"
        )
    return (
        f"the daemon (pid {pid}) runs an older localstore ({version}), which can no longer "
        "record edits or sync them once a newer one has upgraded the home's index"
    )
