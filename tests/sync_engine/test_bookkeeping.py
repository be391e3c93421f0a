"""The engine's bookkeeping: the settled watermark behind cheap counts, bases kept as hashes.

The watermark's promise (no dirty row at or below it) is also checked after every engine test by
the ``make_device`` fixture and after every step of the stateful test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync import _state as st
from sync.engine import SyncEngine, ensure_schema
from sync.memory_remote import MemoryRemote, MemoryServer

from .conftest import (
    Device,
    assert_converged,
    converge,
    refuse_id,
)


def _watermark(dev: Device) -> tuple[int, int]:
    with dev.store.index.read() as cur:
        return st.settled_op_id(cur), st.max_op_id(cur)


def _base_row(dev: Device, blueprint_id: str) -> tuple[str, str]:
    with dev.store.index.read() as cur:
        rows = cur.execute(
            "SELECT content, hash FROM sync_bases WHERE id = ?", (blueprint_id,)
        ).fetchall()
    return str(rows[0][0]), str(rows[0][1])


def test_a_synced_home_settles_at_the_newest_op(make_device: Callable[..., Device]) -> None:
    a = make_device("a")
    for i in range(5):
        a.store.save(f"w/{i}", f"n: {i}\n")
    assert a.engine.status().pending == 5
    a.sync()
    settled, highest = _watermark(a)
    assert settled == highest and a.engine.status().pending == 0
    a.store.save("w/0", "n: 10\n")  # a new op id is above the watermark: counted at once
    assert a.engine.status().pending == 1
    a.sync()
    assert _watermark(a)[0] == _watermark(a)[1]


def test_counts_read_only_rows_above_the_watermark(make_device: Callable[..., Device]) -> None:
    a = make_device("a")
    a.store.save("w/x", "n: 1\n")
    a.sync()
    with a.store.index.read() as cur:
        sql = "EXPLAIN QUERY PLAN SELECT count(*) FROM blueprints b WHERE b.op_id > ?"
        plan = " ".join(str(r[-1]) for r in cur.execute(sql, (1,)).fetchall())
    # The same access path the counts use: a range of the op_id index, not a table scan.
    assert "blueprints_op" in plan and "op_id>?" in plan.replace(" ", ""), plan


def test_quarantine_retry_lowers_the_watermark(
    make_device: Callable[..., Device], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_device("a")
    a.store.save("ok/one", "n: 1\n")
    refuse_id(a, a.store.save("mine/clash", "v: 1\n").id, monkeypatch)  # refused for good
    report = a.sync()
    assert report.quarantined == 1 and a.engine.status().pending == 0
    assert _watermark(a)[0] == _watermark(a)[1]  # parked: settled without a new op id
    assert a.engine.retry_quarantined() == 1
    assert a.engine.status().pending == 1  # the same op id is pending again
    assert a.sync().quarantined == 1
    assert a.engine.status().pending == 0


def test_a_held_item_keeps_the_watermark_below_it(tmp_path: Path, server: MemoryServer) -> None:
    def validator(data: object) -> list[str]:
        assert isinstance(data, dict)
        return [] if "ok" in data else ["ok is required"]

    settings = load_settings(home=tmp_path / "a", device_name="a")
    store = BlueprintStore(settings, validator=validator, maintenance=False)
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(store, remote)
    try:
        held = store.save("h/one", "n: 1\n")
        store.save("h/two", "ok: 1\n")
        engine.sync_once()
        with store.index.read() as cur:
            assert st.settled_op_id(cur) < st.current_op_id(cur, held.meta.id)
            assert st.held_count(cur) == 1 == st.held_count(cur, scan_all=True)
        store.save("h/one", "ok: 2\n")
        engine.sync_once()
        with store.index.read() as cur:
            assert st.settled_op_id(cur) == st.max_op_id(cur)
            assert st.pending_count(cur) == 0 == st.held_count(cur)
    finally:
        engine.stop()
        remote.close()
        store.close()


def test_a_watermark_above_the_op_counter_is_ignored(make_device: Callable[..., Device]) -> None:
    a = make_device("a")
    a.store.save("w/x", "n: 1\n")
    with a.store.index.write() as cur:
        st.set_state(cur, st.SETTLED_KEY, "999999")  # e.g. an index restored from an old copy
    assert a.engine.status().pending == 1
    a.sync()
    assert a.engine.status().pending == 0


def test_downloaded_bases_are_hashes_into_history(make_device: Callable[..., Device]) -> None:
    a, b = make_device("a"), make_device("b")
    text = "# top\nfirst: 1\nmiddle: 2\nlast: 3\n"
    bp = a.store.save("m/doc", text)
    a.sync()
    b.sync()
    for dev in (a, b):  # pushed (a) and pulled (b): no second copy of the text
        content, digest = _base_row(dev, bp.meta.id)
        assert content == "" and digest == bp.content_hash
        with dev.store.index.read() as cur:
            base = st.get_base(cur, bp.meta.id)
        assert base is not None and base.content == text
    # The base still drives a clean 3-way merge of edits to different lines.
    a.store.save("m/doc", text.replace("first: 1", "first: 10"))
    b.store.save("m/doc", text.replace("last: 3", "last: 30"))
    converge(a, b)
    merged = a.text("m/doc")
    assert "first: 10" in merged and "last: 30" in merged and "# top" in merged
    assert a.engine.conflicts() == [] and b.engine.conflicts() == []


def test_a_base_missing_from_history_merges_without_losing_anything(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    a, b = make_device("a"), make_device("b")
    bp = a.store.save("m/doc", "first: 1\nlast: 3\n")
    a.sync()
    b.sync()
    with b.store.index.write() as cur:  # fault: the revision the base points at is gone
        cur.execute("DELETE FROM revisions WHERE id = ? AND rev = 1", (bp.meta.id,))
        assert st.get_base(cur, bp.meta.id) is None
    a.store.save("m/doc", "first: 10\nlast: 3\n")
    b.store.save("m/doc", "first: 1\nlast: 30\n")
    converge(a, b)
    assert_converged(server, a, b)
    texts = "".join(text for _, text in a.snapshot().values())
    assert "first: 10" in texts and "last: 30" in texts


def test_version_1_bases_still_read_after_the_upgrade(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "old", device_name="old")
    with BlueprintStore(settings, maintenance=False) as store:
        store.index.register_schema("sync", st.SYNC_MIGRATIONS[:1])
        with store.index.write() as cur:
            cur.execute(
                "INSERT INTO sync_bases VALUES (?, ?, ?, ?, ?)",
                ("0b3c7a4e-1111-4d2b-9c1e-000000000001", 3, "p.blueprint.yaml", "a: 1\n", "{}"),
            )
        ensure_schema(store)
        with store.index.read() as cur:
            base = st.get_base(cur, "0b3c7a4e-1111-4d2b-9c1e-000000000001")
        assert base is not None and (base.rev, base.content, base.meta) == (3, "a: 1\n", {})
