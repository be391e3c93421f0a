"""Child process for the kill test: import a bundle, printing each imported count on stdout."""

from __future__ import annotations

import sys

import localstore
from localstore import archive


def main() -> None:
    home, bundle = sys.argv[1], sys.argv[2]
    store = localstore.open(home=home)

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "import":
            sys.stdout.write(f"{done}\n")
            sys.stdout.flush()

    archive.import_bundle(store, bundle, progress=progress)
    store.close()


if __name__ == "__main__":
    main()
