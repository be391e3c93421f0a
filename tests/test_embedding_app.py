"""A desktop app embedding LocalStore, end to end, through the public API only.

One home is opened by the "app": a UI thread lists (all, by folder, by tag, by modified time,
paged), searches as the user types and loads; a worker thread saves, edits (some with
``expected_rev``), moves, deletes and restores; an "external editor" writes YAML files directly
the way real editors save (in place, temp + rename, delete + create, a new file); subscribers
count the events; and ``store.start_sync()`` (with its watcher) syncs through the memory remote
with a second device whose own thread edits concurrently. After a bounded, seeded run everything
is quiesced (writers stopped, watchers settled, both devices synced until nothing moves) and the
invariants an app relies on are checked: no unexpected exception on any thread (expected ones
are typed ``LocalStoreError``s with a hint), ``check()`` clean, list/search/load agreeing with
each other and with the files, only documented event kinds, both devices holding the same
blueprints, and no thread or descriptor left after close.

``LOCALSTORE_STRESS=1`` runs a longer variant; ``LOCALSTORE_EMBED_SEED`` picks the seed.
"""

from __future__ import annotations

import collections
import os
import random
import re
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.events import EVENT_KINDS, Event
from sync import EmbeddedSync, MemoryRemote, MemoryServer

from .conftest import STRESS, eventually

SEED = int(os.environ.get("LOCALSTORE_EMBED_SEED", "20260"))
# Operations per writer thread: (app worker, external editor, second device).
OPS = (3000, 800, 1500) if STRESS else (300, 80, 150)

FOLDERS = ("work", "home", "ops/deploy", "ops/ci")
WORDS = ("deploy", "kubernetes", "backup", "release", "database", "monitor", "invoice", "render")
TAGS = ("ops", "draft", "ci", "prod")
# Errors an app meets in normal use when threads (or devices) race on one blueprint.
EXPECTED = (
    localstore.NotFoundError,  # loaded/moved/deleted just after another thread deleted it
    localstore.AlreadyExistsError,  # saved/moved/restored to a path another thread took
    localstore.RevisionConflictError,  # expected_rev went stale (ChangedOnDiskError is one too)
)
MARKER = re.compile(r"\bmk[a-z]\d+\b")


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Run:
    """What the threads share: the stop flag, the failures and the expected errors seen."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.expected: collections.Counter[str] = collections.Counter()
        self.hintless: list[str] = []
        self._lock = threading.Lock()
        self._marks = 0

    def marker(self, device: str) -> str:
        with self._lock:
            self._marks += 1
            return f"mk{device}{self._marks}"

    def attempt(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one app call: an expected error is counted (and must carry a hint)."""
        try:
            return call(*args, **kwargs)
        except EXPECTED as exc:
            with self._lock:
                self.expected[type(exc).__name__] += 1
                if not exc.hint:
                    self.hintless.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    def thread(
        self, name: str, body: Callable[[random.Random], None], seed: int
    ) -> threading.Thread:
        def run() -> None:
            try:
                body(random.Random(seed))
            except BaseException:
                with self._lock:
                    self.failures.append(f"{name}:\n{traceback.format_exc()}")

        return threading.Thread(target=run, name=f"app-{name}", daemon=True)


class EventCounter:
    """A subscriber as an app has one: quick, counts kind/process/origin."""

    def __init__(self, seen: collections.Counter[str]) -> None:
        self.seen = seen
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.seen[f"{event.kind}/{event.process}/{event.origin}"] += 1


def content(rng: random.Random, marker: str) -> str:
    words = rng.sample(WORDS, 2)
    return f"# {words[0]} {marker}\nname: {words[1]}\nsteps:\n  - run: {words[0]} {marker}\n"


def new_path(rng: random.Random) -> str:
    return f"{rng.choice(FOLDERS)}/{rng.choice(WORDS)}-{rng.randrange(40)}"


def yaml_files(root: Path) -> set[str]:
    """The blueprints on disk, as list() names them (hidden and temp files are not blueprints)."""
    out = set()
    # os.walk, not rglob: the store removes a folder its last blueprint left (a move, a delete)
    # while this walks, and 3.11's rglob raised FileNotFoundError for it; os.walk passes it by.
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".blueprint.yaml"):
                rel = (Path(folder) / name).relative_to(root).as_posix()
                if not any(part.startswith(".") for part in rel.split("/")):
                    out.add(rel)
    return out


def ui_loop(store: localstore.BlueprintStore, run: Run) -> Callable[[random.Random], None]:
    def body(rng: random.Random) -> None:
        while not run.stop.is_set():
            everything = store.list()
            store.list(folder=rng.choice(FOLDERS))
            store.list(folder="/")
            store.list(tag=rng.choice(TAGS))
            page, offset = 7, 0
            while page_rows := store.list(
                sort="modified", descending=True, limit=page, offset=offset
            ):
                offset += len(page_rows)
                if offset > 200:
                    break
            word = rng.choice(WORDS)
            for n in range(2, len(word) + 1):  # typing the word letter by letter
                store.search(word[:n], limit=10)
            store.search(word, folder=rng.choice(FOLDERS), limit=5, offset=rng.randrange(3))
            for info in rng.sample(everything, min(5, len(everything))):
                bp = run.attempt("load", store.load, info.id)
                if bp is not None:
                    assert bp.id == info.id
                    store.history(info.id)

    return body


def worker_loop(
    store: localstore.BlueprintStore, run: Run, ops: int
) -> Callable[[random.Random], None]:
    deleted: list[str] = []

    def body(rng: random.Random) -> None:
        for _ in range(ops):
            if run.stop.is_set():
                return
            live = store.list()
            op = rng.random()
            if op < 0.3 or not live:
                tags = rng.sample(TAGS, rng.randrange(3))
                run.attempt(
                    "create", store.save, new_path(rng), content(rng, run.marker("a")), tags=tags
                )
            elif op < 0.55:
                info = rng.choice(live)
                expected_rev = info.rev if rng.random() < 0.5 else None
                text = content(rng, run.marker("a"))
                run.attempt("edit", store.save, info.path, text, expected_rev=expected_rev)
            elif op < 0.7:
                info = rng.choice(live)
                run.attempt("move", store.move, info.id, new_path(rng))
            elif op < 0.85:
                info = rng.choice(live)
                if run.attempt("delete", store.delete, info.id) is not None:
                    deleted.append(info.id)
            elif deleted:
                gone = deleted.pop(rng.randrange(len(deleted)))
                history = run.attempt("history", store.history, gone) or []
                kept = [r for r in history if not r.deleted]
                if kept and not store.exists(gone):
                    run.attempt("restore", store.restore, gone, kept[0].rev)
            run.stop.wait(rng.uniform(0.0, 0.02))

    return body


def editor_loop(root: Path, run: Run, ops: int) -> Callable[[random.Random], None]:
    """An editor saving files of the home directly, with the save patterns of real editors."""

    def body(rng: random.Random) -> None:
        for _ in range(ops):
            if run.stop.is_set():
                return
            files = sorted(yaml_files(root))
            text = content(rng, run.marker("e"))
            style = rng.choice(("in-place", "temp-rename", "delete-create", "new"))
            if style == "new" or not files:
                target = root / f"{rng.choice(FOLDERS)}/typed-{rng.randrange(1000)}.blueprint.yaml"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                continue
            target = root / rng.choice(files)
            try:
                if style == "in-place":  # nano, VS Code's default
                    with open(target, "r+", encoding="utf-8") as f:
                        f.truncate(0)
                        f.write(text)
                elif style == "temp-rename":  # vim (backupcopy=no), gedit, Emacs
                    tmp = target.with_name(f".{target.name}.swp")
                    tmp.write_text(text)
                    os.replace(tmp, target)
                else:  # some IDEs and sync tools: unlink, then write a new file
                    target.unlink()
                    run.stop.wait(rng.uniform(0.0, 0.05))
                    target.write_text(text)
            except FileNotFoundError:
                pass  # the app moved or deleted it meanwhile: the editor's save fails
            run.stop.wait(rng.uniform(0.02, 0.1))

    return body


def device_loop(
    store: localstore.BlueprintStore, run: Run, ops: int
) -> Callable[[random.Random], None]:
    """The same user on another device: edits what sync brought, makes and removes its own."""

    def body(rng: random.Random) -> None:
        for _ in range(ops):
            if run.stop.is_set():
                return
            live = store.list()
            op = rng.random()
            if op < 0.25 or not live:
                run.attempt("b-create", store.save, new_path(rng), content(rng, run.marker("b")))
            elif op < 0.75:
                info = rng.choice(live)
                run.attempt("b-edit", store.save, info.path, content(rng, run.marker("b")))
            elif op < 0.9:
                info = rng.choice(live)
                run.attempt("b-move", store.move, info.id, new_path(rng))
            else:
                info = rng.choice(live)
                run.attempt("b-delete", store.delete, info.id)
            run.stop.wait(rng.uniform(0.0, 0.04))

    return body


def snapshot(store: localstore.BlueprintStore) -> dict[str, tuple[str, str]]:
    return {i.id: (i.path, i.content_hash) for i in store.list()}


def settle(devices: list[tuple[localstore.BlueprintStore, EmbeddedSync]]) -> None:
    """Let the watchers take every file change, then sync both devices until nothing moves."""
    for _, handle in devices:
        assert handle.watcher is not None and handle.watcher.wait_idle(60)
    for _ in range(12):
        moved = 0
        for _, handle in devices:
            report = handle.engine.sync_once()
            assert not report.errors, report.errors
            moved += report.pushed + report.pulled + report.merged + report.conflicts
        for _, handle in devices:
            assert handle.watcher is not None and handle.watcher.wait_idle(60)
        if not moved and all(h.engine.status().pending == 0 for _, h in devices):
            return
    raise AssertionError("the two devices did not settle in 12 rounds")


def check_store_agrees(store: localstore.BlueprintStore) -> None:
    """list, load, search and the files on disk describe the same blueprints."""
    report = store.check()
    assert report.clean, report.problems
    infos = store.list()
    assert len(infos) == store.count()
    assert {i.path for i in infos} == yaml_files(store.root)
    by_id = {i.id: i for i in infos}
    assert len(by_id) == len(infos)
    for info in infos:
        bp = store.load(info.id)
        assert (bp.path, bp.rev, bp.content_hash) == (info.path, info.rev, info.content_hash)
        assert bp.content == store.abspath(info.path).read_text(encoding="utf-8")
        for marker in set(MARKER.findall(bp.content)):
            hits = {h.info.id for h in store.search(marker, limit=50)}
            assert info.id in hits, (marker, info.path)
            for hit in hits:  # (no stale hit: whatever matches holds the word now)
                assert marker in store.load(hit).content
    for folder in FOLDERS:
        want = sorted(i.path for i in infos if i.path.startswith(folder + "/"))
        assert [i.path for i in store.list(folder=folder)] == want
    for tag in TAGS:
        assert {i.id for i in store.list(tag=tag)} == {i.id for i in infos if tag in i.tags}
    paged: list[localstore.BlueprintInfo] = []
    while rows := store.list(sort="modified", descending=True, limit=5, offset=len(paged)):
        paged += rows
    assert paged == store.list(sort="modified", descending=True)
    assert sorted(paged, key=lambda i: i.id) == sorted(infos, key=lambda i: i.id)


@pytest.fixture
def homes(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    yield tmp_path / "laptop", tmp_path / "desktop"


def test_an_app_embedding_the_store_with_sync_watcher_editor_and_a_second_device(
    homes: tuple[Path, Path],
) -> None:
    fds_before = _fd_count()
    threads_before = set(threading.enumerate())
    server = MemoryServer()
    run = Run()
    events: dict[str, collections.Counter[str]] = {}
    stores: list[localstore.BlueprintStore] = []
    devices: list[tuple[localstore.BlueprintStore, EmbeddedSync]] = []
    try:
        for home, device in zip(homes, ("laptop", "desktop"), strict=True):
            store = localstore.open(home=home, device_name=device)
            stores.append(store)
            seen: collections.Counter[str] = collections.Counter()
            events[device] = seen
            store.subscribe(EventCounter(seen))
            handle = store.start_sync(remote=MemoryRemote(server), debounce_s=0.05)
            devices.append((store, handle))
        app, other = stores
        rng = random.Random(SEED)
        threads = [
            run.thread("ui", ui_loop(app, run), rng.randrange(2**32)),
            run.thread("worker", worker_loop(app, run, OPS[0]), rng.randrange(2**32)),
            run.thread("editor", editor_loop(app.root, run, OPS[1]), rng.randrange(2**32)),
            run.thread("device-b", device_loop(other, run, OPS[2]), rng.randrange(2**32)),
        ]
        for t in threads:
            t.start()
        writers = threads[1:]
        for t in writers:
            t.join(300)
        run.stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), f"{t.name} did not finish"
        assert not run.failures, "\n".join(run.failures)
        assert not run.hintless, run.hintless

        settle(devices)
        for store in stores:
            check_store_agrees(store)
        # Both devices hold the same blueprints (conflict copies are blueprints of their own).
        assert snapshot(app) == snapshot(other)
        assert len(app.list()) > 0
        for _, handle in devices:
            status = handle.status()
            assert status["running"] and status["pending"] == 0, status
            assert handle.watcher_status()["state"] == "running"
        for device, seen in events.items():
            kinds = {key.split("/")[0] for key in seen}
            assert kinds <= set(EVENT_KINDS), (device, seen)
            assert seen, device
        # Every write in this run is valid YAML, and no editor deletes a file for good: an
        # "invalid" or an external "deleted" is a file caught mid-save (an editor's truncate,
        # or the moment of its delete-and-create) and recorded as such.
        assert not [
            k for k in events["laptop"] if k.startswith(("invalid/", "deleted/this/external"))
        ], events
    finally:
        run.stop.set()
        for store in stores:
            store.close()

    def no_threads_left() -> bool:
        return not [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]

    assert eventually(no_threads_left, 30), [t.name for t in threading.enumerate()]
    assert _fd_count() == fds_before
