"""The store's lowest layer: opening a home (settings, the index, the open-store mark, the
maintainer), closing it, and what every layer above uses (the open and writable checks, the
device id, absolute paths).

``localstore.store`` lists the layers. The open judges with the app's validator, which a layer
above defines: ``_StoreCore`` declares those methods for the type checker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, cast

from localstore import files as fs
from localstore._folder_filter import FolderSpellings
from localstore._identity import DEVICE_KEY, ensure_device_id, recorded_device_id
from localstore._listing import ListingCache
from localstore._presence import OpenMark, describe_pid
from localstore._read_only import unwritable_reason
from localstore._validator_name import validator_name_of
from localstore.blueprint import Validator, YamlLimits, check_validator, new_id
from localstore.config import Settings, load_settings, settings_arg
from localstore.errors import (
    ConfigError,
    IndexStoreError,
    InvalidInputError,
    LockHeldError,
    StoreClosedError,
    wrong_type,
)
from localstore.events import Event, EventBus
from localstore.index import Index, Maintainer, forked_error, index_damaged, set_aside, wal_size

if TYPE_CHECKING:
    from localstore.store import BlueprintStore

    # For the handle start_sync returns; never at run time (localstore must not import sync).
    from sync.embed import EmbeddedSync

from localstore._store_args import _flag_arg
from localstore._store_types import RevalidateReport, _Batch

log = logging.getLogger("localstore.store")


_DEVICE_ID_SQL = f"SELECT value FROM settings WHERE key = '{DEVICE_KEY}'"


def _collected_unclosed(
    maintainer: Maintainer | None, flusher: ThreadPoolExecutor, mark: OpenMark, root: str
) -> None:
    """Stop the threads of a store collected without close() (its finalizer: holds no store)."""
    if maintainer is not None:
        maintainer.stop()
    flusher.shutdown(wait=False)
    # (Its index connection is closed by its own collection; the mark would keep 'check --fix'
    # from rebuilding for the life of the process.)
    mark.close()
    warnings.warn(
        f"a LocalStore store of {root} was never closed: call store.close() (or open it in a "
        "with block) when the app is done with it",
        ResourceWarning,
        stacklevel=2,
    )


class _CloseHook:
    """One registration of a close hook. Compared by identity: removing it takes this one out,
    never an equal callback registered again (bound methods of one object compare equal)."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def __call__(self) -> None:
        self.callback()

    def __repr__(self) -> str:
        return repr(self.callback)


def _open_args(
    settings: Settings | None,
    validator: Validator | None,
    validator_name: str | None,
    flags: Mapping[str, bool],
) -> str:
    """Check an open's arguments before anything opens; return the validator's name.

    ``flags``: the open's flags by keyword. Raises InvalidInputError (see _StoreCore.__init__).
    """
    check_validator(validator)
    if validator_name is not None and (
        not isinstance(validator_name, str) or not validator_name or validator is None
    ):
        raise InvalidInputError(
            f"validator_name must be non-empty text given with a validator, not {validator_name!r}",
            hint="name the rules of the validator you pass (e.g. 'myapp-rules-3'), or "
            "leave validator_name out",
        )
    # Before anything opens: a validator that cannot be named by default is refused.
    name = validator_name or validator_name_of(validator)
    if settings is not None:
        settings_arg(
            settings,
            "build it with localstore.load_settings(home=..., ...), or pass home= to "
            "localstore.open instead",
        )
    for flag, value in flags.items():
        _flag_arg(flag, value)
    if flags["read_only"] and flags["recover_index"]:
        raise InvalidInputError(
            "recover_index rebuilds the index: a read-only store cannot",
            hint="leave out read_only (the home must be writable) or recover_index",
        )
    return name


class _StoreCore:
    """The store's state, set up by its constructor, and its lifecycle; every layer above uses it."""

    # Defined by _store_judge._StoreJudge, a layer above, and called by __init__ (an open judges
    # with its validator): declared here for the type checker.
    revalidate: Callable[..., RevalidateReport]
    _may_claim_home: Callable[[], bool]
    _rejudge: Callable[[str, Sequence[Any]], RevalidateReport]

    @property
    def _as_store(self) -> BlueprintStore:
        """This store typed as the BlueprintStore it is a layer of, for the functions outside the
        layers that take one (the reconciler, the kept edits, the watcher's lookup, sync)."""
        return cast("BlueprintStore", self)

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        validator: Validator | None = None,
        validator_name: str | None = None,
        replace_home_validator: bool = True,
        reconcile: bool = True,
        maintenance: bool = True,
        recover_index: bool = False,
        read_only: bool = False,
    ) -> None:
        """Open the store of ``settings``' home.

        ``recover_index`` (for ``check --fix``): an index too damaged to open is moved aside to a
        timestamped name in data/ and rebuilt from the files; ``recovered_index`` is then its new
        path; it raises LockHeldError instead, moving nothing, while another store (of this process
        or another) has the home open. A plain open refuses a damaged index with an error saying so. Raises
        InvalidInputError for a validator that is not callable, or that has no ``validator_name``
        and no default one (a lambda; see validator_name_of).

        With a ``validator``, its name (``validator_name``, by default the function's module and
        qualified name, with the values a partial, closure or instance holds: give a new one when
        the rules change; see validator_name_of) becomes the home's validator, and
        the blueprints judged by none or another are judged again (:meth:`revalidate`).
        ``replace_home_validator=False`` (the daemon, judging with the validator its config
        names) does that only when the home records no validator or this one: when it records
        another, the home's validator and every verdict stay as they are, and this store's own
        writes, judged by its validator, are held by sync until the home's validator judges them.

        ``read_only``: open a home without writing anything in it (a backup snapshot, a disk
        mounted read-only, another user's home): no reconcile, no maintainer, no marks, no
        revalidation; every write raises ReadOnlyStoreError. What the index says may be older
        than the files (see docs/architecture.md, "Read-only homes"): :meth:`load` returns what
        the files hold. ``read_only_reason`` says why it is read-only. Raises IndexStoreError
        for a home without an index, or one an older localstore made (it cannot be updated).
        """
        name = _open_args(
            settings,
            validator,
            validator_name,
            {
                "replace_home_validator": replace_home_validator,
                "reconcile": reconcile,
                "maintenance": maintenance,
                "recover_index": recover_index,
                "read_only": read_only,
            },
        )
        self.settings = settings or load_settings()
        self.paths = self.settings.paths
        # Why this store writes nothing (None: it may write). Worked out before anything opens.
        self.read_only_reason: str | None = unwritable_reason(self.paths) if read_only else None
        if not read_only:
            self.paths.ensure()
        self.root = self.paths.blueprints
        try:
            self._real_root = self.root.resolve()  # (not strict: check_root below may create it)
        except RuntimeError as exc:  # pathlib's "Symlink loop" (3.11, 3.12)
            from localstore._reconcile import root_loop_error

            raise root_loop_error(self.root) from exc
        self._root_str = str(self.root)
        self.validator = validator
        self.validator_name = name
        # Verdicts reached before a write took the lock (check_yaml, _prejudge), by the YAML's
        # sha256, not yet used by a save: the validator that reached each, and its problems.
        # A save of exactly those bytes under that validator takes the verdict instead of parsing
        # and judging inside the index transaction (see _prepare).
        self._judged: dict[bytes, tuple[Validator | None, tuple[str, ...]]] = {}
        self._judged_lock = threading.Lock()  # (the app's thread, the watcher's, sync's)
        self._judged_count = 0  # verdicts remembered so far (see _judge_texts_ahead)
        self.limits = YamlLimits(
            max_bytes=self.settings.max_yaml_bytes,
            max_depth=self.settings.max_depth,
            max_nodes=self.settings.max_nodes,
        )
        self._open_held(recover_index, read_only)
        # Events wait for the commit of the publishing thread's open transaction (the sync
        # engine saves inside its own): see Index.after_commit.
        self.events = EventBus(
            defer=self.index.after_commit, check_process=self.index.check_process
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []
        # A copied or moved home takes a new device id here (see localstore._identity).
        # (The id as last read: see device_id; and the write transaction it was read in.)
        self._device_serial = -1
        if read_only:
            self._device_id = recorded_device_id(self.index, new_id)
        else:
            self._device_id = ensure_device_id(self.index, self.paths.index_db, new_id)
        self.device_name = self.settings.device_name
        self._start_upkeep(maintenance=maintenance and not read_only)
        if read_only:
            return  # (what follows writes: the folder's identity, the reconcile, verdicts)
        self._open_writes(reconcile=reconcile, replace_home_validator=replace_home_validator)

    def _open_held(self, recover_index: bool, read_only: bool) -> None:
        """Start the flusher, take the open-store mark and open the index; what was started or
        taken is given back if the index does not open (its error raised)."""
        # Flushes a save's two temp files while its index statements run (files.PendingWrites).
        # Two threads, so the two fsyncs overlap too: in alternating runs on the benchmark VM
        # (session 14) a save took 1.93-2.01x the bare pair write with two, 2.22-2.44x with one.
        # (An earlier run had found one faster; the disk's queue, not the filesystem, decides.)
        self._flusher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="localstore-flush")
        self.recovered_index: Path | None = None
        # Held until close(), taken before the index opens: a 'check --fix' in another process
        # must see this store before it could move the index from under its connection.
        self._open_mark = OpenMark.take(self.paths.state, create=not read_only)
        try:
            self.index = self._open_index(recover_index)
            self._listing = ListingCache(self.index)
            self._spellings = FolderSpellings()  # (folder filters' answers, kept while they hold)
        except BaseException:
            self._flusher.shutdown(wait=False)
            self._open_mark.close()
            raise

    def _start_upkeep(self, *, maintenance: bool) -> None:
        """Start the index's maintainer (with ``maintenance``) and arm the finalizer that stops
        this store's threads if the app drops it unclosed."""
        self._maintainer: Maintainer | None = None
        if maintenance:
            self._maintainer = Maintainer(self.paths.index_db)
            self.index.on_commit(self._maintainer.notify_commit)
            self._maintainer.start()
        # A store the app drops without close() stops its threads when collected (else its
        # maintainer checkpointed a home nobody used, one thread and connection per such store,
        # for the life of the process); not at exit, where daemon threads end with it anyway.
        self._unclosed = weakref.finalize(
            self,
            _collected_unclosed,
            self._maintainer,
            self._flusher,
            self._open_mark,
            self._root_str,
        )
        self._unclosed.atexit = False
        # The process that opened the store: a forked child must not use it (see _check_open).
        self._pid = os.getpid()

    def _open_writes(self, *, reconcile: bool, replace_home_validator: bool) -> None:
        """What a writable open writes: state/ swept, the folder's identity checked, the
        reconcile (with ``reconcile``) and the verdicts of this store's validator. A failure
        closes the store (its maintainer thread must not be left running) and is raised."""
        from localstore._reconcile import Reconciler, check_root
        from localstore._state_temps import sweep_state_temps

        # What a write killed before its rename left in state/ (daemon.json's temp holds the
        # daemon's token): nothing else sweeps that folder.
        sweep_state_temps(self.paths.state)
        try:
            # Whether or not this open reconciles: a later 'check --fix' or watcher rescan
            # must not take an empty stand-in folder for deleted blueprints either.
            check_root(self._as_store)
            if reconcile:
                Reconciler(self._as_store).run(fix=True)
            # What the daemon's watcher or the CLI recorded while the app was closed, and what
            # an older or other validator judged, is judged by this one now, so that list, load
            # and sync see its verdicts (and sync stops holding them back).
            if self.validator is not None and replace_home_validator:
                self.revalidate()
            elif self.validator is not None and self._may_claim_home():
                # Not revalidate(), which writes this store's validator as the home's: over one
                # an app registered after the claim (its rules lost to the daemon's config).
                self._rejudge("b.judged_by IS NOT ?", (self.validator_name,))
        except BaseException:
            self.close()  # a failed open must not leave its maintainer thread running
            raise

    def _open_index(self, recover: bool) -> Index:
        path = self.paths.index_db

        def attempt() -> Index:
            index = Index(
                path, busy_timeout_ms=self.settings.busy_timeout_ms, read_only=self.read_only_reason
            )
            if recover:
                try:
                    index.quick_check()  # damaged pages, not only a damaged header
                except BaseException:
                    index.close()
                    raise
            return index

        try:
            return attempt()
        except IndexStoreError as exc:
            if not recover or not index_damaged(exc):
                raise
            damage = exc
        self._refuse_rebuild_while_held()
        try:
            # Files are the truth, the index is derived: set the damaged one aside (its history
            # may be salvageable) and let the open build a fresh one that the reconcile fills
            # from the files. Other stores' opens wait on the mark meanwhile (a moment).
            self.recovered_index = set_aside(path)
            log.warning(
                "the index was damaged (%s); moved it to %s and rebuilt it from the files "
                "(history before this point was not recovered)",
                damage.args[0] if damage.args else damage,
                self.recovered_index,
            )
            return attempt()
        finally:
            self._open_mark.share()

    def _refuse_rebuild_while_held(self) -> None:
        """Raise LockHeldError when another process or store has this home open, before a damaged
        index is moved aside; else hold the open-store mark exclusively (share() gives it back).

        Such a store keeps its connection to the moved file and goes on writing there: the files
        stay right and its next open reconciles them, but the history it writes meanwhile lands in
        the file set aside. The daemon and an app syncing in-process are named from the home's
        lock; any other open store (an app that opened it without syncing, `localstore watch`, a
        command under way) from the open-store mark every store holds (localstore._presence).
        The repair itself is not attempted until they are gone.
        """
        from localstore._daemon_state import _lock_file_pid, daemon_running, lock_is_held

        daemon = daemon_running(self.settings)
        if daemon is not None:
            self._refuse_rebuild(f"the daemon, pid {daemon['pid']}")
        if lock_is_held(self.paths.state):
            holder = _lock_file_pid(self.paths.state)
            self._refuse_rebuild(f"{'' if holder is None else f'pid {holder}, '}an app syncing it")
        if not self._open_mark.try_exclusive():
            pids = ", ".join(describe_pid(pid) for pid in self._open_mark.holders())
            self._refuse_rebuild(
                f"{pids or 'another process'}: an app with the store open, `localstore watch` "
                "or another localstore command"
            )

    @staticmethod
    def _refuse_rebuild(who: str) -> NoReturn:
        raise LockHeldError(
            f"cannot rebuild the damaged index: another process has this home open ({who})",
            hint="stop it (`localstore daemon --stop` for the daemon, quit the app, or let the "
            "command end), then run 'localstore check --fix' again; it would go on writing to the "
            "index moved aside",
        )

    def index_health(self) -> dict[str, Any]:
        """The index's upkeep, for status reports: ``wal_bytes`` and ``maintainer`` (its
        ``Maintainer.health()``; None when this store runs none). Cheap: no index access."""
        return {
            "wal_bytes": wal_size(self.paths.index_db),
            "maintainer": None if self._maintainer is None else self._maintainer.health(),
        }

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # Pickled when an app hands its store to a process started with spawn (or forkserver,
        # or a ProcessPoolExecutor): the connection, threads and locks are this process's, so
        # it failed deep inside them with "cannot pickle '_thread.lock' object". Copies too.
        home = self.settings.home
        where = "" if home is None else f"home={str(home)!r}"  # (None: the platform folders)
        raise InvalidInputError(
            "a store cannot be sent to another process (nor copied): its index connection and "
            "threads belong to the process that opened it",
            hint=f"pass the home instead and open it there with localstore.open({where})",
        )

    def close(self) -> None:
        """Stop background work and close the index. Idempotent.

        Once it returns no subscriber is called again, not even for the rest of a batch whose
        delivery is under way (a subscriber that closed the store in answer to its first event).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._unclosed.detach()
        # First: what the stopping watcher or sync commits now reaches no app that is closing.
        self.events.close()
        if os.getpid() != self._pid:
            # A forked child: the threads, the connection and the locks are the parent's (a
            # lock a parent thread held at the fork stays taken here for ever). Nothing to do.
            return
        # The threads the hooks join (watcher, sync) must not wait out the busy timeout (30 s)
        # for a write lock another process holds.
        self.index.interrupt_lock_waits()
        for cb in reversed(list(self._on_close)):
            try:
                cb()
            except Exception:  # closing must go on; each component logs its own failure
                log.exception("close hook %r failed", cb)
        if self._maintainer is not None:
            self._maintainer.stop()
            self._maintainer.join(10)
        self._flusher.shutdown(wait=True)
        self.index.close()
        self._open_mark.close()  # (after the index: a rebuild may not start under its connection)

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when the store closes (components stop their threads here).

        Returns a function that takes the hook back (idempotent; nothing once the store closes):
        a component that stops before the store calls it, or every stopped one stays reachable
        from the store until it closes. Raises StoreClosedError after close() (the hook would
        never run), InvalidInputError for a callback that is not callable. Against a close()
        on another thread, the hook either runs in that close() or this call raises
        StoreClosedError: it is never accepted and then skipped.
        """
        if not callable(callback):
            raise wrong_type(
                "a close hook", callback, "callable", hint="pass a function taking no arguments"
            )
        entry = _CloseHook(callback)
        with self._while_open():
            self._on_close.append(entry)

        def remove() -> None:
            with self._close_lock:
                if self._closed:
                    return  # close() runs the hooks from its own copy of the list
                try:
                    self._on_close.remove(entry)
                except ValueError:
                    pass

        return remove

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    @property
    def device_id(self) -> str:
        """This home's device id (docs/sync-engine.md, "Device identity").

        Read from the index at each use (one primary-key lookup): another process's sync engine
        may replace it (``SyncEngine._new_device_id``, when the server shows another home
        pushing under it). Kept as read at open, this store's revisions went on naming the id
        given up, and a sync started here once that process had stopped pushed under it again,
        taking the other home's rows for its own writes. After close(), or when the index holds
        none (a read-only store of a home that never had one), the id as last read.
        """
        try:
            with self.index.read() as cur:
                rows = cur.execute(_DEVICE_ID_SQL).fetchall()
        except StoreClosedError:  # (closed, or a forked child's copy)
            return self._device_id
        if rows:
            self._device_id = str(rows[0][0])
        return self._device_id

    def _revision_device(self, cur: Any) -> str:
        """The device id a revision recorded in the current write transaction names: read once
        per transaction (device_id's own read, once per revision, was ~2 % of a download)."""
        serial = self.index.write_serial
        if self._device_serial != serial:
            rows = cur.execute(_DEVICE_ID_SQL).fetchall()
            if rows:
                self._device_id = str(rows[0][0])
            self._device_serial = serial
        return self._device_id

    def daemon(self) -> dict[str, Any] | None:
        """The daemon serving this home (pid, port, ...), or None: then the app may sync itself."""
        from localstore._daemon_state import daemon_running

        return daemon_running(self.settings)

    def start_sync(self, **engine_kwargs: Any) -> EmbeddedSync:
        """Run the sync engine in this process, holding the home's lock; it stops with the store.

        Returns the ``sync.embed.EmbeddedSync`` handle. Raises LockHeldError (precisely
        ``sync.SyncLockedError``, a subclass) when a daemon (or another app, or another store
        in this process) already syncs this home, ConfigError when the sync package is missing,
        and the sync package's own errors, ``sync.SyncError``s (LocalStoreErrors too: one
        tree): ``sync.NotLoggedInError`` without a cloud session, another ``sync.AuthError``
        when the session cannot be read (no usable keychain). WatcherError when the folder
        cannot be watched.
        """
        self._check_writable("sync")
        try:
            # Imported here, never at module level: localstore must not depend on sync.
            from sync.embed import start_sync
        except ImportError as exc:
            raise ConfigError(
                "sync is not available in this installation",
                hint="install localstore with its sync package",
            ) from exc
        return start_sync(
            self._as_store, **engine_kwargs
        )  # (it hooks the handle's stop to close())

    @contextlib.contextmanager
    def _while_open(self) -> Iterator[None]:
        """Hold the close lock with the store open, or raise StoreClosedError.

        close() marks the store closed under this lock before it forgets the subscribers and
        copies the close hooks, so what the block adds is in place by then. Checked without it
        first, the add raced close(): a hook added after that copy never ran, a subscriber added
        after the forgetting stayed on the closed store.
        """
        self._check_open()  # (first unlocked: in a forked child a parent's thread may hold it)
        with self._close_lock:
            self._check_open()
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed", hint="open it again")
        if os.getpid() != self._pid:
            raise forked_error(self._pid)

    def _check_writable(self, action: str) -> None:
        """Raise ReadOnlyStoreError on a read-only store, before anything (a file) is written:
        the index refuses every write too, but a save writes its files first."""
        self._check_open()
        if self.read_only_reason is not None:
            raise self.index.read_only_error(action)

    @property
    def read_only(self) -> bool:
        """True for a store opened read-only (``read_only_reason`` says why)."""
        return self.read_only_reason is not None

    def subscribe(
        self, callback: Callable[[Event], None], *, kinds: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Receive every change event (or only ``kinds``); returns an unsubscribe function.

        Events come after the change is committed, on the committing thread once it released
        the index lock: one thread's in its order, different threads' in no order with each
        other, so keep each blueprint's rev and ignore an event below it (see
        localstore.events). Raises InvalidInputError for a callback that is not callable or an
        unknown kind, StoreClosedError after close(). Against a close() on another thread, the
        subscriber is either forgotten by that close() (as every other) or this call raises
        StoreClosedError: a closed store keeps none.
        """
        with self._while_open():
            return self.events.subscribe(callback, kinds=kinds)

    # -- paths and refs ----------------------------------------------------------------------------

    def abspath(self, rel: fs.StrPath) -> Path:
        """Absolute path of a canonical relative path (refusing escapes through links)."""
        text = rel if isinstance(rel, str) else fs.path_text(rel)  # (str: on the save path)
        if not isinstance(text, str):
            raise wrong_type(
                "rel",
                rel,
                "a relative path string",
                hint="pass a path as store.list() shows it, e.g. 'team/deploy.blueprint.yaml'",
            )
        return fs.resolve_inside(self.root, text, real_root=self._real_root)

    def _abspath_in(self, rel: str, batch: _Batch) -> str:
        folder, _, name = rel.rpartition("/")
        parent = self._root_str + (os.sep + folder.replace("/", os.sep) if folder else "")
        if parent not in batch.safe_dirs:
            resolved = str(self.abspath(rel))
            batch.safe_dirs.add(os.path.dirname(resolved))
            return resolved
        return parent + os.sep + name
