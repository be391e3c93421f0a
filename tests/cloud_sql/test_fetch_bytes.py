"""fetch_rows_page bounds an answer by bytes, and fetch_rows refuses to build more (migration
20261122001300)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from .helpers import Db, change

pytestmark = pytest.mark.cloud

MIB = 2**20
BUDGET = 16 * MIB


def _large_rows(db: Db, owner: str, n: int, content_bytes: int) -> list[str]:
    """``n`` rows of ``content_bytes`` each, written server-side; returns their ids in id order.

    What ``n`` pushes of one change each would leave (the triggers stamp rev and seq); a direct
    write keeps the test at seconds, not a minute of JSON over the wire."""
    with db.superuser() as conn:
        rows = conn.execute(
            "insert into public.blueprints"
            " (id, owner, path, content, meta, content_hash, device, rev, seq)"
            " select gen_random_uuid(), %s, 'big/' || g || '.blueprint.yaml',"
            "   repeat(chr(97 + g %% 26), %s), '{}', md5(g::text), 'dev-a', 0, 0"
            " from generate_series(1, %s) g returning id",
            (owner, content_bytes, n),
        ).fetchall()
    return sorted(str(r[0]) for r in rows)


def test_a_fetch_of_large_rows_comes_in_pieces_with_the_rest_named(db: Db) -> None:
    # fetch_rows built every row asked for into one answer: 1000 ids of 18 MiB rows could ask
    # for 18 GB; here five of 10 MiB were one 50 MiB answer.
    owner = db.new_user()
    ids = _large_rows(db, owner, 5, 10 * MIB)
    other = _large_rows(db, db.new_user(), 2, 10 * MIB)  # foreign: absent, and never counted
    unknown = [str(uuid.UUID(int=0)), str(uuid.UUID(int=2**128 - 1))]
    api = db.api(owner)
    asked, got, sizes = [*ids, *other, *unknown], [], []
    while asked:
        page = api.fetch_page(asked)
        rows = page["rows"]
        assert rows, "an answer with a rest carries at least one row"
        # Rows are added while the answer holds less than 16 MiB: here two of 10 MiB each.
        assert sum(len(r["content"]) for r in rows[:-1]) < BUDGET
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
        last = rows[-1]["id"]
        if page["rest"]:
            assert page["rest"] == sorted(i for i in set(asked) if i > last)
        sizes.append(len(rows))
        got += [r["id"] for r in rows]
        asked = page["rest"]
    assert sizes == [2, 2, 1]
    assert got == ids


def test_one_row_over_the_budget_still_comes_alone(db: Db) -> None:
    # 10 MiB of content and 8 MiB of meta: over the budget by itself, yet it must be fetched.
    owner = db.new_user()
    api = db.api(owner)
    first, second = str(uuid.UUID(int=1, version=4)), str(uuid.UUID(int=2, version=4))
    big = change(1, first, content="x" * (10 * MIB), meta={"k": "m" * (8 * MIB - 64)})
    results = api.push([big])
    results += api.push([change(2, second)])
    assert [r["status"] for r in results] == ["applied", "applied"]
    page = api.fetch_page([second, first, first])
    assert [r["id"] for r in page["rows"]] == [first] and page["rest"] == [second]
    page = api.fetch_page(page["rest"])
    assert [r["id"] for r in page["rows"]] == [second] and page["rest"] == []


def test_small_rows_and_unknown_ids_come_in_one_answer(db: Db) -> None:
    api = db.api(db.new_user())
    made = [change(i) for i in range(1, 21)]
    api.push(made)
    ids = sorted(c["id"] for c in made)
    page = api.fetch_page([str(uuid.uuid4()), *ids, str(uuid.uuid4())])
    assert [r["id"] for r in page["rows"]] == ids and page["rest"] == []
    assert page["rows"] == api.fetch(ids)
    assert api.fetch_page([]) == {"rows": [], "rest": []}
    assert api.fetch_page([str(uuid.uuid4())]) == {"rows": [], "rest": []}


def test_fetch_rows_page_refuses_more_than_1000_ids(db: Db) -> None:
    api = db.api(db.new_user())
    with pytest.raises(psycopg.Error) as info:
        api.fetch_page([str(uuid.uuid4()) for _ in range(1001)])
    assert info.value.sqlstate == "22023"
    assert "too many ids" in str(info.value)


def test_fetch_rows_refuses_an_answer_over_the_budget_instead_of_building_it(db: Db) -> None:
    # For clients older than fetch_rows_page: they ask for a fetch refused so in halves.
    owner = db.new_user()
    ids = _large_rows(db, owner, 3, 10 * MIB)
    api = db.api(owner)
    with pytest.raises(psycopg.Error) as info:
        api.fetch(ids)
    assert info.value.sqlstate == "54000"
    assert "over 16777216 bytes" in str(info.value)
    # Where fetch_rows_page ends an answer: the first two (20 MiB), and one alone.
    assert [r["id"] for r in api.fetch(ids[:2])] == ids[:2]
    assert [r["id"] for r in api.fetch(ids[2:])] == ids[2:]
