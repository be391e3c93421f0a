"""The daemon log's timestamps name one instant each, whatever the time zone does.

A laptop's clock is local time: DST ends and an hour of wall-clock times happens twice, and the
user changes the zone when travelling (a running Python process keeps the zone it read first, so
its lines and the journal's then disagree by hours). Lines without an offset cannot be ordered
or matched with other logs then. The zone is changed for this process only (TZ + tzset), with a
POSIX rule so no zoneinfo files are needed.
"""

from __future__ import annotations

import calendar
import json
import logging
import time
import types
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sync.daemon import configure_logging

# Central Europe: CEST (+02:00) ends on the last Sunday of October at 03:00 local.
_BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"
# 00:30 and 01:30 UTC on 25 Oct 2026 are both 02:30 on a Berlin wall clock.
_TWICE = [calendar.timegm((2026, 10, 25, 0, 30, 0)), calendar.timegm((2026, 10, 25, 1, 30, 0))]


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", _BERLIN)
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def _log_twice(state: Path, *, as_json: bool) -> list[str]:
    handlers = configure_logging(state, as_json=as_json, stderr=False)
    logger = logging.getLogger("sync.daemon")
    try:
        for when in _TWICE:
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "tick", (), None)
            record.created, record.msecs = when, 0.0
            logger.handle(record)
        for h in handlers:
            h.flush()
    finally:
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()
    return (state / "daemon.log").read_text(encoding="utf-8").splitlines()


def test_text_lines_carry_their_utc_offset(berlin: None, tmp_path: Path) -> None:
    lines = _log_twice(tmp_path / "state", as_json=False)
    stamps = [" ".join(line.split(" ")[:2]) for line in lines]
    assert [datetime.fromisoformat(s.replace(",", ".")).timestamp() for s in stamps] == _TWICE, (
        stamps
    )
    assert stamps[0].startswith("2026-10-25 02:30:00") and stamps[1].startswith("2026-10-25 02:30")


def test_json_lines_are_in_utc(berlin: None, tmp_path: Path) -> None:
    lines = _log_twice(tmp_path / "state", as_json=True)
    stamps = [json.loads(line)["ts"] for line in lines]
    assert stamps == ["2026-10-25T00:30:00.000Z", "2026-10-25T01:30:00.000Z"]


def test_text_lines_carry_an_offset_where_strftime_gives_a_zone_name(
    berlin: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows' C library gives time.strftime's %z as the zone's name ("W. Europe Daylight
    # Time", CPython issue 82232): the offset was cut from that name ("W. : Europe ..."), every
    # line's time unreadable. Windows' behaviour is injected into the log formatter's view of
    # time (sync._daemon_log).
    import sync._daemon_log as daemon_log

    real = time
    windows = types.SimpleNamespace(
        **{k: getattr(real, k) for k in dir(real) if not k.startswith("__")}
    )

    def strftime(fmt: str, *args: Any) -> str:
        named = fmt.replace("%z", "W. Europe Daylight Time")
        return real.strftime(named, *args)

    windows.strftime = strftime
    monkeypatch.setattr(daemon_log, "time", windows)
    lines = _log_twice(tmp_path / "state", as_json=False)
    stamps = [" ".join(line.split(" ")[:2]) for line in lines]
    assert [datetime.fromisoformat(s.replace(",", ".")).timestamp() for s in stamps] == _TWICE, (
        stamps
    )
