"""A background keychain write never asks to unlock the keychain, even when the keychain locks
between the backend's lock check and the write itself (docs/daemon.md, "A locked keychain").

secretstorage's ``create_item`` checks the collection's lock, then calls the Secret Service's
``CreateItem``; a collection locked in between (a screen lock at that moment) may be answered
with a prompt, which secretstorage runs: a GUI unlock dialog from a process nobody watches
(gnome-keyring answers an IsLocked error instead, which read as an unknown keychain error). The
lock is made to fall into that window here (a hook right before ``CreateItem``), on a private
gnome-keyring; every prompt secretstorage could run is recorded (and answered dismissed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import secretstorage.util
from secretstorage.defines import SS_PATH, SS_PREFIX

from localstore.config import Settings
from localstore.credentials import CredentialStore
from localstore.errors import KeychainUnavailableError
from localstore.index import Index
from tests.credentials.test_copied_home import (  # noqa: F401  (fixtures)
    _Keychain,
    _private_keychain,
    keychain,
)
from tests.daemon.test_keychain_prompt import asked  # noqa: F401  (fixture: records prompts)

pytestmark = pytest.mark.keychain


@pytest.fixture
def background(settings: Settings) -> Iterator[CredentialStore]:
    """A credential store as the daemon's: it never prompts."""
    index = Index(settings.paths.index_db)
    try:
        yield CredentialStore(index, settings, prompt=False)
    finally:
        index.close()


def _lock_before(method: str, kc: _Keychain, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Lock ``kc`` right before the next D-Bus call of ``method`` (once); returns a list
    that records that it did."""
    real = secretstorage.util.DBusAddressWrapper.call
    done: list[str] = []

    def call(self: Any, name: str, *args: Any) -> Any:
        if name == method and not done:
            done.append(name)
            kc.lock()
        return real(self, name, *args)

    monkeypatch.setattr(secretstorage.util.DBusAddressWrapper, "call", call)
    return done


def test_a_keychain_locked_right_before_a_background_write_refuses_without_a_prompt(
    background: CredentialStore,
    keychain: _Keychain,  # noqa: F811  (the fixture imported above)
    asked: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    background.set("api", "CANARY-first")
    with monkeypatch.context() as hook:
        locked = _lock_before("CreateItem", keychain, hook)
        with pytest.raises(KeychainUnavailableError, match="locked") as refused:
            background.set("api", "CANARY-second")
    assert locked == ["CreateItem"]
    assert asked == []
    assert "unlock" in refused.value.hint
    assert "CANARY" not in str(refused.value)
    keychain.unlock()
    assert background.get("api") == "CANARY-first"  # nothing half-written
    background.set("api", "CANARY-third")  # and the keychain still takes writes
    assert background.get("api") == "CANARY-third"


def test_a_prompt_answered_to_a_background_write_is_dismissed_not_run(
    background: CredentialStore,
    keychain: _Keychain,  # noqa: F811
    asked: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gnome-keyring refuses a write to a locked collection with an error; the specification lets
    # a Secret Service answer with a prompt to unlock it instead (others do). Injected here: the
    # CreateItem is answered with a real prompt of this gnome-keyring (its Unlock's).
    background.set("api", "CANARY-first")
    with monkeypatch.context() as hook:
        calls = _answer_with_a_prompt("CreateItem", lambda prompt: ("/", prompt), keychain, hook)
        with pytest.raises(KeychainUnavailableError, match="locked"):
            background.set("api", "CANARY-second")
    assert asked == []
    prompts = [path for name, path in calls if name == "Dismiss"]
    assert len(prompts) == 1 and "/prompt/" in prompts[0], calls
    keychain.unlock()
    assert background.get("api") == "CANARY-first"


def test_a_keychain_locked_right_before_a_background_delete_refuses_without_a_prompt(
    background: CredentialStore,
    keychain: _Keychain,  # noqa: F811
    asked: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same window for a delete (an app's KV purge or key rotation retiring a data key, on a
    # prompt=False store): secretstorage's Item.delete checks the item's lock, then calls Delete.
    background.set("api", "CANARY-first")
    with monkeypatch.context() as hook:
        locked = _lock_before("Delete", keychain, hook)
        with pytest.raises(KeychainUnavailableError, match="locked") as refused:
            background.delete("api")
    assert locked == ["Delete"]
    assert asked == []
    assert "unlock" in refused.value.hint
    keychain.unlock()
    assert background.get("api") == "CANARY-first"  # refused, so still there and still listed
    assert background.list_names() == ["api"]
    background.delete("api")  # and the keychain still takes deletes
    assert background.find("api") is None


def test_a_prompt_answered_to_a_background_delete_is_dismissed_not_run(
    background: CredentialStore,
    keychain: _Keychain,  # noqa: F811
    asked: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # gnome-keyring refuses to delete a locked item with an IsLocked error (the test above); the
    # specification lets a Secret Service answer Delete with a prompt instead, which secretstorage's
    # Item.delete runs. Injected here, as for the write: a real prompt of this gnome-keyring.
    background.set("api", "CANARY-first")
    with monkeypatch.context() as hook:
        calls = _answer_with_a_prompt("Delete", lambda prompt: (prompt,), keychain, hook)
        with pytest.raises(KeychainUnavailableError, match="locked"):
            background.delete("api")
    assert asked == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a lock, no fault
    prompts = [path for name, path in calls if name == "Dismiss"]
    assert len(prompts) == 1 and "/prompt/" in prompts[0], calls
    keychain.unlock()
    assert background.get("api") == "CANARY-first"


def _answer_with_a_prompt(
    method: str,
    answer: Callable[[str], Any],
    keychain: _Keychain,  # noqa: F811
    hook: pytest.MonkeyPatch,
) -> list[tuple[str, str]]:
    """Answer the Secret Service call ``method`` with ``answer(prompt)``: a real prompt of this
    gnome-keyring (its Unlock's, the keychain locked first), where gnome-keyring itself answers
    with an error. The D-Bus calls made, (name, object path), go into the list returned."""
    real = secretstorage.util.DBusAddressWrapper.call
    calls: list[tuple[str, str]] = []

    def call(self: Any, name: str, *args: Any) -> Any:
        calls.append((name, self.object_path))
        if name != method:
            return real(self, name, *args)
        keychain.lock()
        service = secretstorage.util.DBusAddressWrapper(
            SS_PATH, SS_PREFIX + "Service", self._connection
        )
        _unlocked, prompt = real(service, "Unlock", "ao", [self.object_path])
        return answer(prompt)

    hook.setattr(secretstorage.util.DBusAddressWrapper, "call", call)
    return calls


@pytest.mark.parametrize("when", ["before the delete", "between its look and its Delete"])
def test_a_delete_refused_by_a_locked_keychain_says_delete_not_read(
    background: CredentialStore,
    keychain: _Keychain,  # noqa: F811
    asked: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    # The backend looks for the item before deleting it (keyring reports a missing item as a
    # refusal) and again after a refusal (a concurrent delete may have won): both reads meet the
    # lock too, and their "read credential" error replaced the delete's own.
    background.set("api", "CANARY-first")
    with monkeypatch.context() as hook:
        if when == "before the delete":
            keychain.lock()
        else:
            _lock_before("Delete", keychain, hook)
        with pytest.raises(KeychainUnavailableError, match="locked") as refused:
            background.delete("api")
    assert str(refused.value).startswith("delete credential 'api'"), str(refused.value)
    assert asked == []
    keychain.unlock()
    assert background.get("api") == "CANARY-first"
