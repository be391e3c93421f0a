"""Sync process for the kill harness: edits its own blueprints and syncs, until SIGKILLed.

Every local operation logs its intent before and its acknowledgement after (fsynced), and every
sync state change logs the phase, so the parent knows what was acknowledged, what was in flight,
and where in the cycle (pushing, pulling) each kill landed.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from tests.sync_engine.file_remote import FileRemote


def main() -> None:
    home, server_path, device, log_path, seed = sys.argv[1:6]
    rng = random.Random(int(seed))
    store = BlueprintStore(load_settings(home=home, device_name=device), maintenance=False)
    engine = SyncEngine(store, FileRemote(Path(server_path)), batch_size=7, pull_limit=9)
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - lives until the kill

    def note(record: dict[str, object]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())

    engine.subscribe_status(lambda s: note({"phase": s.state}))
    mine = {i.id: i.path for i in store.list() if i.path.startswith(f"{device}/")}
    print("ready", flush=True)
    n = 0
    while True:
        for _ in range(rng.randrange(1, 6)):
            n += 1
            _operate(store, device, seed, n, rng, mine, note)
        engine.sync_once()
        note({"phase": "synced"})


def _operate(store, device, seed, n, rng, mine, note) -> None:
    content = f"owner: {device}\nn: {seed}-{n}\nbody: {'x' * rng.randrange(3000)}\n"
    op = rng.choice(["create", "update", "update", "update", "move", "delete"])
    if op == "create" or len(mine) < 4:
        path = f"{device}/item-{seed}-{n}.blueprint.yaml"
        note({"intent": "save", "id": None, "path": path, "content": content})
        bp = store.save(path, content)
        mine[bp.id] = bp.path
        note({"ack": "save", "id": bp.id, "path": bp.path, "content": content})
    elif op == "update":
        ident = rng.choice(sorted(mine))
        note(
            {
                "intent": "save",
                "id": ident,
                "path": mine[ident],
                "from": mine[ident],
                "content": content,
            }
        )
        store.save(mine[ident], content)
        note({"ack": "save", "id": ident, "path": mine[ident], "content": content})
    elif op == "move":
        ident = rng.choice(sorted(mine))
        path = f"{device}/moved-{seed}-{n}.blueprint.yaml"
        old = mine[ident]
        note({"intent": "move", "id": ident, "path": path, "from": old})
        store.move(ident, path)
        mine[ident] = path
        note({"ack": "move", "id": ident, "path": path, "from": old})
    else:
        ident = rng.choice(sorted(mine))
        note({"intent": "delete", "id": ident, "from": mine[ident]})
        store.delete(ident)
        del mine[ident]
        note({"ack": "delete", "id": ident})


if __name__ == "__main__":
    main()
