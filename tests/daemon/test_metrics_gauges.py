"""The daemon's process gauges (RSS, open files; docs/daemon.md "Metrics") come from psutil, a
runtime dependency, and a psutil without `Process.num_fds` (Windows has `num_handles` instead)
leaves out the open-files gauge rather than failing the `metrics` op and /metrics."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from localstore.config import load_settings
from sync.daemon import Daemon


def test_the_process_gauges_are_reported(tmp_path: Path) -> None:
    gauges = Daemon(load_settings(home=tmp_path), install_signals=False).metrics_snapshot()[
        "gauges"
    ]
    assert gauges["rss_bytes"] > 0
    assert gauges["open_files"] > 0


def test_a_psutil_without_num_fds_as_on_windows_still_gives_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: psutil's Process as Windows has it, without num_fds (num_handles is
    # Windows-only, so neither is there and only the open-files gauge goes).
    monkeypatch.delattr(psutil.Process, "num_fds")
    daemon = Daemon(load_settings(home=tmp_path), install_signals=False)
    gauges = daemon.metrics_snapshot()["gauges"]
    assert gauges["rss_bytes"] > 0
    assert "open_files" not in gauges
    assert "localstore_rss_bytes " in daemon.prometheus_text()


def test_prometheus_names_are_unique_and_counters_end_in_total_once(inproc_daemon) -> None:
    # The control server's counter `connections_total` came out as
    # `localstore_control_connections_total_total`, and its current connection count (a gauge)
    # as the counter `localstore_control_connections_total`: a scraper's rate() of it was noise.
    d = inproc_daemon()
    with d.client() as client:
        client.status()
        text = d.daemon.prometheus_text()
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, mtype = line.split()
            assert name not in types, f"{name} reported twice"
            types[name] = mtype
    assert types, text
    for name, mtype in types.items():
        assert "_total_total" not in name, name
        assert name.endswith("_total") == (mtype == "counter"), (name, mtype)
    assert types["localstore_control_connections_open"] == "gauge"
    assert types["localstore_control_connections_total"] == "counter"
    counters = d.daemon.metrics_snapshot()["counters"]
    assert counters["control_connections"] >= 1
