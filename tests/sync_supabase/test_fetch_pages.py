"""A project without fetch_rows_page (migration 20261122001300) is still fetched from, by
fetch_rows, as before that migration: the client does not need it (the schema version it checks
stays 20261122000900), so it must not stop fetching when the operator has not applied it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.localcloud.schema import migration_files
from sync.localcloud.stack import LocalCloud

from .conftest import new_email
from .devices import open_device

BEFORE_FETCH_PAGES = "20261122001200_fetch_rows_limit.sql"


@pytest.fixture
def old_cloud(tmp_path: Path) -> Iterator[LocalCloud]:
    """A stack whose schema stops just before fetch_rows_page."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in migration_files():
        if path.name <= BEFORE_FETCH_PAGES:
            shutil.copy(path, directory / path.name)
    with LocalCloud(migrations_dir=directory) as lc:
        assert lc.migrations_applied[-1] == BEFORE_FETCH_PAGES.partition("_")[0]
        yield lc


def test_a_project_without_fetch_rows_page_is_fetched_by_fetch_rows(
    old_cloud: LocalCloud, tmp_path: Path
) -> None:
    dev = open_device(tmp_path, "a", old_cloud.url, old_cloud.anon_key, new_email())
    try:
        ids = sorted(dev.store.save(f"f/b{n}", f"n: {n}\n").id for n in range(3))
        assert dev.engine.sync_once().errors == []
        page = dev.remote.fetch_page([*reversed(ids)])
        assert ([r.id for r in page.rows], page.rest) == (ids, [])
        # Found missing once, fetch_rows_page is not asked again until the server may have
        # changed (a later call then finds it if the operator has applied the migration).
        assert dev.remote._no_fetch_page_epoch == dev.remote.server_epoch
        assert [r.id for r in dev.remote.fetch(ids[1:])] == ids[1:]
    finally:
        dev.close()
