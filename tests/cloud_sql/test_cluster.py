"""PostgresCluster: a real throw-away cluster starts, is configured as documented, and always goes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from sync.localcloud.cluster import (
    INSTALL_HINT,
    ClusterStartError,
    PostgresCluster,
    PostgresNotFoundError,
    default_search_path,
    find_bindir,
    has_wal2json,
    template_cache_dir,
)

pytestmark = pytest.mark.cloud

IS_ROOT = os.geteuid() == 0


def _gone(path: Path | str) -> bool:
    return not Path(path).exists()


def _wait_until(condition: object, what: str, timeout: float = 15.0) -> None:
    """Poll for a condition in another process (it has no event to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory the postgres user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lc-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=True)


def test_lifecycle_settings_and_cleanup() -> None:
    cluster = PostgresCluster()
    with cluster:
        assert cluster.running and cluster.host == "127.0.0.1"
        assert cluster.start_seconds is not None and cluster.start_seconds > 0
        data_dir, socket_dir = cluster.data_dir, cluster.socket_dir
        assert (socket_dir / f".s.PGSQL.{cluster.port}").exists()
        with psycopg.connect(cluster.superuser_dsn) as conn:
            settings: dict[str, str] = dict(
                conn.execute(
                    "select name, setting from pg_settings where name = any(%s)",
                    (
                        [
                            "wal_level",
                            "fsync",
                            "synchronous_commit",
                            "listen_addresses",
                            "max_replication_slots",
                            "server_encoding",
                            "TimeZone",
                        ],
                    ),
                ).fetchall()
            )
            assert conn.execute("select current_user").fetchone() == ("postgres",)
        assert settings["wal_level"] == "logical"
        assert settings["fsync"] == "off" and settings["synchronous_commit"] == "on"
        assert settings["listen_addresses"] == "127.0.0.1"
        assert int(settings["max_replication_slots"]) >= 10
        assert settings["server_encoding"] == "UTF8" and settings["TimeZone"] == "UTC"
        assert cluster.has_wal2json()
        assert cluster.pid is not None
        server_user = psutil.Process(cluster.pid).username()
        assert server_user == ("postgres" if IS_ROOT else psutil.Process().username())
        # The superuser has no password, so TCP (scram) refuses it; the socket trusts it.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(cluster.dsn("postgres", "wrong")).close()
    assert not cluster.running
    assert _gone(data_dir) and _gone(socket_dir)
    cluster.stop()  # a second stop is harmless


def test_base_dir_keep_and_a_fresh_template(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    templates = shared_tmp / "templates"
    monkeypatch.setenv("LOCALSTORE_PG_TEMPLATE_DIR", str(templates))
    base = shared_tmp / "cloud"
    with PostgresCluster(base, keep=True) as cluster:
        assert cluster.data_dir == base.resolve() / "data"
        port = cluster.port
    assert template_cache_dir() == templates
    [template] = [p for p in templates.iterdir() if p.is_dir()]
    assert (template / "READY").exists() and (template / "data" / "PG_VERSION").exists()
    assert (base / "data" / "PG_VERSION").exists()  # kept for debugging
    assert (base / "postgres.log").exists()
    with socket.socket() as s:  # the port is released
        s.bind(("127.0.0.1", port))
    with pytest.raises(ClusterStartError, match="already exists"):
        PostgresCluster(base).start()


def test_base_dir_is_cleaned_but_not_removed_and_initdb_without_template(
    shared_tmp: Path,
) -> None:
    cluster = PostgresCluster(shared_tmp, template_cache=False)
    with cluster, psycopg.connect(cluster.start().superuser_dsn) as conn:
        assert conn.execute("show wal_level").fetchone() == ("logical",)
    assert shared_tmp.exists() and list(shared_tmp.iterdir()) == []


def test_private_base_dir(tmp_path: Path) -> None:
    """As root the server runs as 'postgres', which cannot enter pytest's private tmp_path: the
    data then lives in a private temporary directory, linked from base_dir/data."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    base = private / "cloud"
    with PostgresCluster(base) as cluster:
        with psycopg.connect(cluster.superuser_dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert (base / "data").resolve() == cluster.data_dir
        assert (base / "data").is_symlink() is IS_ROOT
        data_dir = cluster.data_dir
    assert not (base / "data").exists() and not (base / "data").is_symlink()
    assert _gone(data_dir) and _gone(data_dir.parent) if IS_ROOT else _gone(data_dir)
    assert base.exists()


def test_a_fixed_port_in_use_fails_with_the_server_log() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cluster = PostgresCluster(port=port)
        with pytest.raises(ClusterStartError, match="did not start") as info:
            cluster.start()
    assert "could not bind" in str(info.value) or "in use" in str(info.value)
    assert not cluster.running


def test_a_killed_owner_takes_its_cluster_with_it() -> None:
    """SIGKILL of the owning process: the reaper stops the postmaster and removes the dirs."""
    script = (
        "import os, signal, sys\n"
        "from sync.localcloud.cluster import PostgresCluster\n"
        "c = PostgresCluster().start()\n"
        "print(c.pid, c.data_dir, c.socket_dir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid_text, data_dir, socket_dir = proc.stdout.split()
    pid = int(pid_text)
    _wait_until(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        "the postmaster to stop",
    )
    _wait_until(lambda: _gone(data_dir) and _gone(socket_dir), "the directories to go")


def test_missing_server_binaries_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PostgresNotFoundError) as info:
        find_bindir([tmp_path])
    assert info.value.hint == INSTALL_HINT
    assert "apt-get install postgresql-15" in str(info.value)


def test_bindir_search_order(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_bindir()
    assert (real / "initdb").exists() and (real / "postgres").exists()
    monkeypatch.setenv("LOCALSTORE_PG_BINDIR", str(real))
    assert default_search_path()[0] == real
    assert has_wal2json(real)
