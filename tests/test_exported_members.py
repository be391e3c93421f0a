"""The public API is exactly the sorted __all__ of each package."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["localstore", "sync"])
def test_all_is_sorted_and_exported(package: str) -> None:
    mod = importlib.import_module(package)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{package} has no __all__"
    assert exported == sorted(exported), f"{package}.__all__ is not sorted"
    for name in exported:
        assert hasattr(mod, name), f"{package}.__all__ names missing {name}"
    public = {n for n in vars(mod) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(mod, n)).__name__ == "module"}
    assert public - modules - {"annotations"} <= set(exported)


def test_localstore_never_imports_sync() -> None:
    import subprocess
    import sys

    code = (
        "import sys, localstore, localstore.store, localstore.index, localstore.files, "
        "localstore.blueprint, localstore.config, localstore.events, localstore.cli\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.iter_modules(localstore.__path__):\n"
        "    if not m.name.startswith('_cli'):\n"
        "        importlib.import_module('localstore.' + m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'sync' or n.startswith('sync.'))\n"
        "assert not bad, bad\n"
        "net = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('httpx', 'supabase', 'websockets', 'aiohttp', 'psycopg'))\n"
        "assert not net, net\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_error_class_has_a_docstring() -> None:
    import inspect

    import localstore.errors as errors

    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.LocalStoreError):
            assert cls.__doc__ and cls.__doc__.strip(), name
            assert name in errors.__doc__, f"{name} is missing from the tree in the docstring"


def test_the_lock_error_is_exported_and_sync_s_is_one() -> None:
    import localstore
    from sync.errors import SyncError, SyncLockedError

    assert localstore.LockHeldError is localstore.errors.LockHeldError
    assert issubclass(SyncLockedError, localstore.LockHeldError)
    assert issubclass(SyncLockedError, SyncError)
    err = SyncLockedError("process 1 already syncs this home", hint="stop it")
    assert (err.message, err.hint, err.action) == (
        "process 1 already syncs this home",
        "stop it",
        "tell_user",
    )
    assert str(err) == "process 1 already syncs this home (stop it)"


def test_every_sync_error_a_caller_can_catch_is_exported() -> None:
    # The error tree is public API: an app catches these by name (AccountMismatchError after a
    # login as another user, SessionChangedError after a logout under a running sync).
    import inspect

    import sync
    import sync.errors

    errors = [
        name
        for name, cls in vars(sync.errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == "sync.errors"
    ]
    assert errors and [n for n in errors if n not in sync.__all__] == []


def test_the_closed_store_error_is_exported() -> None:
    """An app's worker threads meet it when the app quits under them: they catch it by name."""
    import localstore

    assert localstore.StoreClosedError is localstore.errors.StoreClosedError
    assert "StoreClosedError" in localstore.__all__


def test_every_error_the_store_defines_is_in_the_errors_module() -> None:
    """An app catches the store's errors by name from ``localstore.errors`` (the one tree): an
    error class defined in another module (files.KeptChangingError, which a save_many raises
    when an editor keeps saving one of its files) could be caught only through a private
    module, and was missing from the tree an app reads."""
    import inspect
    import pkgutil

    import localstore
    import localstore.errors as errors

    outside = []
    for info in pkgutil.iter_modules(localstore.__path__):
        if info.name.startswith("_cli"):
            continue
        mod = importlib.import_module(f"localstore.{info.name}")
        for name, cls in vars(mod).items():
            if (
                inspect.isclass(cls)
                and issubclass(cls, errors.LocalStoreError)
                and not name.startswith("_")
                and getattr(errors, name, None) is not cls
            ):
                outside.append(f"{info.name}.{name}")
    assert outside == []


def test_an_app_using_every_exported_class_type_checks_strictly(tmp_path: Path) -> None:
    """``mypy --strict`` on an app that uses the package's exports as the docs show passes.

    ``KVStore`` and ``CredentialStore`` are imported on first use (module ``__getattr__``),
    which mypy types as its return type, ``object``: ``localstore.KVStore(store.index)`` was
    "object" not callable, and every value it made was Any, in an app that type-checks.
    """
    app = tmp_path / "app.py"
    app.write_text(
        "from __future__ import annotations\n"
        "import localstore\n"
        "from localstore import CredentialStore, KVStore\n"
        "from localstore.credentials import CredentialStore as CredentialStoreClass\n"
        "from localstore.kv import KVStore as KVStoreClass\n"
        "\n"
        "def app(store: localstore.BlueprintStore, settings: localstore.Settings) -> None:\n"
        "    kv: KVStoreClass = localstore.KVStore(store.index)\n"
        "    keys: list[str] = kv.keys()\n"
        "    with KVStore(store.index) as other:\n"
        "        other.delete('k')\n"
        "    creds: CredentialStoreClass = CredentialStore(store.index, settings)\n"
        "    creds2: CredentialStoreClass = localstore.CredentialStore(store.index, settings)\n"
        "    print(keys, creds, creds2)\n",
        encoding="utf-8",
    )
    out, status = _mypy_strict(app)
    assert status == 0, out


def test_the_handle_start_sync_returns_is_typed_for_an_app(tmp_path: Path) -> None:
    """``store.start_sync()`` is how docs/daemon.md has an app sync in-process; its handle was
    typed Any, so a typo in an app's use of it (``status()``, ``pause()``) passed mypy."""
    app = tmp_path / "app.py"
    app.write_text(
        "from __future__ import annotations\n"
        "import localstore\n"
        "from sync import EmbeddedSync\n"
        "\n"
        "def app(store: localstore.BlueprintStore) -> None:\n"
        "    handle: EmbeddedSync = store.start_sync(watch=False)\n"
        "    handle.pause()\n"
        "    store.start_sync().stauts()\n",
        encoding="utf-8",
    )
    out, _ = _mypy_strict(app)
    assert out.splitlines() == [
        f'{app}:8: error: "EmbeddedSync" has no attribute "stauts"; maybe "status"?  '
        "[attr-defined]",
        "Found 1 error in 1 file (checked 1 source file)",
    ], out


def _mypy_strict(app: Path) -> tuple[str, int]:
    """``mypy --strict`` on the app file ``app``: its report and exit status."""
    from mypy import api

    config = app.parent / "mypy.ini"  # (not the repo's: ignore_missing_imports would hide a miss)
    config.write_text("[mypy]\n", encoding="utf-8")
    args = ["--config-file", str(config), "--strict", "--follow-imports=silent"]
    out, err, status = api.run(
        [*args, "--no-incremental", "--cache-dir", str(app.parent / "c"), str(app)]
    )
    return out + err, status


def test_every_error_the_library_raises_on_purpose_is_a_local_store_error(tmp_path: Path) -> None:
    """The README says errors form one tree rooted at ``LocalStoreError``; ``store.start_sync()``
    raised ``sync.NotLoggedInError`` (or ``AuthError`` without a keychain) past an app's
    ``except localstore.LocalStoreError``: sync's tree stood beside it."""
    import inspect

    import localstore
    import sync

    outside = [
        name
        for name in sync.__all__
        if inspect.isclass(cls := getattr(sync, name))
        and issubclass(cls, BaseException)
        and not issubclass(cls, localstore.LocalStoreError)
    ]
    assert outside == []
    store = localstore.open(home=tmp_path / "h")
    try:
        with pytest.raises(localstore.LocalStoreError) as raised:
            store.start_sync()  # never logged in (without a keychain: it cannot be read)
        assert isinstance(raised.value, sync.SyncError) and raised.value.hint
    finally:
        store.close()


def test_login_and_logout_are_exported_and_import_supabase_only_on_first_use() -> None:
    """An app logs its user in with ``sync.login`` (the README's ``localstore login`` from
    code); it had to import them from ``sync.supabase_remote``, documented only there. The
    official client costs start-up time, so ``import sync`` still does not import it."""
    import subprocess
    import sys

    import sync
    import sync.supabase_remote as supabase_remote

    for name in ("LoginResult", "has_login", "login", "logout"):
        assert name in sync.__all__
        assert getattr(sync, name) is getattr(supabase_remote, name)
    code = (
        "import sys, sync\n"
        "heavy = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('supabase', 'gotrue', 'postgrest', 'httpx') or n == 'sync.supabase_remote')\n"
        "assert not heavy, heavy\n"
        "from sync import login\n"
        "assert 'supabase' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
