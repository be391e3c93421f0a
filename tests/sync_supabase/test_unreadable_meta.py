"""A row whose meta the Python client cannot hold, written to the table behind push_changes'
back (a superuser's UPDATE; another client through the table's grants can too), through the
real server: that row alone is parked, with what is wrong and what to do; the rest of its page
and every later page apply, and the row is taken once it is corrected in the table.

It was a poison pill: json.loads of the pull page raised (an integer of more than 4,300 digits,
nesting past the recursion limit), so every pull of every device failed for good, retried as
"check the network"; a decimal past a double's range read as infinity and was written into the
meta file as ``Infinity``, which the client itself then refuses to read.
(tests/sync_contract holds the same rows at the Remote level, for both remotes.)
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from localstore.files import meta_path_for
from sync.localcloud.stack import LocalCloud
from tests.sync_contract.contract import POISONS

from .conftest import new_email, poison_meta
from .devices import Device, open_device


def _paths(device: Device) -> list[str]:
    return sorted(b.path for b in device.store.list())


@pytest.mark.parametrize("kind", sorted(POISONS))
def test_the_row_alone_is_parked_and_taken_once_corrected(
    cloud: LocalCloud, tmp_path: Path, kind: str
) -> None:
    email = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email)
    try:
        ids = [a.store.save(f"p/r{i}.blueprint.yaml", f"v: {i}\n").id for i in range(4)]
        assert a.sync() is None
        assert b.sync() is None  # b holds r1 as it was
        held = (b.store.root / "p/r1.blueprint.yaml").read_bytes()
        poison_meta(cloud, ids[1], kind)
        # A later page too: rows written after the bad one.
        later = a.store.save("p/later.blueprint.yaml", "v: later\n").id
        assert a.sync() is None
        fresh = open_device(tmp_path, "c", cloud.url, cloud.anon_key, email)
        try:
            for device in (b, fresh):
                device.engine.pull_limit = 1  # one row a page: the bad one is a page of its own
                assert device.sync() is None
                (entry,) = device.engine.quarantined()
                assert (entry.id, entry.direction, entry.code) == (ids[1], "pull", "invalid_remote")
                assert POISONS[kind] in entry.message
                assert "Correct the row's meta in the cloud's blueprints table" in entry.message
                assert device.engine.status().quarantined == 1
            assert _paths(fresh) == [
                "p/later.blueprint.yaml",
                "p/r0.blueprint.yaml",
                "p/r2.blueprint.yaml",
                "p/r3.blueprint.yaml",
            ]
            assert (b.store.root / "p/r1.blueprint.yaml").read_bytes() == held  # kept as it was
            assert b.store.load(later).content == "v: later\n"
            # A retry asks the server again (fetch): still unreadable, parked again, no error.
            assert b.engine.retry_quarantined() == 1
            assert [q.id for q in b.engine.quarantined()] == [ids[1]]

            with psycopg.connect(cloud.superuser_dsn, autocommit=True) as conn:
                conn.execute(
                    "update public.blueprints set meta = meta - 'n' where id = %s", (ids[1],)
                )
            for device in (b, fresh):
                assert device.sync() is None
                assert device.engine.quarantined() == []
                assert device.store.load(ids[1]).content == "v: 1\n"
                meta = json.loads(
                    (device.store.root / meta_path_for("p/r1.blueprint.yaml")).read_bytes()
                )
                assert "n" not in meta
                assert device.engine.verify().clean
        finally:
            fresh.close()
    finally:
        a.close()
        b.close()


def test_a_tombstone_with_an_unreadable_meta_deletes(cloud: LocalCloud, tmp_path: Path) -> None:
    # A delete needs no meta: the copy goes, nothing is parked.
    email = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email)
    try:
        rid = a.store.save("p/gone.blueprint.yaml", "v: 1\n").id
        assert a.sync() is None and b.sync() is None
        a.store.delete(rid)
        assert a.sync() is None
        poison_meta(cloud, rid, "huge_integer")
        assert b.sync() is None
        assert b.engine.quarantined() == []
        assert _paths(b) == []
    finally:
        a.close()
        b.close()


def test_the_whole_answer_is_not_refused_for_a_bad_string_elsewhere(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    # The fallback decoder's depth cut skips brackets inside strings: a content full of
    # brackets next to the deep meta is taken as it is.
    email = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, email)
    try:
        text = "v: '" + "[{" * 3000 + "\\\"]}'\n"
        ok = a.store.save("p/brackets.blueprint.yaml", text).id
        bad = a.store.save("p/deep.blueprint.yaml", "v: 1\n").id
        assert a.sync() is None
        poison_meta(cloud, bad, "deep")
        b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, email)
        try:
            assert b.sync() is None
            assert b.store.load(ok).content == text
            assert [q.id for q in b.engine.quarantined()] == [bad]
        finally:
            b.close()
    finally:
        a.close()
