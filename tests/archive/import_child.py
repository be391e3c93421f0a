"""Child process for the kill test: import a bundle in batches, printing the imported count after
each batch and waiting for a line on stdin before the next one (the parent kills it instead)."""

from __future__ import annotations

import sys

import localstore
from localstore import archive


def main() -> None:
    home, bundle, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = localstore.open(home=home)

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "import":
            sys.stdout.write(f"{done}\n")
            sys.stdout.flush()
            sys.stdin.readline()

    archive.import_bundle(store, bundle, progress=progress, batch_size=batch)
    store.close()


if __name__ == "__main__":
    main()
