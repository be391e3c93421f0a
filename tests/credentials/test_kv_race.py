"""Data-key rotation racing other processes on one home and one keychain.

Two processes share the index and the real keychain (the session's gnome-keyring): one rotates
while the other rotates, saves, reads, purges or deletes. A rotation may retire (and delete from
the keychain) a key another process is about to read. Every item must stay readable, no key may
be deleted while an item uses it, and nothing may call a key "missing" that is only retired.

Found by running real processes against each other (a rotation then raised CredentialError, or
reported a retired key in ``missing_keys``; a save raised KeyNotFoundError). The tests here
replay each interleaving deterministically: a second store (its own connection and credential
store, so its data-key cache is cold, as another process's is) acts at the exact step, through a
hook on the first store's keychain reads. Only the timing is injected; the keychain, the index and
the deletions are real.
"""

from __future__ import annotations

import logging
import uuid

import pytest
import secretstorage

from localstore.credentials import KeyringSecretBackend

pytestmark = [pytest.mark.keychain, pytest.mark.usefixtures("secret_service")]


@pytest.mark.parametrize("step", ["get_secret", "delete"])
def test_an_item_another_client_deletes_mid_call_reads_as_gone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, step: str
) -> None:
    # keyring searches for the item, then reads (or deletes) what it found in a second call: an
    # item another process deleted in between raised secretstorage's ItemNotFoundException,
    # passed on as a CredentialError ("keychain error ... check that the keychain service is
    # running"), where a missing item is None (get) or False (delete). A key rotation whose old
    # key another process retired at that moment stopped half way on it. (A delete looked again
    # and returned False, but logged a "keychain delete ... failed" warning for it.)
    backend, other = KeyringSecretBackend(), KeyringSecretBackend()
    service = f"localstore-test-{uuid.uuid4().hex[:8]}"
    backend.set(service, "item", "x")
    real = getattr(secretstorage.Item, step)
    deleted: list[bool] = []

    def deleted_first(self: secretstorage.Item, *args: object) -> object:
        if not deleted:
            deleted.append(False)  # (first: the other client's own delete passes through here)
            deleted[0] = other.delete(service, "item")
        return real(self, *args)

    monkeypatch.setattr(secretstorage.Item, step, deleted_first)
    try:
        if step == "get_secret":
            assert backend.get(service, "item") is None
        else:
            assert backend.delete(service, "item") is False
        assert deleted == [True], "the fault was not injected"
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        monkeypatch.undo()
        other.delete(service, "item")
