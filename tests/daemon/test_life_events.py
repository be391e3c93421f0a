"""A laptop's life under a real daemon process on the local stack: a suspend longer than the
access token lives, and the gateway going away for a while (a network drop). The daemon must come
back by itself, promptly (not at its next poll), lose no edit made meanwhile on either side, and
not grow threads or descriptors."""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sync.localcloud.stack import LocalCloud

from .conftest import eventually, home_settings, log_in, new_email, require_keychain, write_external

TTL_S = 3  # the access token's life: a suspend of SUSPEND_S outlives it twice
SUSPEND_S = 8.0
# Recovery must beat the 30 s poll: it is the refresh, the realtime rejoin and its pull.
PROMPT_S = 20.0


@pytest.fixture(scope="module")
def short_cloud() -> Iterator[LocalCloud]:
    require_keychain()
    with LocalCloud(access_token_ttl=TTL_S) as lc:
        yield lc


def _pair(short_cloud: LocalCloud, spawn_daemon: Any, tmp_path: Path) -> list[Any]:
    email = new_email()
    daemons = []
    for name in ("laptop", "desktop"):
        home = tmp_path / name
        log_in(home_settings(home), short_cloud, email)
        daemons.append(spawn_daemon(home))
    for d in daemons:
        d.wait_ready()
        c = d.client()
        assert eventually(functools.partial(_subscribed, c), 30), c.status()
    return daemons


def _subscribed(client: Any) -> bool:
    return (client.status()["realtime"] or {}).get("state") == "subscribed"


def _has(home: Path, rel: str, text: str) -> bool:
    path = home / "blueprints" / rel
    return path.exists() and path.read_text() == text


# What a recovery may hold more than before (a new realtime socket, HTTP connections kept
# alive); a leak per retry or per rebuild grows far past it.
MORE_THREADS, MORE_FDS = 2, 6


def _resources(pid: int) -> tuple[int, int]:
    proc = psutil.Process(pid)
    return proc.num_threads(), proc.num_fds()


def test_a_suspend_longer_than_the_token_recovers_promptly(
    short_cloud: LocalCloud, spawn_daemon: Any, tmp_path: Path
) -> None:
    laptop, desktop = _pair(short_cloud, spawn_daemon, tmp_path)
    cd, cl = desktop.client(), laptop.client()
    write_external(laptop.home / "blueprints", "warm.blueprint.yaml", "w: 1\n")
    cl.sync(wait=True)
    threads, fds = _resources(laptop.proc.pid)

    laptop.proc.send_signal(signal.SIGSTOP)
    try:
        write_external(laptop.home / "blueprints", "night/laptop.blueprint.yaml", "by: laptop\n")
        write_external(desktop.home / "blueprints", "night/desktop.blueprint.yaml", "by: desk\n")
        cd.sync(wait=True)
        time.sleep(SUSPEND_S)  # the suspend itself: the token expires meanwhile, twice
    finally:
        laptop.proc.send_signal(signal.SIGCONT)
    woke = time.monotonic()
    assert eventually(
        lambda: _has(laptop.home, "night/desktop.blueprint.yaml", "by: desk\n"), PROMPT_S
    ), laptop.output()
    assert eventually(
        lambda: _has(desktop.home, "night/laptop.blueprint.yaml", "by: laptop\n"), PROMPT_S
    ), laptop.output()
    assert time.monotonic() - woke < PROMPT_S
    assert eventually(lambda: cl.status()["sync"]["state"] == "idle", 10), cl.status()
    assert eventually(lambda: _subscribed(cl), 10), cl.status()
    now_threads, now_fds = _resources(laptop.proc.pid)
    assert now_threads <= threads + MORE_THREADS and now_fds <= fds + MORE_FDS, (
        threads,
        fds,
        now_threads,
        now_fds,
    )
    log = (laptop.home / "state" / "daemon.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_the_gateway_gone_for_a_while_and_back_on_its_port(
    short_cloud: LocalCloud, spawn_daemon: Any, tmp_path: Path
) -> None:
    laptop, desktop = _pair(short_cloud, spawn_daemon, tmp_path)
    cl = laptop.client()
    threads, fds = _resources(laptop.proc.pid)
    log_path = laptop.home / "state" / "daemon.log"
    short_cloud.stop_gateway()
    try:
        write_external(laptop.home / "blueprints", "offline/edit.blueprint.yaml", "off: 1\n")
        assert eventually(lambda: not _subscribed(cl), 20)
        lines_before = len(log_path.read_text().splitlines())
        time.sleep(15.0)  # the outage: long enough for several retries of sync and realtime
        outage_lines = log_path.read_text().splitlines()[lines_before:]
    finally:
        short_cloud.start_gateway()
    noisy = [ln for ln in outage_lines if " DEBUG " not in ln]
    assert len(noisy) <= 6, "\n".join(noisy)
    woke = time.monotonic()
    assert eventually(
        lambda: _has(desktop.home, "offline/edit.blueprint.yaml", "off: 1\n"), PROMPT_S
    ), laptop.output()
    assert time.monotonic() - woke < PROMPT_S
    assert eventually(lambda: _subscribed(cl), 20), cl.status()
    now_threads, now_fds = _resources(laptop.proc.pid)
    assert now_threads <= threads + MORE_THREADS and now_fds <= fds + MORE_FDS, (
        threads,
        fds,
        now_threads,
        now_fds,
    )
