"""Other programs' side files next to blueprints: never blueprints, for reconcile and the watcher.

Office's owner files, LibreOffice and emacs locks, vim swap files, backups, patch and merge
leftovers, atomic-save temps, OS litter, and the folders of git, Syncthing and Dropbox: real
files, written beside a real pair, seen by ``check`` (the full scan) and by a running watcher.
The conflict copies of Syncthing, Dropbox and Nextcloud are not imported either; ``check``
reports them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from localstore import files as fs
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

NAME = "plan.blueprint.yaml"
META = "plan.blueprint.meta.json"
STAMP = "20261122-101010-ABCDEF1"
DROPBOX = "Bob's conflicted copy 2026-11-23"
NEXTCLOUD = "conflicted copy 2026-11-23 123456"


def side_files(yaml: bytes, meta: bytes) -> dict[str, bytes]:
    """Side files as their programs name them, beside notes/plan (content: what they hold)."""
    return {
        f"~${NAME}": b"\x0bowner name" + b"\x00" * 40,  # Word/Excel owner file, short name
        "~$an.blueprint.yaml": b"\x0bowner name",  # long names lose their first two characters
        f"~${META}": b"\x0bowner name",
        f".~lock.{NAME}#": b",user,host,22.11.2026 21:00,file:///home/user/.config;",
        f"{NAME}~": yaml,
        f"{META}~": meta,
        f".{NAME}.swp": b"b0VIM 9.0",
        f".{NAME}.swo": b"b0VIM 9.0",
        f".{NAME}.swx": b"b0VIM 9.0",
        f"#{NAME}#": yaml,
        f"{NAME}.orig": yaml,
        f"{NAME}.rej": b"--- a\n+++ b\n",
        f"{META}.orig": meta,
        f".{NAME}.tmp.4242": yaml,
        f".{META}.tmp.4242": meta,
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "Thumbs.db": b"\xd0\xcf\x11\xe0",
        "desktop.ini": b"[.ShellClassInfo]\r\n",
        # Syncthing's conflict copies (last extension kept), and the suffix-keeping form.
        f"plan.blueprint.sync-conflict-{STAMP}.yaml": yaml,
        f"plan.blueprint.meta.sync-conflict-{STAMP}.json": meta,
        f"plan.sync-conflict-{STAMP}.blueprint.yaml": yaml,
        # Dropbox's (before the last extension; a second conflict adds " (1)") and a form
        # that keeps the suffix; Nextcloud's and older ownCloud's.
        f"plan.blueprint ({DROPBOX}).yaml": yaml,
        f"plan.blueprint.meta ({DROPBOX}).json": meta,
        f"plan.blueprint ({DROPBOX}) (1).yaml": yaml,
        f"plan ({DROPBOX}).blueprint.yaml": yaml,
        f"plan ({DROPBOX}).blueprint.meta.json": meta,
        f"plan.blueprint ({NEXTCLOUD}).yaml": yaml,
        f"plan.blueprint.meta ({NEXTCLOUD}).json": meta,
        "plan.blueprint_conflict-20261123-123456.yaml": yaml,
        # (the name's case as another client or a person wrote it: the same copy)
        "plan (BOB'S CONFLICTED COPY 2026-11-23).blueprint.yaml": yaml,
    }


HIDDEN_FOLDERS = (".git", ".stfolder", ".stversions", ".dropbox.cache")
CONFLICTS = {
    f"notes/plan.blueprint.sync-conflict-{STAMP}.yaml",
    f"notes/plan.blueprint.meta.sync-conflict-{STAMP}.json",
    f"notes/plan.sync-conflict-{STAMP}.blueprint.yaml",
    f"notes/plan.blueprint ({DROPBOX}).yaml",
    f"notes/plan.blueprint.meta ({DROPBOX}).json",
    f"notes/plan.blueprint ({DROPBOX}) (1).yaml",
    f"notes/plan ({DROPBOX}).blueprint.yaml",
    f"notes/plan ({DROPBOX}).blueprint.meta.json",
    f"notes/plan.blueprint ({NEXTCLOUD}).yaml",
    f"notes/plan.blueprint.meta ({NEXTCLOUD}).json",
    "notes/plan.blueprint_conflict-20261123-123456.yaml",
    "notes/plan (BOB'S CONFLICTED COPY 2026-11-23).blueprint.yaml",
}


def litter(root: Path, yaml: bytes, meta: bytes, tag: str) -> None:
    folder = root / "notes"
    os.symlink(f"user@host.{os.getpid()}:1700000000", folder / f".#{NAME}")  # emacs's lock
    for name, data in side_files(yaml, meta).items():
        (folder / name).write_bytes(data)
    for hidden in HIDDEN_FOLDERS:
        (root / hidden).mkdir(exist_ok=True)
        (root / hidden / f"{tag}.blueprint.yaml").write_bytes(yaml)
        (root / hidden / f"{tag}.blueprint.meta.json").write_bytes(meta)


def clean_up(root: Path, yaml: bytes, meta: bytes) -> None:
    folder = root / "notes"
    os.unlink(folder / f".#{NAME}")
    for name in side_files(yaml, meta):
        (folder / name).unlink()


def test_side_files_are_no_blueprints_for_check_and_reconcile(store: BlueprintStore) -> None:
    store.save("notes/plan", content="title: plan\n")
    root = Path(store.root)
    yaml = (root / "notes" / NAME).read_bytes()
    meta = (root / "notes" / META).read_bytes()
    litter(root, yaml, meta, "x")
    report = store.check()
    # Only the conflict copies are reported, as what they are, naming their blueprint.
    assert {p["path"] for p in report.problems} == CONFLICTS, report.problems
    assert {p["kind"] for p in report.problems} == {"conflict-copy"}
    for problem in report.problems:
        assert "notes/plan.blueprint." in problem["detail"]
        assert "not imported" in problem["detail"]
    store.reconcile()
    assert [r.path for r in store.list()] == ["notes/plan.blueprint.yaml"]
    # Nothing was written beside them either (a meta for an "unindexed" YAML, say).
    assert (root / "notes" / f"~${META}").read_bytes() == b"\x0bowner name"
    assert not (root / "notes" / f"plan.sync-conflict-{STAMP}.blueprint.meta.json").exists()


def test_side_files_are_no_blueprints_for_the_watcher(
    store: BlueprintStore, make_watcher, recorder: Recorder
) -> None:
    store.save("notes/plan", content="title: plan\n")
    root = Path(store.root)
    yaml = (root / "notes" / NAME).read_bytes()
    meta = (root / "notes" / META).read_bytes()
    watcher: Watcher = make_watcher(store)
    watcher.start()
    assert watcher.wait_idle(30)
    recorder.take()
    litter(root, yaml, meta, "y")
    # Past the lone-YAML wait (write_quiet_ms), so that a YAML taken for a new blueprint would
    # have been ingested by now.
    time.sleep(watcher.write_quiet_s + 0.3)
    assert watcher.wait_idle(30)
    clean_up(root, yaml, meta)
    assert watcher.wait_idle(30)
    watcher.rescan()
    assert recorder.take() == []
    assert [r.path for r in store.list()] == ["notes/plan.blueprint.yaml"]
    assert watcher.problem is None


def test_conflict_copy_names() -> None:
    assert fs.conflict_copy_of(f"plan.blueprint.sync-conflict-{STAMP}.yaml") == NAME
    assert fs.conflict_copy_of(f"plan.blueprint.meta.sync-conflict-{STAMP}.json") == META
    assert fs.conflict_copy_of("plan.blueprint.sync-conflict-20261122-101010.yaml") == NAME
    assert fs.conflict_copy_of(f"plan.sync-conflict-{STAMP}.blueprint.yaml") == NAME
    assert fs.conflict_copy_of(f"notes.sync-conflict-{STAMP}.txt") is None
    assert fs.conflict_copy_of(NAME) is None
    assert fs.conflict_copy(f"plan.blueprint ({DROPBOX}).yaml") == (NAME, "Dropbox or Nextcloud")
    assert fs.conflict_copy(f"plan.blueprint.sync-conflict-{STAMP}.yaml") == (NAME, "Syncthing")
    assert fs.conflict_copy_of(f"plan.blueprint.meta ({NEXTCLOUD}).json") == META
    assert fs.conflict_copy_of("plan.blueprint (Conflicted Copy).yaml") == NAME
    assert fs.conflict_copy_of(f"plan ({DROPBOX}).blueprint.yaml") == NAME
    assert fs.conflict_copy_of(f"notes ({DROPBOX}).txt") is None
    # A name that merely mentions a conflict is a blueprint like any other.
    assert fs.conflict_copy_of("merge_conflict-notes.blueprint.yaml") is None
    rules = fs.IgnoreRules()
    assert not rules.scans(f"notes/~${NAME}")
    assert not rules.scans(f".stversions/{NAME}")
    assert rules.scans(f"notes/{NAME}") and rules.scans(f"notes/{META}")
    assert rules.scans("notes/merge_conflict-notes.blueprint.yaml")
    assert not rules.scans(f"notes/plan ({DROPBOX}).blueprint.yaml")
