"""Subprocess worker for the two-process keychain test (not a test module).

argv: home profile tag count. Stores `<tag>-<i>` = `value-<tag>-<i>` and writes `shared` = tag
repeatedly, then prints "done".
"""

from __future__ import annotations

import sys

from localstore.config import load_settings
from localstore.credentials import CredentialStore
from localstore.index import Index


def main() -> None:
    home, profile, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    settings = load_settings(home=home, environ={}, profile=profile)
    index = Index(settings.paths.index_db)
    try:
        store = CredentialStore(index, settings)
        for i in range(count):
            store.set(f"{tag}-{i}", f"value-{tag}-{i}-\u00e9\u6f22")
            store.set("shared", f"shared-{tag}")
            assert store.get(f"{tag}-{i}") == f"value-{tag}-{i}-\u00e9\u6f22"
    finally:
        index.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
