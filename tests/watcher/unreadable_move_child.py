"""Run by test_unreadable_move.py in a process that permission checks apply to (see
test_permissions.py): ``python unreadable_move_child.py HOME alone|pair``.

Saves blueprint ``i`` (its meta's tags then changed by hand), starts a watcher, makes
``i.blueprint.yaml`` unreadable (chmod 000) and renames it to ``j.blueprint.yaml`` (``pair``: its
meta too); once the watcher has given up on ``j`` (every delete grace and hold long over), makes
it readable again and rescans. Prints one JSON line per step for the test to check.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from localstore import _watch_due, _watch_ingest
from localstore.config import load_settings
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


def say(step: str, store: BlueprintStore, ident: str, **extra: object) -> None:
    root = Path(store.root)
    print(
        json.dumps(
            {
                "step": step,
                "history": [(r.rev, r.path, r.deleted) for r in store.history(ident)],
                "files": sorted(p.name for p in root.iterdir() if not p.name.startswith(".")),
                **extra,
            }
        ),
        flush=True,
    )


def main(home: Path, which: str) -> None:
    # Short back-offs and hold: the give-up comes in about a second, not half a minute.
    _watch_ingest.RETRY_S = (0.05, 0.1)
    _watch_due.MAX_DELETE_HOLD_S = 0.2
    _watch_ingest.GIVE_UP_RESCAN_S = (600.0, 600.0)
    store = BlueprintStore(load_settings(home=home, environ={}))
    bp = store.save("i", content="steps: [a]\n", tags=["mine"])
    root = Path(store.root)
    meta = root / "i.blueprint.meta.json"
    by_hand = json.loads(meta.read_text())
    by_hand["tags"] = ["by-hand"]
    meta.write_text(json.dumps(by_hand))
    yaml = root / "i.blueprint.yaml"
    os.chmod(yaml, 0)
    try:
        yaml.read_bytes()
    except PermissionError:
        os.chmod(yaml, 0o644)
    else:
        print(json.dumps({"step": "skip", "why": "permissions are not checked here"}))
        return
    w = Watcher(store, delete_grace_ms=100, write_quiet_ms=100, rescan_interval_s=3600)
    try:
        w.start()
        assert w.wait_idle(30)
        say("start", store, bp.id, tags=list(store.resolve(bp.id).tags))
        os.chmod(yaml, 0)
        os.rename(yaml, root / "j.blueprint.yaml")
        if which == "pair":
            os.rename(meta, root / "j.blueprint.meta.json")
        deadline = time.monotonic() + 30
        while "next rescan" not in (w.problem or "") and time.monotonic() < deadline:
            time.sleep(0.05)
        say("unreadable", store, bp.id, problem=w.problem)
        os.chmod(root / "j.blueprint.yaml", 0o644)
        w.rescan()
        idle = w.wait_idle(30)
        moved = store.resolve("j")
        say("readable", store, bp.id, idle=idle, id=moved.id == bp.id, tags=list(moved.tags))
    finally:
        for name in ("i.blueprint.yaml", "j.blueprint.yaml"):
            if (root / name).exists():
                os.chmod(root / name, 0o644)
        w.stop()
        w.join(10)
        store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
