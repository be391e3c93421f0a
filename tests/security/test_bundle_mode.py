"""Exporting over an existing bundle keeps that file's permissions, as a blueprint save does.

A bundle is written to a temporary file beside the destination and renamed over it. The new file
got the default mode (0644 under umask 022), so a bundle its owner had made private with
``chmod 600`` was readable by every local user after the next export to the same name: the
plaintext of an unencrypted bundle, and for an encrypted one, the ciphertext to guess its
passphrase against offline.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localstore import archive
from localstore.config import load_settings
from localstore.crypto import ScryptParams
from localstore.store import BlueprintStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")

FAST = ScryptParams(log2_n=10, r=8, p=1)


@pytest.fixture
def umask_022() -> Iterator[None]:
    # os.umask is process-wide: restored before the test returns.
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlueprintStore]:
    s = BlueprintStore(load_settings(home=tmp_path / "home", environ={}), maintenance=False)
    s.save("a/plans", "secret: plans\n")
    yield s
    s.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("passphrase", ["pw", None], ids=["encrypted", "plain"])
def test_export_over_a_private_bundle_keeps_it_private(
    store: BlueprintStore, tmp_path: Path, umask_022: None, passphrase: str | None
) -> None:
    out = tmp_path / "backup.lsbundle"
    archive.export_bundle(store, out, passphrase=passphrase, scrypt_params=FAST)
    assert _mode(out) == 0o644  # a new bundle is a document: the umask decides
    out.chmod(0o600)
    archive.export_bundle(store, out, passphrase=passphrase, scrypt_params=FAST)
    assert _mode(out) == 0o600
    # And the other way round: the replaced file's mode, whichever it is.
    out.chmod(0o640)
    archive.export_bundle(store, out, passphrase="pw", scrypt_params=FAST)
    assert _mode(out) == 0o640
    assert archive.is_encrypted(out)
