"""One of several processes hammering the same home: own saves, shared counters, reads."""

from __future__ import annotations

import json
import sys
import time

import localstore
from localstore.errors import RevisionConflictError


def main() -> None:
    home, worker, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    store = localstore.open(home=home)
    deadline = time.monotonic() + seconds
    own: dict[str, int] = {}
    increments = 0
    conflicts = 0
    n = 0
    while time.monotonic() < deadline:
        n += 1
        path = f"w{worker}/bp-{n % 25}"
        store.save(path, f"worker: {worker}\nn: {n}\n")
        own[path] = n
        counter = f"shared/counter-{n % 3}"
        while True:
            try:
                try:
                    bp = store.load(counter)
                    value, rev = int(bp.data()["value"]), bp.rev
                except localstore.NotFoundError:
                    value, rev = 0, 0
                store.save(counter, f"value: {value + 1}\n", expected_rev=rev)
                increments += 1
                break
            except (RevisionConflictError, localstore.AlreadyExistsError):
                conflicts += 1
        if n % 10 == 0:
            store.search("worker")
            store.list(limit=50)
    store.close()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"own": own, "increments": increments, "conflicts": conflicts, "ops": n}, fh)


if __name__ == "__main__":
    main()
