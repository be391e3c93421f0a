"""The daemon's log file over a long life: it is where `doctor` and every hint send an operator."""

from __future__ import annotations

import logging
import shutil
import signal

from sync.daemon import _LogFileHandler
from sync.embed import daemon_running

from .conftest import eventually


def test_the_log_file_is_recreated_after_state_is_deleted(spawn_daemon, tmp_path) -> None:
    """The daemon restores daemon.lock and daemon.json when state/ is deleted (a clean-up
    script), but its log handler kept writing to the deleted file: daemon.log stayed missing,
    and every line went to an unlinked inode until 5 MB had piled up there (months at INFO)."""
    home = tmp_path / "h"
    d = spawn_daemon(home)
    ready = d.wait_ready()
    state = home / "state"
    shutil.rmtree(state)
    assert eventually(lambda: daemon_running(d.settings) is not None, 15)  # restored by its tick
    assert daemon_running(d.settings) == ready
    assert d.stop(signal.SIGTERM) == 0
    log = (state / "daemon.log").read_text()
    assert "state/daemon.json was deleted; writing it again" in log
    assert "daemon stopping" in log


def test_the_log_file_still_rotates_and_is_bounded(tmp_path) -> None:
    handler = _LogFileHandler(tmp_path / "daemon.log", maxBytes=2000, backupCount=2)
    try:
        handler.setFormatter(logging.Formatter("%(message)s"))
        for i in range(200):
            handler.handle(logging.makeLogRecord({"msg": f"line {i:04d} " + "x" * 40}))
    finally:
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all((tmp_path / n).stat().st_size <= 2000 for n in names)
    assert "line 0199" in (tmp_path / "daemon.log").read_text()
