"""The daemon's control API: the ops it answers (status, sync, verify, pause and resume, metrics,
stop) and the status and metrics it reports.

:class:`DaemonOps` is a part of :class:`sync.daemon.Daemon`, which sets the attributes declared
here (in its ``__init__`` and as its parts start).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from localstore._daemon_state import PAUSED_DETAIL, clear_pause, write_pause
from localstore.config import Settings, home_name
from localstore.errors import LocalStoreError, WatcherError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, WatcherState
from sync._app_validator import AppValidator
from sync._daemon_log import LOG_FILE
from sync._daemon_metrics import DaemonMetrics, _MeteredEngine
from sync._follow import WatcherKeeper, realtime_health, watcher_health
from sync._local import SyncStateName, list_flagged, local_status, status_hint, unaccepted_files
from sync._timefmt import span_clock
from sync.control import ControlServer, OpError
from sync.engine import SyncEngine
from sync.remote import Remote

log = logging.getLogger("sync.daemon")

RELOGIN_CHECK_S = 60.0
SYNC_WAIT_IDLE_S = 10.0


def _home_folder(settings: Settings) -> str | None:
    """daemon.json's and status' ``home``: the home folder, None for the platform folders'."""
    return None if settings.home is None else str(settings.home)


class DaemonOps:
    """The control API's ops and the status and metrics they report (see the module docstring)."""

    settings: Settings
    store: BlueprintStore | None
    validator: AppValidator
    watcher: Watcher | None
    engine: _MeteredEngine | None
    remote: Remote | None
    server: ControlServer | None
    metrics: DaemonMetrics
    started_at: float
    _started_up: float
    _stop: threading.Event
    _paused: bool
    _paused_since: float | None
    _offline_reason: str
    _offline_hint: str
    _pause_mutex: threading.Lock
    _unaccepted_mutex: threading.Lock
    _unaccepted: tuple[tuple[int, int] | None, int]
    _watcher_keeper: WatcherKeeper | None
    _attach_engine: Callable[[], bool]

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Answer one control op (runs on the control server's pool)."""
        if op == "status":
            return self.status()
        if op == "sync":
            return self._op_sync(args)
        if op == "verify":
            return self._op_verify()
        if op == "pause":
            return self._op_pause(True)
        if op == "resume":
            return self._op_pause(False)
        if op == "metrics":
            return self.metrics_snapshot()
        if op == "stop":
            # SIGTERM's clean stop for whoever holds the token (the user who can read
            # daemon.json, who could signal the process anyway). On Windows it is the only one:
            # os.kill(pid, SIGTERM) there is TerminateProcess, which runs no shut-down at all.
            log.info("stop requested through the control API")
            self._stop.set()
            return {"stopping": True, "pid": os.getpid()}
        raise OpError("unknown_op", f"unknown op {op!r}")

    def _sync_status(self) -> dict[str, Any]:
        out = self._engine_status()
        if self._paused:
            out["paused_since"] = self._paused_since
            out["detail"] = "; ".join(d for d in (out.get("detail"), PAUSED_DETAIL) if d)
        return out

    def _engine_status(self) -> dict[str, Any]:
        if self.engine is None:
            assert self.store is not None
            # The documented SyncStatus fields, read from the index: a daemon that is not
            # logged in still has pending uploads, conflicts and flagged files to show. It sent
            # only its state, so clients printed "pending uploads: None".
            state: SyncStateName = "paused" if self._paused else "offline"
            try:
                out = local_status(self.store, state=state).to_dict()
            except LocalStoreError as exc:  # (a locked or damaged index: say so, do not fail)
                out = {"state": state, "last_error": str(exc)}
            out.update(detail=self._offline_reason, hint=self._offline_hint, logged_in=False)
            return out
        out = self.engine.status().to_dict()
        out["logged_in"] = True
        out["identity"] = getattr(self.remote, "identity", "")
        return out

    def status(self) -> dict[str, Any]:
        """Daemon, sync and watcher status as one JSON-friendly dict."""
        watcher = self.watcher
        watcher_state, problem = watcher_health(watcher, self._watcher_keeper)
        return {
            "daemon": {
                "pid": os.getpid(),
                "home": _home_folder(self.settings),  # (as in daemon.json)
                "home_name": home_name(self.settings),
                "started_at": self.started_at,
                "uptime_s": round(span_clock() - self._started_up, 3),
                "device_id": self.store.device_id if self.store else "",
                "device_name": self.settings.device_name,
            },
            "sync": self._with_hint(self._with_unaccepted(self._sync_status())),
            "watcher": {
                "state": watcher_state,
                "problem": problem,
                # Not a problem: how the folder is watched (a network file system's rescans).
                "notice": watcher.notice if watcher else None,
                "stats": asdict(watcher.stats) if watcher else {},
            },
            "index": self.store.index_health() if self.store else None,
            "validator": self._validator_status(),
            # The hint channel (docs/daemon.md, "Realtime health"); null while sync is off.
            "realtime": realtime_health(self.remote) if self.engine is not None else None,
        }

    def _validator_status(self) -> dict[str, Any]:
        home = None
        if self.store is not None:
            try:
                home = self.store.home_validator()
            except LocalStoreError as exc:  # (a locked or damaged index: say so, do not fail)
                out = self.validator.status(None)
                out["home_error"] = str(exc)
                return out
        return self.validator.status(home)

    def _with_hint(self, sync: dict[str, Any]) -> dict[str, Any]:
        """Make ``hint`` what the person should do, as EmbeddedSync.status() and `localstore
        status` say it (sync._local.status_hint): the login's hint while offline for want of
        one, then a line for each thing that needs attention; None when nothing. It carried only
        the login's, so a client of the control API had counts and nothing saying what to do."""
        sync["hint"] = status_hint(sync, sync.get("hint") or None)
        return sync

    def _with_unaccepted(self, sync: dict[str, Any]) -> dict[str, Any]:
        """Count new files that never parsed among the flagged ones, as `localstore status` does.

        They have no index row, so the engine's count (kept cheap for its status events) misses
        them; the status op, asked for on demand, stats the folder for them.
        """
        if self.store is not None and isinstance(sync.get("flagged"), int):
            sync["flagged"] += self._unaccepted_count(self.store)
        return sync

    def _unaccepted_count(self, store: BlueprintStore) -> int:
        """len(unaccepted_files), walked again only when the watcher saw the folder change.

        A walk stats every file (0.3 s at 10,000 blueprints): too much for every status request.
        The key is read before the walk, so a change during it makes the next request walk again.
        """
        watcher = self.watcher
        key = None
        if watcher is not None and watcher.state is WatcherState.RUNNING:
            key = (watcher.stats.raw_events, watcher.stats.rescans)
        with self._unaccepted_mutex:
            known, count = self._unaccepted
            if key is None or key != known:
                count = len(unaccepted_files(store))
                self._unaccepted = (key, count)
            return count

    def _sync_engine(self) -> SyncEngine:
        """The engine, attached now if it was not yet; OpError when sync is off."""
        if self.engine is None and not self._attach_engine():
            logged_out = self._offline_reason == "not logged in"
            # The hint of the reason sync is off, as `status` gives it: the login's hint was
            # given whatever the reason, so a keychain that could not be read, or an engine
            # that could not start, sent the user to log in again, which changed nothing.
            hint = self._offline_hint or (
                "log in with `localstore login`; the daemon picks the session up"
                if logged_out
                else f"see the daemon's log ({self.settings.paths.state / LOG_FILE}) for why; "
                f"the daemon tries again every {RELOGIN_CHECK_S:.0f} s and at each sync request"
            )
            raise OpError(
                "not_logged_in" if logged_out else "offline",
                f"sync is off: {self._offline_reason}",
                hint=hint,
            )
        engine = self.engine
        assert engine is not None
        return engine

    def _op_verify(self) -> dict[str, Any]:
        # Here, not in the CLI: this engine's cycle lock keeps it between two cycles. Run in
        # `localstore sync --verify`'s own process, a push of the daemon's between its read of
        # the server and its read of the index was reported as a difference (exit 3). Allowed
        # while paused: it changes nothing, here or on the server.
        return self._sync_engine().verify().to_dict()

    def _op_sync(self, args: dict[str, Any]) -> dict[str, Any]:
        wait = args.get("wait", False)
        if not isinstance(wait, bool):
            raise OpError("bad_request", "'wait' must be true or false")
        retry = args.get("retry_quarantined", False)
        if not isinstance(retry, bool):
            raise OpError("bad_request", "'retry_quarantined' must be true or false")
        engine = self._sync_engine()
        if self._paused:
            raise OpError("paused", "sync is paused", hint="resume it first")
        # Here, not in the CLI: the daemon holds the home's lock, so `localstore sync
        # --retry-quarantined` (the command `status` prints for each entry) was refused with
        # "another process is syncing this home" whenever the daemon ran.
        retried = engine.retry_quarantined() if retry else 0
        if not wait:
            engine.request_sync()
            status = self._with_unaccepted(self._sync_status())
            return {"requested": True, "retried": retried, "status": status}
        self._wait_for_watcher()
        report = engine.sync_once()
        # The engine's `flagged` counts index rows only: a new file that never parsed has none,
        # and was left out of the reply (and of "needs attention"); `localstore sync` patched
        # the count itself, other clients got the low one. The reply lists them all, as
        # `localstore status` does (a folder walk: small next to the cycle just run).
        status = self._sync_status()
        assert self.store is not None
        flagged = [f.to_dict() for f in (*list_flagged(self.store), *unaccepted_files(self.store))]
        status["flagged"] = len(flagged)
        return {
            "report": report.to_dict(),
            "status": status,
            "flagged_files": flagged,
            "retried": retried,
        }

    def _wait_for_watcher(self) -> None:
        """Barrier: edits made before a `sync` request are indexed before the cycle reads the outbox.

        If the watcher cannot say so (it failed, the folder is missing, it is still behind after
        SYNC_WAIT_IDLE_S), the request is refused rather than answered with a cycle that may
        silently leave those edits out.
        """
        watcher = self.watcher
        if watcher is None:
            return
        try:
            idle = watcher.wait_idle(SYNC_WAIT_IDLE_S)
            why = "it is still busy" if watcher.problem is None else watcher.problem
        except WatcherError as exc:
            idle, why = False, exc.message
        if not idle:
            raise OpError(
                "watcher_behind",
                f"the watcher cannot confirm that every edit is indexed: {why}",
                hint="see `localstore status`; try again, or sync without waiting",
            )

    def _op_pause(self, pause: bool) -> dict[str, Any]:
        with self._pause_mutex:
            # Recorded first: a pause must outlive a restart (docs/daemon.md, "Pause"). A state/
            # that cannot be written still pauses this daemon, as before, with a warning.
            state_dir = self.settings.paths.state
            try:
                if pause:
                    self._paused_since = write_pause(state_dir)
                else:
                    clear_pause(state_dir)
                    self._paused_since = None
            except OSError as exc:
                log.warning(
                    "could not %s the pause in %s (%s); it holds until the daemon stops",
                    "record" if pause else "remove",
                    state_dir,
                    exc.strerror or exc,
                )
                self._paused_since = time.time() if pause else None
            self._paused = pause
            try:
                if self.engine is not None:
                    if pause:
                        self.engine.pause()
                    else:
                        self.engine.resume()
                return self._sync_status()
            except LocalStoreError as exc:
                # Done by now (recorded, and the engine's flag set before it publishes its status):
                # only the counts that status reads from the index failed (a locked or damaged
                # index). An error reply said the pause or resume failed, and the user ran it again
                # or took sync for paused when it was not.
                word = "paused" if pause else "resumed"
                log.warning("sync %s, but its status could not be read: %s", word, exc.message)
                return {
                    "state": "paused" if pause else "idle",
                    "warning": {
                        "message": f"sync {word}, but the daemon could not report its status: "
                        f"{exc.message}",
                        "hint": exc.hint or "see `localstore doctor` and the daemon's log",
                    },
                }

    # -- metrics -----------------------------------------------------------------------------------

    def metrics_snapshot(self) -> dict[str, Any]:
        """Counters and gauges (what the ``metrics`` op and /metrics report)."""
        out: dict[str, Any] = {"counters": asdict(self.metrics), "gauges": {}}
        gauges = out["gauges"]
        gauges["uptime_seconds"] = round(span_clock() - self._started_up, 3)
        gauges["threads"] = threading.active_count()
        if self.engine is not None:
            status = self.engine.status()
            gauges.update(
                queue_depth=status.pending,
                conflicts_open=status.conflicts,
                quarantine=status.quarantined,
                held=status.held,
            )
        realtime = realtime_health(self.remote) if self.engine is not None else None
        if realtime is not None:
            gauges["realtime_subscribed"] = int(realtime["state"] == "subscribed")
            gauges["realtime_failures"] = realtime["failures"]
            out["counters"].update({f"realtime_{k}": v for k, v in realtime["stats"].items()})
        if self.store is not None:
            index = self.store.index_health()
            gauges["index_wal_bytes"] = index["wal_bytes"]
            if index["maintainer"] is not None:
                gauges["index_maintainer_running"] = int(index["maintainer"]["running"])
                gauges["index_maintenance_failed_rounds"] = index["maintainer"]["failed_rounds"]
        if self.watcher is not None:
            w = self.watcher.stats
            out["counters"].update(
                watcher_raw_events=w.raw_events,
                watcher_ingested=w.ingested,
                watcher_rescans=w.rescans,
                watcher_overflows=w.overflows,
                watcher_failures=w.failures,
                watcher_errors=w.errors,
            )
        if self.server is not None:
            control = asdict(self.server.stats)
            # The connections open now are a gauge, and the counter of all of them is
            # `control_connections` (Prometheus: ..._connections_total): reported as they are
            # named in ServerStats, they came out as `localstore_control_connections_total_total`
            # and a counter that went down.
            gauges["control_connections_open"] = control.pop("connections")
            control["connections"] = control.pop("connections_total")
            out["counters"].update({f"control_{k}": v for k, v in control.items()})
        with contextlib.suppress(ImportError, OSError):
            import psutil

            proc = psutil.Process()
            gauges["rss_bytes"] = proc.memory_info().rss
            # psutil has no num_fds() on Windows (AttributeError, which metrics would raise):
            # there the open handles are the same measure.
            count_open = getattr(proc, "num_fds", None) or getattr(proc, "num_handles", None)
            if count_open is not None:
                gauges["open_files"] = count_open()
        return out

    def prometheus_text(self) -> str:
        """The metrics in Prometheus text exposition format."""
        snap = self.metrics_snapshot()
        lines: list[str] = []
        for kind, values in (("counter", snap["counters"]), ("gauge", snap["gauges"])):
            for name, value in sorted(values.items()):
                metric = f"localstore_{name}"
                if kind == "counter" and not name.endswith("seconds"):
                    metric += "_total"
                mtype = "gauge" if name.endswith("seconds") or kind == "gauge" else "counter"
                lines.append(f"# TYPE {metric} {mtype}")
                lines.append(f"{metric} {float(value):g}")
        return "\n".join(lines) + "\n"
