"""The watched folder and its observer: one part of ``Watcher`` (see ``_watch_state``).

Starts the observer and restarts it when a thread died or folders need watching again; tells
the folder being watched from a missing one, one replaced by an empty folder (an unmounted
drive) or one that lost its mark; goes on in rescan-only mode when a limit refuses the folder's
watch; finds sub-folders inotify does not watch; and decides how often a folder on a network
or FUSE file system is rescanned.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import Any

from localstore import files as fs
from localstore._fstype import _remote_notice, filesystem_type, is_remote_filesystem
from localstore._inotify import (
    _EVENT_FILTER,
    _denied,
    _folder_gone,
    _folders,
    _Handler,
    _ignore_rewatch_warning,
    _inotify_watched,
    _keep_overflow_warnings,
    _new_observer,
    _root_watch_refused,
    _watch_error,
    _watch_limit,
    _watches_free,
    _WatchLimitError,
)
from localstore._reconcile import (
    CONFIRM_EMPTY_NAME,
    ROOT_MARK_NAME,
    ROOT_MARK_SETTING,
    adopt_root,
    read_root_mark,
)
from localstore._watch_state import WatcherState, _WatcherBase, log
from localstore.errors import LocalStoreError, WatcherError

HEALTH_CHECK_S = 2.0
# How many recorded YAMLs are looked for in a folder that lost its mark (see _same_root).
_ROOT_SAMPLE = 16
# A folder inotify does not watch (the user's watch limit is used up; watchdog skips such
# sub-folders without a word): its edits are found by rescans, this often (stretched to ten times
# a rescan's duration, so a big tree costs at most a tenth of a core).
LIMITED_RESCAN_S = 30.0
# The folder itself cannot be watched (the watch or instance limit is used up): the watcher runs
# on rescans alone (at the interval above) and tries to take the watch again after the first
# delay, doubling up to the second while the kernel refuses it. A failed try is one
# inotify_init and one inotify_add_watch.
LIMIT_RETRY_S = (2.0, 60.0)
# Folders left unwatched: after a rescan, a probe asks the kernel for their watches (in an
# inotify instance of its own, closed at once); when it gets them all, the observer is started
# again to take them. A restart that still leaves folders unwatched (watchdog skipping a folder
# for some other reason) waits longer before the next one, doubling up to this.
REWATCH_MAX_S = 600.0
# A folder moved out of the tree (to the desktop's Trash) keeps its inotify watches, and those of
# its sub-folders: the kernel follows the folder wherever it goes, and watchdog lets a watch go
# only when its folder is deleted. The observer is started again this long after the first such
# move (one restart and rescan for a burst of them), which drops them.
STALE_WATCHES_S = 60.0


class _FolderHealth(_WatcherBase):
    """The watched folder and its observer (the layer above ``_WatcherBase``)."""

    @property
    def notice(self) -> str | None:
        """What a status page should say about how this folder is watched, though nothing is
        wrong (a network or FUSE file system, rescanned on a timer); None when plain inotify."""
        if not self.remote:
            return None
        return _remote_notice(
            self.root, self.filesystem, self._remote_setting, self._remote_interval()
        )

    def _start_observer(self) -> Any:
        # watchdog 7 drops EACCES from inotify_add_watch (InotifyFD._raise_error returns for
        # it), even for the folder it was asked to watch: an unreadable folder was "watched"
        # with nothing watched, fences never came back (wait_idle and the daemon's `sync
        # --wait` timed out), edits waited for the timer rescan, and once the folder was
        # readable it still was not watched. So the kernel is asked first, in a probe instance.
        refused = _root_watch_refused(self.root)
        if refused is not None:
            raise _watch_error(refused, self.root) from refused
        _ignore_rewatch_warning()
        try:
            # The inotify instance is created here: EMFILE (max_user_instances) comes from this
            # line, and escaped as a bare OSError that neither start()'s callers nor the health
            # check's restart expected.
            observer = _new_observer()
        except OSError as exc:
            raise _watch_error(exc, self.root) from exc
        try:
            observer.schedule(
                _Handler(self._q.put), str(self.root), recursive=True, event_filter=_EVENT_FILTER
            )
            observer.start()
        except OSError as exc:
            observer.stop()
            raise _watch_error(exc, self.root) from exc
        return observer

    def _check_observer(self) -> bool:
        """Restart watchdog's threads if one died; True when the watched folder is in place.

        While the blueprints folder is missing (or replaced by an empty one) there is nothing to
        watch and nothing may be deleted: report it and look again at the next health check. Once
        it is back (or replaced by a folder with blueprints in it: a restore), watch it anew and
        rescan. A folder whose watch a limit refuses is in place: rescans and deletes go on
        (rescan-only mode) and the watch is tried again when ``_limit_retry_at`` is due.
        """
        _keep_overflow_warnings()  # in case the app raised the levels after start()
        problem, ident = self._root_status()
        if problem is not None:
            if problem != self._root_problem:
                log.error("%s; no rescans or deletes until it is back", problem)
            self._root_problem = problem
            return False
        obs = self._observer
        same_root = self._same_root(ident)
        since = self._stale_since
        stale = since is not None and time.monotonic() - since >= STALE_WATCHES_S
        if stale:
            self._rewatch = True
        if obs is None:
            if same_root and time.monotonic() < self._limit_retry_at:
                return True  # rescan-only, the next try of the watch is not due yet
            healthy = False
        else:
            healthy = _threads_alive(obs)
        if same_root and healthy and not self._rewatch:
            return True
        started, limit_error = self._replace_observer(obs)
        if not started:
            return False
        if obs is not None:
            with contextlib.suppress(RuntimeError):
                obs.join(5)
        if self._root_problem is not None or ident != self._root_id:
            log.warning("the blueprints folder %s is back; watching it and rescanning", self.root)
            self._adopt_root(ident)
            self._detect_filesystem()  # a share mounted where a local folder was, or back
        else:
            self._log_restart(obs, limit_error, healthy=healthy, stale=stale)
        self._restarted(ident, limit_error, retried=obs is None and same_root)
        return True

    def _replace_observer(self, obs: Any) -> tuple[bool, WatcherError | None]:
        """Stop ``obs`` (if any) and start a new observer, under the state lock.

        Returns (False, None) when the watcher is no longer running or the folder went away
        again (said in ``_root_problem``), else (True, the error of a watch refused while the
        folder is in place: rescan-only until the retry; None when the observer started).
        """
        limit_error: WatcherError | None = None
        with self._state_lock:
            if self._state is not WatcherState.RUNNING:
                return False, None
            if obs is not None:
                # The old observer goes first: its watches count against the same limit the
                # new one needs them under (a restart used to need twice the folder's watches).
                obs.stop()
                self._observer = None
                self._observer_epoch += 1
            try:
                self._observer = self._start_observer()
            except _WatchLimitError as exc:
                limit_error = exc  # the folder is in place: rescan-only until the retry
            except WatcherError as exc:
                if not _folder_gone(exc):
                    # Refused for another reason while the folder is in place (ENOMEM: a memory
                    # limit on the session's inotify marks; EACCES): rescan-only with the same
                    # back-off too. Taken for a missing folder, it stopped rescans and deletes
                    # and was tried (and logged as an ERROR) every 0.5 s for as long as it
                    # lasted.
                    limit_error = exc
                else:
                    # Gone again between the stat and the watch: retried at the next health
                    # check. Said as the missing folder it is, with what to do (it read "cannot
                    # watch ...: No such file or directory" until the next check).
                    self._root_problem = self._gone_problem() or exc.message
                    log.error("cannot watch the blueprints folder yet: %s", exc.message)
                    return False, None
            else:
                self._observer_epoch += 1
        return True, limit_error

    def _log_restart(
        self, obs: Any, limit_error: WatcherError | None, *, healthy: bool, stale: bool
    ) -> None:
        """Say why the observer of the same folder was started again (``obs``: the old one)."""
        if limit_error is not None:
            pass  # _limited logs it
        elif obs is None:
            log.warning("the blueprints folder %s is watched again", self.root)
        elif self._rewatch and stale:
            log.info("watching %s anew: folders moved out of it kept their watches", self.root)
        elif self._rewatch:
            log.warning("watching every folder again (watches are free, or a folder is readable)")
        elif healthy:
            pass  # nothing died: the folder lost its mark, and _same_root said so
        else:
            log.error("a watchdog thread died; restarting the observer and rescanning")

    def _restarted(
        self, ident: tuple[int, int] | None, limit_error: WatcherError | None, *, retried: bool
    ) -> None:
        """Record the folder ``ident`` as watched (or rescan-only after ``limit_error``) and ask
        for a rescan, unless ``retried`` (a retry of a watch a limit refused, on the same
        folder) failed again."""
        self._root_problem = None
        self._root_id = ident
        self._rewatch = False
        self._stale_since = None
        self._watch_check_due = True
        if limit_error is not None:
            self._limited(limit_error)
            if retried:
                return  # a failed retry: the timer rescans go on as they were
        else:
            self._limit_problem = None
            self._limit_retry_delay = 0.0
            self.stats.restarts += 1
        self._rescan_wanted = "observer-restarted"

    def _limited(self, exc: WatcherError) -> None:
        """Go on in rescan-only mode: the folder's own watch was refused (for a limit, or for
        another reason while the folder is in place), tried again with a back-off.

        Logged once per reason (an ERROR when it starts, a WARNING when the reason changes);
        the tries in between go to DEBUG: a laptop can stay in this mode for months.
        """
        first, most = LIMIT_RETRY_S
        self._limit_retry_delay = min(most, self._limit_retry_delay * 2 or first)
        self._limit_retry_at = time.monotonic() + self._limit_retry_delay
        self._unwatched, self._unwatched_suspects, self._watch_problem = [], set(), None
        self._limit_denied = _denied(exc)
        if self._limit_denied:
            # Rescans cannot list it either: nothing is found, nothing is deleted.
            problem = (
                f"{exc.message}; its blueprints are left as they are and watching is tried "
                f"again; {exc.hint}"
            )
        else:
            problem = (
                f"{exc.message}; edits are found by a rescan every {self._interval():.0f} s "
                f"and watching is tried again; {exc.hint}"
            )
        if self._limit_problem is None:
            log.error("%s", problem)
        elif self._limit_reason != exc.message:
            log.warning("%s", problem)
        else:
            log.debug("still cannot watch %s: %s", self.root, exc.message)
        self._limit_problem = problem
        self._limit_reason = exc.message

    def _gone_problem(self) -> str | None:
        """The problem of a blueprints folder that is not there (None: it is)."""
        try:
            os.stat(self.root)
        except OSError as exc:
            return self._missing(exc)
        return None

    def _missing(self, exc: OSError) -> str:
        return (
            f"the blueprints folder {self.root} is missing ({exc.strerror or exc}); if its "
            f"blueprints were deleted on purpose, make the folder again with an empty file "
            f"{CONFIRM_EMPTY_NAME} in it"
        )

    def _root_status(self) -> tuple[str | None, tuple[int, int] | None]:
        """What is wrong with the blueprints folder itself (None: nothing), and its identity."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            return self._missing(exc), None
        if not stat.S_ISDIR(st.st_mode):
            return f"the blueprints folder {self.root} is not a folder", None
        ident = (st.st_dev, st.st_ino)
        if (
            self._root_id is not None
            and (ident != self._root_id or not self._root_marked())
            and not (self.root / CONFIRM_EMPTY_NAME).is_file()
            and self._looks_emptied()
        ):
            # An unmounted drive leaves its empty mount point; a rescan would delete everything.
            # The user's confirmation file says otherwise (as it does to an open: check_root).
            return (
                f"the blueprints folder {self.root} was replaced by a folder without blueprints "
                "(an unmounted drive?); its blueprints are kept until it has some again, or "
                f"until an empty file {CONFIRM_EMPTY_NAME} in it says they were deleted on purpose",
                ident,
            )
        return None, ident

    def _same_root(self, ident: tuple[int, int] | None) -> bool:
        """Whether the folder in place is the one being watched, so that it needs no new watch
        and no rescan: its identity, and its mark or (the mark removed) its blueprints.

        An inode number alone is no proof (ext4 hands a freed one out again: see
        ``_reconcile_root.ROOT_MARK_NAME``), but a folder with the recorded YAMLs still in it at
        their recorded inodes is the old folder that lost its mark (``rm -rf`` removes it among the
        first files, or a user cleaning hidden files). Taken for a new one, it was watched anew
        and rescanned at every health check (2 s) for as long as the mark was missing. One
        without them (a copy put back in place) is watched anew and rescanned once. Either way
        the mark is not written back while running: the folder may be one an ``rm -rf`` is
        emptying, which a file put back into it fails ("Directory not empty"), as metas did;
        the next open (``check_root``) writes it. An unmarked folder without blueprints is still
        a replaced one (``_root_status``).
        """
        if self._root_problem is not None or ident != self._root_id:
            return False
        if self._root_marked():
            self._unmarked_ok = None
            return True
        if self._unmarked_ok == ident:
            return True
        self._unmarked_ok = ident
        if self._holds_recorded():
            log.warning(
                "the blueprints folder %s lost its mark %s but still holds its blueprints; "
                "watching on (the next open of the store writes the mark back)",
                self.root,
                ROOT_MARK_NAME,
            )
            return True
        log.warning(
            "the blueprints folder %s lost its mark %s and holds none of the recorded "
            "blueprints as they were (a copy put back?); watching it anew and rescanning",
            self.root,
            ROOT_MARK_NAME,
        )
        return False

    def _holds_recorded(self) -> bool:
        """Whether any of a sample of the live blueprints' YAMLs is in the folder with the inode
        the index recorded for it (one of them edited or deleted meanwhile does not count
        against the folder). Picked at random: spread over the folder, not the sub-folder an
        ``rm`` has just emptied."""
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT path, yaml_ino FROM blueprints WHERE deleted = 0 "
                "AND yaml_ino IS NOT NULL ORDER BY random() LIMIT ?",
                (_ROOT_SAMPLE,),
            ).fetchall()
        return any(self._yaml_ino(path) == int(ino) for path, ino in rows)

    def _root_marked(self) -> bool:
        """Whether the folder carries the mark it had at start (or there was none to carry)."""
        return self._root_mark is None or read_root_mark(self.root) == self._root_mark

    def _adopt_root(self, ident: tuple[int, int] | None) -> None:
        """Record a folder adopted while running as the one the index describes, as an open
        does (``adopt_root``): marked, so that emptying it later is an ordinary delete and not
        taken for a folder replaced by an empty one; its identity, so that writes and the next
        open take it for the folder; the user's confirmation removed once it has answered."""
        if ident is None:
            return
        try:
            adopt_root(self.store, f"{ident[0]}:{ident[1]}")
            self._root_mark = self.store.index.get_setting(ROOT_MARK_SETTING)
        except LocalStoreError as exc:
            log.warning("cannot record the blueprints folder %s: %s", self.root, exc)

    def _looks_emptied(self) -> bool:
        """Whether the folder holds no blueprint file while the index has live blueprints."""
        unlistable: list[tuple[str, OSError]] = []
        walk = fs.walk_blueprint_files(self.root, self._ignore, unlistable=unlistable)
        if any(rel.endswith(fs.YAML_SUFFIX) for rel, _ in walk) or unlistable:
            return False
        with self.store.index.read() as cur:
            rows = cur.execute("SELECT 1 FROM blueprints WHERE deleted = 0 LIMIT 1").fetchall()
        return bool(rows)

    def _yaml_ino(self, key: str) -> int | None:
        """The inode of the YAML at ``key`` as the index stores it (None: none there)."""
        try:
            return fs.ino_key(os.stat(self.root / key, follow_symlinks=False).st_ino)
        except OSError:
            return None

    def _interval(self) -> float:
        """Seconds between timer rescans: shorter while some folder is not watched, and on a
        network or FUSE file system (stretched to ten times a rescan's duration, so a big tree
        costs at most a tenth of a core)."""
        interval = self.rescan_interval_s
        if self._unwatched or self._observer is None:
            interval = min(interval, max(LIMITED_RESCAN_S, 10 * self._last_rescan_s))
        if self.remote:
            interval = min(interval, self._remote_interval())
        return interval

    def _remote_interval(self) -> float:
        stretched = max(self.remote_rescan_interval_s, 10 * self._last_rescan_s)
        return min(self.rescan_interval_s, stretched)

    def _detect_filesystem(self) -> None:
        """Decide whether inotify can be trusted for this folder (see ``filesystem_type``)."""
        fstype = filesystem_type(self.root)
        setting = self._remote_setting
        remote = is_remote_filesystem(fstype) if setting == "auto" else setting == "remote"
        changed = (fstype, remote) != (self.filesystem, self.remote)
        self.filesystem, self.remote = fstype, remote
        if not changed:
            return
        if remote:
            log.warning("%s", self.notice)
        elif is_remote_filesystem(fstype):
            log.info(
                "the blueprints folder %s is on %s, but remote_fs is local: edits made on other "
                "machines are found only by the rescan every %.0f s",
                self.root,
                fstype,
                self.rescan_interval_s,
            )

    def _check_watches(self) -> None:
        """Find the folders inotify does not watch; report them and rescan them more often.

        watchdog 7 skips a sub-folder whose watch the kernel refuses (ENOSPC: the user's
        ``max_user_watches`` is used up, often by an IDE or an indexer) without a word, so the
        watches are read back from the kernel (/proc/self/fdinfo) and compared with the folders
        a rescan walks. A folder must be missing at two looks (one health check apart): watchdog
        adds the watch of a new folder a moment after it appears.

        While folders are unwatched, each look (after every rescan) also asks the kernel whether
        their watches are free now (``_watches_free``: another program closed, or the limit was
        raised); if so the observer is restarted to take them.
        """
        self._watch_check_due = False
        if self._observer is None:
            # Rescan-only mode: nothing is watched and _limit_problem says why; looked at once
            # the observer is back (it sets _watch_check_due).
            self._watch_check_due = True
            return
        confirmed = self._confirmed_unwatched()
        if confirmed is None:
            return  # no /proc: nothing to compare with (and no inotify limits to report)
        was = bool(self._unwatched)
        self._unwatched = confirmed
        if not confirmed:
            if was:
                log.info("every folder is watched again")
            self._watch_problem = None
            self._rewatch_delay = 0.0
            return
        limit = _watch_limit()
        if not was:
            self._report_unwatched(confirmed, limit)
        elif time.monotonic() >= self._next_rewatch and _watches_free(
            [self.root / rel for rel in confirmed]
        ):
            self._schedule_rewatch()
        self._watch_problem = _unwatched_problem(confirmed, limit, self._interval())

    def _confirmed_unwatched(self) -> list[str] | None:
        """The folders not watched at this look and the one before, sorted (the ones missing at
        this look alone are kept as suspects); None when the kernel's watches cannot be read."""
        watched = _inotify_watched()
        if watched is None:
            return None
        folders = _folders(self.root, self._ignore)
        missing = {rel for ident, rel in folders.items() if ident not in watched}
        confirmed = sorted(missing & (self._unwatched_suspects | set(self._unwatched)))
        self._unwatched_suspects = missing - set(confirmed)
        if self._unwatched_suspects:
            self._watch_check_due = True  # looked at again at the next health check
        return confirmed

    def _report_unwatched(self, confirmed: list[str], limit: int | None) -> None:
        """Log newly unwatched folders, and rescan them soon."""
        self._next_rescan = min(self._next_rescan, time.monotonic() + self._interval())
        log.error(
            "%d folder(s) under %s are not watched (%s): the inotify watch limit "
            "(fs.inotify.max_user_watches = %s) is used up; rescanning every %.0f s instead",
            len(confirmed),
            self.root,
            ", ".join(p or "." for p in confirmed[:5]),
            limit,
            self._interval(),
        )

    def _schedule_rewatch(self) -> None:
        """Have the next health check restart the observer to take the free watches."""
        # The kernel has the watches now (an IDE closed, or the limit was raised as the
        # problem says): the health check restarts the observer to take them. Backing off
        # keeps a folder watchdog skips for another reason from restarting it every rescan.
        first = max(LIMITED_RESCAN_S, self._interval())
        self._rewatch_delay = min(REWATCH_MAX_S, self._rewatch_delay * 2 or first)
        self._next_rewatch = time.monotonic() + self._rewatch_delay
        self._rewatch = True
        self._watch_check_due = True
        self._next_health = 0.0


def _unwatched_problem(confirmed: list[str], limit: int | None, interval: float) -> str:
    """The watcher's problem while folders are not watched: which, why, and the fix."""
    shown = ", ".join(p or "." for p in confirmed[:5])
    more = f" and {len(confirmed) - 5} more" if len(confirmed) > 5 else ""
    return (
        f"{len(confirmed)} folder(s) are not watched ({shown}{more}): the inotify watch "
        f"limit (fs.inotify.max_user_watches = {limit}) is used up, by this or other "
        f"programs; edits there are found by a rescan every {interval:.0f} s; "
        "raise it: sudo sysctl fs.inotify.max_user_watches=524288 (and in /etc/sysctl.d/ "
        "to keep it)"
    )


def _threads_alive(obs: Any) -> bool:
    """Whether every thread of watchdog's observer ``obs`` is alive."""
    threads = [obs, getattr(obs, "_inotify_fd", None), *getattr(obs, "emitters", ())]
    return all(t is None or t.is_alive() for t in threads)
