"""CredentialStore against the real Secret Service, the opt-in encrypted file, and no keychain."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from unittest import mock

import click.testing
import keyring
import keyring.backend
import keyring.core
import keyring.errors
import pytest
from click.testing import CliRunner
from keyring.backends import fail, null
from keyring.compat import properties

from localstore import credentials, crypto
from localstore.cli import cli
from localstore.config import Settings, load_settings
from localstore.credentials import (
    PASSPHRASE_ENV,
    CredentialStore,
    EncryptedFileBackend,
    KeyringSecretBackend,
    keychain_report,
    open_backend,
)
from localstore.errors import (
    CredentialError,
    CredentialNotFoundError,
    InvalidInputError,
    KeychainUnavailableError,
)
from localstore.index import Index
from tests.conftest import run_cli

WORKER = Path(__file__).with_name("cred_worker.py")


# --- the real Secret Service --------------------------------------------------------------------


@pytest.mark.keychain
def test_set_get_list_delete_round_trip(creds: CredentialStore) -> None:
    assert "SecretService" in creds.backend_description
    assert creds.list_names() == []
    creds.set("api-key", "k-123")
    creds.set("token", "t-456")
    assert creds.get("api-key") == "k-123"
    assert creds.exists("token")
    assert creds.list_names() == ["api-key", "token"]
    creds.set("api-key", "k-789")  # overwrite: one listing, new value
    assert creds.get("api-key") == "k-789"
    assert creds.list_names() == ["api-key", "token"]
    creds.delete("api-key")
    assert creds.list_names() == ["token"]
    assert creds.find("api-key") is None
    with pytest.raises(CredentialNotFoundError):
        creds.get("api-key")
    with pytest.raises(CredentialNotFoundError):
        creds.delete("api-key")


@pytest.mark.keychain
@pytest.mark.parametrize(
    "value",
    [
        "p\u00e4ssw\u00f6rd \u6f22\u5b57 \U0001f511",
        "line one\nline two\r\n\ttabbed",
        "with\x00nul",
        "x" * credentials.MAX_VALUE_BYTES,  # the largest accepted value: 1 MiB
        "\u00e9" * (credentials.MAX_VALUE_BYTES // 2),  # 1 MiB of two-byte characters
    ],
    ids=["unicode", "whitespace", "nul", "1MiB-ascii", "1MiB-utf8"],
)
def test_unicode_and_large_values(creds: CredentialStore, value: str) -> None:
    creds.set("\u540d\u524d-name \u00e9", value)
    assert creds.get("\u540d\u524d-name \u00e9") == value


def test_rejected_values_never_echo_the_value(index: Index, settings: Settings) -> None:
    store = CredentialStore(index, settings, backend=_MemoryBackend())
    canary = "CANARY-" + "z" * (credentials.MAX_VALUE_BYTES)
    with pytest.raises(InvalidInputError) as info:
        store.set("big", canary)
    assert "CANARY" not in str(info.value)
    with pytest.raises(InvalidInputError) as info:
        store.set("bad", "CANARY-\udc80")
    assert "CANARY" not in _exception_chain_text(info.value)
    with pytest.raises(InvalidInputError):
        store.set("empty", "")
    for bad_name in ["", " lead", "trail ", "ctl\x07", "n" * 300, "lone\ud800", "\udc80"]:
        with pytest.raises(InvalidInputError):
            store.set(bad_name, "v")
        with pytest.raises(InvalidInputError):
            store.find(bad_name)


@pytest.mark.keychain
def test_profiles_are_isolated(index: Index, home: Path, profile: str) -> None:
    a = CredentialStore(index, load_settings(home=home, environ={}, profile=profile + "-a"))
    b = CredentialStore(index, load_settings(home=home, environ={}, profile=profile + "-b"))
    assert a.service != b.service
    try:
        a.set("same", "value-a")
        b.set("same", "value-b")
        assert (a.get("same"), b.get("same")) == ("value-a", "value-b")
        a.delete("same")
        assert b.get("same") == "value-b"
        assert (a.list_names(), b.list_names()) == ([], ["same"])
    finally:
        for store in (a, b):
            for name in store.list_names():
                store.delete(name)


@pytest.mark.keychain
def test_two_processes_at_once(creds: CredentialStore, settings: Settings, profile: str) -> None:
    count = 12
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(settings.home), profile, tag, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "done"
    expected = sorted([f"{t}-{i}" for t in "ab" for i in range(count)] + ["shared"])
    assert creds.list_names() == expected
    for t in "ab":
        for i in range(count):
            assert creds.get(f"{t}-{i}") == f"value-{t}-{i}-\u00e9\u6f22"
    assert creds.get("shared") in ("shared-a", "shared-b")


@pytest.mark.keychain
def test_listed_name_without_value_is_cleaned_by_delete(creds: CredentialStore) -> None:
    creds.set("half", "v")
    # A crash between deleting the value and the name leaves only the name behind.
    KeyringSecretBackend().delete(creds.service, "half")
    assert creds.list_names() == ["half"]
    creds.delete("half")
    assert creds.list_names() == []
    with pytest.raises(CredentialNotFoundError):
        creds.delete("half")


# --- no usable keychain ---------------------------------------------------------------------------


@pytest.mark.parametrize("kr", [fail.Keyring(), null.Keyring()], ids=["fail", "null"])
def test_unusable_keyring_backends_are_refused(kr: keyring.backend.KeyringBackend) -> None:
    with pytest.raises(KeychainUnavailableError) as info:
        KeyringSecretBackend(kr)
    text = str(info.value)
    assert "gnome-keyring" in text
    assert "LOCALSTORE_KEYCHAIN_FILE_FALLBACK" in text
    assert PASSPHRASE_ENV in text


@pytest.mark.parametrize(
    "backend", ["keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"]
)
def test_cli_without_keychain_says_what_to_install(home: Path, backend: str) -> None:
    env = {"PYTHON_KEYRING_BACKEND": backend}
    for args, stdin in ((("cred", "set", "x"), "CANARY-VALUE\n"), (("cred", "get", "x"), "")):
        proc = run_cli(home, *args, env=env, stdin=stdin, keep_localstore_env=True)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "no usable OS keychain" in lines[0]
        assert "gnome-keyring" in lines[0]
        assert "CANARY" not in proc.stderr
    # Listing names needs no keychain.
    proc = run_cli(home, "--json", "cred", "ls", env=env, keep_localstore_env=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["names"] == []


@pytest.mark.parametrize(
    "backend", ["keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"]
)
def test_cli_set_at_a_terminal_fails_before_asking_for_the_value(
    settings: Settings, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # keyring picks its backend once per process: forget it so it reads PYTHON_KEYRING_BACKEND,
    # as a fresh `localstore` process would (monkeypatch puts the chosen one back afterwards).
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", backend)
    # The runner's stdin stands in for a terminal, so `cred set` prompts (hidden, twice).
    monkeypatch.setattr(click.testing._NamedTextIOWrapper, "isatty", lambda self: True)
    code, out, err = _invoke(settings, "cred", "set", "x", stdin="CANARY-VALUE\nCANARY-VALUE\n")
    assert code == 1, err
    assert out == ""
    assert "Value for" not in err  # no prompt: the user never typed the secret for nothing
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "no usable OS keychain" in lines[0]
    assert "gnome-keyring" in lines[0]
    assert "CANARY" not in err


def test_cli_set_refuses_an_oversized_value_without_reading_it_to_the_end(home: Path) -> None:
    # `yes | localstore cred set x` or `< big.iso`: the value is over the limit long before the
    # end, which may never come. The pipe stays open, as an endless producer's would.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    read_end, write_end = os.pipe()
    code = "from localstore.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--home", str(home), "cred", "set", "big"],
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
    )
    os.close(read_end)

    def produce() -> None:
        with contextlib.suppress(BrokenPipeError), open(write_end, "wb", closefd=False) as pipe:
            pipe.write(b"s" * (credentials.MAX_VALUE_BYTES + 64 * 1024))

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("cred set kept reading a value already over the size limit")
    finally:
        os.close(write_end)  # EOF: lets a reader that waited for it finish, and the producer
        producer.join()
    assert proc.returncode == 2, err  # (a refused value: bad usage)
    assert out == b""
    assert b"over" in err and str(credentials.MAX_VALUE_BYTES).encode() in err
    assert b"sss" not in err


# --- error mapping --------------------------------------------------------------------------------


def _all_keyring_errors() -> list[type[BaseException]]:
    seen: list[type[BaseException]] = []
    todo: list[type[BaseException]] = [keyring.errors.KeyringError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


class _FaultyKeyring(keyring.backend.KeyringBackend):
    """Injects a fault: every operation raises the configured exception."""

    error: BaseException = RuntimeError()

    @properties.classproperty
    def priority(cls) -> float:
        raise RuntimeError("test-only backend; never selected by keyring")

    def get_password(self, service: str, username: str) -> str | None:
        raise self.error

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.error

    def delete_password(self, service: str, username: str) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error_cls", [*_all_keyring_errors(), OSError, ConnectionError, RuntimeError, ValueError]
)
def test_every_keyring_error_is_mapped(error_cls: type[Exception]) -> None:
    assert credentials.map_keyring_error(error_cls("boom"), "read")
    kr = _FaultyKeyring()
    kr.error = error_cls("CANARY-VALUE in a backend message")
    backend = KeyringSecretBackend(kr)
    for op in (
        lambda: backend.get("svc", "n"),
        lambda: backend.set("svc", "n", "CANARY-VALUE"),
        lambda: backend.delete("svc", "n"),
    ):
        with pytest.raises(CredentialError) as info:
            op()
        assert not isinstance(info.value, keyring.errors.KeyringError)
        assert type(info.value).__module__ == "localstore.errors"
    # The value being stored is scrubbed from whatever the backend said.
    with pytest.raises(CredentialError) as info:
        backend.set("svc", "n", "CANARY-VALUE")
    assert "CANARY-VALUE" not in str(info.value)
    assert info.value.__cause__ is None or "CANARY-VALUE" not in str(info.value.__cause__)


def test_mapping_classes() -> None:
    m = credentials.map_keyring_error
    assert isinstance(m(keyring.errors.NoKeyringError("x"), "a"), KeychainUnavailableError)
    assert isinstance(m(keyring.errors.InitError("x"), "a"), KeychainUnavailableError)
    assert isinstance(m(keyring.errors.KeyringLocked("x"), "a"), KeychainUnavailableError)
    assert "unlock" in m(keyring.errors.KeyringLocked("x"), "a").hint


# --- opt-in encrypted file ------------------------------------------------------------------------


def test_file_fallback_is_off_unless_enabled(settings: Settings) -> None:
    env = {PASSPHRASE_ENV: "pw"}
    with pytest.raises(KeychainUnavailableError):
        open_backend(settings, environ=env, keyring_backend=fail.Keyring())
    enabled = settings.replace(keychain_file_fallback=True)
    with pytest.raises(KeychainUnavailableError, match=PASSPHRASE_ENV):
        open_backend(enabled, environ={}, keyring_backend=fail.Keyring())
    assert not credentials.fallback_path(settings).exists()


def test_file_fallback_round_trip(index: Index, settings: Settings) -> None:
    enabled = settings.replace(keychain_file_fallback=True)
    env = {PASSPHRASE_ENV: "correct horse battery"}
    backend = open_backend(enabled, environ=env, keyring_backend=null.Keyring())
    assert isinstance(backend, EncryptedFileBackend)
    store = CredentialStore(index, enabled, backend=backend)
    store.set("api", "CANARY-file-secret")
    path = credentials.fallback_path(settings)
    # Private from its creation: the tightening on read below must not be what makes it so
    # (a later write keeps the replaced file's mode, so only the first one shows it).
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.set("other", "\u6f22\u5b57")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"CANARY" not in path.read_bytes()
    assert store.get("api") == "CANARY-file-secret"
    # A second process's view (fresh backend, same passphrase) sees the same values.
    again = EncryptedFileBackend(path, env[PASSPHRASE_ENV])
    assert again.get(store.service, "other") == "\u6f22\u5b57"
    store.delete("api")
    assert store.list_names() == ["other"]
    path.chmod(0o644)
    assert again.get(store.service, "api") is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened on read
    with pytest.raises(CredentialError, match="wrong passphrase"):
        EncryptedFileBackend(path, "wrong").get(store.service, "other")


def _exception_chain_text(exc: BaseException | None) -> str:
    """Everything an exception chain carries: messages, args and attributes like .object."""
    parts: list[str] = []
    while exc is not None:
        parts += [repr(exc), repr(exc.args), repr(vars(exc) if hasattr(exc, "__dict__") else "")]
        parts += [repr(getattr(exc, "object", ""))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_file_backend_refuses_unencodable_text_without_leaking_the_file(
    index: Index, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "creds.enc"
    backend = EncryptedFileBackend(path, "pw", params=crypto.ScryptParams(log2_n=10))
    store = CredentialStore(index, settings, backend=backend)
    store.set("api-key", "CANARY-other-secret")
    with pytest.raises(InvalidInputError) as info:
        store.set("bad\ud800name", "v")
    assert "CANARY" not in _exception_chain_text(info.value)
    # The backend itself, called with text the store would have refused: the plaintext JSON of
    # every stored credential must not ride along in the error (UnicodeEncodeError.object did).
    for name, value in [("bad\ud800name", "v"), ("ok", "bad\udc80value")]:
        with pytest.raises(CredentialError) as raised:
            backend.set(store.service, name, value)
        assert "CANARY" not in _exception_chain_text(raised.value)
    assert store.get("api-key") == "CANARY-other-secret"
    assert store.list_names() == ["api-key"]


def test_report_for_file_fallback(settings: Settings) -> None:
    enabled = settings.replace(keychain_file_fallback=True)
    env = {PASSPHRASE_ENV: "pw"}
    report = keychain_report(enabled, environ=env, keyring_backend=fail.Keyring())
    assert report["ok"] is True
    assert report["active"] == "encrypted-file"
    assert report["probe"] == "ok"
    assert report["file_fallback"]["enabled"] is True
    assert report["file_fallback"]["mode"] == "0600"
    assert "encrypted file" in report["hint"]


def test_report_without_keychain(settings: Settings) -> None:
    report = keychain_report(settings, environ={}, keyring_backend=fail.Keyring())
    assert report["ok"] is False
    assert report["active"] == "none"
    assert "fail" in report["problem"]
    assert "gnome-keyring" in report["hint"]
    assert report["file_fallback"] == {
        "enabled": False,
        "passphrase_set": False,
        "path": str(credentials.fallback_path(settings)),
        "exists": False,
        "mode": None,
    }
    json.dumps(report)


@pytest.mark.keychain
def test_report_with_keychain(settings: Settings) -> None:
    report = keychain_report(settings, environ={})
    assert report["ok"] is True, report
    assert report["active"] == "keychain"
    assert report["probe"] == "ok"
    assert "SecretService" in report["keyring_backend"]
    assert report["service"] == f"localstore:{settings.profile}"


def _doctor_items(profile: str) -> list[str]:
    """Names of the items under the doctor's service, whatever their names (the probe's names were
    random once, so the test asks the Secret Service by attribute, as keyring cannot list)."""
    import secretstorage

    with contextlib.closing(secretstorage.dbus_init()) as conn:
        # The collection keyring uses (scripts/_in_keyring_session names it by path: the alias
        # /aliases/default is resolved racily by gnome-keyring).
        path = getattr(keyring.get_keyring(), "preferred_collection", None)
        collection = (
            secretstorage.Collection(conn, path)
            if path
            else secretstorage.get_default_collection(conn)
        )
        items = collection.search_items({"service": f"localstore:{profile}:doctor"})
        return sorted(item.get_attributes()["username"] for item in items)


@pytest.mark.keychain
def test_report_removes_its_probe_when_reading_it_back_fails(settings: Settings) -> None:
    real_get = KeyringSecretBackend.get
    calls: list[str] = []

    def failing_first_read(self: KeyringSecretBackend, service: str, name: str) -> str | None:
        calls.append(name)
        if len(calls) == 1:  # the probe's read-back; later reads (delete looks first) work
            raise CredentialError(f"read credential {name!r}: injected D-Bus failure")
        return real_get(self, service, name)

    with mock.patch.object(KeyringSecretBackend, "get", failing_first_read):
        report = keychain_report(settings, environ={})
    assert report["ok"] is False
    assert "injected D-Bus failure" in report["probe"]
    assert _doctor_items(settings.profile) == []


@pytest.mark.keychain
def test_report_removes_a_probe_an_interrupted_run_left(settings: Settings) -> None:
    # What a doctor killed between storing and deleting its probe leaves behind.
    keyring.get_keyring().set_password(f"localstore:{settings.profile}:doctor", "probe", "old")
    report = keychain_report(settings, environ={})
    assert report["ok"] is True, report
    assert _doctor_items(settings.profile) == []


# --- command line -------------------------------------------------------------------------------


def _invoke(settings: Settings, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["--home", str(settings.home), *args],
        input=stdin,
        env={"LOCALSTORE_PROFILE": settings.profile, "LOCALSTORE_HOME": None},
        catch_exceptions=False,
    )
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.keychain
def test_cli_set_get_ls_rm(creds: CredentialStore, settings: Settings) -> None:
    assert _invoke(settings, "cred", "set", "api", stdin="s3cr\u00e9t\n")[0] == 0
    code, out, err = _invoke(settings, "cred", "get", "api")
    assert (code, out) == (0, "s3cr\u00e9t")  # only the value; the piped newline was dropped
    code, out, _ = _invoke(settings, "--json", "cred", "set", "multi", stdin="a\nb\n\n")
    assert json.loads(out) == {"name": "multi", "service": creds.service, "stored": True}
    assert creds.get("multi") == "a\nb\n"
    code, out, _ = _invoke(settings, "--json", "cred", "ls")
    assert json.loads(out) == {"service": creds.service, "names": ["api", "multi"]}
    assert _invoke(settings, "cred", "ls")[1].splitlines() == ["api", "multi"]
    code, out, err = _invoke(settings, "--json", "cred", "get", "api")
    assert code == 2 and out == "" and "s3cr" not in err
    assert _invoke(settings, "cred", "rm", "api")[0] == 0
    code, out, err = _invoke(settings, "cred", "get", "api")
    assert code == 4 and out == "" and "no credential 'api'" in err
    assert _invoke(settings, "cred", "rm", "api")[0] == 4


@pytest.mark.keychain
def test_cli_refuses_bad_input(creds: CredentialStore, settings: Settings) -> None:
    code, _, err = _invoke(settings, "cred", "set", "datakey:abc", stdin="v")
    assert code == 2 and "data key" in err  # (refused input: bad usage, docs/cli.md)
    code, _, err = _invoke(settings, "cred", "set", "empty", stdin="")
    assert code == 2 and "empty" in err
    assert creds.list_names(include_internal=True) == []


class _MemoryBackend:
    """A SecretBackend over a dict, for input-validation tests that never reach a backend."""

    description = "memory"

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get(self, service: str, name: str) -> str | None:
        return self.values.get((service, name))

    def set(self, service: str, name: str, value: str) -> None:
        self.values[(service, name)] = value

    def delete(self, service: str, name: str) -> bool:
        return self.values.pop((service, name), None) is not None
