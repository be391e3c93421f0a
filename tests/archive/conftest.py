"""Fixtures for bundle tests: stores on private homes, sample blueprints, cheap scrypt.

Scrypt at its default cost takes ~0.3 s and 128 MiB per derivation; tests that are not about the
cost use ``FAST_SCRYPT`` (same code path, N=2**10) so the suite stays quick.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import localstore
from localstore.crypto import ScryptParams
from localstore.files import TEMP_SUFFIX
from localstore.store import BlueprintStore

FAST_SCRYPT = ScryptParams(log2_n=10, r=8, p=1)
STRESS = os.environ.get("LOCALSTORE_STRESS") == "1"

StoreFactory = Callable[[str], BlueprintStore]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[StoreFactory]:
    """Open stores on fresh homes under tmp_path by name; all are closed after the test."""
    opened: list[BlueprintStore] = []

    def make(name: str) -> BlueprintStore:
        s = localstore.open(home=tmp_path / name)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def sample_doc(i: int) -> str:
    """A blueprint with comments and odd formatting that must survive byte for byte."""
    return (
        f"# blueprint {i}: comments and spacing are kept\n"
        f"name:   sample-{i}\n"
        "steps:\n"
        f"  - id: s{i}\n"
        "    run: |\n"
        f"      echo 'héllo {i}'   # unicode too\n"
    )


def populate(store: BlueprintStore, n: int) -> list[str]:
    """Save n blueprints spread over folders and tags; return their ids."""
    ids = []
    for i in range(n):
        bp = store.save(
            f"{['personal', 'team/ops', 'shared'][i % 3]}/bp-{i}",
            sample_doc(i),
            tags=["even"] if i % 2 == 0 else ["odd"],
            description=f"number {i}",
        )
        ids.append(bp.id)
    return ids


def tree(store: BlueprintStore) -> dict[str, bytes]:
    """Every file under a store's blueprints folder, by relative path.

    Temp files (``.lstmp``) are left out: a process killed inside an atomic write leaves one,
    which is not a blueprint and which reconcile removes once it is stale. So is the folder's
    mark (``.localstore-folder``), which every store's folder holds.
    """
    root = store.root
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(TEMP_SUFFIX) and p.name != ".localstore-folder"
    }
