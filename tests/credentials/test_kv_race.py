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
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import secretstorage

from localstore import kv as kv_module
from localstore.config import Settings
from localstore.credentials import CredentialStore, KeyringSecretBackend
from localstore.crypto import DataKeys
from localstore.errors import KVError
from localstore.index import Index
from localstore.kv import KVStore, RotationReport

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


class FakeClock:
    """An injectable clock: time moves only when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kv(index: Index, creds: CredentialStore, clock: FakeClock) -> Iterator[KVStore]:
    store = KVStore(index, credentials=creds, clock=clock, hot_items=0)
    yield store
    store.close()


@pytest.fixture
def other(settings: Settings, creds: CredentialStore, clock: FakeClock) -> Iterator[KVStore]:
    """A second store on the same home, as another process has: its own connection to the index
    and its own credential store, so no data key is in its memory yet. (Its keys are listed in
    the same index, so ``creds`` deletes them afterwards.)"""
    idx = Index(settings.paths.index_db)
    keychain = CredentialStore(idx, settings, backend=KeyringSecretBackend())
    store = KVStore(idx, credentials=keychain, clock=clock, hot_items=0)
    yield store
    store.close()
    idx.close()


def _before_first(
    monkeypatch: pytest.MonkeyPatch,
    keys: DataKeys,
    method: str,
    act: Callable[[], object],
    *,
    times: int = 1,
    after: bool = False,
) -> list[object]:
    """Run ``act`` (another store's step) just before (``after``: just after) each of the first
    ``times`` calls of ``keys.<method>``; return what each ``act`` returned."""
    real = getattr(keys, method)
    done: list[object] = []

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if after:
            result = real(*args, **kwargs)
        if len(done) < times:
            done.append(act())
        return result if after else real(*args, **kwargs)

    monkeypatch.setattr(keys, method, hooked)
    return done


def _data_keys(store: KVStore) -> DataKeys:
    keys = store._keys
    assert keys is not None
    return keys


def _kids_in_keychain(creds: CredentialStore) -> set[str]:
    return {
        name.removeprefix("datakey:")
        for name in creds.list_names(include_internal=True)
        if name.startswith("datakey:") and creds.exists(name)
    }


def _used_kids(index: Index) -> set[str]:
    with index.read() as cur:
        rows = cur.execute("SELECT DISTINCT key_id FROM kv_items WHERE key_id IS NOT NULL")
        return {str(r[0]) for r in rows.fetchall()}


@pytest.mark.parametrize("interloper", ["rotate", "purge", "delete", "save"])
def test_a_key_another_process_retires_mid_rotation_is_not_reported_missing(
    monkeypatch: pytest.MonkeyPatch,
    kv: KVStore,
    other: KVStore,
    index: Index,
    creds: CredentialStore,
    clock: FakeClock,
    interloper: str,
) -> None:
    # One process's rotation read a batch of items sealed with the old key; before it looked the
    # key up (a keychain round trip), the other process retired it: its own rotation re-sealed
    # them, or its purge, delete or save removed the last one. The rotation then reported the
    # old key in missing_keys ("left items sealed with data keys missing from the keychain")
    # although no item used it and nothing was lost.
    kv.save("x", {"n": 1}, encrypt=True, expires_at=clock.now + 10)
    old = kv.current_key_id()

    def act() -> object:
        if interloper == "rotate":
            return kv.rotate_data_key()
        if interloper == "purge":
            clock.now += 20
            return kv.purge_expired()
        if interloper == "delete":
            return kv.delete("x")
        kv.save("x", {"n": 2}, encrypt=True)
        return "saved"

    done = _before_first(monkeypatch, _data_keys(other), "reseal", act)
    report = other.rotate_data_key()
    assert done, "the other process's step was not injected"
    assert old not in _kids_in_keychain(creds)  # it really was retired meanwhile
    assert report.missing_keys == ()
    assert report.unreadable == 0
    assert _used_kids(index) <= _kids_in_keychain(creds)
    for store in (kv, other):
        assert store.load("x", default=None) in (None, {"n": 1}, {"n": 2})


def test_a_save_whose_key_another_process_retires_before_it_is_read_uses_the_new_one(
    monkeypatch: pytest.MonkeyPatch, kv: KVStore, other: KVStore, creds: CredentialStore
) -> None:
    # A save reads which key is current, then that key from the keychain (outside its write
    # transaction). Another process rotating in between retired the key: the save raised
    # KeyNotFoundError ("data key ... is not in the keychain ... restore the keychain item"),
    # where a rotation that commits just before the save's transaction makes it start again
    # with the new key.
    kv.save("a", "old", encrypt=True)
    old = kv.current_key_id()
    done = _before_first(monkeypatch, _data_keys(other), "get", kv.rotate_data_key)
    other.save("b", "new", encrypt=True)
    assert done, "the other process's rotation was not injected"
    assert old not in _kids_in_keychain(creds)
    assert kv.current_key_id() != old
    for store in (kv, other):
        assert (store.load("a"), store.load("b")) == ("old", "new")


def test_a_read_outlasting_two_rotations_elsewhere_still_reads(
    monkeypatch: pytest.MonkeyPatch, kv: KVStore, other: KVStore
) -> None:
    # A read takes the row, then its key from the keychain. When another process's rotation
    # re-sealed the row and retired that key in between, the read tried once more, and raised
    # KeyNotFoundError if a second rotation did the same to the second try (a slow keychain
    # beside a process rotating repeatedly). It now tries again as long as the row's key changed.
    kv.save("a", {"v": 1}, encrypt=True)
    done = _before_first(monkeypatch, _data_keys(other), "get", kv.rotate_data_key, times=3)
    assert other.load("a") == {"v": 1}
    assert len(done) == 3, "the other process's rotations were not injected"


def test_a_save_outlasting_many_rotations_elsewhere_still_saves(
    monkeypatch: pytest.MonkeyPatch, kv: KVStore, other: KVStore
) -> None:
    # A save reads the current key from the keychain, then writes; a rotation elsewhere in
    # between makes it start again with the new key. It gave up after three tries, with KVError
    # "the data key kept changing", when two processes rotated without pause (3 saves in 75 in
    # a run of real processes). It now tries as long as each try meets a newer key, within
    # SAVE_KEY_CHASE_S.
    kv.save("a", "old", encrypt=True)
    done = _before_first(
        monkeypatch, _data_keys(other), "get", kv.rotate_data_key, times=6, after=True
    )
    other.save("b", "new", encrypt=True)
    assert len(done) == 6, "the other process's rotations were not injected"
    assert len({r.key_id for r in done if isinstance(r, RotationReport)}) == 6
    for store in (kv, other):
        assert (store.load("a"), store.load("b")) == ("old", "new")


def test_a_save_gives_up_when_the_key_keeps_changing_past_the_bound(
    monkeypatch: pytest.MonkeyPatch, kv: KVStore, other: KVStore
) -> None:
    # The bound that stops a save chasing the current key: past SAVE_KEY_CHASE_S (0 here), a key
    # changed once more makes it raise, and nothing is written.
    monkeypatch.setattr(kv_module, "SAVE_KEY_CHASE_S", 0.0)
    kv.save("a", "old", encrypt=True)
    done = _before_first(monkeypatch, _data_keys(other), "get", kv.rotate_data_key, after=True)
    with pytest.raises(KVError, match="changed the data key") as info:
        other.save("b", "new", encrypt=True)
    assert done, "the other process's rotation was not injected"
    assert info.value.hint
    assert other.load("b", default=None) is None


def test_a_rotation_overtaken_by_another_says_which_key_is_current(
    monkeypatch: pytest.MonkeyPatch, kv: KVStore, other: KVStore, creds: CredentialStore
) -> None:
    # A rotation that another process's rotation overtook (made a newer key current, re-sealed
    # every item and retired ours) reported key_id, its own key, as if current: an app keeping it
    # ("items are now under key X") named a key deleted from the keychain. The report now says
    # which key took over (overtaken_by); a rotation not overtaken says None.
    kv.save("a", {"v": 1}, encrypt=True)
    done = _before_first(monkeypatch, _data_keys(other), "reseal", kv.rotate_data_key)
    report = other.rotate_data_key()
    assert done, "the other process's rotation was not injected"
    current = kv.current_key_id()
    assert report.overtaken_by == current != report.key_id
    assert report.key_id not in _kids_in_keychain(creds)
    monkeypatch.undo()
    again = other.rotate_data_key()
    assert again.overtaken_by is None and again.key_id == other.current_key_id()
    assert other.load("a") == {"v": 1}
