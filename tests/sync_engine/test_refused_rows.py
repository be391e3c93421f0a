"""Server rows this device refuses: how a cycle reports them, and rows in folders it never scans."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

import sync.cli_sync as cli_sync
from localstore.cli import cli
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change

from .conftest import Device


def _push_as_other_client(server: MemoryServer, ident: str, **fields: Any) -> None:
    """Another client (an older version, another app) writes a new revision of ``ident``."""
    current = server.rows[ident].row
    change = {
        "op_id": 1,
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
