"""A home whose index `localstore check --fix` rebuilt, on the local stack (real RPCs, real login).

The rebuild loses the sync bases and the account record kept in the index. An older, unedited
copy must still fast-forward to the server's version (the ``match_revisions`` RPC tells it is
an ancestor), and another user of the project must still be refused at login.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from sync.errors import AccountMismatchError
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import login

from .conftest import PASSWORD, new_email
from .devices import Device, open_device


def _damage_and_fix(dev: Device, *, lose_record: bool = False) -> Path:
    """Close the device, damage its index, run `localstore check --fix`; returns the home.

    ``lose_record`` also removes the record of synced bases kept besides the index (a home last
    synced by an older version has none): only the server's history is left to ask.
    """
    home = dev.store.root.parent
    dev.close()
    if lose_record:
        (home / "state" / "sync-bases.jsonl").unlink()
    data = home / "data"
    for side in ("index.db-wal", "index.db-shm"):
        (data / side).unlink(missing_ok=True)
    db = data / "index.db"
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big") or 65536
    raw[page:] = b"\xa5" * (len(raw) - page)
    db.write_bytes(bytes(raw))
    result = CliRunner().invoke(
        cli, ["--home", str(home), "--json", "check", "--fix"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "index-rebuilt" in [f["kind"] for f in json.loads(result.stdout)["fixed"]]
    return home


def test_an_older_unedited_copy_fast_forwards_after_check_fix(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    alice = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, alice)
    try:
        x = a.store.save("notes/x", "name: x\nk: 1\n").id
        y = a.store.save("notes/y", "name: y\nk: 1\n").id
        assert a.sync() is None and b.sync() is None
        a.store.save("notes/x", "name: x\nk: 2\n")
        assert a.sync() is None
        a.store.save("notes/x", "name: x\nk: 3\n")
        a.store.move(y, "moved/y")
        assert a.sync() is None
        _damage_and_fix(b, lose_record=True)
        b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, alice)
        assert b.sync() is None
        assert b.engine.conflicts() == []
        assert b.store.load(x).content == "name: x\nk: 3\n"
        assert b.store.row(y).path == "moved/y.blueprint.yaml"
        assert a.sync() is None
        assert a.snapshot() == b.snapshot()
        assert b.engine.verify().clean
    finally:
        a.close()
        b.close()


def test_another_user_is_still_refused_at_login_after_check_fix(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    alice, bob = new_email(), new_email()
    dev = open_device(tmp_path, "h", cloud.url, cloud.anon_key, alice)
    dev.store.save("private/alice-secret", "ssn: 123\n")
    assert dev.sync() is None
    settings = dev.store.settings
    _damage_and_fix(dev)
    with pytest.raises(AccountMismatchError) as info:
        login(settings, cloud.url, cloud.anon_key, bob, PASSWORD, signup=True)
    assert alice in str(info.value) and "--switch-user" in str(info.value)
    # alice herself is welcome back, and her home syncs as hers.
    login(settings, cloud.url, cloud.anon_key, alice, PASSWORD)
    again = open_device(tmp_path, "h", cloud.url, cloud.anon_key, alice)
    try:
        assert again.sync() is None
        assert again.engine.conflicts() == [] and again.engine.verify().clean
    finally:
        again.close()


def test_unsynced_deletes_renames_and_edits_back_survive_check_fix(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    """With the record of synced bases: the intents the index held are not misread."""
    alice = new_email()
    a = open_device(tmp_path, "a", cloud.url, cloud.anon_key, alice)
    b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, alice)
    try:
        gone = a.store.save("notes/gone", "name: gone\n").id
        mine = a.store.save("notes/mine", "name: mine\nk: 1\n").id
        back = a.store.save("notes/back", "name: back\nk: 1\n").id
        assert a.sync() is None
        a.store.save("notes/back", "name: back\nk: 2\n")
        assert a.sync() is None and b.sync() is None
        b.store.delete(gone)
        b.store.save("notes/mine", "name: mine\nk: 2\n")
        b.store.move(mine, "renamed/mine")
        b.store.save("notes/back", "name: back\nk: 1\n")
        _damage_and_fix(b)
        b = open_device(tmp_path, "b", cloud.url, cloud.anon_key, alice)
        assert b.sync() is None
        assert b.engine.conflicts() == []
        assert a.sync() is None
        assert not a.store.exists(gone) and not b.store.exists(gone)
        assert a.store.row(mine).path == "renamed/mine.blueprint.yaml"
        assert a.store.load(mine).content == "name: mine\nk: 2\n"
        assert a.store.load(back).content == "name: back\nk: 1\n"
        assert a.snapshot() == b.snapshot()
        assert b.engine.verify().clean
    finally:
        a.close()
        b.close()
