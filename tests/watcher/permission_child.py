"""Run by test_permissions.py in a process that permission checks apply to (see there).

``python permission_child.py HOME root|sub``: makes a store in HOME, makes the blueprints folder
(``root``) or its sub-folder ``locked`` (``sub``) unreadable, starts a watcher, then makes it
readable again; prints one JSON line per step for the test to check.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from localstore import _watch_health
from localstore.config import load_settings
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


def say(step: str, w: Watcher, store: BlueprintStore, **extra: object) -> None:
    paths = sorted(r.path for r in store.list())
    print(
        json.dumps(
            {"step": step, "state": w.state.value, "problem": w.problem, "paths": paths, **extra}
        ),
        flush=True,
    )


def main(home: Path, which: str) -> None:
    _watch_health.LIMIT_RETRY_S = (0.2, 0.5)  # the retries of rescan-only mode, sooner
    store = BlueprintStore(load_settings(home=home, environ={}))
    store.save("a", content="x: 1\n")
    store.save("locked/b", content="x: 2\n")
    root = Path(store.root)
    target = root if which == "root" else root / "locked"
    os.chmod(target, 0)
    try:
        os.listdir(target)
    except PermissionError:
        pass
    else:
        print(json.dumps({"step": "skip", "why": "permissions are not checked here"}))
        return
    w = Watcher(store)
    try:
        w.start()
        time.sleep(1.0)  # the start rescan (and its report of the unreadable folder)
        say("unreadable", w, store)
        os.chmod(target, 0o755)
        new = target / "new.blueprint.yaml"
        new.write_text("x: 3\n", encoding="utf-8")
        deadline = time.monotonic() + 15
        idle = False
        while time.monotonic() < deadline:
            idle = w.wait_idle(2)
            if idle and any(r.path.endswith("new.blueprint.yaml") for r in store.list()):
                break
            time.sleep(0.2)
        say("readable", w, store, idle=idle, waited=round(15 - (deadline - time.monotonic()), 1))
    finally:
        os.chmod(target, 0o755)
        w.stop()
        w.join(10)
        store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
