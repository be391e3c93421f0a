"""The hot tier's own rules (bounds, TTL, coherence), the purger's lifecycle, and rotation crashes."""

from __future__ import annotations

import base64
import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import apsw
import pytest

from localstore._failure_streak import FAILURE_LOG_EVERY_S, FailureStreak
from localstore.config import Settings, load_settings
from localstore.credentials import CredentialStore
from localstore.crypto import DataKeys
from localstore.errors import (
    CryptoError,
    DecryptionError,
    IndexStoreError,
    InvalidInputError,
    KeyNotFoundError,
    KVError,
    StoreClosedError,
)
from localstore.index import MAINTENANCE_LOG_EVERY_S, Index
from localstore.kv import KVNotFoundError, KVStore, Purger, PurgerState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_reads_after_writes_hit_memory(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock, hot_items=10)
    kv.save("a", {"x": 1})
    assert kv.load("a") == {"x": 1}
    assert kv.exists("a")
    stats = kv.hot_stats()
    assert stats["hits"] == 2 and stats["misses"] == 0 and stats["items"] == 1
    off = KVStore(index, clock=clock, hot_items=0)
    assert off.load("a") == {"x": 1}
    assert off.hot_stats()["items"] == 0


def test_the_hot_tier_settings_are_honoured(index: Index, home: Any, profile: str) -> None:
    """kv_hot_items / kv_hot_bytes (config.yaml, LOCALSTORE_KV_HOT_*) are documented as the
    bounds of the tier; a store given the settings uses them, explicit arguments beat them."""
    off = load_settings(home=home, environ={"LOCALSTORE_KV_HOT_ITEMS": "0"}, profile=profile)
    kv = KVStore(index, settings=off)
    kv.save("a", 1)
    assert kv.load("a") == 1
    assert kv.hot_stats()["items"] == 0
    small = load_settings(home=home, environ={"LOCALSTORE_KV_HOT_BYTES": "500"}, profile=profile)
    kv = KVStore(index, settings=small)
    kv.save("big", "x" * 1000)
    kv.save("small", 1)
    assert kv.hot_stats()["items"] == 1
    kv = KVStore(index, settings=off, hot_items=10)
    kv.save("a", 2)
    assert kv.hot_stats()["items"] == 1


def test_item_bound_evicts_least_recently_used(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock, hot_items=3)
    for k in "abc":
        kv.save(k, k)
    kv.load("a")  # a is now the most recent; b is the oldest
    kv.save("d", "d")
    assert kv.hot_stats()["items"] == 3
    misses = kv.hot_stats()["misses"]
    kv.load("a")
    kv.load("c")
    kv.load("d")
    assert kv.hot_stats()["misses"] == misses
    assert kv.load("b") == "b"  # still in the index
    assert kv.hot_stats()["misses"] == misses + 1


def test_byte_bound(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock, hot_items=1000, hot_bytes=2000)
    for i in range(20):
        kv.save(f"k{i}", b"x" * 300, format="binary")
        assert kv.hot_stats()["bytes"] <= 2000
    assert 1 <= kv.hot_stats()["items"] < 20
    kv.save("huge", b"y" * 5000, format="binary")  # larger than the whole tier: not cached
    assert kv.load("huge") == b"y" * 5000
    assert kv.hot_stats()["bytes"] <= 2000


def test_byte_bound_counts_metadata_and_tags(index: Index, clock: FakeClock) -> None:
    """The tier keeps each item's metadata and tags too: a small value with large metadata must
    not let the tier grow far past hot_bytes."""
    kv = KVStore(index, clock=clock, hot_items=1000, hot_bytes=10_000)
    for i in range(20):
        kv.save(f"m{i}", i, metadata={"note": "x" * 3000})
    assert kv.hot_stats()["items"] <= 3
    kv.save("tagged", 0, tags=[f"tag-{n:03d}-" + "t" * 100 for n in range(120)])
    assert kv.hot_stats()["bytes"] <= 10_000
    kv.save("big", 0, metadata={"note": "y" * 20_000})  # larger than the whole tier
    misses = kv.hot_stats()["misses"]
    assert kv.load_item("big").metadata == {"note": "y" * 20_000}
    assert kv.hot_stats()["misses"] == misses + 1
    assert kv.hot_stats()["bytes"] <= 10_000


def test_hot_ttl_and_item_expiry_in_memory(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock, hot_items=10, hot_ttl=5)
    kv.save("a", 1)
    kv.save("b", 2, ttl=2)
    clock.now += 2
    with pytest.raises(KVNotFoundError):
        kv.load("b")  # expired while cached: never returned
    misses = kv.hot_stats()["misses"]
    clock.now += 3
    assert kv.load("a") == 1  # hot entry outlived its TTL: re-read from the index
    assert kv.hot_stats()["misses"] == misses + 1


@pytest.mark.parametrize(
    "encrypt", [False, pytest.param(True, marks=pytest.mark.keychain)], ids=["plain", "encrypted"]
)
def test_a_hot_ttl_of_zero_keeps_nothing_in_memory(
    index: Index, clock: FakeClock, request: pytest.FixtureRequest, encrypt: bool
) -> None:
    """hot_ttl=0 (every entry expires at once) served nothing from memory, yet every save and load
    still cached its plaintext (a decrypted secret too) until evicted or close(): hot_stats() read
    {'items': 1, ..., 'hits': 0, 'misses': 2}. It turns the tier off, as hot_items=0 does."""
    creds = request.getfixturevalue("creds") if encrypt else None
    kv = KVStore(index, credentials=creds, clock=clock, hot_items=10, hot_ttl=0)
    kv.save("secret", "hunter2", encrypt=encrypt)
    assert kv.hot_stats()["items"] == 0
    assert kv.load("secret") == "hunter2"
    assert kv.load_item("secret").value == "hunter2"
    assert kv.exists("secret")
    assert kv.hot_stats() == {"items": 0, "bytes": 0, "hits": 0, "misses": 0}
    other = KVStore(index, clock=clock, hot_items=0)
    other.save("secret", "changed")  # still read afresh from the index
    assert kv.load("secret") == "changed"
    assert kv.hot_stats()["items"] == 0
    other.close()
    kv.close()


def test_other_connections_writes_are_seen(index: Index, settings: Settings) -> None:
    mine = KVStore(index, hot_items=100)
    other_index = Index(settings.paths.index_db)
    try:
        theirs = KVStore(other_index, hot_items=100)
        mine.save("shared", "v1")
        assert mine.load("shared") == "v1"
        theirs.save("shared", "v2")
        assert mine.load("shared") == "v2"
        theirs.delete("shared")
        assert not mine.exists("shared")
        mine.save("shared", "v3")
        assert theirs.load("shared") == "v3"
        # An unrelated commit by another connection does not empty the tier.
        hits = mine.hot_stats()["hits"]
        with other_index.write() as cur:
            cur.execute("INSERT INTO settings VALUES ('unrelated', 'x')")
        assert mine.load("shared") == "v3"
        assert mine.hot_stats()["hits"] == hits + 1
    finally:
        other_index.close()


def test_two_stores_on_one_index_see_each_others_writes(index: Index, clock: FakeClock) -> None:
    """An app may make a KVStore per component (or per call) on its one long-lived index. Their
    writes share one connection, so PRAGMA data_version never moves for them: a store's hot tier
    served a value another store on the same index had replaced or deleted (until hot_ttl)."""
    settings_view = KVStore(index, clock=clock, hot_items=10)
    editor = KVStore(index, clock=clock, hot_items=10)
    settings_view.save("theme", "light")
    assert settings_view.load("theme") == "light"  # cached
    editor.save("theme", "dark")
    assert settings_view.load("theme") == "dark"
    assert settings_view.load_item("theme").value == "dark"
    editor.delete("theme")
    assert not settings_view.exists("theme")
    assert settings_view.load("theme", None) is None
    # Also inside a caller's own transaction (same thread, nothing committed yet).
    settings_view.save("theme", "light")
    assert settings_view.load("theme") == "light"
    with index.write():
        editor.save("theme", "blue")
        assert settings_view.load("theme") == "blue"
    assert settings_view.load("theme") == "blue"


def test_a_dropped_store_is_not_kept_alive_by_the_index(index: Index) -> None:
    """An app making a KVStore per call on its long-lived index must not leak each one (with
    its hot tier) through the rollback listener it registered on the index."""
    refs = []
    for i in range(20):
        kv = KVStore(index, hot_items=10)
        kv.save(f"k{i}", "x" * 1000)
        refs.append(weakref.ref(kv))
        del kv
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    kept = KVStore(index, hot_items=10)
    assert kept.load("k3") == "x" * 1000
    with pytest.raises(RuntimeError), index.write():  # a rollback still reaches a live store
        kept.save("k3", "rolled back")
        raise RuntimeError("abort")
    assert kept.load("k3") == "x" * 1000


def test_concurrent_threads(index: Index) -> None:
    kv = KVStore(index, hot_items=50)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(40):
                kv.save(f"t{n}/{i}", {"n": n, "i": i}, tags=[f"t{n}"])
                assert kv.load(f"t{n}/{i}") == {"n": n, "i": i}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(kv.keys()) == 160
    assert kv.find_by_tag("t2") == sorted(f"t2/{i}" for i in range(40))


# --- purger ---------------------------------------------------------------------------------------


def test_purger_lifecycle_and_background_purge(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock)
    for i in range(5):
        kv.save(f"e{i}", i, ttl=1)
    kv.save("keep", 1)
    clock.now += 1
    purger = kv.start_purger(interval=0.01)
    assert kv.start_purger() is purger  # one per store
    assert purger.state is PurgerState.RUNNING
    with pytest.raises(KVError):
        purger.start()
    assert purger.wait_rounds(1, timeout=30)
    assert purger.purged == 5
    with index.read() as cur:
        assert cur.execute("SELECT count(*) FROM kv_items").fetchall()[0][0] == 1
    kv.close()
    assert purger.state is PurgerState.STOPPED


def test_a_closed_store_refuses_every_operation(index: Index, clock: FakeClock) -> None:
    """close() stopped the purger and emptied the hot tier, but the store went on working: a
    later save refilled the tier with no purger left to expire anything, and nothing told the
    app it was using a store it had closed. Every operation now raises StoreClosedError."""
    kv = KVStore(index, clock=clock, hot_items=10)
    kv.save("k", 1, ttl=5, tags=["t"])
    purger = kv.start_purger(interval=3600)
    kv.close()
    assert purger.state is PurgerState.STOPPED
    kv.close()  # a second close is a no-op
    calls: dict[str, Any] = {
        "save": lambda: kv.save("k", 2),
        "delete": lambda: kv.delete("k"),
        "purge_expired": kv.purge_expired,
        "load": lambda: kv.load("k"),
        "load with a default": lambda: kv.load("absent", None),
        "load_item": lambda: kv.load_item("k"),
        "exists": lambda: kv.exists("k"),
        "keys": kv.keys,
        "find_by_tag": lambda: kv.find_by_tag("t"),
        "hot_stats": kv.hot_stats,
        "start_purger": kv.start_purger,
        "current_key_id": kv.current_key_id,
        "rotate_data_key": kv.rotate_data_key,
        "recover_keys": kv.recover_keys,
    }
    for name, call in calls.items():
        with pytest.raises(StoreClosedError) as info:
            call()
        assert "KVStore was closed" in str(info.value), name
        assert "new KVStore" in info.value.hint, name
    with pytest.raises(StoreClosedError):  # a purger the app made itself stops too
        Purger(kv).purge_once()
    assert kv.closed and not KVStore(index).closed
    # The data is untouched and another store on the same index reads it.
    assert KVStore(index, clock=clock).load_item("k").tags == ("t",)
    with KVStore(index, clock=clock) as scoped:  # a `with` block closes it as close() does
        assert scoped.load("k") == 1
    assert scoped.closed


def test_a_save_racing_close_does_not_land_after_it(
    index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that passed its closed check before close() and reached its write after: it
    wrote, and refilled the emptied tier of a closed store. The write itself checks again."""
    kv = KVStore(index, clock=clock, hot_items=10)
    in_save, closed = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    real_expiry = kv._expiry

    def paused_expiry(*args: Any) -> Any:  # runs after the closed check, before the write
        in_save.set()
        assert closed.wait(30)
        return real_expiry(*args)

    monkeypatch.setattr(kv, "_expiry", paused_expiry)

    def save() -> None:
        try:
            kv.save("k", 1)
        except BaseException as exc:
            errors.append(exc)

    saver = threading.Thread(target=save)
    saver.start()
    assert in_save.wait(30)
    kv.close()
    closed.set()
    saver.join()
    assert len(errors) == 1 and isinstance(errors[0], StoreClosedError)
    assert not KVStore(index, clock=clock).exists("k")


@pytest.mark.parametrize("held", ["write", "read"])
def test_close_inside_the_callers_transaction_does_not_wait_for_a_purge_round(
    settings: Settings, held: str
) -> None:
    """close() joined the purger; called inside the app's own index.write() (or read()) while a
    purge round waited for the index's lock, each thread waited for the other, for good."""
    in_round = threading.Event()
    lock_taken = threading.Event()

    def clock() -> float:
        # purge_expired reads the clock just before it takes the index's lock: the round is
        # held here until the app's transaction has the lock.
        if threading.current_thread().name == "localstore-kv-purger" and not in_round.is_set():
            in_round.set()
            assert lock_taken.wait(30)
        return 1_000_000.0

    # An index of its own: on a hang its lock stays taken, and the fixture's close would hang too.
    index = Index(settings.paths.index_db)
    kv = KVStore(index, clock=clock)
    purger = kv.start_purger(interval=0.001)
    assert in_round.wait(30)

    def app_closes_inside_its_transaction() -> None:
        with index.write() if held == "write" else index.read():
            lock_taken.set()
            kv.close()

    app = threading.Thread(target=app_closes_inside_its_transaction, daemon=True)
    app.start()
    app.join(30)
    if app.is_alive():  # (the index is left open: closing it would wait for the hung thread)
        pytest.fail("close() waited for a purge round that waited for the index's lock")
    purger.join(30)  # the round got the lock once the transaction ended, found the store closed
    assert purger.state is PurgerState.STOPPED
    assert purger.purged == 0
    with pytest.raises(StoreClosedError):
        kv.load("x")
    index.close()


def test_a_dropped_store_stops_its_purger(index: Index, clock: FakeClock) -> None:
    """An app making a KVStore with a purger per window (or per call) that forgets close() must
    not keep each one alive for ever, hot tier and all, with a thread purging it: the purger's
    thread held the store, so it was never collected and the thread never stopped."""
    kv = KVStore(index, clock=clock, hot_items=10)
    kv.save("k", "x" * 1000, ttl=1)
    purger = kv.start_purger(interval=3600)
    ref = weakref.ref(kv)
    del kv
    gc.collect()
    assert ref() is None
    purger.join(timeout=30)  # (a bound, not a timing assertion: the thread is woken at once)
    assert purger.state is PurgerState.STOPPED
    with pytest.raises(StoreClosedError):
        purger.purge_once()


def test_an_unexpected_purge_error_is_logged_and_the_purger_goes_on(
    index: Index, clock: FakeClock, monkeypatch, caplog
) -> None:
    """A purge round that raised anything but a LocalStoreError ended the thread silently (its
    state still RUNNING): expired items then stayed for the life of the process."""
    kv = KVStore(index, clock=clock)
    kv.save("e", 1, ttl=1)
    clock.now += 1
    real = KVStore.purge_expired
    calls = 0

    def fails_once(self: KVStore) -> int:  # (injects the fault; the purge itself is real)
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected")
        return real(self)

    monkeypatch.setattr(KVStore, "purge_expired", fails_once)
    purger = kv.start_purger(interval=0.01)
    try:
        # The failed round, then one that purges (a bound, not a timing assertion).
        assert purger.wait_rounds(2, timeout=30)
        assert purger.purged == 1
        assert purger.state is PurgerState.RUNNING
    finally:
        kv.close()
    assert "app-data purge failed unexpectedly" in caplog.text
    assert "RuntimeError: injected" in caplog.text


def test_a_purge_failing_round_after_round_is_logged_once_and_its_recovery_too(
    index: Index,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The purger logged a WARNING every round (each minute) for as long as purges failed: a day
    of a full disk was 1,440 of them. Now as the index maintainer: the first failure of a streak
    at once, then at most every 10 minutes, and the round that works again says so."""
    kv = KVStore(index, clock=clock)
    kv.save("e", 1, ttl=1)
    clock.now += 1
    real = KVStore.purge_expired
    calls = 0

    def full_disk_twice(self: KVStore) -> int:  # (injects the fault; the purge itself is real)
        nonlocal calls
        calls += 1
        if calls <= 5 or calls == 7:  # a streak of 5 failed rounds, one good round, then 1
            raise IndexStoreError("database or disk is full")
        return real(self)

    monkeypatch.setattr(KVStore, "purge_expired", full_disk_twice)
    caplog.set_level(logging.WARNING, logger="localstore.kv")
    purger = kv.start_purger(interval=0.01)
    try:
        assert purger.wait_rounds(8, timeout=30)  # (a bound, not a timing assertion)
    finally:
        kv.close()
    said = [r.getMessage() for r in caplog.records if r.name == "localstore.kv"]
    assert len(said) == 4, said
    assert said[0].startswith("app-data purge failed (1 round(s) in a row: database or disk")
    assert said[1] == "app-data purge works again after 5 failed round(s)"
    assert said[2].startswith("app-data purge failed (1 round(s) in a row")  # a new streak
    assert said[3] == "app-data purge works again after 1 failed round(s)"
    assert purger.purged == 1


def test_a_failure_streak_is_logged_again_every_ten_minutes() -> None:
    """The rule the purger and the index maintainer share (one helper, one clock to drive)."""
    assert FAILURE_LOG_EVERY_S == MAINTENANCE_LOG_EVERY_S == 600
    now = 0.0
    streak = FailureStreak(clock=lambda: now)
    logged = []
    for second in range(0, 1800, 60):  # a failed round a minute for 30 minutes
        now = float(second)
        if streak.failed():
            logged.append(second)
    assert logged == [0, 600, 1200] and streak.count == 30
    assert streak.succeeded() == 30 and streak.succeeded() == 0
    assert streak.failed()  # the next failure starts a new streak: logged at once


def test_purge_once_and_bad_interval(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock)
    kv.save("x", 1, ttl=1)
    purger = Purger(kv, interval=60)
    assert purger.purge_once() == 0
    clock.now += 1
    assert purger.purge_once() == 1
    purger.stop()
    purger.join()
    with pytest.raises(InvalidInputError):
        Purger(kv, interval=0)


def test_a_purger_whose_store_was_closed_ends_as_stopped(index: Index) -> None:
    """An app-made purger's thread ended at its first round after the store's close, but its
    state still said RUNNING, so an app's status page showed a purger that no longer ran."""
    kv = KVStore(index)
    purger = Purger(kv, interval=0.05)
    purger.start()
    assert purger.state is PurgerState.RUNNING
    kv.close()
    assert purger._thread is not None
    purger._thread.join(30)  # not purger.join(): that sets the state itself
    assert not purger._thread.is_alive()
    assert purger.state is PurgerState.STOPPED


@pytest.mark.parametrize("interval", [float("nan"), float("inf"), 1e300, "60", None, True])
def test_a_purge_interval_that_is_not_a_usable_number_is_refused(
    index: Index, interval: Any
) -> None:
    # NaN made every wait return at once (a thread purging in a busy loop); inf or 1e300 made the
    # wait raise OverflowError in the thread, which died with its state still RUNNING.
    kv = KVStore(index)
    with pytest.raises(InvalidInputError) as info:
        kv.start_purger(interval=interval)
    assert info.value.hint
    kv.close()


def test_purge_in_batches(index: Index, clock: FakeClock) -> None:
    kv = KVStore(index, clock=clock, hot_items=0)
    with index.write():
        for i in range(1200):
            kv.save(f"k{i:05}", i, ttl=1, tags=["x"])
    clock.now += 2
    assert kv.purge_expired() == 1200
    with index.read() as cur:
        assert cur.execute("SELECT count(*) FROM kv_tags").fetchall()[0][0] == 0


# --- rotation after crashes -------------------------------------------------------------------------


@pytest.fixture
def ekv(index: Index, creds: CredentialStore) -> Iterator[KVStore]:
    store = KVStore(index, credentials=creds)
    for i in range(100):
        store.save(f"s/{i}", f"secret {i}", encrypt=True)
    yield store
    store.close()


def _all_readable(index: Index, creds: CredentialStore) -> None:
    fresh = KVStore(index, credentials=creds, hot_items=0)  # a new process: no cached keys
    for i in range(100):
        assert fresh.load(f"s/{i}") == f"secret {i}"


def _states(index: Index) -> dict[str, str]:
    with index.read() as cur:
        return {str(k): str(s) for k, s in cur.execute("SELECT kid, state FROM kv_keys")}


@pytest.mark.keychain
def test_crash_after_switching_keys(ekv: KVStore, index: Index, creds: CredentialStore) -> None:
    old = ekv.current_key_id()
    assert old is not None  # the fixture's encrypted items made the first key
    new = ekv._create_key(rotate=True)  # the crash: nothing re-sealed yet
    assert _states(index) == {old: "retiring", new: "current"}
    _all_readable(index, creds)
    ekv.save("after", "written with the new key", encrypt=True)
    report = ekv.rotate_data_key()
    assert report.retired == tuple(sorted([old, new]))
    assert list(_states(index).values()) == ["current"]
    _all_readable(index, creds)
    assert ekv.load("after") == "written with the new key"


@pytest.mark.keychain
def test_crash_in_the_middle_of_resealing(
    ekv: KVStore, index: Index, creds: CredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = ekv.current_key_id()
    calls = {"n": 0}
    real = DataKeys.reseal

    def crashing_reseal(self: DataKeys, envelope: bytes, kid: str, *, aad: bytes = b"") -> bytes:
        calls["n"] += 1
        if calls["n"] > 70:  # after the first batch committed
            raise CryptoError("injected crash")
        return real(self, envelope, kid, aad=aad)

    monkeypatch.setattr(DataKeys, "reseal", crashing_reseal)
    with pytest.raises(CryptoError, match="injected"):
        ekv.rotate_data_key()
    monkeypatch.setattr(DataKeys, "reseal", real)
    assert creds.find(f"datakey:{old}") is not None  # not retired while items still use it
    _all_readable(index, creds)
    report = ekv.rotate_data_key()
    assert old in report.retired
    assert creds.find(f"datakey:{old}") is None
    _all_readable(index, creds)


@pytest.mark.keychain
def test_a_damaged_item_does_not_stop_key_rotation(
    ekv: KVStore, index: Index, creds: CredentialStore
) -> None:
    """One encrypted item whose ciphertext fails to decrypt (a damaged page, a bad copy) made
    every rotate_data_key() raise DecryptionError half way: the old key could never be retired
    and nothing said which item was at fault. It is now skipped and named in the report."""
    old = ekv.current_key_id()
    with index.write() as cur:  # the fault: one flipped bit in one item's ciphertext
        value = bytearray(
            cur.execute("SELECT value FROM kv_items WHERE key = 's/7'").fetchall()[0][0]
        )
        value[-1] ^= 1
        cur.execute("UPDATE kv_items SET value = ? WHERE key = 's/7'", (bytes(value),))
    report = ekv.rotate_data_key()
    assert report.reencrypted == 99
    assert report.damaged == ("s/7",)
    assert old not in report.retired  # the damaged item still names it
    assert creds.find(f"datakey:{old}") is not None
    fresh = KVStore(index, credentials=creds, hot_items=0)
    for i in range(100):
        if i != 7:
            assert fresh.load(f"s/{i}") == f"secret {i}"
    with pytest.raises(DecryptionError) as info:
        fresh.load("s/7")
    assert "'s/7'" in str(info.value) and "delete" in (info.value.hint or "")
    ekv.delete("s/7")  # what the hint says: its last item gone, the old key is retired at once
    assert creds.find(f"datakey:{old}") is None
    report = ekv.rotate_data_key()
    assert old not in report.retired and report.damaged == ()
    assert _states(index) == {report.key_id: "current"}


@pytest.mark.keychain
@pytest.mark.parametrize(
    "held", ["not a key", base64.urlsafe_b64encode(b"k" * 16).decode()], ids=["text", "short"]
)
def test_a_malformed_data_key_in_the_keychain_does_not_stop_key_rotation(
    ekv: KVStore, index: Index, creds: CredentialStore, held: str
) -> None:
    """A data key's keychain item changed outside LocalStore (not a base64url 256-bit key) made
    every load raise a CryptoError with no hint, and every rotate_data_key() raise it half way,
    each attempt leaving one more key behind. It counts as a missing key now."""
    old = ekv.current_key_id()
    assert old is not None
    name = f"datakey:{old}"
    original = creds.get(name)
    creds.set(name, held)
    fresh = KVStore(index, credentials=creds, hot_items=0)  # a new process: no cached keys
    with pytest.raises(KeyNotFoundError) as info:
        fresh.load("s/1")
    assert old in str(info.value) and "restore" in (info.value.hint or "")
    report = fresh.rotate_data_key()
    assert (report.reencrypted, report.unreadable, report.missing_keys) == (0, 100, (old,))
    assert old not in report.retired  # its items still need it: kept, row and keychain item
    assert _states(index) == {old: "retiring", report.key_id: "current"}
    assert creds.get(name) == held
    fresh.save("new", "sealed with the new key", encrypt=True)
    assert KVStore(index, credentials=creds, hot_items=0).load("new") == "sealed with the new key"
    creds.set(name, original)  # the hint's way out: the next rotation re-seals and retires it
    report = KVStore(index, credentials=creds, hot_items=0).rotate_data_key()
    assert report.reencrypted == 101 and old in report.retired and report.missing_keys == ()
    _all_readable(index, creds)


@pytest.mark.keychain
def test_more_damaged_items_than_sqlite_takes_variables_do_not_stop_rotation(
    ekv: KVStore, index: Index, creds: CredentialStore
) -> None:
    """Rotation skipped damaged items with ``key NOT IN (?, ?, ...)``, one variable per item: past
    SQLite's variable limit (32,766; a keychain entry that is the wrong key for tens of thousands
    of items) every rotation failed. The limit is lowered here so a few dozen items show it."""
    old = ekv.current_key_id()
    with index.write() as cur:  # the fault: every even item's ciphertext has one flipped bit
        for i in range(0, 100, 2):
            value = bytearray(
                cur.execute("SELECT value FROM kv_items WHERE key = ?", (f"s/{i}",)).fetchall()[0][
                    0
                ]
            )
            value[-1] ^= 1
            cur.execute("UPDATE kv_items SET value = ? WHERE key = ?", (bytes(value), f"s/{i}"))
        cur.connection.limit(apsw.SQLITE_LIMIT_VARIABLE_NUMBER, 16)  # 50 damaged items > 16
    report = ekv.rotate_data_key()
    assert report.reencrypted == 50
    assert report.damaged == tuple(sorted(f"s/{i}" for i in range(0, 100, 2)))
    assert old not in report.retired and creds.find(f"datakey:{old}") is not None
    fresh = KVStore(index, credentials=creds, hot_items=0)
    for i in range(1, 100, 2):
        assert fresh.load(f"s/{i}") == f"secret {i}"
    # Run again: the damaged ones are skipped again, nothing else is left to re-seal.
    again = ekv.rotate_data_key()
    assert (again.reencrypted, again.damaged) == (50, report.damaged)


@pytest.mark.keychain
def test_crash_before_deleting_a_retired_key(
    ekv: KVStore, index: Index, creds: CredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = ekv.current_key_id()
    assert old is not None  # the fixture's encrypted items made the first key

    def crashing_delete(self: DataKeys, kid: str) -> None:
        raise CryptoError("injected crash")

    real = DataKeys.delete
    monkeypatch.setattr(DataKeys, "delete", crashing_delete)
    with pytest.raises(CryptoError):
        ekv.rotate_data_key()
    monkeypatch.setattr(DataKeys, "delete", real)
    assert _states(index)[old] == "retired"
    _all_readable(index, creds)
    ekv.recover_keys()
    assert old not in _states(index)
    assert creds.find(f"datakey:{old}") is None
    _all_readable(index, creds)


def _damage(index: Index, key: str) -> None:
    """Flip one bit of an item's ciphertext: rotation then skips it and it keeps its old key."""
    with index.write() as cur:
        value = bytearray(
            cur.execute("SELECT value FROM kv_items WHERE key = ?", (key,)).fetchall()[0][0]
        )
        value[-1] ^= 1
        cur.execute("UPDATE kv_items SET value = ? WHERE key = ?", (bytes(value), key))


@pytest.mark.keychain
def test_a_purge_that_removes_the_last_item_of_a_retiring_key_retires_it(
    index: Index, creds: CredentialStore, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    """A rotated key stays 'retiring', in the keychain, while an item sealed with it remains (one
    rotation skipped: damaged, or its key missing). When those items expired and were purged
    instead, the key was retired only by the NEXT rotation: the keychain kept a key for nothing,
    for as long as no one rotated again. The purge that removes the last one now retires it."""
    kv = KVStore(index, credentials=creds, clock=clock, hot_items=0)
    for i in range(2):
        kv.save(f"session/{i}", f"token {i}", encrypt=True, ttl=10 * (i + 1))
        _damage(index, f"session/{i}")
    old = kv.current_key_id()
    report = kv.rotate_data_key()
    assert report.damaged == ("session/0", "session/1") and old not in report.retired
    new = report.key_id
    kv.save("kept", "sealed with the new key", encrypt=True)
    purger = kv.start_purger(interval=3600)  # its rounds are run by hand below
    request.addfinalizer(kv.close)  # (its thread must end even if an assertion fails)
    clock.now += 15
    assert purger.purge_once() == 1
    assert _states(index) == {old: "retiring", new: "current"}  # session/1 still needs it
    assert creds.find(f"datakey:{old}") is not None
    clock.now += 10
    assert purger.purge_once() == 1
    assert _states(index) == {new: "current"}
    assert creds.find(f"datakey:{old}") is None
    assert creds.list_names(include_internal=True) == [f"datakey:{new}"]
    fresh = KVStore(index, credentials=creds, clock=clock, hot_items=0)  # no cached keys
    assert fresh.load("kept") == "sealed with the new key"
    assert kv.rotate_data_key().retired == (new,)  # nothing left over for the next rotation
    fresh.close()
    kv.close()


@pytest.mark.keychain
def test_a_crash_before_a_purge_deletes_a_retired_key(
    index: Index, creds: CredentialStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retired by a purge as by a rotation: 'retired' in the purge's own transaction, then the
    keychain entry deleted, then the row. A crash in between leaves the key to the next purge
    (or recover_keys, or rotation); no item needs it."""
    kv = KVStore(index, credentials=creds, clock=clock, hot_items=0)
    kv.save("session", "token", encrypt=True, ttl=10)
    _damage(index, "session")
    old = kv.current_key_id()
    new = kv.rotate_data_key().key_id
    kv.save("kept", "sealed with the new key", encrypt=True)
    clock.now += 20

    def crashing_delete(self: DataKeys, kid: str) -> None:
        raise CryptoError("injected crash")

    real = DataKeys.delete
    monkeypatch.setattr(DataKeys, "delete", crashing_delete)
    with pytest.raises(CryptoError):
        kv.purge_expired()
    monkeypatch.setattr(DataKeys, "delete", real)
    assert kv.keys() == ["kept"]  # the purge itself was committed
    assert _states(index) == {old: "retired", new: "current"}
    assert creds.find(f"datakey:{old}") is not None
    assert kv.purge_expired() == 0  # the next round finishes the job
    assert _states(index) == {new: "current"}
    assert creds.find(f"datakey:{old}") is None
    assert KVStore(index, credentials=creds, clock=clock, hot_items=0).load("kept") == (
        "sealed with the new key"
    )
    kv.close()


@pytest.mark.keychain
@pytest.mark.parametrize("way", ["delete", "save again"])
def test_replacing_the_last_item_of_a_retiring_key_retires_it(
    index: Index, creds: CredentialStore, clock: FakeClock, way: str
) -> None:
    """A damaged item keeps its old data key through a rotation, and its DecryptionError says to
    delete the item and save it again. Doing so (or saving over it) left that key 'retiring', in
    the keychain, until the next rotation: the ciphertext of the deleted secret, still in the
    index file's free pages (no secure_delete), stayed decryptable by the keychain's key for as
    long as no one rotated again. The delete or save that takes its last item now retires it, as
    a purge does."""
    kv = KVStore(index, credentials=creds, clock=clock, hot_items=0)
    kv.save("token", "old secret", encrypt=True)
    _damage(index, "token")
    old = kv.current_key_id()
    report = kv.rotate_data_key()
    assert report.damaged == ("token",) and old not in report.retired
    with pytest.raises(DecryptionError):
        kv.load("token")
    if way == "delete":
        assert kv.delete("token")
    kv.save("token", "new secret", encrypt=True)
    assert _states(index) == {report.key_id: "current"}
    assert creds.find(f"datakey:{old}") is None
    assert creds.list_names(include_internal=True) == [f"datakey:{report.key_id}"]
    assert KVStore(index, credentials=creds, clock=clock, hot_items=0).load("token") == (
        "new secret"
    )
    kv.close()


@pytest.mark.keychain
def test_an_encrypted_save_reads_the_keychain_outside_its_write(
    index: Index, creds: CredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keychain read is a D-Bus round trip, and a locked keychain may wait for the user to
    unlock it: made inside the write transaction, it held the index (every thread of this
    process) and SQLite's write lock (every other process) for as long."""
    KVStore(index, credentials=creds).save("first", 1, encrypt=True)  # the data key exists
    fresh = KVStore(index, credentials=creds)  # a new process: the key is not in memory yet
    in_write: list[bool] = []
    real_get = creds.get

    def watched_get(name: str) -> str:
        in_write.append(index.write_open)
        return real_get(name)

    monkeypatch.setattr(creds, "get", watched_get)
    fresh.save("k", {"a": 1}, encrypt=True)
    assert in_write == [False]
    assert KVStore(index, credentials=creds, hot_items=0).load("k") == {"a": 1}


@pytest.mark.keychain
def test_saves_during_rotation_stay_readable(
    ekv: KVStore, index: Index, creds: CredentialStore
) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set() or i < 20:
                ekv.save(f"w/{i % 30}", f"w{i}", encrypt=True)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        ekv.rotate_data_key()
        ekv.rotate_data_key()
    finally:
        stop.set()
        t.join()
    assert not errors
    ekv.rotate_data_key()
    fresh = KVStore(index, credentials=creds, hot_items=0)
    for k in fresh.keys("w/"):
        assert fresh.load(k).startswith("w")
    assert list(_states(index).values()) == ["current"]
    _all_readable(index, creds)


# --- races between threads and processes ----------------------------------------------------------


@pytest.mark.parametrize("racer", ["save", "delete"])
def test_a_racing_write_is_not_undone_by_an_older_save(
    index: Index, monkeypatch: pytest.MonkeyPatch, racer: str
) -> None:
    kv = KVStore(index, hot_items=10)
    kv.save("k", "first")
    truth = KVStore(index, hot_items=0)
    committed, racer_done = threading.Event(), threading.Event()
    real_write = kv._write_item

    def slow_write(*args: Any) -> Any:
        result = real_write(*args)
        if threading.current_thread().name == "older":
            # Widen the gap after the older save's commit, where it used to re-take the lock to
            # fill the hot tier: the racer now commits and caches first.
            committed.set()
            assert racer_done.wait(30)
        return result

    monkeypatch.setattr(kv, "_write_item", slow_write)
    older = threading.Thread(target=lambda: kv.save("k", "older"), name="older")
    older.start()
    assert committed.wait(30)

    def race() -> None:
        if racer == "save":
            kv.save("k", "newer")
        else:
            kv.delete("k")
        racer_done.set()

    newer = threading.Thread(target=race, name="newer")
    newer.start()
    older.join()
    newer.join()
    expected = truth.load("k", "<missing>")
    assert expected == ("newer" if racer == "save" else "<missing>")
    assert kv.load("k", "<missing>") == expected
    assert kv.exists("k") == (racer == "save")


def test_a_read_that_raced_another_process_write_is_not_cached(
    index: Index, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = KVStore(index, hot_items=0)
    writer.save("k", "v1")
    writer.save("other", 0)
    mine = KVStore(index, hot_items=10)  # its tier is empty: the next load of k reads the index
    other_index = Index(settings.paths.index_db)
    try:
        theirs = KVStore(other_index, hot_items=0)
        read_done, go = threading.Event(), threading.Event()
        real_read = mine._read_item

        def paused_read(*args: Any) -> Any:
            result = real_read(*args)
            if threading.current_thread().name == "slow-reader":
                read_done.set()  # holds the old row, not yet cached
                assert go.wait(30)
            return result

        monkeypatch.setattr(mine, "_read_item", paused_read)
        reader = threading.Thread(target=lambda: mine.load("k"), name="slow-reader")
        reader.start()
        assert read_done.wait(30)
        theirs.save("k", "v2")
        # Another thread of ours notices the foreign commit and records its data_version; the
        # slow reader's old row must not be cached after that, or nothing would evict it.
        assert mine.load("other") == 0
        go.set()
        reader.join()
        assert mine.load("k") == "v2"
    finally:
        other_index.close()


@pytest.mark.parametrize("failing", ["save", "delete", "purge"])
def test_a_failed_commit_does_not_hide_the_next_foreign_write(
    index: Index, settings: Settings, clock: FakeClock, failing: str
) -> None:
    mine = KVStore(index, clock=clock, hot_items=10)
    mine.save("k", "v1")
    mine.save("x", "x", ttl=1)
    assert mine.load("k") == "v1"  # cached
    clock.now += 2
    index.conn.setcommithook(lambda: True)  # the next COMMIT fails (like a full disk or I/O error)
    try:
        with pytest.raises(IndexStoreError):
            if failing == "save":
                mine.save("lost", "never committed")
            elif failing == "delete":
                mine.delete("x")
            else:
                mine.purge_expired()
    finally:
        index.conn.setcommithook(None)
    other_index = Index(settings.paths.index_db)
    try:
        KVStore(other_index, clock=clock, hot_items=0).save("k", "v2")
    finally:
        other_index.close()
    assert mine.load("k") == "v2"
    assert not mine.exists("lost")


@pytest.mark.parametrize("enclosing", ["transaction", "savepoint"])
def test_a_save_inside_a_callers_rolled_back_write_is_not_served(
    index: Index, settings: Settings, clock: FakeClock, enclosing: str
) -> None:
    """An app may put kv writes inside its own index.write() with other work; when that
    transaction (or a savepoint around the save) rolls back, the hot tier and the generation
    count must not keep what was rolled back."""
    mine = KVStore(index, clock=clock, hot_items=10)
    mine.save("k", "v1")
    assert mine.load("k") == "v1"  # cached
    with pytest.raises(RuntimeError), index.write():
        if enclosing == "transaction":
            mine.save("k", "uncommitted")
            mine.save("new", "uncommitted")
            raise RuntimeError("the caller aborts its transaction")
        with index.write():  # (a savepoint inside the caller's transaction)
            mine.save("k", "uncommitted")
            mine.save("new", "uncommitted")
            raise RuntimeError("the caller aborts its savepoint")
    assert mine.load("k") == "v1"
    assert not mine.exists("new")
    other_index = Index(settings.paths.index_db)
    try:
        KVStore(other_index, clock=clock, hot_items=0).save("k", "v2")
    finally:
        other_index.close()
    assert mine.load("k") == "v2"  # the foreign write is noticed


class _WatchedLock:
    """The index's lock, reporting when the thread named ``reader`` has to wait for it.

    Its wait is bounded: a lock-order deadlock then fails the test instead of hanging it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.reader_waits = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.current_thread().name != "reader":
            return bool(self._inner.acquire(blocking, timeout))
        if self._inner.acquire(False):
            return True
        self.reader_waits.set()
        if not self._inner.acquire(True, 10):
            raise TimeoutError("the reader waited 10 s for the index lock")
        return True

    def release(self) -> None:
        self._inner.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_a_save_inside_a_callers_write_does_not_deadlock_with_a_reader(
    index: Index, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's index.write() holds the index lock and saves (the store's lock) while another
    thread loads: both locks must be taken in one order, or each thread waits for the other."""
    kv = KVStore(index, clock=clock, hot_items=10)
    kv.save("k", "v1")
    watched = _WatchedLock(index._lock)
    monkeypatch.setattr(index, "_lock", watched)
    in_write = threading.Event()
    errors: list[BaseException] = []
    loaded: list[Any] = []

    def caller() -> None:
        try:
            with index.write():
                in_write.set()
                assert watched.reader_waits.wait(10)
                kv.save("k", "v2")
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            assert in_write.wait(10)
            loaded.append(kv.load("k"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller), threading.Thread(target=reader, name="reader")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert loaded == ["v2"]  # the reader waited for the caller's transaction
