"""An interrupted import leaves every blueprint as it was or fully imported, never half a pair."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import localstore
from localstore import archive
from tests.conftest import run_cli
from tests.interrupts import AFTER_COMMIT, Interrupt, snapshot

from .conftest import FAST_SCRYPT, StoreFactory, populate, tree

CHILD = Path(__file__).with_name("import_child.py")


class Stop(Exception):
    """The injected fault."""


def _expect_prefix(dst_files: dict[str, bytes], src_files: dict[str, bytes]) -> set[str]:
    """Every file in dst is byte-identical to src's, in complete pairs; return the YAML paths."""
    yamls = {p for p in dst_files if p.endswith(".blueprint.yaml")}
    metas = {p for p in dst_files if p.endswith(".blueprint.meta.json")}
    assert {p.replace(".blueprint.yaml", ".blueprint.meta.json") for p in yamls} == metas
    for p, data in dst_files.items():
        assert src_files[p] == data, p
    return yamls


def test_fault_between_blueprints(stores: StoreFactory, tmp_path: Path) -> None:
    src = stores("src")
    populate(src, 20)
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "import" and done == 7:
            raise Stop

    with pytest.raises(Stop):
        archive.import_bundle(dst, bundle, progress=progress, batch_size=1)
    assert len(_expect_prefix(tree(dst), tree(src))) == 7 == dst.count()
    assert not list(dst.paths.cache.glob("import-staging-*"))
    again = archive.import_bundle(dst, bundle)
    assert again.counts() == {"unchanged": 7, "create": 13}
    assert tree(dst) == tree(src)


@pytest.mark.parametrize("kill_after", [1, 25])
def test_kill_during_import(stores: StoreFactory, tmp_path: Path, kill_after: int) -> None:
    src = stores("src")
    populate(src, 60)
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    home = tmp_path / "dst"
    # The child pauses after each batch until told to go on, so the kill lands inside the import
    # (not in its cleanup, which a kill after the last batch would race with).
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(home), str(bundle), "7"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    killed_at = 0
    try:
        assert child.stdin is not None and child.stdout is not None
        for line in child.stdout:
            killed_at = int(line)
            if killed_at >= kill_after:
                break
            child.stdin.write("go\n")
            child.stdin.flush()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    with localstore.open(home=home) as dst:  # reconcile on open records what the kill left
        done = _expect_prefix(tree(dst), tree(src))
        assert len(done) == killed_at == dst.count() and kill_after <= killed_at < 60
        assert dst.check().clean
        for info in dst.list():
            assert info.id == src.resolve(info.path).id
        leftover = list(dst.paths.cache.glob("import-staging-*"))
        assert leftover, "the killed import could not clean up; the next one must"
        result = archive.import_bundle(dst, bundle)
        assert not list(dst.paths.cache.glob("import-staging-*"))
        assert result.counts().get("create", 0) == 60 - len(done)
        assert tree(dst) == tree(src)


# Run in the CLI's process before it starts: imports go 2 blueprints a batch, and a real SIGINT
# (what Ctrl-C sends) arrives once the 2nd batch is reported, after whatever the CLI does with it.
_CTRL_C_AFTER_4 = """
import os, signal
import localstore.archive as _a
_real = _a.import_bundle
def _import(*args, progress=None, **kwargs):
    def hook(phase, done, total):
        if progress is not None:
            progress(phase, done, total)
        if phase == "import" and done == 4:
            os.kill(os.getpid(), signal.SIGINT)
    return _real(*args, progress=hook, **{**kwargs, "batch_size": 2})
_a.import_bundle = _import
"""


def test_a_ctrl_c_d_cli_import_says_how_far_it_got_and_importing_again_finishes(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """It printed only "error: interrupted": nothing said whether anything was imported, nor
    that the same import run again takes up where it stopped."""
    src = stores("src")
    populate(src, 10)
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    home = tmp_path / "dst"
    done = run_cli(home, "import", str(bundle), prelude=_CTRL_C_AFTER_4)
    assert done.returncode == 130, done.stderr
    assert "interrupted after importing 4 of the bundle's 10 blueprints" in done.stderr
    assert "import the same bundle again to import the other 6" in done.stderr
    with localstore.open(home=home) as dst:
        assert dst.count() == 4
    again = run_cli(home, "import", str(bundle))
    assert again.returncode == 0, again.stderr
    assert "did: 6 create, 4 unchanged" in again.stderr
    with localstore.open(home=home) as dst:
        assert tree(dst) == tree(src)
        assert dst.check().clean
    as_json = run_cli(tmp_path / "dst2", "--json", "import", str(bundle), prelude=_CTRL_C_AFTER_4)
    assert as_json.returncode == 130
    error = json.loads(as_json.stderr)["error"]
    assert (error["imported"], error["total"], error["exit_code"]) == (4, 10, 130)


# A real SIGINT (what Ctrl-C sends) while the store opens, before anything is planned.
_CTRL_C_IN_OPEN = """
import os, signal
import localstore.store as _s
_real_init = _s.BlueprintStore.__init__
def _init(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    _real_init(self, *args, **kwargs)
_s.BlueprintStore.__init__ = _init
"""

# A terminal, and a real SIGINT while the passphrase is typed (click's prompt turns it into
# click.Abort, as on a terminal).
_CTRL_C_AT_PROMPT = """
import getpass, os, signal, sys
sys.stdin.isatty = lambda: True
def _typing(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
getpass.getpass = _typing
"""


@pytest.mark.parametrize("where", ["open", "prompt"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_ctrl_c_before_the_import_begins_says_nothing_was_imported(
    stores: StoreFactory, tmp_path: Path, where: str, dry_run: bool
) -> None:
    """Ctrl-C at the passphrase prompt or while the store opened printed only "error:
    interrupted", as if the import might have written part of the bundle."""
    src = stores("src")
    populate(src, 2)
    bundle = tmp_path / "b.lsbundle"
    if where == "prompt":
        archive.export_bundle(src, bundle, passphrase="pw", scrypt_params=FAST_SCRYPT)
    else:
        archive.export_bundle(src, bundle)
    prelude = _CTRL_C_IN_OPEN if where == "open" else _CTRL_C_AT_PROMPT
    args = ["import", str(bundle), *(["--dry-run"] if dry_run else [])]
    done = run_cli(tmp_path / "dst", *args, prelude=prelude)
    assert done.returncode == 130, done.stderr
    said = "a dry run changes nothing" if dry_run else "before any blueprint was imported"
    assert said in done.stderr


@pytest.mark.parametrize("where", [*AFTER_COMMIT, "before-commit"])
def test_ctrl_c_at_a_batch_commit_leaves_files_and_index_agreeing(
    stores: StoreFactory, tmp_path: Path, where: str
) -> None:
    """Ctrl-C once a batch's transaction committed used to put the batch's files back: the index
    held 768 blueprints, the disk 512, and the next open recorded 256 as deleted (pushed by
    sync). Now the committed batch stays; one cut before its COMMIT leaves nothing of it."""
    src = stores("src")
    populate(src, 9)
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    with Interrupt(dst, where, KeyboardInterrupt) as interrupt, pytest.raises(KeyboardInterrupt):
        archive.import_bundle(dst, bundle, batch_size=3)
    assert interrupt.fired
    imported = _expect_prefix(tree(dst), tree(src))
    assert len(imported) == dst.count() == (3 if where in AFTER_COMMIT else 0)
    after = snapshot(dst)
    dst.close()
    again = stores("dst")
    assert again.check().clean
    assert snapshot(again) == after  # (the reconcile recorded nothing)
    counts = archive.import_bundle(again, bundle).counts()
    assert counts == ({"unchanged": 3, "create": 6} if imported else {"create": 9})
    assert tree(again) == tree(src)


# Run in the CLI's process before it starts: imports go 2 blueprints a batch, and a real SIGINT
# arrives from the index's commit listener once the 2nd batch is committed, before the import's
# code runs again (what a Ctrl-C 1.6 s into a big import hit).
_CTRL_C_AT_2ND_COMMIT = """
import os, signal
import localstore.archive as _a
_real = _a.import_bundle
def _import(store, *args, **kwargs):
    def listener():
        if store.index.blueprint_commits == 2:
            os.kill(os.getpid(), signal.SIGINT)
    store.index.on_commit(listener)
    return _real(store, *args, **{**kwargs, "batch_size": 2})
_a.import_bundle = _import
"""


def test_a_cli_import_ctrl_c_d_at_a_commit_keeps_the_committed_batch(
    stores: StoreFactory, tmp_path: Path
) -> None:
    """The batch the index committed stays on disk: before, its files were put back, `check`
    reported them missing and the next open recorded them as deleted (pushed by sync)."""
    src = stores("src")
    populate(src, 10)
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    home = tmp_path / "dst"
    done = run_cli(home, "import", str(bundle), prelude=_CTRL_C_AT_2ND_COMMIT)
    assert done.returncode == 130, done.stderr
    # (The 2nd batch, committed when Ctrl-C came, counted too: it said 2.)
    assert "interrupted after importing 4 of the bundle's 10 blueprints" in done.stderr
    checked = run_cli(home, "--json", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with localstore.open(home=home) as dst:
        assert len(_expect_prefix(tree(dst), tree(src))) == 4 == dst.count()
        assert all(not r.deleted for bp in dst.list() for r in dst.history(bp.id))
    again = run_cli(home, "import", str(bundle))
    assert "did: 6 create, 4 unchanged" in again.stderr


@pytest.mark.parametrize("where", [*AFTER_COMMIT, "before-commit"])
def test_ctrl_c_at_a_batch_commit_reports_the_committed_batch_as_progress(
    stores: StoreFactory, tmp_path: Path, where: str
) -> None:
    """Progress ran only after a batch's save returned: a batch whose COMMIT was done when
    Ctrl-C came was in the store but not in the count, and `localstore import` said it had
    imported fewer than it had. Now it is reported before the interrupt goes on; a batch cut
    before its COMMIT is not."""
    src = stores("src")
    populate(src, 9)
    bundle = tmp_path / "b.lsbundle"
    archive.export_bundle(src, bundle)
    dst = stores("dst")
    reported: list[int] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "import":
            reported.append(done)

    with Interrupt(dst, where, KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
        archive.import_bundle(dst, bundle, batch_size=3, progress=progress)
    assert reported == ([3] if where in AFTER_COMMIT else [])
    assert dst.count() == sum(reported[-1:])
