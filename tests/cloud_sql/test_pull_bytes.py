"""pull_changes bounds a page by bytes, not only by rows (migration 20261122001100)."""

from __future__ import annotations

import pytest

from .helpers import Db, change

pytestmark = pytest.mark.cloud

MIB = 2**20
PAGE_BYTES = 16 * MIB


def _large_rows(db: Db, owner: str, n: int, content_bytes: int) -> None:
    """``n`` rows of ``content_bytes`` each, written server-side (no 10 MiB strings in Python).

    The rows are what ``n`` pushes of one change each would leave (the triggers stamp rev and
    seq); a direct write keeps the test at seconds, not a minute of JSON over the wire."""
    with db.superuser() as conn:
        conn.execute(
            "insert into public.blueprints"
            " (id, owner, path, content, meta, content_hash, device, rev, seq)"
            " select gen_random_uuid(), %s, 'big/' || g || '.blueprint.yaml',"
            "   repeat(chr(97 + g %% 26), %s), '{}', md5(g::text), 'dev-a', 0, 0"
            " from generate_series(1, %s) g",
            (owner, content_bytes, n),
        )


def test_a_pull_of_many_large_rows_pages_instead_of_failing(db: Db) -> None:
    # 27 blueprints of 10 MiB (the most push_changes takes, each pushed alone) are 270 MiB: one
    # page of them was over jsonb's 256 MiB, so pull_changes failed with 54000 on every retry and
    # a new device of this user could never pull past them.
    owner = db.new_user()
    _large_rows(db, owner, 27, 10 * MIB)
    api = db.api(owner)
    cursor, sizes = 0, []
    while True:
        page = api.pull(cursor)
        rows = page["changes"]
        assert rows, "a page with more to come carries at least one row"
        # Rows are added while the page holds less than 16 MiB: here two of 10 MiB each.
        assert sum(len(r["content"]) for r in rows[:-1]) < PAGE_BYTES
        sizes.append(len(rows))
        assert page["next"] == rows[-1]["seq"]
        cursor = page["next"]
        if not page["more"]:
            break
    assert sizes == [2] * 13 + [1]


def test_one_row_over_the_page_budget_still_comes_alone(db: Db) -> None:
    # 10 MiB of content and 8 MiB of meta: over the budget by itself, yet it must be pulled.
    owner = db.new_user()
    api = db.api(owner)
    [big] = api.push([change(1, content="x" * (10 * MIB), meta={"k": "m" * (8 * MIB - 64)})])
    [small] = api.push([change(2)])
    assert big["status"] == small["status"] == "applied"
    first = api.pull(0)
    assert [r["id"] for r in first["changes"]] == [big["id"]] and first["more"] is True
    second = api.pull(first["next"])
    assert [r["id"] for r in second["changes"]] == [small["id"]] and second["more"] is False


def test_small_rows_still_fill_a_page_by_count(db: Db) -> None:
    api = db.api(db.new_user())
    api.push([change(i) for i in range(1, 21)])
    page = api.pull(0, 20)
    assert len(page["changes"]) == 20 and page["more"] is False
