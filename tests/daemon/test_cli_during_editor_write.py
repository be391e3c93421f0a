"""A CLI command while the daemon watches the home, in the pause of an editor's in-place save.

The command's store has no watcher of its own, so the in-process rule (``load`` leaves a fresh
change to the store's running watcher) did not apply: its open's reconcile and ``load`` recorded
half the file as a revision when the half parsed, and the daemon's watcher then recorded the
whole file as the next. Now a change younger than the daemon's watcher's write-quiet period
(daemon.json's ``write_quiet_ms``) is left to that watcher.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from localstore.store import BlueprintStore
from tests.conftest import run_cli

from .conftest import home_settings

OLD = "name: deploy\nsteps:\n  - run: make\n"
HALF = "name: deploy\nsteps:\n  - run: make\n  - run: make test\n"  # parses on its own
FULL = HALF + "  - run: make deploy\nowner: ops\n"

# The daemon's watcher records only on the write's close (no timing in this test): a write-quiet
# period longer than the test, set before the daemon builds its Watcher.
LONG_QUIET = (
    "import localstore.watcher as w; w.Watcher.__init__.__kwdefaults__['write_quiet_ms'] = 600_000"
)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, keep_localstore_env=True)


def _history_texts(home: Path, ref: str) -> list[str]:
    """The recorded revisions' texts, newest first, read without reconciling."""
    with BlueprintStore(home_settings(home), reconcile=False, maintenance=False) as store:
        return [store.load_revision(ref, r.rev).content for r in store.history(ref)]


def test_cli_show_in_an_editors_pause_leaves_the_half_save_to_the_daemons_watcher(
    spawn_daemon, tmp_path: Path
) -> None:
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        bp = store.save("team/deploy", OLD)
        path = store.abspath(bp.path)
    d = spawn_daemon(home, prelude=LONG_QUIET)
    state = d.wait_ready()
    assert state["write_quiet_ms"] == 600_000
    c = d.client()
    c.subscribe()
    with open(path, "r+", encoding="utf-8") as f:  # an editor's in-place save, in two chunks
        f.truncate(0)
        f.write(HALF)
        f.flush()
        shown = _cli(home, "show", bp.id)  # in the editor's pause
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == HALF  # the file as it is now...
        assert _history_texts(home, bp.id) == [OLD]  # ...not recorded
        listed = _cli(home, "ls")
        assert listed.returncode == 0, listed.stderr
        assert _history_texts(home, bp.id) == [OLD]
        f.write(FULL[len(HALF) :])
    saved = c.wait_for(lambda e: e["event"] == "saved" and e["data"]["path"] == bp.path, 60)
    assert saved["data"]["origin"] == "external"
    assert _history_texts(home, bp.id) == [FULL, OLD]  # the whole file, once
    assert _cli(home, "show", bp.id).stdout == FULL
    assert _history_texts(home, bp.id) == [FULL, OLD]
    assert d.stop() == 0
