"""Power-loss ordering of the writes outside a save: the first open of a home, reconcile's meta
for a bare YAML, a bundle import, the daemon's pause, the record of synced bases, the encrypted
credentials file (tests/durability_recorder.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import localstore
from localstore import _daemon_state, archive, crypto
from localstore.cli import cli
from localstore.credentials import EncryptedFileBackend
from sync import account_record, base_record
from tests.durability_recorder import DurabilityRecorder

DOC = "steps: [a]\n"


def test_first_open_and_save_of_a_new_home(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    # The home and its folders are made by the first open; the first save is acknowledged on
    # top of them (the index in data/, the pair in blueprints/).
    home = tmp_path / "new" / "home"
    recorder.reset()
    with localstore.open(home=home, maintenance=False) as s:
        s.save("plan", DOC)
        # (index.db is created by the index, then opened by SQLite, whose C calls are not
        # recorded: it flushes data/ itself when it creates its first journal, before the
        # first commit returns; strace shows the fdatasync of data/ there. The open-store mark,
        # localstore._presence, is only ever locked, never read: lost, the next open makes it.
        # The write-turn file, localstore._write_turn, holds only a waiting writer's
        # announcement, stale after 100 ms: lost, the next open makes it again.)
        recorder.assert_durable(
            under=tmp_path,
            what="first save in a new home",
            ignore=[
                home / "data" / "index.db",
                home / "state" / "store-open.lock",
                home / "data" / "index.turn",
            ],
        )


def test_reconcile_gives_a_bare_yaml_its_meta(home: Path, recorder: DurabilityRecorder) -> None:
    with localstore.open(home=home, maintenance=False):
        pass
    bare = home / "blueprints" / "x" / "y" / "bare.blueprint.yaml"
    bare.parent.mkdir(parents=True)
    bare.write_text(DOC)
    with (
        recorder.acknowledged(under=home, what="reconcile's meta for a bare YAML"),
        localstore.open(home=home, maintenance=False) as s,
    ):
        assert s.exists("x/y/bare")


def test_reconcile_removes_the_meta_of_a_vanished_yaml(
    home: Path, recorder: DurabilityRecorder
) -> None:
    # The YAML was deleted while nothing ran: reconcile records the delete and removes the meta
    # left behind. Unflushed, a power cut brings that meta back as an orphan ('check' reports it).
    with localstore.open(home=home, maintenance=False) as s:
        s.save("x/gone", DOC)
    (home / "blueprints" / "x" / "gone.blueprint.yaml").unlink()
    with (
        recorder.acknowledged(under=home, what="reconcile's removal of an orphaned meta"),
        localstore.open(home=home, maintenance=False) as s,
    ):
        assert not s.exists("x/gone")
    assert not (home / "blueprints" / "x" / "gone.blueprint.meta.json").exists()


def test_bundle_import(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    bundle = tmp_path / "out" / "b.zip"
    bundle.parent.mkdir()
    with localstore.open(home=tmp_path / "src", maintenance=False) as src:
        src.save("a/b/one", DOC)
        src.save("c/two", DOC)
        with recorder.acknowledged(under=bundle.parent, what="bundle export"):
            archive.export_bundle(src, bundle)
    with localstore.open(home=tmp_path / "dst", maintenance=False) as dst:
        # (The staging folder in cache/ is the import's scratch space: nothing to keep.)
        with recorder.acknowledged(
            under=tmp_path / "dst", what="bundle import", ignore=[tmp_path / "dst" / "cache"]
        ):
            archive.import_bundle(dst, bundle)
        assert dst.count() == 2


def test_pause_in_a_new_state_folder(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    # `localstore sync pause` with no daemon running: the file is all there is of the pause.
    state = tmp_path / "home" / "state"
    with recorder.acknowledged(under=tmp_path, what="sync paused"):
        _daemon_state.write_pause(state)
    assert _daemon_state.read_pause(state) is not None


def test_resume(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    state = tmp_path / "state"
    _daemon_state.write_pause(state)
    with recorder.acknowledged(under=tmp_path, what="sync resumed"):
        _daemon_state.clear_pause(state)
    assert _daemon_state.read_pause(state) is None


def test_service_install(
    tmp_path: Path, recorder: DurabilityRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform != "linux":
        pytest.skip("the systemd unit is Linux's")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    home = tmp_path / "home"
    runner = CliRunner()
    with recorder.acknowledged(under=tmp_path / "xdg", what="service install"):
        result = runner.invoke(
            cli, ["--home", str(home), "--json", "service", "install", "--no-enable"]
        )
    assert result.exit_code == 0, result.output
    unit = Path(json.loads(result.output)["path"])
    assert unit.is_relative_to(tmp_path / "xdg") and "ExecStart=" in unit.read_text()


def test_account_record(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    # The home exists (the store made it); the record makes state/ in it if needed, never the
    # home itself (a home deleted or moved away while sync runs is not made again).
    (tmp_path / "home").mkdir()
    state = tmp_path / "home" / "state"
    with recorder.acknowledged(under=tmp_path, what="account record"):
        account_record.write(state, account_record.AccountRecord(identity="p|u", email="a@b.c"))


def test_record_of_synced_bases(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    (tmp_path / "home").mkdir()
    state = tmp_path / "home" / "state"
    entry = base_record.BaseEntry(
        id="0" * 32, rev=1, seq=1, content_hash="h", path="p", deleted=False
    )
    with recorder.acknowledged(under=tmp_path, what="base record written"):
        base_record.rewrite(state, "me", [entry])
    with recorder.acknowledged(under=tmp_path, what="base record step"):
        base_record.open_step(state, [entry.id])
        base_record.append(state, [entry], done=True)


def test_encrypted_credentials_file(tmp_path: Path, recorder: DurabilityRecorder) -> None:
    path = tmp_path / "credentials.enc"
    backend = EncryptedFileBackend(path, "pw", params=crypto.ScryptParams(log2_n=10))
    with recorder.acknowledged(under=tmp_path, what="credential stored"):
        backend.set("svc", "name", "secret")
