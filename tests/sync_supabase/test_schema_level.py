"""A client refuses to push to a cloud schema older than it needs (the local stack, real RPCs).

Migration 20261122000800 makes the server refuse an op id reused for another change. Without it a
restored or copied home's edits were answered as replays and silently never applied, so the client
must not push to such a server: the edit waits (pending, not quarantined) until an operator applies
the migrations, and the next cycle pushes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import sync
import sync.supabase_remote as supabase_remote
from sync.errors import OfflineError, SchemaTooOldError, TransientError
from sync.localcloud.schema import apply_migrations, migration_files
from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import Device, open_device
from .faultproxy import FaultProxy

OP_FINGERPRINT = "20261122000800_op_fingerprint.sql"
SCHEMA_VERSION = "20261122000900_schema_version.sql"


def _migrations_up_to(directory: Path, last: str) -> Path:
    """A copy of the project's migrations up to ``last`` (a project that has only those)."""
    directory.mkdir()
    for path in migration_files():
        if path.name <= last:
            shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture
def old_cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    """A stack whose schema stops before op fingerprints (migrations up to 20261122000700)."""
    directory = _migrations_up_to(tmp_path / "migrations", "20261122000700_purge_owner_index.sql")
    with LocalCloud(migrations_dir=directory) as lc:
        assert lc.migrations_applied[-1] == "20261122000700"
        yield lc


def _server_rows(cloud: LocalCloud) -> int:
    with psycopg.connect(cloud.superuser_dsn) as conn:
        row = conn.execute("select count(*) from public.blueprints").fetchone()
    assert row is not None
    return int(row[0])


def _refused(dev: Device, missing: str, content: str, path: Path) -> SchemaTooOldError:
    """One cycle that must stop at the push with nothing lost, quarantined or sent."""
    err = dev.sync()
    assert isinstance(err, SchemaTooOldError), err
    assert err.missing == missing
    assert err.action == "tell_user"  # the daemon waits for a person, retrying about once a minute
    # The hint says what to apply and how, with commands that run as written: where this
    # client's migration files are (an installed package has no checkout), the CLI's --workdir
    # (a bare `supabase db push` looks in ./supabase/migrations and finds nothing) and --db-url
    # (without it the CLI wants a project linked in that folder: nobody linked site-packages),
    # or psql.
    folder = Path(sync.__file__).parent
    assert f"from {missing} on" in err.hint, err.hint
    assert f'`supabase --workdir {folder} db push --db-url "$DATABASE_URL"`' in err.hint, err.hint
    assert "psql" in err.hint and str(folder / "supabase" / "migrations") in err.hint, err.hint
    status = dev.engine.status()
    assert (status.pending, status.quarantined, status.state) == (1, 0, "error")
    assert status.last_error is not None and missing in status.last_error
    assert dev.engine.quarantined() == []
    assert path.read_text(encoding="utf-8") == content  # the edit is still on disk
    return err


def test_a_server_without_op_fingerprints_gets_the_edit_only_once_migrated(
    old_cloud: LocalCloud, tmp_path: Path
) -> None:
    email = new_email()
    dev = open_device(tmp_path, "a", old_cloud.url, old_cloud.anon_key, email)
    try:
        content = "name: x\na: 1\n"
        bp = dev.store.save("notes/x", content)
        path = dev.store.root / bp.path
        err = _refused(dev, OP_FINGERPRINT, content, path)
        assert str(err).startswith(
            f"the cloud schema is older than this LocalStore needs: migration {SCHEMA_VERSION} "
            "is missing (the project has no localstore_schema_version()), and "
            f"{OP_FINGERPRINT} may be too"
        )
        assert _server_rows(old_cloud) == 0  # nothing went up
        # Pulls are not refused: what the needed migrations change is what a push does.
        assert dev.remote.pull(0).changes == []

        # Op fingerprints but no version function: still refused (it cannot say what it has).
        part = _migrations_up_to(tmp_path / "part", OP_FINGERPRINT)
        assert apply_migrations(old_cloud.superuser_dsn, directory=part) == ["20261122000800"]
        _refused(dev, OP_FINGERPRINT, content, path)

        # The operator applies the rest: the next cycle of the same remote pushes the edit.
        assert apply_migrations(old_cloud.superuser_dsn)[0] == "20261122000900"
        assert dev.sync() is None
        status = dev.engine.status()
        assert (status.pending, status.quarantined, status.last_error) == (0, 0, None)
        assert _server_rows(old_cloud) == 1
        other = open_device(tmp_path, "b", old_cloud.url, old_cloud.anon_key, email)
        try:
            assert other.sync() is None
            assert other.store.load(bp.id).content == content
        finally:
            other.close()
    finally:
        dev.close()


def test_a_server_behind_a_newer_client_is_named_by_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later migration the client needs bumps localstore_schema_version(); until a server
    has it, the client names the missing file and the server's version."""
    future = "20991231000000_future_need.sql"
    # This client is one that needs a migration after every file of the project.
    monkeypatch.setattr(
        supabase_remote, "NEEDED_MIGRATIONS", (*supabase_remote.NEEDED_MIGRATIONS, future)
    )
    with LocalCloud() as cloud:
        dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email())
        try:
            content = "name: y\n"
            bp = dev.store.save("notes/y", content)
            err = _refused(dev, future, content, dev.store.root / bp.path)
            assert err.server_version == 20261122000900
            assert str(err).startswith(
                "the cloud schema is older than this LocalStore needs: migration "
                f"{future} and later are missing (the server's schema is at 20261122000900)"
            )
            # That migration, written by the convention of 20261122000900, lets the push through.
            # The project's files plus it, as the operator's directory holds them (the CLI
            # refuses a directory that lacks an applied version).
            later = _migrations_up_to(tmp_path / "later", "99")
            (later / future).write_text(
                "create or replace function public.localstore_schema_version()\n"
                "returns bigint language sql immutable security invoker set search_path = ''\n"
                "as $$ select 20991231000000::bigint $$;\n",
                encoding="utf-8",
            )
            assert apply_migrations(cloud.superuser_dsn, directory=later) == ["20991231000000"]
            assert dev.sync() is None
            assert dev.engine.status().pending == 0
            assert _server_rows(cloud) == 1

            # The project is now ahead of a client that needs only the project's own files
            # (this LocalStore): a newer client's migration is no reason to refuse it.
            monkeypatch.undo()
            assert supabase_remote.NEEDED_MIGRATIONS[-1] < future
            older = open_device(tmp_path, "b", cloud.url, cloud.anon_key, new_email())
            try:
                older.store.save("notes/z", "name: z\n")
                assert older.sync() is None
                assert older.engine.status().pending == 0
                assert _server_rows(cloud) == 2
            finally:
                older.close()
        finally:
            dev.close()


def test_only_a_schema_older_than_the_newest_needed_migration_is_refused() -> None:
    """What _check_schema decides for each answer of localstore_schema_version()."""
    needed = supabase_remote.NEEDED_MIGRATIONS
    newest = int(needed[-1].partition("_")[0])
    assert supabase_remote._schema_too_old(newest) is None
    assert supabase_remote._schema_too_old(20991231000000) is None  # a project ahead
    behind = supabase_remote._schema_too_old(newest - 1)
    assert behind is not None and (behind.missing, behind.server_version) == (
        needed[-1],
        newest - 1,
    )
    assert (
        f"migration {needed[-1]} and later are missing (the server's schema is at {newest - 1})"
        in str(behind)
    )
    unknown = supabase_remote._schema_too_old(None)  # no version function at all
    assert unknown is not None and unknown.missing == needed[0]
    # Commands that run as written on a machine where only the package is installed.
    package = Path(sync.__file__).parent
    assert unknown.hint is not None
    assert f'`supabase --workdir {package} db push --db-url "$DATABASE_URL"`' in unknown.hint
    assert 'psql "$DATABASE_URL" -v ON_ERROR_STOP=1 --single-transaction -f' in unknown.hint


# -- the check is made again when the server may have changed ------------------------------------

COUNTED_VERSION = """
create sequence if not exists public.schema_checks;
create or replace function public.localstore_schema_version()
returns bigint language sql volatile security definer set search_path = ''
as $$ select 20261122000900::bigint + 0 * nextval('public.schema_checks') $$;
"""


def _checks(cloud: LocalCloud) -> int:
    """How many times clients asked localstore_schema_version() (COUNTED_VERSION counts them)."""
    with psycopg.connect(cloud.superuser_dsn) as conn:
        row = conn.execute("select last_value, is_called from public.schema_checks").fetchone()
    assert row is not None
    return int(row[0]) if row[1] else 0


def _restore_an_older_schema(cloud: LocalCloud) -> None:
    """What a restore from a backup taken before migration 20261122000900 leaves."""
    with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
        conn.execute("drop function public.localstore_schema_version()")
        conn.execute("notify pgrst, 'reload schema'")


@pytest.fixture
def counted_cloud() -> Iterator[LocalCloud]:
    """A stack of its own (the tests change its schema) whose version function counts calls."""
    with LocalCloud() as lc:
        with psycopg.connect(lc.superuser_dsn, autocommit=True) as conn:
            conn.execute(COUNTED_VERSION)
        yield lc


def test_the_schema_is_checked_again_after_an_outage(
    counted_cloud: LocalCloud, tmp_path: Path
) -> None:
    """The server came back from an outage restored to an older schema: the first push after
    it is refused, not sent (the check made before the outage no longer holds)."""
    cloud = counted_cloud
    with FaultProxy(cloud.port) as proxy:
        dev = open_device(tmp_path, "a", proxy.url, cloud.anon_key, new_email())
        try:
            dev.store.save("notes/a", "a: 1\n")
            assert dev.sync() is None
            dev.store.save("notes/b", "b: 1\n")
            assert dev.sync() is None
            assert _checks(cloud) == 1  # once, not before every push
            assert _server_rows(cloud) == 2

            proxy.refuse()
            proxy.reset_all()
            content = "c: 1\n"
            bp = dev.store.save("notes/c", content)
            assert isinstance(dev.sync(), OfflineError | TransientError)
            _restore_an_older_schema(cloud)
            proxy.heal()

            _refused(dev, OP_FINGERPRINT, content, dev.store.root / bp.path)
            assert _server_rows(cloud) == 2  # nothing went up to the older schema
        finally:
            dev.close()


def test_the_schema_is_checked_again_after_the_session_is_refreshed(
    counted_cloud: LocalCloud, tmp_path: Path
) -> None:
    """A new session (a refresh, hourly by the client's timer; a new login) is a new start: the
    next push asks again. Between, a daemon that never saw an error would push for good to a
    schema rolled back under it."""
    cloud = counted_cloud
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email())
    try:
        dev.store.save("notes/a", "a: 1\n")
        assert dev.sync() is None
        assert _checks(cloud) == 1
        _restore_an_older_schema(cloud)
        dev.remote.refresh_auth()
        content = "b: 1\n"
        bp = dev.store.save("notes/b", content)
        _refused(dev, OP_FINGERPRINT, content, dev.store.root / bp.path)
        assert _server_rows(cloud) == 1
    finally:
        dev.close()


def test_a_failure_seen_while_the_schema_is_being_checked_is_not_forgotten(
    counted_cloud: LocalCloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread's call fails (or a new session starts) while this one's schema check is
    in flight: the check's answer predates that, so the next push must ask again. A plain flag
    set on success erased the other thread's "ask again"."""
    cloud = counted_cloud
    dev = open_device(tmp_path, "a", cloud.url, cloud.anon_key, new_email())
    try:
        remote = dev.remote
        real_rpc = remote._rpc
        raced: list[str] = []

        def rpc_then_a_failure_elsewhere(name: str, params: dict[str, object]) -> object:
            answer = real_rpc(name, params)
            if name == supabase_remote.SCHEMA_VERSION_RPC and not raced:
                raced.append(name)
                remote._server_may_have_changed()  # what the other thread's failure does
            return answer

        monkeypatch.setattr(remote, "_rpc", rpc_then_a_failure_elsewhere)
        dev.store.save("notes/a", "a: 1\n")
        assert dev.sync() is None
        assert (raced, _checks(cloud)) == ([supabase_remote.SCHEMA_VERSION_RPC], 1)
        dev.store.save("notes/b", "b: 1\n")
        assert dev.sync() is None
        assert _checks(cloud) == 2  # asked again: the first answer may be stale
        dev.store.save("notes/c", "c: 1\n")
        assert dev.sync() is None
        assert _checks(cloud) == 2  # and not on every push after that
    finally:
        dev.close()
