"""An encrypted export killed while it encrypts leaves its plaintext zip in the cache; the next
export or import removes it (a ``finally`` cannot run after SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import localstore
from localstore import archive
from tests.archive.conftest import FAST_SCRYPT, populate

_CHILD = textwrap.dedent(
    """
    import sys, time
    import localstore
    from localstore import archive
    from localstore.crypto import ScryptParams

    store = localstore.open(home=sys.argv[1])

    def progress(phase, done, total):
        if phase == "encrypt":
            print("encrypting", flush=True)
            time.sleep(60)  # killed here

    archive.export_bundle(store, sys.argv[2], passphrase="pw", progress=progress,
                          scrypt_params=ScryptParams(log2_n=10, r=8, p=1))
    """
)


@pytest.mark.parametrize("then", ["export", "import"])
def test_the_plaintext_of_a_killed_encrypted_export_is_removed_by_the_next(
    tmp_path: Path, then: str
) -> None:
    home = tmp_path / "h"
    with localstore.open(home=home) as store:
        populate(store, 5)
        cache = store.paths.cache
        plain = archive.export_bundle(store, tmp_path / "plain.lsbundle").path
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(home), str(tmp_path / "a.lsbundle")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "encrypting"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()
    leftovers = [p / "plaintext.lstmp" for p in cache.iterdir() if p.name.startswith("export-")]
    assert leftovers and all(p.read_bytes()[:4] == b"PK\x03\x04" for p in leftovers)
    with localstore.open(home=home) as store:
        if then == "export":
            archive.export_bundle(
                store, tmp_path / "b.lsbundle", passphrase="pw", scrypt_params=FAST_SCRYPT
            )
        else:
            archive.import_bundle(store, plain)
    # Before: the plaintext of every blueprint stayed in the cache for good.
    assert not [p for p in cache.iterdir() if p.name.startswith("export-")]
