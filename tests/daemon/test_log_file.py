"""The daemon's log file over a long life: it is where `doctor` and every hint send an operator."""

from __future__ import annotations

import logging
import re
import shutil
import signal

import pytest

from sync.daemon import _LogFileHandler, configure_logging
from sync.embed import daemon_running
from tests.store import test_disk_full
from tests.store.test_disk_full import DiskSpace

from .conftest import eventually

# A real full disk (a small tmpfs), the store's disk-full tests' fixture.
disk = test_disk_full.disk


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


def test_a_full_disk_is_reported_once_and_the_lost_records_counted(
    disk: DiskSpace, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a full disk the handler printed a whole traceback to stderr (logging.Handler.
    handleError) for every record it could not write; under systemd stderr is the journal,
    and hours of a full disk flooded it. Now: one line when writes start failing, the dropped
    records counted, and one line in the log (and on stderr) once it can be written again."""
    state = disk.root / "state"
    handlers = configure_logging(state, stderr=False)
    logger = logging.getLogger("sync.daemon")
    path = state / "daemon.log"
    padding = "x" * 200
    try:
        for episode in range(2):  # reported again after a recovery
            logger.info("before %d", episode)
            disk.fill()
            for i in range(300):
                logger.warning("on a full disk %d %d %s", episode, i, padding)
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert err.splitlines() == [
                f"localstore: cannot write the log {path}: the disk is full; its records are "
                "dropped (and counted) until it can be written again"
            ]
            disk.free()
            logger.info("after %d", episode)
            for h in handlers:
                h.flush()
            lines = path.read_text().splitlines()
            resumed = [line for line in lines if "logging resumed" in line]
            assert len(resumed) == episode + 1, lines[-5:]
            lost = int(re.search(r"(\d+) log record\(s\) were lost", resumed[-1])[1])  # type: ignore[index]
            assert f"while {path} could not be written (since " in resumed[-1]
            assert resumed[-1].endswith(": the disk is full)")
            assert lines[-1].endswith(f"INFO sync.daemon: after {episode}")
            # Every record either reached the file whole or was counted as lost, and every
            # line starts with a timestamp (a write cut short does not glue two records).
            whole = [
                line for line in lines if re.search(rf"full disk {episode} \d+ {padding}$", line)
            ]
            assert len(whole) + lost == 300
            assert all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in lines), lines
            err = capsys.readouterr().err
            assert err.splitlines() == [
                f"localstore: logging to {path} works again; {lost} record(s) lost"
            ]
    finally:
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()
