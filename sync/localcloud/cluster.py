"""A throw-away PostgreSQL cluster for the local Supabase-compatible stack and the tests.

``PostgresCluster`` runs ``initdb`` into a fresh directory and starts a postmaster that listens on
127.0.0.1 only (a free port, retried if another process wins the race for it) and on a private unix
socket directory. Authentication: ``trust`` on the unix socket (the superuser ``postgres`` and the
tests), ``scram-sha-256`` on TCP (the gateway's ``authenticator`` login, as on Supabase).

The cluster exists to be thrown away, so durability is traded for speed: ``fsync=off`` and
``full_page_writes=off`` (``synchronous_commit`` stays on; see ``_SERVER_SETTINGS``). A crash of
the host can corrupt it; nothing of value ever lives in it. Starting is fast because ``initdb``
runs once per machine: its output is cached as a template (``template_cache_dir()``) and each
cluster starts from a copy. ``wal_level=logical`` with spare replication slots lets the gateway read
changes through wal2json exactly as Supabase Realtime does.

PostgreSQL refuses to run as root. When this process is root (CI is), ``initdb`` and ``postgres``
run as the ``postgres`` system user, and the directories they write are handed to that user.

Stopping is reliable even when the owner dies: ``stop()`` (also registered with ``atexit``) sends
the same signals as ``pg_ctl stop -m fast`` and then ``-m immediate``; and a tiny reaper process
holds a pipe to this one, so if this process is killed outright (SIGKILL, an xdist worker crash)
the reaper sees the pipe close, shuts the postmaster down and removes the directories.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from platformdirs import user_cache_dir
from psycopg.conninfo import make_conninfo

from sync.errors import SyncError

# POSIX only (its fcntl import fails on Windows, docs/portability.md): the POSIX calls below carry
# "type: ignore[attr-defined,unused-ignore]" for mypy --platform win32, guarding each being worse.

__all__ = [
    "INSTALL_HINT",
    "ClusterStartError",
    "LocalCloudError",
    "PostgresCluster",
    "PostgresNotFoundError",
    "default_search_path",
    "find_bindir",
    "has_wal2json",
    "template_cache_dir",
]

INSTALL_HINT = "apt-get install postgresql-15 postgresql-15-wal2json"
SERVER_BINARIES = ("initdb", "postgres")
SUPERUSER = "postgres"
SERVICE_USER = "postgres"  # the OS user the server runs as when we are root
HOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 30.0
DEFAULT_STOP_TIMEOUT = 10.0
_BIND_RETRIES = 5
_TEMPLATE_FORMAT = "1"  # bump when the template layout changes

# Settings for a disposable test/dev cluster: fast rather than durable (see the module docstring).
_SERVER_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_connections": "100",
    "shared_buffers": "64MB",
    "fsync": "off",
    # Kept on: with fsync off a commit's WAL flush is one write(), and logical decoding (the
    # gateway's realtime) only reads flushed WAL, so "off" would delay every hint by up to
    # 3 x wal_writer_delay (600 ms).
    "synchronous_commit": "on",
    "full_page_writes": "off",
    "timezone": "UTC",
    "log_timezone": "UTC",
    "datestyle": "iso, mdy",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "password_encryption": "scram-sha-256",
}

_HBA = """\
# Written by sync/localcloud/cluster.py: trust on the private unix socket, passwords on TCP.
local   all   all                  trust
host    all   all   127.0.0.1/32   scram-sha-256
"""

# The reaper waits on a pipe from its owner. A normal stop() writes "done" first; EOF without it
# means the owner died, so the reaper shuts the postmaster down (SIGQUIT = pg_ctl -m immediate,
# then SIGKILL) and removes the given directories.
_REAPER = r"""
import os, shutil, signal, sys, time
pid = int(sys.argv[1]); marker = sys.argv[2]; paths = sys.argv[3:]
if sys.stdin.buffer.read() == b"done":
    sys.exit(0)
def ours():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker.encode() in f.read()
    except OSError:
        return False
for sig, wait in ((signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
    if not ours():
        break
    try:
        os.kill(pid, sig)
    except OSError:
        break
    end = time.monotonic() + wait
    while ours() and time.monotonic() < end:
        time.sleep(0.05)
for p in paths:
    if os.path.islink(p) or os.path.isfile(p):
        try:
            os.unlink(p)
        except OSError:
            pass
    else:
        shutil.rmtree(p, ignore_errors=True)
"""


class LocalCloudError(SyncError):
    """The local Supabase-compatible stack failed (cluster, bootstrap or migrations)."""


class PostgresNotFoundError(LocalCloudError):
    """The PostgreSQL server binaries (initdb, postgres) are not installed."""

    hint = INSTALL_HINT


class ClusterStartError(LocalCloudError):
    """initdb or the postmaster failed; the message carries the server's log."""


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: numeric version, newest last."""
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def _has_server_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in SERVER_BINARIES)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip())


def default_search_path() -> list[Path]:
    """Where find_bindir looks, in order.

    $LOCALSTORE_PG_BINDIR, ``pg_config --bindir``, then /usr/lib/postgresql/*/bin newest first.
    """
    candidates: list[Path] = []
    if env := os.environ.get("LOCALSTORE_PG_BINDIR"):
        candidates.append(Path(env))
    if from_pg_config := _pg_config_bindir():
        candidates.append(from_pg_config)
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    return candidates


def find_bindir(search: Sequence[Path] | None = None) -> Path:
    """Return the first directory of ``search`` (default_search_path()) with initdb and postgres.

    Raises PostgresNotFoundError, whose hint says what to install.
    """
    candidates = list(search) if search is not None else default_search_path()
    for bindir in candidates:
        if _has_server_binaries(bindir):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or "nothing found"
    raise PostgresNotFoundError(
        f"PostgreSQL server binaries (initdb, postgres) not found (looked in: {looked})"
    )


def has_wal2json(bindir: Path | None = None) -> bool:
    """Tell whether the wal2json output plugin is installed for the server in ``bindir``."""
    bindir = bindir or find_bindir()
    libdirs = [bindir.parent / "lib"]
    pg_config = bindir / "pg_config"
    if os.access(pg_config, os.X_OK):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [str(pg_config), "--pkglibdir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            )
            libdirs.insert(0, Path(out.stdout.strip()))
    return any((d / "wal2json.so").is_file() for d in libdirs)


def _free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1 (the bind race is handled by retrying)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Tell whether every ancestor of ``path`` is searchable by uid/gid (os.access lies to root)."""
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def template_cache_dir() -> Path:
    """Where initialised data directories are cached ($LOCALSTORE_PG_TEMPLATE_DIR overrides)."""
    if env := os.environ.get("LOCALSTORE_PG_TEMPLATE_DIR"):
        return Path(env)
    return Path(user_cache_dir("localstore")) / "pg-templates"


def _template_key(bindir: Path, service_ids: tuple[int, int] | None) -> str:
    """Name of the template for these binaries, settings and owner; changes when any does."""
    binary = (bindir / "postgres").stat()
    material = "|".join(
        [
            _TEMPLATE_FORMAT,
            str(bindir.resolve()),
            str(binary.st_size),
            str(binary.st_mtime_ns),
            repr(sorted(_SERVER_SETTINGS.items())),
            _HBA,
            repr(service_ids),
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def _write_config(data_dir: Path) -> None:
    lines = [f"{k} = '{v}'" for k, v in _SERVER_SETTINGS.items()]
    with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# sync/localcloud/cluster.py\n" + "\n".join(lines) + "\n")
    (data_dir / "pg_hba.conf").write_text(_HBA, encoding="utf-8")


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy a data directory with owners and modes (``cp -a``; shutil cannot keep owners)."""
    dst.mkdir(mode=0o700, exist_ok=True)
    result = subprocess.run(
        ["cp", "-a", f"{src}/.", str(dst)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ClusterStartError(
            f"could not copy {src} to {dst}: {result.stderr.strip()}",
            hint=f"remove {template_cache_dir()} and try again",
        )


class PostgresCluster:
    """A disposable PostgreSQL cluster; use as a context manager or call start()/stop().

    ``base_dir``: where the data directory and log go (``base_dir/data``,
    ``base_dir/postgres.log``); ``None`` makes a private temporary directory, removed by stop().
    ``port``: fixed TCP port, or ``None`` for a free one. ``keep``: leave the data on disk after
    stop() (for debugging). ``template_cache``: copy a cached, already initialised data directory
    (template_cache_dir()) instead of running initdb every time.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        keep: bool = False,
        template_cache: bool = True,
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self._base_dir_arg = Path(base_dir) if base_dir is not None else None
        self._requested_port = port
        self.keep = keep
        self.template_cache = template_cache
        self.start_timeout = start_timeout
        self.host = HOST
        self.bindir: Path | None = None
        self._port: int | None = None
        self._root: Path | None = None
        self._data_dir: Path | None = None
        self._cleanup: list[Path] = []  # removed by stop() unless keep, in this order
        self._socket_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._service_ids: tuple[int, int] | None = None
        self.start_seconds: float | None = None  # wall time of the last start(), initdb included

    # -- public surface -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """TCP port on 127.0.0.1 (only valid while running)."""
        if self._port is None:
            raise LocalCloudError("the cluster is not running", hint="call start() first")
        return self._port

    @property
    def socket_dir(self) -> Path:
        """Directory holding the unix socket ``.s.PGSQL.<port>``."""
        if self._socket_dir is None:
            raise LocalCloudError("the cluster is not running", hint="call start() first")
        return self._socket_dir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (base_dir/data, or where that symlink points)."""
        if self._data_dir is None:
            raise LocalCloudError("the cluster is not running", hint="call start() first")
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """The server log (stderr of the postmaster)."""
        if self._root is None:
            raise LocalCloudError("the cluster is not running", hint="call start() first")
        return self._root / "postgres.log"

    @property
    def pid(self) -> int | None:
        """Process id of the postmaster, or None when stopped."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the postmaster is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def superuser_dsn(self) -> str:
        """Conninfo for the superuser over the unix socket (trust auth)."""
        return self.dsn(SUPERUSER)

    def dsn(self, user: str, password: str | None = None, dbname: str = "postgres") -> str:
        """Conninfo for ``user``: TCP 127.0.0.1 with ``password`` (scram), else the unix socket."""
        if password is None:
            return make_conninfo(
                host=str(self.socket_dir), port=self.port, user=user, dbname=dbname
            )
        return make_conninfo(
            host=self.host, port=self.port, user=user, password=password, dbname=dbname
        )

    def has_wal2json(self) -> bool:
        """Tell whether this cluster's server has the wal2json output plugin."""
        return has_wal2json(self.bindir or find_bindir())

    def start(self) -> Self:
        """initdb and start the postmaster; raise PostgresNotFoundError or ClusterStartError."""
        if self.running:
            return self
        began = time.monotonic()
        self.bindir = find_bindir()
        self._service_ids = self._resolve_service_user()
        try:
            self._make_dirs()
            self._initdb()
            self._launch_with_retries()
            self._start_reaper()
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self.start_seconds = time.monotonic() - began
        return self

    def restart(self) -> None:
        """Stop the postmaster and start it again on the same port and data (as ``pg_ctl restart
        -m fast``): every connection to it ends. Raises ClusterStartError if it does not come up."""
        self.pause()
        self.resume()

    def pause(self) -> None:
        """Stop the postmaster, keeping its port and data for :meth:`resume`: every connection
        to it ends, and new ones are refused until then (Postgres down, for tests)."""
        if self._proc is None or self._port is None:
            raise LocalCloudError("the cluster is not running", hint="call start() first")
        self._release_reaper()  # (it would take the stopped postmaster for a crash of ours)
        self._shutdown(self._proc)

    def resume(self) -> None:
        """Start a paused postmaster again; raises ClusterStartError if it does not come up."""
        if self._port is None:
            raise LocalCloudError("the cluster is not running", hint="call start() first")
        if not self._launch(self._port):
            raise ClusterStartError(
                "the PostgreSQL server did not start again: " + self._log_tail(),
                hint=f"see {self.log_path}",
            )
        self._start_reaper()

    def stop(self) -> None:
        """Stop the postmaster (fast, then immediate, then kill) and remove its directories."""
        atexit.unregister(self.stop)
        if self._proc is not None:
            self._shutdown(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self._release_reaper()
        self._remove_dirs()
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"<PostgresCluster {state} root={self._root}>"

    # -- start ----------------------------------------------------------------------------------

    @staticmethod
    def _resolve_service_user() -> tuple[int, int] | None:
        """Return (uid, gid) to run the server as, or None to run as ourselves (not root)."""
        if os.geteuid() != 0:  # type: ignore[attr-defined,unused-ignore]
            return None
        try:
            entry = pwd.getpwnam(SERVICE_USER)  # type: ignore[attr-defined,unused-ignore]
        except KeyError:
            raise LocalCloudError(
                f"running as root, but there is no '{SERVICE_USER}' system user"
                " to run PostgreSQL as",
                hint=INSTALL_HINT + " (it creates the user), or run as a non-root user",
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _make_dirs(self) -> None:
        # The socket path must stay under the 107-byte sun_path limit, so it always gets its own
        # short directory, whatever base_dir is.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="lcpg-"))
        owned: list[Path] = []  # directories to hand to the service user
        if self._base_dir_arg is None:
            self._root = Path(tempfile.mkdtemp(prefix="localcloud-pg-"))
            self._data_dir = self._root / "data"
            self._cleanup = [self._root]
            owned.append(self._root)
        else:
            self._root = self._base_dir_arg.resolve()
            self._root.mkdir(parents=True, exist_ok=True)
            link = self._root / "data"
            if link.exists() or link.is_symlink():
                raise ClusterStartError(
                    f"{link} already exists",
                    hint="pass an empty base_dir, or leave it None for a temporary one",
                )
            self._cleanup = [self._root / "postgres.log"]
            ids = self._service_ids
            if ids is not None and not _traversable_by(self._root, *ids):
                # The service user cannot enter base_dir (under /root, or pytest's private
                # tmp_path): keep the data where it can, linked from base_dir/data.
                home = Path(tempfile.mkdtemp(prefix="localcloud-pg-data-"))
                self._data_dir = home / "data"
                link.symlink_to(self._data_dir)
                self._cleanup += [link, home]
                owned.append(home)
            else:
                self._data_dir = link
                self._cleanup.append(link)
        self._data_dir.mkdir(mode=0o700)
        if self._service_ids is not None:
            for path in [self._socket_dir, *owned, self._data_dir]:
                os.chown(path, *self._service_ids)  # type: ignore[attr-defined,unused-ignore]

    def _spawn(
        self, args: list[str], *, cwd: Path | None = None, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start initdb or postgres as the service user, with a neutral env and cwd."""
        assert self._root is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "TZ": "UTC",
        }
        uid, gid = self._service_ids or (None, None)
        return subprocess.Popen(
            args,
            env=env,
            cwd=cwd or self.data_dir,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
            **kwargs,
        )

    def _initdb(self) -> None:
        """Fill the data directory: a copy of the cached template, or a fresh initdb."""
        if not self.template_cache:
            self._run_initdb(self.data_dir)
            return
        template = self._ensure_template()
        # cp -a keeps the owner (the service user) and modes; ~0.1 s against ~0.9 s of initdb.
        _copy_tree(template / "data", self.data_dir)

    def _ensure_template(self) -> Path:
        """Return the cached template for these binaries and settings, building it once.

        Built under an exclusive file lock into a staging directory that is renamed into place,
        so concurrent starts (xdist workers) build it once and never see a half-written one.
        """
        assert self.bindir is not None
        cache = template_cache_dir()
        final = cache / _template_key(self.bindir, self._service_ids)
        if (final / "READY").exists():
            return final
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(cache / f"{final.name}.lock", "wb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # type: ignore[attr-defined,unused-ignore]
            if (final / "READY").exists():
                return final
            build = Path(tempfile.mkdtemp(prefix="lcpg-template-"))
            try:
                (build / "data").mkdir(mode=0o700)
                if self._service_ids is not None:
                    os.chown(build, *self._service_ids)  # type: ignore[attr-defined,unused-ignore]
                    os.chown(build / "data", *self._service_ids)  # type: ignore[attr-defined,unused-ignore]
                self._run_initdb(build / "data")
                staging = cache / f".{final.name}.{os.getpid()}"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(mode=0o700)
                _copy_tree(build / "data", staging / "data")
                (staging / "READY").write_text(str(self.bindir) + "\n", encoding="utf-8")
                os.rename(staging, final)
            finally:
                shutil.rmtree(build, ignore_errors=True)
        return final

    def _run_initdb(self, data_dir: Path) -> None:
        assert self.bindir is not None
        args = [
            str(self.bindir / "initdb"),
            "--pgdata",
            str(data_dir),
            "--username",
            SUPERUSER,
            "--encoding",
            "UTF8",
            "--locale",
            "C.UTF-8",
            "--auth-local",
            "trust",
            "--auth-host",
            "scram-sha-256",
            "--no-sync",  # a disposable cluster: skip the fsyncs, about half of initdb's time
        ]
        proc = self._spawn(args, cwd=data_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output_bytes, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            output_bytes, _ = proc.communicate()
        if proc.returncode != 0:
            output = output_bytes.decode(errors="replace")
            raise ClusterStartError(
                "initdb failed: " + output[-2000:],
                hint="check the PostgreSQL installation (" + INSTALL_HINT + ")",
            )
        _write_config(data_dir)

    def _launch_with_retries(self) -> None:
        for _attempt in range(_BIND_RETRIES):
            port = self._requested_port or _free_port()
            if self._launch(port):
                self._port = port
                return
            if self._requested_port is not None or not self._bind_failed():
                break
        raise ClusterStartError(
            "the PostgreSQL server did not start: " + self._log_tail(),
            hint=f"see {self.log_path}; with a fixed port, make sure it is free",
        )

    def _launch(self, port: int) -> bool:
        """Start the postmaster on ``port``; True once it accepts connections, False if it died."""
        assert self.bindir is not None and self._socket_dir is not None
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        args = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"unix_socket_directories={self._socket_dir}",
        ]
        # Own session: a Ctrl-C aimed at the test run must not hit the postmaster before the
        # fixtures get to stop it in order.
        self._proc = self._spawn(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        return self._wait_ready(self._proc, pid_file)

    def _wait_ready(self, proc: subprocess.Popen[bytes], pid_file: Path) -> bool:
        """Poll postmaster.pid for the "ready" status line, as pg_ctl -w does, but every 5 ms."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(FileNotFoundError):
                lines = pid_file.read_text(encoding="utf-8", errors="replace").splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return True
            time.sleep(0.005)
        self._shutdown(proc)
        return False

    def _bind_failed(self) -> bool:
        tail = self._log_tail()
        return "could not bind" in tail or "Address already in use" in tail

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-limit:]
        except OSError:
            return "(no server log)"

    def _start_reaper(self) -> None:
        assert self._proc is not None and self._socket_dir is not None
        paths = [str(self._socket_dir)] + ([] if self.keep else [str(p) for p in self._cleanup])
        self._reaper = subprocess.Popen(
            [sys.executable, "-I", "-c", _REAPER, str(self._proc.pid), str(self.data_dir), *paths],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # -- stop -----------------------------------------------------------------------------------

    @staticmethod
    def _shutdown(proc: subprocess.Popen[bytes]) -> None:
        """SIGINT (pg_ctl -m fast), then SIGQUIT (-m immediate), then SIGKILL."""
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):  # type: ignore[attr-defined,unused-ignore]
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=DEFAULT_STOP_TIMEOUT)

    def _release_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        assert reaper.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            reaper.stdin.write(b"done")
        with contextlib.suppress(BrokenPipeError):
            reaper.stdin.close()
        try:
            reaper.wait(timeout=DEFAULT_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            reaper.kill()
            reaper.wait()

    def _remove_dirs(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        if self.keep:
            return  # root and data_dir stay readable for inspection
        for path in self._cleanup:
            _remove(path)
        self._cleanup = []
        self._root = self._data_dir = None


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
