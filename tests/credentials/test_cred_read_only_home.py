"""Credentials on a home this user cannot write: names listed and values read, never written.

The home is really read-only (tests/store/test_read_only_home.py: every write bit off, and as
root the reader runs without the capabilities that override file modes). The values are in the
opt-in encrypted file (data/credentials.enc), so these run without a keychain session; the
keychain itself is tested read-only in test_kv_read_only.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import localstore
from localstore.config import load_settings
from localstore.credentials import CredentialStore
from localstore.errors import ReadOnlyStoreError
from localstore.kv import KVStore
from tests.conftest import bound_by_file_modes
from tests.store.test_read_only_home import fingerprint, freeze, thaw

REPO = Path(__file__).resolve().parents[2]
# The opt-in encrypted file, and no keychain (keyring's fail backend): the same backend in
# every process of the test, whatever session it runs in.
FILE_BACKEND = {
    "LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1",
    "LOCALSTORE_KEYCHAIN_PASSPHRASE": "pw",
    "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    return {**env, **FILE_BACKEND, "PYTHONPATH": str(REPO)}


def reader(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``python argv...`` in a process that file modes bind (even as root)."""
    cmd = bound_by_file_modes([sys.executable, *argv])
    return subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), cwd=REPO, input=stdin, timeout=120
    )


def cli(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    code = "from localstore.cli import main; main()"
    return reader("-c", code, "--home", str(home), *args, stdin=stdin)


def _home(tmp_path: Path, *, credential: bool) -> Path:
    """A home with a blueprint and a plain app-data item; with ``credential``, the credential
    'tok' stored in the encrypted file (so the credentials tables exist)."""
    home = tmp_path / "home"
    with localstore.open(home=home) as s, KVStore(s.index) as kv:
        s.save("a/x", "v: 1\n")
        kv.save("plain", 1)
    if credential:
        done = subprocess.run(
            [sys.executable, "-m", "localstore", "--home", str(home), "cred", "set", "tok"],
            input="s\u00e9cret\n",
            capture_output=True,
            text=True,
            env=_env(),
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    return home


@pytest.mark.parametrize("credential", [False, True], ids=["never-stored", "stored"])
def test_cred_ls_and_get_read_a_read_only_home(tmp_path: Path, credential: bool) -> None:
    """Both failed with "cannot write the index (attempt to write a readonly database)", though
    they only read: the CLI opened the index to write, and made the credentials tables."""
    home = _home(tmp_path, credential=credential)
    freeze(home)
    try:
        before = fingerprint(home)
        done = cli(home, "--json", "cred", "ls")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["names"] == (["tok"] if credential else [])
        note = done.stderr.strip().splitlines()
        assert len(note) == 1 and note[0].startswith(f"note: opened {home} read-only"), note
        assert f"may not write {home / 'data'}" in note[0], note
        done = cli(home, "cred", "get", "tok")
        if credential:
            assert (done.returncode, done.stdout) == (0, "s\u00e9cret"), done.stderr
        else:
            assert done.returncode == 4 and "no credential 'tok'" in done.stderr, done.stderr
        assert fingerprint(home) == before
    finally:
        thaw(home)


@pytest.mark.parametrize(
    ("args", "action"),
    [
        (("cred", "set", "tok"), "store a credential"),
        (("cred", "rm", "tok"), "delete a credential"),
    ],
    ids=["set", "rm"],
)
def test_cred_writes_say_the_home_is_read_only(
    tmp_path: Path, args: tuple[str, ...], action: str
) -> None:
    """They failed with "cannot write the index", naming neither the read-only home nor what
    to do about it."""
    home = _home(tmp_path, credential=True)
    freeze(home)
    try:
        before = fingerprint(home)
        done = cli(home, *args, stdin="new\n")
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(
            f"error: cannot {action}: the home {home} is read-only (this user may not write "
            f"{home / 'data'}) (a backup or snapshot: copy it to a folder you may write"
        ), done.stderr
        assert fingerprint(home) == before
    finally:
        thaw(home)


# Run in the reader: the home opened read-only, a CredentialStore and a KVStore with it made,
# read, then every credential write tried; prints what it read and each write's error as JSON.
_LIBRARY_READER = """
import json, sys
from localstore.config import load_settings
from localstore.credentials import CredentialStore
from localstore.kv import KVStore
from localstore.store import BlueprintStore

settings = load_settings(home=sys.argv[1])
with BlueprintStore(settings, read_only=True) as s:
    creds = CredentialStore(s.index, settings)
    with KVStore(s.index, credentials=creds) as kv:
        read = [creds.list_names(include_internal=True), creds.find("tok"), kv.load("plain")]
    refused = []
    for write in (lambda: creds.set("tok", "x"), lambda: creds.delete("tok")):
        try:
            write()
            refused.append(None)
        except Exception as exc:
            refused.append([type(exc).__name__, getattr(exc, "message", str(exc))])
print(json.dumps({"read": read, "refused": refused}))
"""


def test_a_credential_store_of_a_read_only_home_that_never_had_one_reads_as_empty(
    tmp_path: Path,
) -> None:
    """CredentialStore(index, settings) raised ReadOnlyStoreError ("cannot create the
    credentials tables"), so an app passing credentials= to KVStore could not even read its
    plain items there."""
    home = _home(tmp_path, credential=False)
    freeze(home)
    try:
        before = fingerprint(home)
        done = reader("-c", _LIBRARY_READER, str(home))
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert fingerprint(home) == before
    finally:
        thaw(home)
    assert answer["read"] == [[], None, 1]
    reason = f"this store is open read-only (this user may not write {home / 'data'})"
    assert answer["refused"] == [
        ["ReadOnlyStoreError", f"cannot store credential 'tok': {reason}"],
        ["ReadOnlyStoreError", f"cannot delete credential 'tok': {reason}"],
    ]


def test_a_refused_credential_write_leaves_the_secret_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a store opened read_only=True in a home whose files may be written, delete removed
    the value from the backend, then failed to unlist the name (the index is read-only): the
    name stayed listed with its value gone; set replaced the value, then failed."""
    for name, value in FILE_BACKEND.items():
        monkeypatch.setenv(name, value)
    home = _home(tmp_path, credential=True)
    settings = load_settings(home=home)
    with localstore.open(home=home, read_only=True) as s:
        creds = CredentialStore(s.index, settings)
        with pytest.raises(ReadOnlyStoreError, match="cannot delete credential 'tok'"):
            creds.delete("tok")
        with pytest.raises(ReadOnlyStoreError, match="cannot store credential 'tok'"):
            creds.set("tok", "replaced")
        assert creds.get("tok") == "s\u00e9cret"
        assert creds.list_names() == ["tok"]
