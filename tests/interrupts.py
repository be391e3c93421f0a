"""Deliver an interrupt (any BaseException) at a chosen point of a store's next write that
changes blueprints, and take what a home holds, to compare before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

Store = Any

# Where an interrupt comes once the outermost COMMIT is done: raised by a commit listener, by an
# after-commit callback queued inside the write, right after the COMMIT statement returned, right
# after the write released the index lock (before its after-commit callbacks ran).
AFTER_COMMIT = ["listener", "after-commit-callback", "after-commit-statement", "after-lock-release"]


class _LockThenInterrupt:
    """The index's lock, raising (as a signal handler would) right after the release that frees
    it once ``armed()`` says the write to interrupt committed."""

    def __init__(self, lock: Any, armed: Any, fire: Any) -> None:
        self.lock, self.armed, self.fire = lock, armed, fire

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lock, name)

    def __enter__(self) -> bool:
        return bool(self.lock.__enter__())

    def __exit__(self, *exc: object) -> None:
        self.lock.__exit__(*exc)
        if not self.lock._is_owned() and self.armed():
            self.fire()


class Interrupt:
    """Raise ``exc`` once, at ``where``, in the store's next write that changes blueprints.

    ``where``: one of AFTER_COMMIT, "before-commit" (the COMMIT statement raises, before it
    runs) or "before-release" (an inner level's RELEASE raises, before it runs)."""

    def __init__(self, store: Store, where: str, exc: type[BaseException]) -> None:
        self.store, self.where, self.exc = store, where, exc
        self.fired = False
        self._commits = store.index.blueprint_commits

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            raise self.exc("injected")

    def _committed(self) -> bool:
        return bool(self.store.index.blueprint_commits != self._commits)

    def _listener(self) -> None:
        if self._committed():
            self._fire()

    def _after_statement(self) -> None:
        if self.store.index._blueprints_touched:
            self._fire()

    def _trace(self, _cur: Any, sql: str, _bindings: Any) -> bool:
        index = self.store.index
        if not index._blueprints_touched or self.fired:
            return True
        if (self.where, sql.split(" ")[0]) in {
            ("before-commit", "COMMIT"),
            ("before-release", "RELEASE"),
        }:
            self._fire()
        if self.where == "after-commit-callback":
            # (Queued at whatever level is open: one released into the outermost runs after
            # its COMMIT; one of a level rolled back is dropped, and the next statement queues
            # another.)
            index.after_commit(self._fire)
        return True

    def __enter__(self) -> Interrupt:
        index = self.store.index
        if self.where == "listener":
            index.on_commit(self._listener)
        elif self.where == "after-commit-statement":
            index._after_commit_statement = self._after_statement
        elif self.where == "after-lock-release":
            index._lock = _LockThenInterrupt(index._lock, self._committed, self._fire)
        else:
            index.conn.exec_trace = self._trace
        return self

    def __exit__(self, *_: object) -> None:
        index = self.store.index
        index._after_commit_statement = None
        if isinstance(index._lock, _LockThenInterrupt):
            index._lock = index._lock.lock
        if self._listener in index._commit_listeners:
            index._commit_listeners.remove(self._listener)
        if index._conn is not None:
            index.conn.exec_trace = None


def snapshot(store: Store) -> tuple[dict[str, bytes], dict[str, list[tuple[int, str, bool]]]]:
    """Every file of the blueprints folder (temps and kept files too), and every history."""
    files = {
        p.relative_to(store.root).as_posix(): p.read_bytes()
        for p in sorted(Path(store.root).rglob("*"))
        if p.is_file() and p.name != ".localstore-folder"
    }
    with store.index.read() as cur:
        ids = [r[0] for r in cur.execute("SELECT DISTINCT id FROM revisions").fetchall()]
    history = {i: [(r.rev, r.origin, r.deleted) for r in store.history(i)] for i in sorted(ids)}
    return files, history
