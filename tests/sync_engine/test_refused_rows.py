"""Server rows this device refuses: how a cycle reports them, and rows in folders it never scans."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

import sync.cli_sync as cli_sync
from localstore.cli import cli
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

from .conftest import Device, server_snapshot

_OTHER_OPS = itertools.count(1)  # the server replays a (device, op id) it has seen


def _push_as_other_client(server: MemoryServer, ident: str, **fields: Any) -> None:
    """Another client (an older version, another app) writes a new revision of ``ident``."""
    current = server.rows[ident].row
    change = {
        "op_id": next(_OTHER_OPS),
        "id": ident,
        "base_rev": current.rev,
        "path": current.path,
        "content": current.content,
        "meta": dict(current.meta),
        "content_hash": "0" * 64,
        **fields,
    }
    raw = MemoryRemote(server, user="u")
    try:
        assert raw.push([Change(**change)], device="other-client")[0].status == "applied"
    finally:
        raw.close()


def test_a_row_refused_by_the_push_and_the_pull_counts_once(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The push of a local edit conflicts; the server's current row (YAML this device refuses)
    is parked at once, and the pull of the same cycle brings that row again and parks it again.
    The report said 2 quarantined (and listed the error twice) for one parked row."""
    a = make_device("a")
    x = a.store.save("x", "k: 1\n").id
    a.sync()
    _push_as_other_client(server, x, content="k: [unclosed\n")
    a.store.save("x", "k: a\n")  # the push of this edit meets the refused row first
    report = a.sync()
    assert [q.id for q in a.engine.quarantined()] == [x]
    assert report.quarantined == 1
    assert len(report.errors) == 1 and report.errors[0].count("x.blueprint.yaml") == 1
    assert report.to_dict()["quarantined"] == 1 and "_parked" not in report.to_dict()
    assert a.text(x) == "k: a\n"  # the local edit is kept as it is


def test_sync_json_counts_a_refused_row_once(
    make_device: Callable[..., Device], server: MemoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`localstore sync --json` prints the cycle's report: the same row counted once there."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("x", "k: 1\n").id
    a.sync()
    b.sync()
    _push_as_other_client(server, x, content="k: [unclosed\n")
    b.store.save("x", "k: b\n")
    # The CLI signs in to Supabase; here its remote is a handle on this test's server instead.
    monkeypatch.setattr(cli_sync, "_open_remote", lambda settings: MemoryRemote(server, user="u"))
    result = CliRunner().invoke(
        cli, ["--home", str(b.home), "--json", "sync"], catch_exceptions=False
    )
    assert result.exit_code == 3, result.output  # attention: a quarantined row
    data = json.loads(result.stdout)
    assert data["report"]["quarantined"] == 1 and len(data["report"]["errors"]) == 1
    assert data["status"]["quarantined"] == 1


def _texts(dev: Device) -> dict[str, str]:
    """path -> yaml text of every live blueprint (read from the files)."""
    return dict(dev.snapshot().values())


def test_an_edit_of_a_blueprint_moved_into_a_hidden_folder_is_kept_and_synced(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Another client moves X into a hidden folder (which LocalStore never scans) while b edits X
    offline. b's push met that row, which b cannot hold, and parked b's edit with it for good:
    pending 0, never uploaded, every retry parked again. Now b keeps its edit as a conflict
    copy (uploaded like any blueprint), X leaves b's view as it left the server's, and the
    parked row says why and what to do; c (no edit) only loses X from view."""
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    x = a.store.save("notes/x", "k: 1\n").id
    for dev in (a, b, c):
        dev.sync()
    _push_as_other_client(server, x, path=".hidden/x.blueprint.yaml")
    b.store.save("notes/x", "k: 1\nb: edit\n")
    report = b.sync()
    assert report.quarantined == 1 and len(report.errors) == 1
    (parked,) = b.engine.quarantined()
    assert (parked.id, parked.direction, parked.code) == (x, "pull", "unscanned_path")
    assert "hidden" in parked.message and "move it out of the hidden folder" in parked.message
    (record,) = b.engine.conflicts()
    assert record.id == x and record.local == "k: 1\nb: edit\n" and record.remote == "k: 1\n"
    assert record.copy_path and record.copy_path.startswith("notes/x (conflict b ")
    assert record.copy_path in parked.message  # the entry says where the edit went
    assert _texts(b) == {record.copy_path: "k: 1\nb: edit\n"}
    assert not b.store.exists(x) and b.engine.status().pending == 0
    # The edit is on the server (as the copy) and reaches every device; nothing is stuck.
    assert server_snapshot(server)[record.copy_id or ""] == (record.copy_path, "k: 1\nb: edit\n")
    assert server_snapshot(server)[x] == (".hidden/x.blueprint.yaml", "k: 1\n")
    assert b.sync().quarantined == 0  # the row is known now: not parked (or counted) again
    assert c.sync().quarantined == 1 and not c.store.exists(x) and c.engine.conflicts() == []
    assert _texts(c) == {record.copy_path: "k: 1\nb: edit\n"}
    assert "its history keeps it" in c.engine.quarantined()[0].message
    a.sync()
    # A reconcile finds nothing that sync did not record (no stray copy files, no lost X).
    for dev in (b, c):
        dev.store.reconcile()
        assert not dev.store.exists(x) and dev.engine.status().pending == 0
    # The retry command path: still hidden, so it is parked again; never lost, never doubled.
    assert b.engine.retry_quarantined() == 1
    assert [q.id for q in b.engine.quarantined()] == [x] and not b.store.exists(x)
    # The way out: the other client moves it out of the hidden folder; it comes back by itself.
    _push_as_other_client(server, x, path="notes/x.blueprint.yaml")
    for dev in (b, c):
        dev.sync()
        assert dev.engine.quarantined() == [] and dev.text(x) == "k: 1\n"
        assert dev.store.resolve("notes/x").id == x


def test_taking_the_local_side_brings_the_blueprint_back_out_of_the_hidden_folder(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """b's own way out: resolving the record with --take local puts b's edit back into X at its
    old path; the push moves X out of the hidden folder on every device (no copy left)."""
    a, b = make_device("a"), make_device("b")
    x = a.store.save("notes/x", "k: 1\n").id
    a.sync()
    b.sync()
    _push_as_other_client(server, x, path=".hidden/x.blueprint.yaml", content="k: 2\n")
    b.store.save("notes/x", "k: 1\nb: edit\n")
    b.sync()
    a.sync()
    (record,) = b.engine.conflicts()
    b.engine.resolve_conflict(record.cid, take="local")
    assert b.text(x) == "k: 1\nb: edit\n" and b.store.resolve("notes/x").id == x
    b.sync()
    assert b.engine.quarantined() == [] and b.engine.conflicts() == []
    a.sync()
    assert server_snapshot(server) == {x: ("notes/x.blueprint.yaml", "k: 1\nb: edit\n")}
    assert a.snapshot() == b.snapshot() == {x: ("notes/x.blueprint.yaml", "k: 1\nb: edit\n")}


def test_a_blueprint_moved_into_a_folder_this_home_ignores_comes_back_after_a_retry(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """a's home has no ignore pattern; b's ignores drafts/. a moves X into drafts/ while b edits
    it. b keeps its edit as a copy; once b drops the pattern, the retry command brings X in."""
    a, b = make_device("a"), make_device("b")
    (b.store.root / ".localstoreignore").write_text("drafts\n")
    x = a.store.save("notes/x", "k: 1\n").id
    a.sync()
    b.sync()
    a.store.move(x, "drafts/x")
    a.store.save("drafts/x", "k: 1\na: edit\n")
    a.sync()
    b.store.save("notes/x", "k: 1\nb: edit\n")
    report = b.sync()
    assert report.quarantined == 1
    (parked,) = b.engine.quarantined()
    assert parked.code == "unscanned_path" and ".localstoreignore" in parked.message
    (record,) = b.engine.conflicts()
    assert _texts(b) == {record.copy_path: "k: 1\nb: edit\n"}
    a.sync()
    assert _texts(a) == {
        "drafts/x.blueprint.yaml": "k: 1\na: edit\n",
        record.copy_path: "k: 1\nb: edit\n",
    }
    (b.store.root / ".localstoreignore").write_text("")
    assert b.engine.retry_quarantined() == 1
    assert b.engine.quarantined() == [] and b.text(x) == "k: 1\na: edit\n"
    b.sync()
    assert a.snapshot() == b.snapshot() and b.engine.status().pending == 0
    assert server_snapshot(server) == a.snapshot()
