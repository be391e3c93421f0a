"""Writer process for the crash harness: random saves, moves and deletes until killed.

Before each operation it logs its intent, after it returns it logs the acknowledgement (both fsynced),
so the parent knows exactly which changes were acknowledged and which one was in flight at the kill.
"""

from __future__ import annotations

import json
import os
import random
import sys

import localstore
from localstore.store import SaveRequest


def main() -> None:
    home, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    store = localstore.open(home=home)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # lives until the kill

    def note(record: dict[str, object]) -> None:
        # One write per record (a buffered file splits records over 8 KiB into several writes).
        data = (json.dumps(record) + "\n").encode()
        while data:
            data = data[os.write(log, data) :]
        os.fsync(log)

    live = {i.id: i.path for i in store.list()}
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        op = rng.choice(["create", "update", "update", "move", "delete"]) if live else "create"
        content = f"seed: {seed}\nn: {n}\nbody: {'x' * rng.randrange(4000)}\n"
        if op == "update" and rng.random() < 0.15:
            # A batch (save_many) of fresh blueprints: one transaction, one flush.
            batch = [
                (f"b{rng.randrange(3)}/batch-{seed}-{n}-{k}.blueprint.yaml", f"{content}k: {k}\n")
                for k in range(rng.randrange(2, 24))
            ]
            note({"intent": "batch", "items": batch})
            results = store.save_many([SaveRequest(path=p, content=c) for p, c in batch])
            for bp, (_, c) in zip(results, batch, strict=True):
                assert not isinstance(bp, Exception), bp
                live[bp.id] = bp.path
                note({"ack": "save", "id": bp.id, "path": bp.path, "content": c})
        elif op == "create" or len(live) < 3:
            path = f"d{rng.randrange(4)}/bp-{seed}-{n}.blueprint.yaml"
            note({"intent": "save", "id": None, "path": path, "content": content})
            bp = store.save(path, content)
            live[bp.id] = bp.path
            note({"ack": "save", "id": bp.id, "path": bp.path, "content": content})
        elif op == "update":
            ident = rng.choice(sorted(live))
            note({"intent": "save", "id": ident, "path": live[ident], "content": content})
            bp = store.save(live[ident], content)
            note({"ack": "save", "id": ident, "path": bp.path, "content": content})
        elif op == "move":
            ident = rng.choice(sorted(live))
            path = f"m{rng.randrange(4)}/moved-{seed}-{n}.blueprint.yaml"
            note({"intent": "move", "id": ident, "path": path})
            bp = store.move(ident, path)
            live[ident] = bp.path
            note({"ack": "move", "id": ident, "path": bp.path})
        else:
            ident = rng.choice(sorted(live))
            note({"intent": "delete", "id": ident})
            store.delete(ident)
            del live[ident]
            note({"ack": "delete", "id": ident})


if __name__ == "__main__":
    main()
