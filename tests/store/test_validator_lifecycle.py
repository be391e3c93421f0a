"""An app's validator over a store's life: where it runs, and when blueprints are judged again."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import InvalidInputError, InvalidYAMLError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher


class _Gate:
    """A validator that stops inside its call until released (no timing: two events)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.armed = True
        self.judged: list[dict[str, Any]] = []

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
        self.judged.append(dict(doc))
        if doc.get("slow") and self.armed:
            self.entered.set()
            assert self.release.wait(30), "the test never released the validator"
        return [] if doc.get("ok", True) else ["ok is false"]


@pytest.fixture
def gate() -> Iterator[_Gate]:
    g = _Gate()
    yield g
    g.release.set()  # a failing test must not leave a thread parked in the validator


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as exc:  # handed to the test thread to assert on
            out.append(exc)

    t = threading.Thread(target=run, name="slow-save")
    t.start()
    return t, out


def test_another_connection_writes_while_a_slow_validator_runs(home: Path, gate: _Gate) -> None:
    """A validator that took 2 s held the home's write lock for 2 s: every other writer (the
    daemon, the CLI) waited, and past its busy timeout failed. It runs before the lock now."""
    with (
        localstore.open(home=home, validator=gate, validator_name="gate") as app,
        # Another connection to the same index, with a short busy timeout: if the app's save
        # held the write lock while its validator runs, this save fails with a busy error
        # instead of waiting (the assertion is on the outcome, not on a duration).
        localstore.open(home=home, busy_timeout_ms=200, reconcile=False) as other,
    ):
        worker, out = _in_thread(lambda: app.save("a/slow", "slow: true\nok: false\n"))
        assert gate.entered.wait(30)
        try:
            other.save("b/meanwhile", "x: 1\n")  # must not wait for the validator
        finally:
            gate.release.set()
            worker.join()
        saved = out[0]
        assert isinstance(saved, localstore.Blueprint), saved
        assert saved.valid is False and saved.problems == ("ok is false",)
        assert app.load("a/slow").valid is False
        assert {i.path for i in app.list()} == {
            "a/slow.blueprint.yaml",
            "b/meanwhile.blueprint.yaml",
        }


def test_a_meta_only_save_is_judged_before_the_lock_too(home: Path, gate: _Gate) -> None:
    """``content=None`` keeps the current YAML: one another process recorded (judged by no
    validator) is read and judged before the lock."""
    with localstore.open(home=home, validator=gate, validator_name="gate") as app:
        with localstore.open(home=home, busy_timeout_ms=200, reconcile=False) as other:
            other.save("a/slow", "slow: true\n")  # the CLI's save: judged by none
            worker, out = _in_thread(lambda: app.save("a/slow", name="renamed"))
            assert gate.entered.wait(30)
            try:
                other.save("b/meanwhile", "x: 1\n")
            finally:
                gate.release.set()
                worker.join()
        assert isinstance(out[0], localstore.Blueprint), out[0]
        assert app.load("a/slow").meta.name == "renamed"


def test_a_meta_only_save_or_move_keeps_the_rows_verdict(home: Path, gate: _Gate) -> None:
    """The YAML of a meta-only save or a move is the one the row's verdict was given on, by this
    validator's name: it is not judged again (before, a move inside a sync pass's transaction,
    a blueprint moved off a path the server gave to another, ran the validator in the lock)."""
    with localstore.open(home=home, validator=gate, validator_name="gate") as app:
        app.save("a/one", "x: 1\nok: false\n")
    gate.judged.clear()
    # Reopened: no verdict of the save is remembered, the row's stands.
    with localstore.open(home=home, validator=gate, validator_name="gate") as app:
        app.save("a/one", name="renamed")
        moved = app.move("a/one", "b/one")
        assert gate.judged == []
        assert moved.problems == ("ok is false",) and not moved.valid
        assert app.load("b/one").meta.name == "renamed"


def test_bad_yaml_found_before_the_lock_still_changes_nothing(home: Path, gate: _Gate) -> None:
    with localstore.open(home=home, validator=gate, validator_name="gate") as app:
        app.save("a/one", "x: 1\n")
        with pytest.raises(InvalidYAMLError):
            app.save("a/one", "x: [1\n")
        assert app.load("a/one").content == "x: 1\n"
        assert [r.rev for r in app.history("a/one")] == [1]


def test_the_watcher_judges_an_edit_before_the_lock(home: Path, gate: _Gate) -> None:
    """An editor's change the watcher ingests: the app's validator runs before the batch's
    write transaction, so the daemon or the CLI can write meanwhile."""
    with localstore.open(home=home, validator=gate, validator_name="gate") as app:
        app.save("a/one", "x: 1\n")
        watcher = Watcher(app)
        watcher.start()
        try:
            (app.root / "a" / "one.blueprint.yaml").write_text("slow: true\nok: false\n")
            assert gate.entered.wait(30)
            with localstore.open(home=home, busy_timeout_ms=200, reconcile=False) as other:
                try:
                    other.save("b/meanwhile", "x: 1\n")
                finally:
                    gate.release.set()
            assert watcher.wait_idle()
        finally:
            gate.release.set()
            watcher.stop()
            watcher.join()
        got = app.load("a/one")
        assert got.content == "slow: true\nok: false\n" and got.problems == ("ok is false",)


def _close_stores(things: list[object]) -> None:
    for thing in things:
        if isinstance(thing, BlueprintStore):
            thing.close()


def test_the_open_time_reconcile_judges_the_files_before_the_lock(home: Path, gate: _Gate) -> None:
    """Files edited or added while the app was closed: opening it ingests them, and runs its
    validator on them before the reconcile's write transaction (many files after a while
    closed held every other process's writes up for as long)."""
    with localstore.open(home=home, validator=gate, validator_name="gate") as app:
        app.save("a/one", "x: 1\n")
        root = app.root
    (root / "a" / "one.blueprint.yaml").write_text("slow: true\nok: false\n")
    (root / "a" / "two.blueprint.yaml").write_text("slow: true\nnew: 1\n")
    gate.judged.clear()
    with contextlib.ExitStack() as cleanup:
        # Opened first: its own open must not wait for the app's reconcile either.
        other = cleanup.enter_context(
            localstore.open(home=home, busy_timeout_ms=200, reconcile=False)
        )
        worker, out = _in_thread(
            lambda: localstore.open(home=home, validator=gate, validator_name="gate")
        )
        # (Last out, a failed test's: the store opened on the thread, once the thread is done.)
        cleanup.callback(_close_stores, out)
        cleanup.callback(worker.join)
        cleanup.callback(gate.release.set)
        assert gate.entered.wait(30)
        other.save("b/meanwhile", "x: 1\n")  # before: IndexStoreError, the index is locked
        gate.release.set()
        worker.join()
        opened = out.pop()
    assert isinstance(opened, BlueprintStore), opened
    with opened as app:
        one, two = app.load("a/one"), app.load("a/two")
        # Recorded as before: the validator's verdicts, one revision each.
        assert one.content == "slow: true\nok: false\n" and one.problems == ("ok is false",)
        assert two.valid and [r.rev for r in app.history("a/two")] == [1]
        assert [r.rev for r in app.history("a/one")] == [2, 1]
        assert app.resolve("b/meanwhile").valid
    # Each file judged once, ahead: the ingest inside took those verdicts.
    assert sorted(d.get("new", 0) for d in gate.judged if d.get("slow")) == [0, 1]


def _no_debug(doc: Mapping[str, Any]) -> list[str]:
    return ["debug must be off"] if doc.get("debug") else []


def _no_beta(doc: Mapping[str, Any]) -> list[str]:
    return ["beta is not allowed"] if doc.get("beta") else []


def _stamps(store: localstore.BlueprintStore) -> dict[str, tuple[int, int]]:
    """Each blueprint's revision and its YAML file's mtime: what a re-judging must not change."""
    return {i.path: (i.rev, (store.root / i.path).stat().st_mtime_ns) for i in store.list()}


def test_a_validator_registered_later_judges_the_blueprints_saved_before(home: Path) -> None:
    """Blueprints saved before a validator was registered stayed valid under rules they break;
    opening with it judges them, without a revision or a file write."""
    with localstore.open(home=home) as plain:
        plain.save("a/on", "debug: true\n")
        plain.save("a/off", "debug: false\n")
        before = _stamps(plain)
    with localstore.open(home=home, validator=_no_debug) as app:
        assert app.load("a/on").problems == ("debug must be off",)
        assert not app.resolve("a/on").valid and app.resolve("a/off").valid
        assert {i.path: i.valid for i in app.list()} == {
            "a/on.blueprint.yaml": False,
            "a/off.blueprint.yaml": True,
        }
        assert _stamps(app) == before
        assert app.revalidate().judged == 0  # all judged by this validator already


def test_new_rules_under_a_new_name_are_applied_at_open(home: Path) -> None:
    with localstore.open(home=home, validator=_no_debug, validator_name="rules-1") as app:
        app.save("a/one", "debug: true\nbeta: true\n")
        assert app.load("a/one").problems == ("debug must be off",)
    with localstore.open(home=home, validator=_no_beta, validator_name="rules-1") as same:
        # The same name says the same rules: nothing is judged again until asked.
        assert same.load("a/one").problems == ("debug must be off",)
        report = same.revalidate(every=True)
        assert report.judged == 1 and report.now_invalid == report.now_valid == []
        assert same.load("a/one").problems == ("beta is not allowed",)
    with localstore.open(home=home, validator=_no_beta, validator_name="rules-2") as other:
        assert other.load("a/one").problems == ("beta is not allowed",)


def test_revalidate_without_a_validator_drops_the_rules(home: Path) -> None:
    with localstore.open(home=home, validator=_no_debug) as app:
        app.save("a/on", "debug: true\n")
    with localstore.open(home=home) as plain:
        assert not plain.resolve("a/on").valid  # opening without one changes nothing
        report = plain.revalidate()
        assert report.now_valid == ["a/on.blueprint.yaml"] and report.judged == 1
        assert plain.resolve("a/on").valid


def test_an_edit_recorded_without_the_validator_is_judged_when_the_app_opens(home: Path) -> None:
    """The daemon and the CLI have no validator: what they record is judged by the app later."""
    with localstore.open(home=home, validator=_no_debug) as app:
        app.save("a/one", "debug: false\n")
    with localstore.open(home=home) as cli:
        cli.save("a/one", "debug: true\n")
        assert cli.resolve("a/one").valid  # (no validator here to say otherwise)
    with localstore.open(home=home, validator=_no_debug) as app:
        assert app.load("a/one").problems == ("debug must be off",)
        assert [r.rev for r in app.history("a/one")] == [2, 1]


def test_validator_name_needs_a_validator(home: Path) -> None:
    with pytest.raises(InvalidInputError, match="validator_name") as info:
        localstore.open(home=home, validator_name="rules-1")
    assert info.value.hint


def _row_of(store: BlueprintStore, path: str) -> tuple[bool, str | None]:
    with store.index.read() as cur:
        valid, judged_by = cur.execute(
            "SELECT valid, judged_by FROM blueprints WHERE path = ? AND deleted = 0",
            (f"{path}.blueprint.yaml",),
        ).fetchone()
    return bool(valid), judged_by


def _deferring_store(home: Path) -> BlueprintStore:
    """A store as the daemon opens it: judging with "rules-1", never taking the home over."""
    return BlueprintStore(
        localstore.load_settings(home=home),
        validator=_no_debug,
        validator_name="rules-1",
        replace_home_validator=False,
    )


def test_a_store_that_defers_leaves_another_home_validator_and_its_verdicts(home: Path) -> None:
    """The daemon judges with the validator its config names; when the app has since registered
    other rules (a newer version), opening it must not make the old rules the home's again and
    judge everything by them: the app's verdicts stay, and the daemon's own edits are held."""
    with localstore.open(home=home, validator=_no_beta, validator_name="rules-2") as app:
        app.save("a/one", "debug: true\n")
    with _deferring_store(home) as daemon:
        assert daemon.home_validator() == "rules-2"
        assert _row_of(daemon, "a/one") == (True, "rules-2")  # not judged again
        daemon.save("a/two", "beta: true\n")
        assert _row_of(daemon, "a/two") == (True, "rules-1")  # its own rules, not the home's
    with localstore.open(home=home, validator=_no_beta, validator_name="rules-2") as app:
        assert _row_of(app, "a/two") == (False, "rules-2")


def test_a_store_that_defers_claims_a_home_without_a_validator(home: Path) -> None:
    with localstore.open(home=home) as cli:
        cli.save("a/one", "debug: true\n")
    with _deferring_store(home) as daemon:
        assert daemon.home_validator() == "rules-1"
        assert _row_of(daemon, "a/one") == (False, "rules-1")
    with _deferring_store(home) as again:
        assert again.revalidate().judged == 0


def test_a_store_that_defers_does_not_take_over_a_home_claimed_by_the_app_after_its_claim(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's open claims a home without a validator in one write, so that an app
    registering its own meanwhile is not overwritten; but the re-judging that followed the claim
    was revalidate(), which writes this store's validator as the home's again: an app that
    opened between the two lost its rules to the daemon's (its own edits then held as judged
    by another). The app's open is put in that gap here."""
    with localstore.open(home=home) as cli:
        cli.save("a/one", "beta: true\n")
    claim = BlueprintStore._may_claim_home

    def claim_then_the_app_opens(store: BlueprintStore) -> bool:
        claimed = claim(store)
        with localstore.open(home=home, validator=_no_beta, validator_name="rules-2") as app:
            assert app.home_validator() == "rules-2"
        return claimed

    monkeypatch.setattr(BlueprintStore, "_may_claim_home", claim_then_the_app_opens)
    with _deferring_store(home) as daemon:
        assert daemon.home_validator() == "rules-2"
        assert _row_of(daemon, "a/one") == (False, "rules-2")  # the app's verdict stays


def test_revalidate_every_forgets_verdicts_reached_ahead_under_the_old_rules(home: Path) -> None:
    """``revalidate(every=True)`` is how an app says its rules changed under the same name; a
    verdict reached before that (``check_yaml``, as an import checks its bundle first) was still
    taken by a later save of the same bytes: stored valid by rules that no longer held."""
    banned: set[str] = set()

    def rules(doc: Mapping[str, Any]) -> list[str]:
        return [f"{key} is not allowed" for key in doc if key in banned]

    with localstore.open(home=home, validator=rules, validator_name="rules") as app:
        app.check_yaml("debug: true\n")
        banned.add("debug")
        app.revalidate(every=True)
        app.save("a/one", "debug: true\n")
        assert _row_of(app, "a/one") == (False, "rules")


def test_the_watcher_does_not_judge_the_echo_of_a_save_again(home: Path) -> None:
    """The watcher hears every save of its store (the file written): its ingest finds the bytes
    recorded and judges nothing, but judging ahead of its batch ran the validator (a parse and
    the app's rules) on each, once more per save, and kept a verdict no save would take (the
    save's own verdict stays remembered, for another save of the same bytes)."""
    calls: list[Mapping[str, Any]] = []

    def counting(doc: Mapping[str, Any]) -> list[str]:
        calls.append(doc)
        return []

    with localstore.open(home=home, validator=counting) as app:
        watcher = Watcher(app)
        watcher.start()
        try:
            assert watcher.wait_idle(30)
            app.save("a/one", "k: 1\n")
            assert watcher.wait_idle(30)
            assert calls == [{"k": 1}]
            assert list(app._judged) == [hashlib.sha256(b"k: 1\n").digest()]
        finally:
            watcher.stop()
            watcher.join(10)
