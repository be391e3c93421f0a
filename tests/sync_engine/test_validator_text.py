"""What an app's validator says, as sync records it and the CLI prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from sync.memory_remote import MemoryRemote, MemoryServer

HOSTILE = "bad \x1b]0;retitled\x07 \x1b[2J\rforged\nline \u202egnp.exe " + "x" * 5_000


def _together(doc: Any) -> list[str]:
    """Each side alone is valid; the two edits merged are not."""
    return [HOSTILE] if "a" in doc and "b" in doc else []


def test_a_merge_the_validator_refuses_shows_its_reason_escaped_and_cut(
    tmp_path: Path, server: MemoryServer
) -> None:
    """The reason of a conflict quotes the validator; `localstore conflicts` printed it raw:
    an app's text (or a YAML error quoting a synced file) retitled the terminal, cleared it,
    forged lines, and ran on for pages."""
    opened = []
    for name in ("a", "b"):
        store = BlueprintStore(
            load_settings(home=tmp_path / name, device_name=name),
            validator=_together,
            maintenance=False,
        )
        remote = MemoryRemote(server, user="u")
        opened.append((store, remote, SyncEngine(store, remote)))
    (a, _, ae), (b, _, be) = opened
    try:
        a.save("m", "x: 1\n")
        ae.sync_once()
        be.sync_once()
        a.save("m", "x: 1\na: 1\n")
        b.save("m", "x: 1\nb: 1\n")
        ae.sync_once()
        assert be.sync_once().conflicts == 1
        (record,) = be.conflicts()
    finally:
        for store, remote, engine in opened:
            engine.stop()
            remote.close()
            store.close()
    assert record.reason.startswith("merged blueprint fails validation: bad \\x1b]0;retitled\\x07")
    assert "\\u202e" in record.reason and len(record.reason) < 2_100
    for args in (["conflicts"], ["conflicts", "show", "1"]):
        out = CliRunner().invoke(cli, ["--home", str(tmp_path / "b"), *args]).output
        assert "merged blueprint fails validation: bad \\x1b" in out, out
        assert not {"\x1b", "\x07", "\r", "\u202e"} & set(out), out
        assert "\nline" not in out and "more characters)" in out
