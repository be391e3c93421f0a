"""push_changes: compare-and-swap, conflicts, rejections and idempotency, called as a real user."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from .helpers import Db, change

pytestmark = pytest.mark.cloud


def test_create_update_delete_round_trip(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, path="a/One.blueprint.yaml", content="name: one\n", meta={"name": "one"})
    [created] = api.push([c])
    assert created == {
        "op_id": 1,
        "id": c["id"],
        "status": "applied",
        "rev": 1,
        "seq": created["seq"],
    }

    upd = change(2, c["id"], base_rev=1, path="a/One.blueprint.yaml", content="name: two\n")
    [updated] = api.push([upd])
    assert (updated["status"], updated["rev"]) == ("applied", 2)
    assert updated["seq"] > created["seq"]

    tomb = change(3, c["id"], base_rev=2, path="a/One.blueprint.yaml", deleted=True)
    [deleted] = api.push([tomb])
    assert (deleted["status"], deleted["rev"]) == ("applied", 3)

    [row] = api.fetch([c["id"]])
    assert row["deleted"] is True and row["content"] == "" and row["rev"] == 3
    assert row["meta"] == tomb["meta"] and row["device"] == "dev-a"
    assert row["content_hash"] == tomb["content_hash"]


def test_every_accepted_write_is_in_the_revision_history(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, content="v1\n")
    api.push([c])
    api.push([change(2, c["id"], base_rev=1, path=c["path"], content="v2\n")])
    history = api.rows(
        "select rev, content, seq from public.blueprint_revisions where id = %s order by rev",
        (c["id"],),
    )
    assert [(r[0], r[1]) for r in history] == [(1, "v1\n"), (2, "v2\n")]
    assert history[0][2] < history[1][2]


def test_stale_base_rev_is_a_rev_mismatch_with_the_current_row(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, content="base\n")
    api.push([c])
    api.push([change(2, c["id"], base_rev=1, path=c["path"], content="theirs\n")], "dev-b")

    [res] = api.push([change(3, c["id"], base_rev=1, path=c["path"], content="mine\n")])
    assert (res["status"], res["reason"]) == ("conflict", "rev_mismatch")
    assert res["current"]["content"] == "theirs\n" and res["current"]["rev"] == 2
    assert res["current"]["device"] == "dev-b"


def test_create_of_an_existing_id_is_exists(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1)
    api.push([c])
    [res] = api.push([change(2, c["id"], path=c["path"])])
    assert (res["status"], res["reason"], res["current"]["rev"]) == ("conflict", "exists", 1)


def test_update_of_an_unknown_id_is_missing(db: Db) -> None:
    api = db.api(db.new_user())
    [res] = api.push([change(1, base_rev=4)])
    assert (res["status"], res["reason"], res["current"]) == ("conflict", "missing", None)


def test_conflict_on_a_tombstone_returns_it_and_revival_needs_its_rev(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1)
    api.push([c, change(2, c["id"], base_rev=1, path=c["path"], deleted=True)])
    [stale] = api.push([change(3, c["id"], base_rev=1, path=c["path"], content="edit\n")])
    assert stale["reason"] == "rev_mismatch" and stale["current"]["deleted"] is True
    [revived] = api.push([change(4, c["id"], base_rev=2, path=c["path"], content="edit\n")])
    assert (revived["status"], revived["rev"]) == ("applied", 3)
    assert api.fetch([c["id"]])[0]["deleted"] is False


def test_path_taken_is_case_insensitive_among_live_rows(db: Db) -> None:
    api = db.api(db.new_user())
    first = change(1, path="Team/Deploy.blueprint.yaml")
    api.push([first])
    [res] = api.push([change(2, path="team/DEPLOY.blueprint.yaml")])
    assert (res["status"], res["reason"]) == ("conflict", "path_taken")
    assert res["current"]["id"] == first["id"]

    # Once the first is a tombstone, the path is free again.
    api.push([change(3, first["id"], base_rev=1, path=first["path"], deleted=True)])
    [ok] = api.push([change(4, path="team/DEPLOY.blueprint.yaml")])
    assert ok["status"] == "applied"


def test_a_rename_onto_its_own_path_in_other_case_is_fine(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, path="x/Name.blueprint.yaml")
    api.push([c])
    [res] = api.push([change(2, c["id"], base_rev=1, path="x/name.blueprint.yaml")])
    assert res["status"] == "applied"


def test_replay_returns_identical_results_and_applies_nothing(db: Db) -> None:
    api = db.api(db.new_user())
    existing = change(1)
    api.push([existing])
    batch = [
        change(10),
        change(11, existing["id"], base_rev=7, path=existing["path"]),  # conflict
        change(12, "not-a-uuid"),  # rejected
    ]
    first = api.push(batch)
    seq_before = api.scalar("select max(seq) from public.blueprints")
    again = api.push(batch)
    assert again == first
    assert api.scalar("select max(seq) from public.blueprints") == seq_before
    assert (
        api.scalar("select count(*) from public.blueprints where id = %s", (batch[0]["id"],)) == 1
    )
    # The same op_id from another device is a different operation.
    [other] = api.push([batch[0]], "dev-b")
    assert (other["status"], other["reason"]) == ("conflict", "exists")


def test_replay_returns_the_stored_result_even_after_the_row_moved_on(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1)
    [first] = api.push([c])
    api.push([change(2, c["id"], base_rev=1, path=c["path"], content="later\n")], "dev-b")
    assert api.push([c]) == [first]


def test_one_bad_change_is_rejected_and_the_rest_apply(db: Db) -> None:
    api = db.api(db.new_user())
    good1, good2 = change(1), change(3)
    bad = change(2, path="../escape.blueprint.yaml")
    results = api.push([good1, bad, good2])
    assert [r["status"] for r in results] == ["applied", "rejected", "applied"]
    assert results[1]["code"] == "invalid_path" and results[1]["op_id"] == 2
    assert results[1]["message"]
    assert len(api.fetch([good1["id"], good2["id"], bad["id"]])) == 2


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        ({"id": "nope"}, "invalid_id"),
        ({"id": "12345678-1234-1234-1234-1234567890"}, "invalid_id"),
        ({"path": ""}, "invalid_path"),
        ({"path": "/etc/passwd"}, "invalid_path"),
        ({"path": "a/../b.yaml"}, "invalid_path"),
        ({"path": "..\\b.yaml"}, "invalid_path"),
        ({"path": "a\\b.yaml"}, "invalid_path"),
        ({"path": "p" * 1025}, "invalid_path"),
        ({"content": "x" * (10 * 1024 * 1024 + 1)}, "too_large"),
        ({"op_id": "1"}, "invalid_change"),
        ({"op_id": 1.5}, "invalid_change"),
        ({"meta": []}, "invalid_change"),
        ({"deleted": "no"}, "invalid_change"),
        ({"base_rev": "1"}, "invalid_change"),
        ({"content_hash": None}, "invalid_change"),
        ({"path": 7}, "invalid_change"),
    ],
)
def test_permanent_rejections_carry_their_code(
    db: Db, mutate: dict[str, object], code: str
) -> None:
    api = db.api(db.new_user())
    c = change(1)
    c.update(mutate)
    [res] = api.push([c])
    assert (res["status"], res["code"]) == ("rejected", code)
    assert api.scalar("select count(*) from public.blueprints") == 0


def test_missing_fields_are_invalid_change(db: Db) -> None:
    api = db.api(db.new_user())
    # Each under an op id of its own: an op id the server answered once is either that change
    # again (a replay) or op_id_reused (migration 20261122000800), never checked a second time.
    for op_id, key in enumerate(("base_rev", "content", "meta", "deleted", "id"), start=1):
        c = change(op_id)
        del c[key]
        [res] = api.push([c])
        assert (res["status"], res["code"]) == ("rejected", "invalid_change"), key
    [res] = api.push([42])  # type: ignore[list-item]
    assert (res["op_id"], res["id"], res["code"]) == (0, "", "invalid_change")


def test_path_of_exactly_1024_chars_and_content_of_exactly_10_mib_are_accepted(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, path="p" * 1024, content="x" * (10 * 1024 * 1024))
    [res] = api.push([c])
    assert res["status"] == "applied"


def test_ids_are_canonicalised(db: Db) -> None:
    api = db.api(db.new_user())
    rid = uuid.uuid4()
    [res] = api.push([change(1, str(rid).upper())])
    assert res["id"] == str(rid)
    [res2] = api.push([change(2, rid.hex, base_rev=1, path="other.yaml")])
    assert (res2["status"], res2["id"]) == ("applied", str(rid))


def test_more_than_500_changes_is_an_error_and_applies_nothing(db: Db) -> None:
    api = db.api(db.new_user())
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="too many changes"):
        api.push([change(i) for i in range(501)])
    assert api.scalar("select count(*) from public.blueprints") == 0
    assert len(api.push([change(i) for i in range(500)])) == 500


def test_server_info(db: Db) -> None:
    api = db.api(db.new_user())
    assert api.server_info() == {
        "protocol": 1,
        "max_batch": 500,
        "max_content_bytes": 10485760,
        "max_meta_bytes": 8388608,
        "max_device_chars": 128,
    }


def test_an_op_id_repeated_within_a_batch_is_a_replay_of_the_first(db: Db) -> None:
    api = db.api(db.new_user())
    first = change(5)
    again = dict(first)  # the same change under the same op id: answered as the first
    results = api.push([first, again, change(6)])
    assert results[1] == results[0] and results[0]["status"] == "applied"
    assert results[2]["status"] == "applied"
    assert api.push([first]) == [results[0]]


def test_an_op_id_repeated_within_a_batch_for_another_change_is_refused(db: Db) -> None:
    """Migration 20261122000800: a twin under the same op id with other content is a client
    bug (or a copied home), answered op_id_reused; replayed, it was silently lost."""
    api = db.api(db.new_user())
    first = change(5)
    twin = change(5)
    results = api.push([first, twin, change(6)])
    assert results[0]["status"] == "applied" and results[0]["id"] == first["id"]
    assert (results[1]["status"], results[1]["code"]) == ("rejected", "op_id_reused")
    assert results[1]["id"] == twin["id"] and results[1]["max_op_id"] == 6
    assert api.fetch([twin["id"]]) == []
    assert api.push([twin])[0]["code"] == "op_id_reused"  # (the stored record is the first's)


def test_the_path_taken_lookup_can_use_its_index_under_rls(db: Db) -> None:
    """lower() is not leakproof, so under RLS only the stored path_key can be an index condition
    (a lower(path) lookup scanned every row of the owner and made pushes grow with the table)."""
    uid = db.new_user()
    api = db.api(uid)
    with api.transaction() as conn:
        conn.execute("set local enable_seqscan = off")
        [[plan]] = conn.execute(
            "explain (format json) select * from public.blueprints b"
            " where b.owner = %s and b.path_key = lower(%s) and not b.deleted",
            (uid, "A/B.yaml"),
        ).fetchall()
    text = json.dumps(plan)
    assert "blueprints_owner_live_path_key_idx" in text
    assert '"Index Cond": "((owner = ' in text and "path_key = " in text.split('"Index Cond"')[1]


# Changes of one batch that touch the same row or path are decided one at a time, in batch order;
# the others are decided together against the rows as they were. These pin both paths down.


def test_a_batch_may_create_then_update_and_delete_the_same_row(db: Db) -> None:
    api = db.api(db.new_user())
    c = change(1, path="a.yaml", content="v1\n")
    results = api.push(
        [
            c,
            change(2, c["id"], base_rev=1, path="a.yaml", content="v2\n"),
            change(3, c["id"], base_rev=2, path="a.yaml", deleted=True),
            change(4, c["id"], base_rev=2, path="a.yaml", content="stale\n"),
        ]
    )
    assert [r["status"] for r in results] == ["applied", "applied", "applied", "conflict"]
    assert [r.get("rev") for r in results[:3]] == [1, 2, 3]
    assert results[0]["seq"] < results[1]["seq"] < results[2]["seq"]
    assert results[3]["reason"] == "rev_mismatch" and results[3]["current"]["deleted"] is True


def test_a_path_freed_earlier_in_the_batch_is_free_and_one_taken_earlier_is_taken(db: Db) -> None:
    api = db.api(db.new_user())
    old = change(1, path="Old.yaml")
    api.push([old])
    rename = change(2, old["id"], base_rev=1, path="New.yaml")
    takes_old = change(3, path="old.YAML")
    first_new = change(4, path="fresh.yaml")
    second_new = change(5, path="FRESH.yaml")
    unrelated = change(6, path="other.yaml")
    results = api.push([rename, takes_old, first_new, second_new, unrelated])
    assert [r["status"] for r in results] == [
        "applied",
        "applied",
        "applied",
        "conflict",
        "applied",
    ]
    assert results[3]["reason"] == "path_taken" and results[3]["current"]["id"] == first_new["id"]

    # Order matters: taking a path before its holder moves away is a conflict.
    a, b = change(7, path="x.yaml"), change(8, path="y.yaml")
    api.push([a, b])
    swap = api.push(
        [
            change(9, b["id"], base_rev=1, path="x.yaml"),
            change(10, a["id"], base_rev=1, path="z.yaml"),
        ]
    )
    assert [(r["status"], r.get("reason")) for r in swap] == [
        ("conflict", "path_taken"),
        ("applied", None),
    ]


def test_a_tombstone_does_not_hold_its_path_within_a_batch(db: Db) -> None:
    api = db.api(db.new_user())
    gone = change(1, path="p.yaml")
    api.push([gone])
    results = api.push(
        [change(2, gone["id"], base_rev=1, path="p.yaml", deleted=True), change(3, path="P.yaml")]
    )
    assert [r["status"] for r in results] == ["applied", "applied"]


def test_a_large_batch_mixing_every_outcome_answers_each_change_in_order(db: Db) -> None:
    alice, bob = db.new_user(), db.new_user()
    api = db.api(alice)
    existing = [change(i, path=f"e/{i}.yaml") for i in range(1, 101)]
    api.push(existing)
    foreign = change(1, path="bob.yaml")
    db.api(bob).push([foreign])
    batch = []
    for i, row in enumerate(existing):
        op = 1000 + i
        if i % 4 == 0:
            batch.append(change(op, row["id"], base_rev=1, path=row["path"], content="new\n"))
        elif i % 4 == 1:
            batch.append(change(op, row["id"], base_rev=9, path=row["path"]))  # rev_mismatch
        elif i % 4 == 2:
            batch.append(change(op, row["id"], base_rev=1, path=row["path"], deleted=True))
        else:
            batch.append(change(op, path=f"n/{i}.yaml"))
    batch += [change(2000, foreign["id"], base_rev=1, path="mine.yaml"), change(2001, "nope")]
    results = api.push(batch)
    assert [r["op_id"] for r in results] == [c["op_id"] for c in batch]
    statuses = [r["status"] for r in results[:100]]
    assert statuses == ["applied", "conflict", "applied", "applied"] * 25
    assert [r["code"] for r in results[100:]] == ["not_owner", "invalid_id"]
    assert api.push(batch) == results  # and the whole batch replays verbatim


def test_an_id_with_one_brace_is_rejected_alone(db: Db) -> None:
    api = db.api(db.new_user())
    ok = change(1)
    rid = str(uuid.uuid4())
    results = api.push([ok, change(2, "{" + rid), change(3, rid + "}"), change(4, "{" + rid + "}")])
    assert [r.get("code", r["status"]) for r in results] == [
        "applied",
        "invalid_id",
        "invalid_id",
        "applied",
    ]
    assert results[3]["id"] == rid
