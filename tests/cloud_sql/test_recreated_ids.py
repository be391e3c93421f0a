"""An id its owner creates again after a purge: a stale device's write against the purged row is
a conflict, never a fast-forward onto the new row (migration 20261122001400)."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import Api, Db, change

pytestmark = pytest.mark.cloud


def _purged_then_created_again(api: Api, writes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The old row at revs 1, 2 (live), 3 (tombstone), purged; the id created again by dev-a and
    written ``writes`` times in all (so, were revs to start at 1 again, it would be at rev
    ``writes``). Returns the old row's first change and the new row as the server holds it."""
    old = change(1, path="a/x.yaml", content="old 1\n")
    api.push([old], "dev-a")
    api.push([change(2, old["id"], base_rev=1, path="a/x.yaml", content="old 2\n")], "dev-a")
    api.push([change(3, old["id"], base_rev=2, path="a/x.yaml", deleted=True)], "dev-a")
    assert api.purge() == 1
    [created] = api.push([change(4, old["id"], path="a/x.yaml", content="new 1\n")], "dev-a")
    rev = created["rev"]
    for n in range(2, writes + 1):
        text = f"new {n}\n"
        [edit] = api.push([change(3 + n, old["id"], base_rev=rev, path="a/x.yaml", content=text)])
        rev = edit["rev"]
    [row] = api.fetch([old["id"]])
    return old, row


@pytest.mark.parametrize(
    ("base_rev", "deleted"),
    [(1, False), (2, False), (3, False), (2, True)],
    ids=["edit-of-rev-1", "edit-of-rev-2", "edit-beating-the-delete", "delete"],
)
def test_a_stale_write_of_a_purged_row_is_a_conflict_with_the_row_created_again(
    db: Db, base_rev: int, deleted: bool
) -> None:
    """What an old client (no horizon check) pushes for the purged row: each of its revs, the
    tombstone's too (an edit beats a delete), as an edit or a delete, once the new row has had
    as many writes. Before the migration the new row started at rev 1 again, so it was at that
    rev, and the stale write applied over it as a fast-forward."""
    api = db.api(db.new_user())
    old, row = _purged_then_created_again(api, base_rev)
    history = api.rows(
        "select rev, content_hash from public.blueprint_revisions where id = %s order by rev",
        (old["id"],),
    )
    stale = change(1, old["id"], base_rev=base_rev, path="a/x.yaml", content="stale\n")
    if deleted:
        stale = change(1, old["id"], base_rev=base_rev, path="a/x.yaml", deleted=True)
    [res] = api.push([stale], "dev-stale")
    assert res["status"] == "conflict", f"the stale write was answered {res}"
    assert (res["reason"], res["current"]) == ("rev_mismatch", row)
    assert api.fetch([old["id"]]) == [row] and row["content"] == f"new {base_rev}\n"
    assert history == api.rows(
        "select rev, content_hash from public.blueprint_revisions where id = %s order by rev",
        (old["id"],),
    )


def test_creates_start_above_the_owners_horizon_on_every_write_path(db: Db) -> None:
    """Every rev a removed row had is at most its seq, so at most the horizon: a create starts
    above it, through push_changes and through the table endpoint alike. An owner who never
    purged (horizon 0) still creates at rev 1."""
    me, other = db.api(db.new_user()), db.api(db.new_user())
    gone = change(1, path="a/gone.yaml")
    me.push([gone])
    [tomb] = me.push([change(2, gone["id"], base_rev=1, path=gone["path"], deleted=True)])
    assert me.purge() == 1
    horizon = me.pull(0)["horizon"]
    assert horizon == tomb["seq"] >= tomb["rev"]
    [pushed] = me.push([change(3, path="a/new.yaml")])
    direct = change(4, path="a/direct.yaml")
    me.scalar(
        "insert into public.blueprints (id, path, content_hash, rev, seq, device)"
        " values (%s, %s, 'h', 0, 0, 'direct') returning rev",
        (direct["id"], direct["path"]),
    )
    [row] = me.fetch([direct["id"]])
    assert pushed["rev"] == row["rev"] == horizon + 1
    assert [r["rev"] for r in other.push([change(1)])] == [1]
