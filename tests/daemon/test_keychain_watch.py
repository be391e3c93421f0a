"""KeychainWatch's rule (sync/_keychain_watch.py), with the lock state and the clock given."""

from __future__ import annotations

from sync._keychain_watch import KeychainWatch


class _Keychain:
    def __init__(self) -> None:
        self.locked: bool | None = True
        self.now = 0.0

    def watch(self) -> KeychainWatch:
        return KeychainWatch(lambda: self.locked, every_s=2.0, clock=lambda: self.now)


def test_an_unlock_before_the_first_look_ends_the_wait() -> None:
    # Sync failed on the locked keychain, and the person unlocked it before the watch first
    # looked (a tick later): it saw only "unlocked", and sync waited a minute or an hour.
    kc = _Keychain()
    watch = kc.watch()
    assert not watch.opened(waiting=False)
    kc.locked = False
    assert watch.opened(waiting=True)
    kc.now += 2
    assert not watch.opened(waiting=True)  # (once: the sync it asked for runs now)


def test_a_lock_seen_then_an_unlock_ends_the_wait_once_per_unlock() -> None:
    kc = _Keychain()
    watch = kc.watch()
    assert not watch.opened(waiting=True)
    kc.now += 1
    kc.locked = False
    assert not watch.opened(waiting=True)  # (looks at most every 2 s)
    kc.now += 1
    assert watch.opened(waiting=True)
    kc.now += 2
    assert not watch.opened(waiting=True)
    kc.locked, kc.now = True, kc.now + 2
    assert not watch.opened(waiting=True)
    kc.locked, kc.now = False, kc.now + 2
    assert watch.opened(waiting=True)


def test_a_failure_with_the_keychain_open_is_retried_once_then_waits_for_a_lock() -> None:
    # Another keychain failure (not a lock): one retry, not one every 2 s.
    kc = _Keychain()
    kc.locked = False
    watch = kc.watch()
    assert watch.opened(waiting=True)
    for _ in range(5):
        kc.now += 2
        assert not watch.opened(waiting=True)
    kc.locked = None  # (the Secret Service gone: cannot tell, taken as closed)
    kc.now += 2
    assert not watch.opened(waiting=True)
    kc.locked, kc.now = False, kc.now + 2
    assert watch.opened(waiting=True)
    # A cycle worked (no wait); the next wait starts again from "closed".
    assert not watch.opened(waiting=False)
    kc.now += 2
    assert watch.opened(waiting=True)
