"""Renames and unlinks outside the save path, on a file another program holds open (Windows).

On Windows an antivirus, the search indexer, a previewer or an editor opens files without
delete sharing; ``os.replace``, ``os.rename`` and ``os.unlink`` on such a file fail with
PermissionError (winerror 32, 33 or 5) for a moment. The save path retried past that since
session 10; a move, an export over an old bundle, the watcher's fence, a damaged index set aside
and the daemon's state files called ``os`` directly and failed at once. Here the ``os`` calls
refuse the held paths as Windows does, and files.py uses the Windows primitives built on those
very calls (what its import does on Windows, where they are MoveFileExW and DeleteFileW).
"""

from __future__ import annotations

import ast
import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import localstore
from localstore import _durable
from localstore import files as fs
from localstore._daemon_state import PAUSE_FILE, clear_pause, read_pause, write_pause
from localstore.archive import export_bundle
from localstore.errors import StorageError
from localstore.watcher import Watcher
from sync import session_marker
from sync.embed import STATE_FILE, read_state, remove_state, write_state

REPO = Path(__file__).resolve().parents[2]
OLD = "version: 1\nsteps: [a]\n"


def _win_error(winerror: int) -> PermissionError:
    exc = PermissionError(errno.EACCES, "The process cannot access the file")
    exc.winerror = winerror  # type: ignore[attr-defined]  # (set only by Windows' OSError)
    return exc


class HeldFiles:
    """Makes os.replace/os.rename/os.unlink refuse paths that ``held`` matches, as Windows does
    while another program has the file open: ``failures`` times (None: until the test ends)."""

    def __init__(self, held: Callable[[str], bool], failures: int | None, winerror: int) -> None:
        self.held = held
        self.failures = failures
        self.winerror = winerror
        self.refused = 0
        self.passed: list[str] = []

    def wrap(self, real: Callable[..., None]) -> Callable[..., None]:
        def call(*paths: str | os.PathLike[str], **kwargs: object) -> None:
            names = [os.fspath(p) for p in paths]
            if any(self.held(n) for n in names):
                if self.failures is None or self.refused < self.failures:
                    self.refused += 1
                    raise _win_error(self.winerror)
                self.passed.append(names[-1])
            real(*paths, **kwargs)

        return call


@pytest.fixture
def hold(monkeypatch: pytest.MonkeyPatch) -> Callable[..., HeldFiles]:
    def start(
        held: Callable[[str], bool], *, failures: int | None = 2, winerror: int = 32
    ) -> HeldFiles:
        h = HeldFiles(held, failures, winerror)
        for name in ("replace", "rename", "unlink"):
            monkeypatch.setattr(os, name, h.wrap(getattr(os, name)))
        # files.py as imported on Windows, its single calls being the (refusing) os ones.
        prims = _durable.primitives_for("win32", replace_once=os.replace, unlink_once=os.unlink)
        monkeypatch.setattr(fs, "_os", _durable.calls_for(prims))
        # (And its rename to a free name, a move's: MoveFileExW without replacing, retried.)
        monkeypatch.setattr(fs, "_RENAME_NEW", prims.rename_new)
        return h

    return start


def _ends(*suffixes: str) -> Callable[[str], bool]:
    return lambda name: name.endswith(suffixes)


# -- the store -------------------------------------------------------------------------------------


def test_move_waits_out_a_briefly_held_file(store, home: Path, hold) -> None:
    bp = store.save("w/flow", OLD)
    h = hold(_ends("w/flow.blueprint.yaml"))  # an indexer opened the YAML
    store.move(bp.id, "x/flow")
    assert h.refused == 2
    assert (home / "blueprints/x/flow.blueprint.yaml").read_text() == OLD
    assert not (home / "blueprints/w").exists()
    assert store.load(bp.id).path == "x/flow.blueprint.yaml" and store.check().clean


def test_move_of_a_file_kept_open_fails_typed_and_moves_nothing(store, home: Path, hold) -> None:
    bp = store.save("w/flow", OLD)
    hold(_ends("w/flow.blueprint.yaml"), failures=None)  # an editor keeps it open
    with pytest.raises(StorageError) as info:
        store.move(bp.id, "x/flow")
    assert "in use by another program" in str(info.value)
    assert "close the file in the program that has it open" in info.value.hint
    assert (home / "blueprints/w/flow.blueprint.yaml").read_text() == OLD
    assert store.load(bp.id).path == "w/flow.blueprint.yaml"


def test_export_over_a_bundle_held_open(store, tmp_path: Path, hold) -> None:
    store.save("w/flow", OLD)
    dest = tmp_path / "out.lsbundle"
    export_bundle(store, dest)
    hold(_ends("out.lsbundle"))  # the previous bundle, open in a previewer for a moment
    assert export_bundle(store, dest).count == 1
    hold(_ends("out.lsbundle"), failures=None)
    with pytest.raises(StorageError) as info:
        export_bundle(store, dest)
    assert "in use by another program" in str(info.value) and "antivirus" in info.value.hint


def test_watcher_fence_survives_a_scanner_on_the_fence_file(store, home: Path, hold) -> None:
    # wait_idle lays a fence file (created, then unlinked): Defender opens new files to scan.
    h = hold(lambda name: os.path.basename(name).startswith(".lswatch-"))
    w = Watcher(store)
    w.start()
    try:
        assert w.wait_idle(30)
    finally:
        w.stop()
        w.join(10)
    assert h.refused == 2 and h.passed


def test_damaged_index_is_set_aside_past_a_brief_hold(home: Path, hold) -> None:
    with localstore.open(home=home) as s:
        s.save("w/flow", OLD)
    db = home / "data" / "index.db"
    for side in ("index.db-wal", "index.db-shm"):
        (home / "data" / side).unlink(missing_ok=True)
    db.write_bytes(b"garbage\n")
    h = hold(_ends("index.db"))  # a backup tool reading the file
    from localstore.index import set_aside

    aside = set_aside(db)
    assert h.refused == 2 and aside.read_bytes() == b"garbage\n" and not db.exists()


# -- the daemon's state files ----------------------------------------------------------------------


def test_state_files_are_written_and_removed_past_a_brief_hold(tmp_path: Path, hold) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # `localstore status` (or a scanner) reading daemon.json, paused, the session marker.
    h = hold(_ends(STATE_FILE, PAUSE_FILE, session_marker.MARKER_FILE))
    write_state(state, {"pid": os.getpid(), "port": 1})
    assert read_state(state) == {"pid": os.getpid(), "port": 1}
    write_state(state, {"pid": os.getpid(), "port": 2})
    remove_state(state, os.getpid())
    assert read_state(state) is None
    write_pause(state)
    assert read_pause(state) is not None
    clear_pause(state)
    assert read_pause(state) is None
    settings = localstore.load_settings(home=tmp_path)
    session_marker.touch(settings)
    assert session_marker.marker_path(settings).exists()
    assert h.refused == 2 and len(h.passed) == 6


# -- no plain rename or unlink left ----------------------------------------------------------------

# Calls that are not the platform's: where they are and why they need not be.
_EXEMPT = {
    # The primitives themselves, and the quiet removal of our own temps (a leftover is swept).
    "localstore/_durable.py": "the primitives",
    "localstore/files.py": "the primitives; _unlink_quiet of our temps",
    # The local Supabase stack for development: POSIX only (postgres binaries), not shipped use.
    "sync/localcloud/cluster.py": "POSIX-only dev stack",
    "sync/localcloud/service.py": "POSIX-only dev stack",
    "sync/cli_cloud.py": "POSIX-only dev stack",
}
# A temp of ours removed after a failure (a leftover is a stale temp, swept later).
_TEMP_CLEANUP = {"tmp", "leftover"}


def _plain_calls(tree: ast.Module) -> list[str]:
    """os.replace/rename/unlink/remove and Path.unlink/rename calls not on a temp of ours."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        is_os = isinstance(owner, ast.Name) and owner.id in ("os", "shutil")
        if is_os and attr in ("replace", "rename", "unlink", "remove", "move"):
            first = ast.unparse(node.args[0]) if node.args else ""
            if first not in _TEMP_CLEANUP:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif not is_os and attr in ("unlink", "rename") and ast.unparse(owner) not in _TEMP_CLEANUP:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_renames_and_unlinks_go_through_the_platform_calls() -> None:
    offenders = {}
    for folder in ("localstore", "sync"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in _EXEMPT:
                continue
            found = _plain_calls(ast.parse(path.read_text(encoding="utf-8")))
            if found:
                offenders[rel] = found
    assert offenders == {}
