"""A server's protocol and limits, changed under a running engine (the local stack, real RPCs).

The engine asked ``server_info`` once and kept its answer for good. A daemon runs one engine for
months; a server that came back from an outage restored with a smaller ``max_batch`` refused
every full push ("too many changes", 22023) until the daemon restarted, and one upgraded to
another protocol got pushes. Here the server's functions read their limit and protocol from a
table the test changes (``server_info`` also counts its calls), so the limit the server announces
is the one ``push_changes`` enforces, as after a real restore.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sync.errors import OfflineError, RemoteConfigError, TransientError
from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import Device, open_device
from .faultproxy import FaultProxy

SETUP = """
create table public.limits_under_test (protocol int not null, max_batch int not null);
insert into public.limits_under_test values (1, 500);
create sequence public.server_info_calls;
grant select on public.limits_under_test to authenticated;
grant usage on sequence public.server_info_calls to authenticated;
"""
SERVER_INFO = "public.server_info()"
PUSH_CHANGES = "public.push_changes(jsonb, text)"


def _redefine(conn: psycopg.Connection, signature: str, edits: dict[str, str]) -> None:
    """Create ``signature`` again from its deployed definition with ``edits`` made in it."""
    row = conn.execute("select pg_get_functiondef(%s::regprocedure)", (signature,)).fetchone()
    assert row is not None
    text = str(row[0])
    for old, new in edits.items():
        assert old in text, (signature, old)
        text = text.replace(old, new)
    conn.execute(text.encode())


@pytest.fixture(scope="module")
def limits_cloud() -> Iterator[LocalCloud]:
    """A stack of this module's (its functions are changed) whose limits a table holds."""
    with LocalCloud() as lc:
        with psycopg.connect(lc.superuser_dsn, autocommit=True) as conn:
            conn.execute(SETUP.encode())
            limits = "(select l.{} from public.limits_under_test l)"
            _redefine(
                conn,
                SERVER_INFO,
                {
                    " STABLE": " VOLATILE",  # nextval below
                    "perform sync_internal.require_uid();": "perform sync_internal.require_uid();"
                    " perform nextval('public.server_info_calls');",
                    "'protocol', 1": f"'protocol', {limits.format('protocol')}",
                    "'max_batch', 500": f"'max_batch', {limits.format('max_batch')}",
                },
            )
            _redefine(
                conn,
                PUSH_CHANGES,
                {
                    "jsonb_array_length(changes) > 500": "jsonb_array_length(changes) > "
                    + limits.format("max_batch")
                },
            )
            conn.execute("notify pgrst, 'reload schema'")
        yield lc


def _set(cloud: LocalCloud, *, protocol: int = 1, max_batch: int = 500) -> None:
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute(
            "update public.limits_under_test set protocol = %s, max_batch = %s",
            (protocol, max_batch),
        )


def _asked(cloud: LocalCloud) -> int:
    """How many times clients asked server_info() (the redefined one counts)."""
    with psycopg.connect(cloud.superuser_dsn) as conn:
        row = conn.execute("select last_value, is_called from public.server_info_calls").fetchone()
    assert row is not None
    return int(row[0]) if row[1] else 0


def _server_contents(cloud: LocalCloud, dev: Device) -> dict[str, str]:
    with psycopg.connect(cloud.superuser_dsn) as conn:
        rows = conn.execute(
            "select id::text, content from public.blueprints where owner = %s and not deleted",
            (dev.remote.user_id,),
        ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _save(dev: Device, count: int, prefix: str) -> dict[str, str]:
    return {dev.store.save(f"{prefix}/b{n}", f"v: {n}\n").id: f"v: {n}\n" for n in range(count)}


def _all_up(cloud: LocalCloud, dev: Device, saved: dict[str, str]) -> None:
    """Every saved blueprint is on the server as saved; nothing waits, failed or is parked."""
    assert _server_contents(cloud, dev) == saved
    status = dev.engine.status()
    assert (status.pending, status.quarantined, status.last_error) == (0, 0, None)
    assert dev.engine.quarantined() == []


@pytest.fixture
def limits(limits_cloud: LocalCloud) -> Iterator[LocalCloud]:
    _set(limits_cloud)
    yield limits_cloud
    _set(limits_cloud)


def test_a_smaller_max_batch_after_an_outage_is_honoured_without_a_restart(
    limits: LocalCloud, tmp_path: Path
) -> None:
    cloud = limits
    with FaultProxy(cloud.port) as proxy:
        dev = open_device(tmp_path, "a", proxy.url, cloud.anon_key, new_email())
        try:
            saved = _save(dev, 4, "before")
            assert dev.sync() is None
            asked = _asked(cloud)
            saved |= _save(dev, 3, "more")
            assert dev.sync() is None
            assert _asked(cloud) == asked  # not per push, nor per cycle
            _all_up(cloud, dev, saved)

            proxy.refuse()
            proxy.reset_all()
            saved |= _save(dev, 8, "during")
            assert isinstance(dev.sync(), OfflineError | TransientError)
            _set(cloud, max_batch=3)  # restored with another configuration while it was down
            proxy.heal()

            assert dev.sync() is None  # the same engine: no restart
            _all_up(cloud, dev, saved)
            assert dev.engine.batch_size == 3
            assert _asked(cloud) == asked + 1  # once more, after the outage
        finally:
            dev.close()


def test_a_smaller_max_batch_is_honoured_after_a_new_session(
    limits: LocalCloud, tmp_path: Path
) -> None:
    """No error between: a new session (the client's refresh timer, about hourly) is when the
    engine asks again, as the remote asks for the schema again."""
    cloud = limits
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email())
    try:
        saved = _save(dev, 2, "before")
        assert dev.sync() is None
        _set(cloud, max_batch=2)
        dev.remote.refresh_auth()
        saved |= _save(dev, 5, "after")
        assert dev.sync() is None
        _all_up(cloud, dev, saved)
        assert dev.engine.batch_size == 2
    finally:
        dev.close()


def test_a_smaller_max_batch_under_a_running_engine_is_used_in_the_same_cycle(
    limits: LocalCloud, tmp_path: Path
) -> None:
    """No outage, no new session: the full push refused as too many changes (22023) makes the
    engine ask server_info again at once and push in the new limit's batches; no failed cycle,
    nothing shown as an error (before: one cycle failed, ~60 s, until the next asked again)."""
    cloud = limits
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email())
    try:
        saved = _save(dev, 2, "before")
        assert dev.sync() is None
        asked = _asked(cloud)
        _set(cloud, max_batch=3)  # an operator lowers the limit under the running engine
        saved |= _save(dev, 7, "after")
        assert dev.sync() is None
        _all_up(cloud, dev, saved)
        assert dev.engine.batch_size == 3
        assert _asked(cloud) == asked + 1  # once, on the refusal
        assert dev.engine.status().state == "idle"
    finally:
        dev.close()


def test_another_protocol_after_an_outage_is_refused_and_nothing_is_sent(
    limits: LocalCloud, tmp_path: Path
) -> None:
    cloud = limits
    with FaultProxy(cloud.port) as proxy:
        dev = open_device(tmp_path, "a", proxy.url, cloud.anon_key, new_email())
        try:
            saved = _save(dev, 1, "before")
            assert dev.sync() is None
            proxy.refuse()
            proxy.reset_all()
            content = "v: new\n"
            bp = dev.store.save("during/x", content)
            assert isinstance(dev.sync(), OfflineError | TransientError)
            _set(cloud, protocol=2)  # upgraded while it was down
            proxy.heal()

            err = dev.sync()
            assert isinstance(err, RemoteConfigError), err
            assert err.message == "the server speaks sync protocol 2, this client 1"
            assert err.action == "tell_user"
            assert _server_contents(cloud, dev) == saved  # nothing went up
            status = dev.engine.status()
            assert (status.pending, status.quarantined) == (1, 0)
            assert (dev.store.root / bp.path).read_text(encoding="utf-8") == content

            _set(cloud, protocol=1)  # the matching schema deployed: the edit goes up
            assert dev.sync() is None
            _all_up(cloud, dev, saved | {bp.id: content})
        finally:
            dev.close()
