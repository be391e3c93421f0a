"""A canary secret goes through every path; afterwards no byte of the home and no log line holds it.

The only places a value may appear: the keychain itself and the stdout of ``cred get``.
"""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import Settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.errors import InvalidInputError, LocalStoreError
from localstore.index import Index
from localstore.kv import KVStore


def _cli(settings: Settings, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        ["--home", str(settings.home), *args],
        input=stdin,
        env={"LOCALSTORE_PROFILE": settings.profile, "LOCALSTORE_HOME": None},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


def _needles(canary: str) -> list[bytes]:
    raw = canary.encode()
    return [raw, canary.encode("utf-16-le"), base64.b64encode(raw), raw.hex().encode()]


def _files(home: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}


def _exercise(settings: Settings, index: Index, canary: str, outputs: list[str]) -> list[str]:
    """Push the canary through the API, the CLI and the error paths; return data-key names."""
    store = CredentialStore(index, settings, backend=KeyringSecretBackend())
    store.set("api-key", canary)
    assert store.get("api-key") == canary
    outputs.append(repr(store))
    for bad in (lambda: store.set("bad\x07", canary), lambda: store.set("x", canary * 40_000)):
        with pytest.raises(InvalidInputError) as info:
            bad()
        outputs.append(str(info.value))
    kv = KVStore(index, credentials=store)
    kv.save("secret/json", {"token": canary}, encrypt=True, metadata={"kind": "token"})
    kv.save("secret/bin", canary.encode(), format="binary", encrypt=True, compress=True)
    kv.save("secret/yaml", [canary], format="yaml", encrypt=True)
    assert kv.load("secret/json") == {"token": canary}
    outputs += [repr(kv.load_item("secret/json")), repr(kv)]
    kv.rotate_data_key()
    assert kv.load("secret/bin") == canary.encode()
    kv.close()
    code, out, err = _cli(settings, "--json", "cred", "set", "cli-key", stdin=canary + "\n")
    assert code == 0
    outputs += [out, err]
    code, out, err = _cli(settings, "cred", "get", "cli-key")
    assert (code, out) == (0, canary)  # the one place a value may be printed
    outputs.append(err)
    for args in (
        ("--json", "cred", "ls", "--all"),
        ("cred", "ls"),
        ("--json", "cred", "get", "cli-key"),
    ):
        code, out, err = _cli(settings, *args)
        outputs += [out, err]
    code, out, err = _cli(settings, "--json", "cred", "rm", "cli-key")
    assert code == 0
    outputs += [out, err]
    return [n for n in store.list_names(include_internal=True) if n.startswith("datakey:")]


@pytest.mark.keychain
def test_canary_never_leaks(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    canary = f"CANARY-{uuid.uuid4().hex}-s\u00e9cr\u00e8t"
    outputs: list[str] = []
    index = Index(settings.paths.index_db)
    cleanup = CredentialStore(index, settings, backend=KeyringSecretBackend())
    try:
        datakeys = _exercise(settings, index, canary, outputs)
        key_material = [cleanup.get(n) for n in datakeys]
        assert key_material
        assert settings.home is not None  # the fixture's own folder: every file in it is read
        # -wal and -shm first, while the connection is open; index.db only after closing it
        # (any other handle on the database file would drop this process's SQLite locks).
        files = {p: b for p, b in _files(settings.home).items() if p.name != "index.db"}
        index.close()
        files.update(_files(settings.home))
    finally:
        index = Index(settings.paths.index_db)
        try:
            cleanup = CredentialStore(index, settings, backend=KeyringSecretBackend())
            for name in cleanup.list_names(include_internal=True):
                cleanup.delete(name)
        finally:
            index.close()
    assert any(p.name == "index.db" for p in files)
    assert any(p.name == "index.db-wal" for p in files), sorted(p.name for p in files)
    needles = _needles(canary) + [k.encode() for k in key_material]
    needles += [base64.urlsafe_b64decode(k) for k in key_material]
    for path, data in files.items():
        for needle in needles:
            assert needle not in data, f"secret material found in {path}"
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for text in [logs, *outputs]:
        assert canary not in text
        for k in key_material:
            assert k not in text


@pytest.mark.keychain
def test_errors_carry_names_not_values(index: Index, creds: CredentialStore) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}"
    creds.set("k", canary)
    errors: list[LocalStoreError] = []
    for op in (
        lambda: creds.set("k\n", canary),
        lambda: creds.set("k", canary + "\udc80"),
        lambda: creds.get("missing"),
        lambda: creds.delete("missing"),
    ):
        try:
            op()
        except LocalStoreError as exc:
            errors.append(exc)
    assert len(errors) == 4
    for err in errors:
        assert canary not in str(err) and canary not in repr(err)
