"""Build the name-key upgrade fixture: two homes made by a LocalStore before core v11.

Core v11 changed the key two paths collide on (files.path_key) from ``casefold(NFC(path))`` to
the Unicode canonical caseless form. Run it with the old code on the path (the same way as
make_fixture.py, see tests/upgrade/fixtures/README.md)::

    git worktree add --detach /tmp/old-REV REV
    PYTHONPATH=/tmp/old-REV /work/main/.venv/bin/python tests/upgrade/make_name_key_fixture.py \\
        tests/upgrade/fixtures/name-keys-REV.tar.gz

The tar.gz holds:

* ``pairs/``: a home with two pairs of Greek names that the old key took for two names and that
  are one name on macOS (APFS) and Windows (NTFS), beside names whose key is the same both ways;
* ``plain/``: a home with names whose key changes but that collide with nothing (one of them
  saved twice and one deleted), and ASCII names;
* ``expected.json``: what the old code said about each home (paths, ids, contents, history).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from localstore.store import BlueprintStore, open_store

# Each pair: two paths, one name on a Mac, two keys before core v11 (docs/portability.md).
PAIRS = (
    ("greek/\u1fd3", "greek/\u03aa\u0301"),  # ΐ and Ϊ́: one name on APFS
    ("greek/\u03aa\u0342", "greek/\u1fd7"),  # Ϊ͂ and ῗ: one name on APFS and NTFS
)
OTHERS = ("team/caf\u00e9", "docs/Stra\u00dfe", "ops/deploy")


def _said(store: BlueprintStore) -> dict[str, Any]:
    live = {
        i.path: {
            "id": i.id,
            "content": store.load(i.path).content,
            "history": [[r.rev, r.path, r.origin, r.deleted] for r in store.history(i.id)],
        }
        for i in store.list()
    }
    with store.index.read() as cur:
        gone = {
            str(p): str(i)
            for i, p in cur.execute("SELECT id, path FROM blueprints WHERE deleted = 1")
        }
    return {"live": live, "deleted": gone}


def build(work: Path) -> dict[str, Any]:
    pairs = open_store(work / "pairs")
    for n, (first, second) in enumerate(PAIRS):
        pairs.save(first, f"pair: {n}\nside: first\n", name=f"first {n}")
        pairs.save(second, f"pair: {n}\nside: second\n", name=f"second {n}")
    for n, rel in enumerate(OTHERS):
        pairs.save(rel, f"other: {n}\n")
    said_pairs = _said(pairs)
    pairs.close()
    plain = open_store(work / "plain")
    plain.save(PAIRS[0][1], "alone: true\n", name="alone")
    plain.save(PAIRS[0][1], "alone: true\nagain: true\n", name="alone")
    plain.save(PAIRS[1][0], "gone: soon\n")
    plain.delete(PAIRS[1][0])
    for n, rel in enumerate(OTHERS):
        plain.save(rel, f"other: {n}\n")
    said_plain = _said(plain)
    plain.close()
    return {"pairs": said_pairs, "plain": said_plain}


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = json.dumps(build(work), indent=1, sort_keys=True, ensure_ascii=False).encode()
        with tarfile.open(out, "w:gz") as tar:
            info = tarfile.TarInfo("expected.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            for home in ("pairs", "plain"):
                tar.add(work / home, arcname=home, filter=_no_cache)
    print(out, out.stat().st_size)


def _no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "/cache" in info.name or info.name.endswith(".lock"):
        return None
    return info


if __name__ == "__main__":
    main()
