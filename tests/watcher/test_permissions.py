"""An unreadable blueprints folder or sub-folder, with real permissions (chmod 000).

watchdog 7 drops EACCES from inotify_add_watch, even for the folder it is asked to watch
(``InotifyFD._raise_error``). An unreadable root was then "watched" with nothing watched: its
problem said only "cannot list .", every ``wait_idle`` (the daemon's ``sync --wait``) waited for
a fence event that never came, and once the folder was readable again it was still not watched.
A sub-folder made readable again was never watched either (edits there waited for the 10-minute
timer rescan), with the watcher RUNNING and no problem.

The suite runs as root here, and root reads any folder (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH;
inotify_add_watch checks the same permission). So the scenario runs in a child process whose
capability bounding set lacks those two (dropped in preexec_fn with prctl(PR_CAPBSET_DROP)
before exec; uid 0 then gets only the bounding set's capabilities): it is still uid 0 and owns
the files, but the owner's permission bits apply to it. As another user, the child just runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("permission_child.py")
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child


def _drop_dac_capabilities() -> None:
    """Runs in the child between fork and exec: only system calls, nothing to import."""
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_child(home: Path, which: str, child: Path = CHILD) -> dict[str, dict[str, Any]]:
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(child), str(home), which],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=_drop_dac_capabilities if as_root else None,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["step"]: s for s in map(json.loads, proc.stdout.splitlines())}
    if "skip" in steps:
        pytest.skip(steps["skip"]["why"])
    return steps


def test_an_unreadable_folder_is_reported_as_such_and_watched_once_readable(
    tmp_path: Path,
) -> None:
    steps = run_child(tmp_path / "home", "root")
    root = str(tmp_path / "home" / "blueprints")
    first = steps["unreadable"]
    assert first["state"] == "degraded"
    problem = first["problem"] or ""
    assert "permission denied" in problem and root in problem and "chmod u+rx" in problem
    assert "max_user_watches" not in problem
    # Nothing under it was taken for deleted.
    assert first["paths"] == ["a.blueprint.yaml", "locked/b.blueprint.yaml"]
    after = steps["readable"]
    assert after["idle"] is True, after
    assert after["state"] == "running" and after["problem"] is None, after
    assert "new.blueprint.yaml" in after["paths"], after


def test_an_unreadable_sub_folder_is_reported_and_watched_once_readable(tmp_path: Path) -> None:
    steps = run_child(tmp_path / "home", "sub")
    first = steps["unreadable"]
    assert first["state"] == "degraded"
    problem = first["problem"] or ""
    assert "locked/" in problem and "permission denied" in problem and "chmod u+rx" in problem
    assert first["paths"] == ["a.blueprint.yaml", "locked/b.blueprint.yaml"]
    after = steps["readable"]
    assert after["idle"] is True, after
    assert after["state"] == "running" and after["problem"] is None, after
    # Seen by its event (the folder is watched now), well before the 600 s timer rescan.
    assert "locked/new.blueprint.yaml" in after["paths"], after
