"""An app's validator over a store's life: where it runs, and when blueprints are judged again."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.errors import InvalidYAMLError
from localstore.watcher import Watcher


class _Gate:
    """A validator that stops inside its call until released (no timing: two events)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.armed = True

    def __call__(self, doc: Mapping[str, Any]) -> list[str]:
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
        localstore.open(home=home, validator=gate) as app,
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
    """``content=None`` keeps the current YAML: it is read and judged before the lock."""
    with localstore.open(home=home, validator=gate) as app:
        gate.armed = False
        app.save("a/slow", "slow: true\n")
        gate.armed = True
        with localstore.open(home=home, busy_timeout_ms=200, reconcile=False) as other:
            worker, out = _in_thread(lambda: app.save("a/slow", name="renamed"))
            assert gate.entered.wait(30)
            try:
                other.save("b/meanwhile", "x: 1\n")
            finally:
                gate.release.set()
                worker.join()
        assert isinstance(out[0], localstore.Blueprint), out[0]
        assert app.load("a/slow").meta.name == "renamed"


def test_bad_yaml_found_before_the_lock_still_changes_nothing(home: Path, gate: _Gate) -> None:
    with localstore.open(home=home, validator=gate) as app:
        app.save("a/one", "x: 1\n")
        with pytest.raises(InvalidYAMLError):
            app.save("a/one", "x: [1\n")
        assert app.load("a/one").content == "x: 1\n"
        assert [r.rev for r in app.history("a/one")] == [1]


def test_the_watcher_judges_an_edit_before_the_lock(home: Path, gate: _Gate) -> None:
    """An editor's change the watcher ingests: the app's validator runs before the batch's
    write transaction, so the daemon or the CLI can write meanwhile."""
    with localstore.open(home=home, validator=gate) as app:
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
