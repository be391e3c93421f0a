"""A MemoryServer persisted to a file between calls, so it outlives a killed sync process.

Each call takes an exclusive ``flock``, loads the server state, runs the MemoryRemote call and, for
writes, replaces the file atomically before returning: a kill before the replace is a call the
server never saw, a kill after it is a lost response. That is exactly the database's contract (one
transaction per RPC), which the kill harness needs and the in-process MemoryRemote cannot give.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import (
    DEFAULT_PULL_LIMIT,
    DEFAULT_VERIFY_LIMIT,
    Change,
    HintCallback,
    PullPage,
    PushResult,
    ServerInfo,
    ServerRow,
    Unsubscribe,
    VerifyPage,
)

_T = TypeVar("_T")
_FIELDS = ("rows", "seq", "applied_ops", "horizons")


class FileRemote:
    """The Remote protocol over a pickled MemoryServer at ``path`` (one user)."""

    def __init__(self, path: Path, *, user: str = "u") -> None:
        self.path = Path(path)
        self.user = user

    @property
    def identity(self) -> str:
        return f"file:{self.path.name}:{self.user}"

    @contextmanager
    def _server(self, write: bool) -> Iterator[MemoryServer]:
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            server = load_server(self.path)
            yield server
            if write:
                state = {f: getattr(server, f) for f in _FIELDS}
                tmp = self.path.with_suffix(".tmp")
                tmp.write_bytes(pickle.dumps(state))
                os.replace(tmp, self.path)

    def _run(self, write: bool, fn: Callable[[MemoryRemote], _T]) -> _T:
        with self._server(write) as server:
            return fn(MemoryRemote(server, user=self.user))

    def push(self, changes: Sequence[Change], *, device: str) -> list[PushResult]:
        return self._run(True, lambda r: r.push(changes, device=device))

    def pull(self, since: int, *, limit: int = DEFAULT_PULL_LIMIT) -> PullPage:
        return self._run(False, lambda r: r.pull(since, limit=limit))

    def verify(self, after: str | None = None, *, limit: int = DEFAULT_VERIFY_LIMIT) -> VerifyPage:
        return self._run(False, lambda r: r.verify(after, limit=limit))

    def fetch(self, ids: Sequence[str]) -> list[ServerRow]:
        return self._run(False, lambda r: r.fetch(ids))

    def server_info(self) -> ServerInfo:
        return self._run(False, lambda r: r.server_info())

    def subscribe(self, callback: HintCallback) -> Unsubscribe:
        return lambda: None

    def close(self) -> None:
        return None


def load_server(path: Path) -> MemoryServer:
    """The server state stored at ``path`` (empty when there is none yet)."""
    server = MemoryServer(name=path.name)
    try:
        state: dict[str, Any] = pickle.loads(path.read_bytes())
    except FileNotFoundError:
        return server
    for name in _FIELDS:
        setattr(server, name, state[name])
    return server
