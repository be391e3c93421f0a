"""``localstore doctor``'s checks: keychain, index (and damaged ones set aside), disk, watch limits,
cloud, daemon and the daemon's validator.

Each check returns a :class:`Finding` (ok, info or problem, with how to fix it);
:func:`run_checks` runs them all, a crashing check reported as a problem.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localstore._check_steps import check_steps
from localstore._daemon_state import OUTDATED_DAEMON_FIX, outdated_daemon
from localstore.config import Settings, cleartext_url_warning, home_name
from localstore.errors import LocalStoreError
from sync._daemon_stop import _unanswered_stop_command
from sync._timefmt import span
from sync.embed import daemon_running, read_state
from sync.errors import SyncError

if TYPE_CHECKING:
    from localstore.store import BlueprintStore, CheckReport

MIN_FREE_BYTES = 500 * 1024 * 1024


@dataclass
class Finding:
    """One doctor check: ok / info / problem, what was seen, how to fix it."""

    check: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly view."""
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def _in_the_way(settings: Settings, check: str) -> Finding | None:
    """A problem naming a file where the home needs one of its folders, or None.

    With `data` a regular file, the keychain check said to make data/credentials.backend
    readable and the index check to run `init`, which then failed on that very file.
    """
    paths = settings.paths
    for folder in (paths.data, paths.config, paths.cache, paths.state, paths.blueprints):
        for p in (folder, *folder.parents):
            if p.exists() and not p.is_dir():
                return Finding(
                    check,
                    "problem",
                    f"{p} is a file where the home needs a folder",
                    "move that file away (or choose another --home or LOCALSTORE_HOME), "
                    "then run `localstore init`",
                )
            if p == settings.home or p.exists():
                break  # (a folder: the ones above it are folders too)
    return None


def check_keychain(settings: Settings) -> Finding:
    """The credential backend works (a real set/get/delete probe), for a profile the
    credential commands take."""
    from localstore.credentials import keychain_report, profile_name_error

    in_the_way = _in_the_way(settings, "keychain")
    if in_the_way is not None:
        return in_the_way
    refused = profile_name_error(settings.profile)
    if refused is not None and not _profile_listed(settings):
        # `cred`, `login`, sync and KVStore with credentials refuse it (its probe worked, under
        # 'localstore:work :doctor', and doctor said "keychain: ok").
        return Finding("keychain", "problem", refused.message, refused.hint)
    report = keychain_report(settings)
    if report.get("ok"):
        return Finding("keychain", "ok", f"{report['active']} ({report['keyring_backend']})")
    return Finding(
        "keychain",
        "problem",
        str(report.get("problem") or "no usable keychain"),
        str(report.get("hint") or "install and unlock a Secret Service keychain"),
    )


def _profile_listed(settings: Settings) -> bool:
    """Whether the index lists credentials under the profile (stored before the name rule, so
    kept usable); True when it cannot tell (the index check says why)."""
    from localstore._credential_names import listed_names
    from localstore.index import Index

    if not settings.paths.index_db.exists():
        return False
    try:
        index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    except LocalStoreError:
        return True
    try:
        return bool(listed_names(index, settings.profile))
    except LocalStoreError:
        return True
    finally:
        index.close()


def check_index(settings: Settings) -> Finding:
    """The index opens, passes SQLite's quick_check and agrees with the files."""
    in_the_way = _in_the_way(settings, "index")
    if in_the_way is not None:
        return in_the_way
    if not settings.paths.index_db.exists():
        return Finding("index", "problem", "this home has no index yet", "run `localstore init`")
    from localstore._kept_edits import unacknowledged_kept

    try:
        with _readable_store(settings) as store:
            quick = store.index.pragma_check("quick_check")
            report = store.check()
            unacknowledged = unacknowledged_kept(store)
            read_only = store.read_only_reason
    except LocalStoreError as exc:
        return Finding("index", "problem", exc.message, exc.hint or "run `localstore check --fix`")
    finding = _index_finding(quick, report, unacknowledged)
    if read_only is None:
        return finding
    # Nothing can be saved, watched or synced there: a problem whatever the index holds (a
    # home that should be writable and is not; a snapshot checked here says what it is).
    from localstore._read_only import READ_ONLY_HOME_HINT

    fix = READ_ONLY_HOME_HINT
    if finding.status == "problem" and "check --fix" in finding.fix:
        fix += "; `localstore check --fix` runs on a writable copy only"
    return Finding(
        "index",
        "problem",
        f"the home {home_name(settings)} is read-only ({read_only}): nothing can be "
        f"saved, watched or synced in it; {finding.detail}",
        fix,
    )


def _readable_store(settings: Settings) -> BlueprintStore:
    """The home's store as doctor reads it: the usual open (no reconcile, no maintainer), or,
    when that is refused, read-only as the CLI's reading commands open it (a snapshot, a
    read-only disk: it failed with "cannot write the index")."""
    from localstore.errors import PermissionDeniedError
    from localstore.store import BlueprintStore

    try:
        return BlueprintStore(settings, reconcile=False, maintenance=False)
    except PermissionDeniedError as exc:
        try:
            return BlueprintStore(settings, read_only=True)
        except LocalStoreError as refused:
            raise refused from exc


def _index_finding(quick: list[str], report: CheckReport, unacknowledged: list[str]) -> Finding:
    """What check_index says of what the index's checks found."""
    if quick:
        return Finding(
            "index",
            "problem",
            f"SQLite quick_check: {'; '.join(quick[:3])}",
            "run `localstore check --fix`",
        )
    if not report.clean:
        kinds = sorted({p["kind"] for p in report.problems})
        # Each kind's own step: check --fix repairs only some kinds (an edit kept in
        # data/recovered/, a file that does not parse are the person's), and sending them
        # there alone left those problems standing.
        steps = [what for _, what in check_steps(kinds)]
        return Finding(
            "index",
            "problem",
            f"{len(report.problems)} difference(s) between files and index ({', '.join(kinds)})",
            "; then ".join(steps),
        )
    if unacknowledged:
        # Not a problem (no save that returned lost anything), but the person may want the
        # work an interrupted save was writing: told here, as check does not list it.
        shown = ", ".join(unacknowledged[:3]) + (" ..." if len(unacknowledged) > 3 else "")
        return Finding(
            "index",
            "info",
            f"quick_check ok; files and index agree; {len(unacknowledged)} version(s) that "
            f"interrupted saves were writing are kept in the data folder ({shown})",
            "look at them, copy what you need into the blueprints folder, then delete them "
            "(no save that returned lost anything)",
        )
    return Finding("index", "ok", "quick_check ok; files and index agree")


# A damaged index's name once set aside (localstore.index.set_aside): the UTC time of the
# rebuild, then "-N" when two came in one second, then "-wal"/"-shm" for its side files.
_SET_ASIDE_RE = re.compile(r"\.damaged-(\d{8}T\d{6}Z)(?:-\d+)?$")


def _set_aside_indexes(index_db: Path) -> list[tuple[Path, float, int]]:
    """The damaged indexes set aside next to ``index_db``: (path, when set aside as a Unix
    time, bytes with its -wal and -shm), oldest first."""
    found = []
    for path in sorted(index_db.parent.glob(f"{index_db.name}.damaged-*")):
        match = _SET_ASIDE_RE.search(path.name)
        if match is None:
            continue  # (a side file, counted with its index below; or not one of ours)
        try:
            st = path.stat()
        except OSError:
            continue  # (deleted since the listing)
        size = st.st_size
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                size += path.with_name(path.name + suffix).stat().st_size
        try:
            when = float(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))
        except ValueError:
            when = st.st_mtime
        found.append((path, when, size))
    return sorted(found, key=lambda f: (f[1], str(f[0])))


def _age(seconds: float) -> str:
    if seconds < 2 * 86400:
        return span(max(0.0, seconds))
    return f"{seconds / 86400:.0f} days"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{max(1, round(n / 1000))} kB"


def check_old_index(settings: Settings) -> Finding:
    """The damaged indexes set aside when the index was rebuilt from the files (information).

    Only the store object that rebuilt the index reported it (``index-rebuilt``); later
    `check` and `doctor` runs never mentioned the file, which holds the history the rebuilt
    index lacks: it was never looked at, or deleted without knowing what it held. Not a
    problem: nothing in it is to be fixed, and no exit code changes for it.
    """
    found = _set_aside_indexes(settings.paths.index_db)
    if not found:
        return Finding("old-index", "ok", "no damaged index set aside")
    now = time.time()
    named = ", ".join(
        f"{path} (set aside {_age(now - when)} ago, {_size(size)})" for path, when, size in found
    )
    one = len(found) == 1
    return Finding(
        "old-index",
        "info",
        f"{len(found)} damaged {'index' if one else 'indexes'} set aside when the index was "
        f"rebuilt from the files: {named}; {'it holds' if one else 'they hold'} the history "
        "(revisions, deletions), sync records and app data from before the rebuild, which the "
        "rebuilt index does not have (the blueprints themselves are in the files)",
        f"nothing to fix; keep {'it' if one else 'them'} while you may want that history or app "
        "data (LocalStore cannot read it back: open a copy with an SQLite tool, e.g. the sqlite3 "
        "shell's `.recover`, which rescues what the damage spared); delete "
        f"{'it' if one else 'them'} (with any -wal and -shm file beside "
        f"{'it' if one else 'them'}) once you do not and, for a home that syncs, once it has "
        "synced since the rebuild (its first sync after a rebuild looks for such a file)",
    )


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(settings: Settings) -> Finding:
    """Free space where the blueprints and the index live."""
    worst: tuple[int, Path] | None = None
    for p in (settings.paths.blueprints, settings.paths.data):
        usage = shutil.disk_usage(_existing_parent(p))
        if worst is None or usage.free < worst[0]:
            worst = (usage.free, p)
    assert worst is not None
    free_mb = worst[0] // (1024 * 1024)
    if worst[0] < MIN_FREE_BYTES:
        return Finding(
            "disk", "problem", f"only {free_mb} MB free for {worst[1]}", "free disk space"
        )
    return Finding("disk", "ok", f"{free_mb} MB free")


# Watches asked for beyond the home's folders (new folders, a restart's overlap, churn of other
# programs) before `doctor` calls the watch limit too tight.
WATCH_MARGIN = 500
WATCHES_FIX = "sudo sysctl fs.inotify.max_user_watches=524288 (persist it in /etc/sysctl.d/)"
INSTANCES_FIX = (
    "sudo sysctl fs.inotify.max_user_instances=512 (persist it in /etc/sysctl.d/), or close "
    "programs that watch files"
)


def check_watch_limits(settings: Settings) -> Finding:
    """The inotify limits (below), and whether inotify sees every change of the folder: on a
    network or FUSE file system it does not see other machines' edits (info, with the rescan
    period that finds them)."""
    from localstore.watcher import remote_fs_notice

    finding = _check_inotify_limits(settings)
    notice = remote_fs_notice(settings)
    if notice is None:
        return finding
    fix = (
        "nothing to do if a delay is fine; lower remote_rescan_interval_s for a shorter one, "
        "or keep the blueprints on a local disk"
    )
    if finding.status == "problem":
        return Finding(finding.check, "problem", f"{finding.detail}; {notice}", finding.fix)
    return Finding(finding.check, "info", f"{notice}; {finding.detail}", fix)


def _check_inotify_limits(settings: Settings) -> Finding:
    """inotify watches (one per folder) and an instance are free for the blueprints tree.

    The limits are per user and shared with every program of the user (an IDE, a file indexer,
    a sync client), so what those hold is counted (``inotify_usage``, from /proc/<pid>/fdinfo);
    the watches of whatever already watches this home (a running daemon) are not taken from it.
    Where the processes cannot be read, twice the folders plus 1000 stands in for the others.
    """
    from localstore.watcher import inotify_limits, inotify_usage

    limit, instance_limit = inotify_limits()
    if limit is None:
        return Finding("watcher", "ok", "no inotify limit applies on this system")
    root = settings.paths.blueprints
    # Hidden folders count: watchdog watches every sub-folder (a .git costs hundreds).
    folders = 1 + sum(len(dirs) for _, dirs, _ in os.walk(root)) if root.exists() else 0
    usage = inotify_usage(root)
    if usage is None:
        return _estimated_watch_limits(folders, limit)
    others = usage.watches - usage.folder_watches
    free = limit - others
    problems, fixes = [], []
    if free < folders + WATCH_MARGIN:
        problems.append(
            f"{folders} folder(s) to watch, but other programs hold {others} of the "
            f"{limit} inotify watches (max_user_watches) and {max(free, 0)} are free"
        )
        fixes.append(WATCHES_FIX)
    other_instances = usage.instances - usage.folder_instances
    # A watcher of this home already has its instance (and frees it before taking a new one).
    if (
        instance_limit is not None
        and usage.folder_instances == 0
        and instance_limit - other_instances < 1
    ):
        problems.append(
            f"other programs hold {other_instances} of the {instance_limit} inotify "
            "instances (max_user_instances): a watcher cannot start"
        )
        fixes.append(INSTANCES_FIX)
    if problems:
        return Finding(
            "watcher",
            "problem",
            "; ".join(problems) + "; what is not watched is found only by a rescan every 30 s",
            "; ".join(fixes),
        )
    unknown = f", {usage.unreadable} process(es) not readable" if usage.unreadable else ""
    return Finding(
        "watcher",
        "ok",
        f"{folders} folder(s); max_user_watches {limit}, {others} held by other programs; "
        f"inotify instances {usage.instances} of {instance_limit}{unknown}",
    )


def _estimated_watch_limits(folders: int, limit: int) -> Finding:
    """_check_inotify_limits' finding where the processes cannot be read (twice the folders
    plus 1000 stands in for what the others hold)."""
    if folders * 2 + 1000 > limit:
        return Finding(
            "watcher",
            "problem",
            f"{folders} folders to watch, max_user_watches is {limit}",
            WATCHES_FIX,
        )
    return Finding("watcher", "ok", f"{folders} folder(s); max_user_watches {limit}")


def check_cloud(settings: Settings) -> Finding:
    """Login and reachability of the configured cloud project (skipped when not logged in), and
    a warning when its URL is plain http to another machine."""
    finding, url = _cloud_reach(settings)
    warning = cleartext_url_warning(url) if url else None
    if warning is None:
        return finding
    # Said, not a problem (no exit 3): self-hosted Supabase over http on a LAN is a real setup.
    fix = "serve the project over https and log in to its https:// URL"
    return Finding(
        "cloud",
        "info" if finding.status == "ok" else finding.status,
        f"{finding.detail}; warning: {warning}",
        f"{finding.fix}; {fix}" if finding.fix else fix,
    )


def _cloud_reach(settings: Settings) -> tuple[Finding, str]:
    """check_cloud's finding without the URL warning, and the project URL seen ("" if none)."""
    from localstore._read_only import home_read_only
    from sync.errors import NotLoggedInError, SyncError
    from sync.supabase_remote import remote_from_settings

    read_only = home_read_only(settings.paths)
    if read_only is not None:
        # Not opened: the credential store opens the index to write (it failed with "cannot
        # write the index"), and no sync can run on a home that cannot record what it pulls.
        return Finding(
            "cloud",
            "info",
            f"sync is off: the home is read-only ({read_only})",
            "see the index check",
        ), settings.cloud_url
    if not settings.paths.index_db.exists():
        # Not opened: the credential store makes the home's folders and an empty index, so
        # `doctor` on a mistyped --home left a home there, and its next run said "index: ok".
        # A login lists its names in the index: with none, this home never logged in.
        return Finding(
            "cloud",
            "info",
            "sync is off: this home has no index yet, so it is not logged in",
            "run `localstore init`, then `localstore login`",
        ), settings.cloud_url
    try:
        remote = remote_from_settings(settings, timeout_s=10.0)
    except NotLoggedInError as exc:
        return Finding("cloud", "info", f"sync is off: {exc.message}", exc.hint), settings.cloud_url
    except SyncError as exc:
        if not _login_listed(settings):
            # The keychain could not be read, but this home never logged in (the index lists
            # every name stored): not logged in, as documented. It was a second FAIL with the
            # keychain check's text, two problems for one cause on a headless machine.
            return Finding(
                "cloud",
                "info",
                "sync is off: this home is not logged in to a cloud project",
                NotLoggedInError.hint,
            ), settings.cloud_url
        return Finding("cloud", "problem", exc.message, exc.hint), settings.cloud_url
    try:
        info = remote.server_info()
        detail = f"{remote.url} answers (protocol {info.protocol}); logged in"
        return Finding("cloud", "ok", detail), remote.url
    except SyncError as exc:
        return Finding("cloud", "problem", f"{remote.url}: {exc.message}", exc.hint), remote.url
    finally:
        remote.close()


def _index_core_version(settings: Settings) -> int | None:
    """The core schema version of the home's index (None when it cannot be read)."""
    from localstore.index import Index

    try:
        index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    except LocalStoreError:
        return None
    try:
        with index.read() as cur:
            return int(cur.execute("PRAGMA user_version").fetchall()[0][0])
    except LocalStoreError:
        return None
    finally:
        index.close()


def _login_listed(settings: Settings) -> bool:
    """Whether the index lists this home's cloud session or project (True when it cannot tell)."""
    from localstore.index import Index
    from sync.login_names import login_listed

    try:
        index = Index(settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms)
    except LocalStoreError:
        return True
    try:
        return login_listed(index, settings)
    except LocalStoreError:
        return True
    finally:
        index.close()


def check_daemon(settings: Settings) -> Finding:
    """Whether a daemon runs for this home and answers its control API."""
    from sync.control import ControlClient, ControlError

    state = daemon_running(settings)
    if state is None:
        stale = read_state(settings.paths.state)
        detail = "not running" + (
            " (a stale daemon.json from a dead daemon is ignored)" if stale else ""
        )
        return Finding("daemon", "info", detail, "start it: `localstore daemon --detach`")
    core = _index_core_version(settings)
    outdated = outdated_daemon(state, core) if core is not None else None
    if outdated is not None:
        # Checked before asking it: its watcher and sync errors would say "upgrade localstore"
        # (the old code's words for a newer index), the opposite of what to do.
        return Finding("daemon", "problem", outdated, OUTDATED_DAEMON_FIX)
    try:
        with ControlClient(int(state["port"]), str(state["token"]), timeout=5.0) as client:
            status = client.status()
    except ControlError as exc:
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']} does not answer: {exc.message}",
            f"restart it: {_unanswered_stop_command(int(state['pid']))}; "
            "localstore daemon --detach",
        )
    sync, watcher = status.get("sync", {}), status.get("watcher", {})
    if watcher.get("state") in ("degraded", "failed"):
        # Edits in the folder are not (all) being picked up: say why, not just "running".
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']}: the watcher is {watcher['state']}: {watcher.get('problem')}",
            "fix what it names (it recovers by itself); details in the daemon's log",
        )
    upkeep = (status.get("index") or {}).get("maintainer") or {}
    if upkeep.get("failed_rounds") or upkeep.get("running") is False:
        # Nothing checkpoints the index's write-ahead log then: it grows while the daemon runs.
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']}: index maintenance is failing ({upkeep.get('last_error')}); "
            f"write-ahead log {status['index'].get('wal_bytes', 0) // 1_000_000} MB",
            "free disk space or fix what the error names (it retries by itself); details in "
            "the daemon's log",
        )
    if sync.get("state") == "error" and sync.get("last_error"):
        # Its last cycle failed (a full disk, a locked index, a revoked login): the error says
        # what to do; "running, sync error" alone would hide it.
        return Finding(
            "daemon",
            "problem",
            f"pid {state['pid']}: sync failed: {sync['last_error']}",
            "fix what the error names (sync retries by itself); details in the daemon's log",
        )
    return Finding("daemon", "ok", f"pid {state['pid']}, sync {sync.get('state')}")


def check_validator(settings: Settings) -> Finding:
    """Whether the daemon judges with the app's validator (daemon_validator in config.yaml), so
    edits made while the app is closed sync; a problem when it names one the daemon cannot use."""
    from sync._app_validator import AppValidator, not_the_homes

    if not settings.paths.index_db.exists() or _in_the_way(settings, "validator") is not None:
        return Finding("validator", "info", "this home has no index yet (see the index check)")
    with _readable_store(settings) as store:
        home = store.home_validator()
    status = _daemon_validator_status(settings)
    spec, name = settings.daemon_validator, settings.daemon_validator_name
    if status is None and spec:
        # No daemon answers: only what the settings say is checked here (importing the app's
        # module is the daemon's to do, in its own environment).
        if name and home is not None and name != home:
            return Finding("validator", "problem", *not_the_homes(spec, name, home))
        return Finding(
            "validator",
            "info",
            f"the daemon imports {spec} when it starts (no daemon runs to ask)",
            "start it: `localstore daemon --detach`",
        )
    if status is None:
        status = AppValidator().status(home)
    if status.get("problem"):
        return Finding("validator", "problem", str(status["detail"]), str(status["hint"]))
    if status.get("state") == "none":
        if home is None:
            return Finding("validator", "ok", "the app registered no validator for this home")
        return Finding("validator", "info", str(status["detail"]), str(status["hint"]))
    return Finding("validator", "ok", str(status["detail"]))


def _daemon_validator_status(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's account of its validator, or None (none runs, or none answers:
    the daemon check says so)."""
    from sync.control import ControlClient, ControlError

    state = daemon_running(settings)
    if state is None:
        return None
    try:
        with ControlClient(int(state["port"]), str(state["token"]), timeout=5.0) as client:
            validator = client.status().get("validator")
    except ControlError:
        return None
    return validator if isinstance(validator, dict) else None


CHECKS: tuple[Callable[[Settings], Finding], ...] = (
    check_keychain,
    check_index,
    check_old_index,
    check_disk,
    check_watch_limits,
    check_cloud,
    check_daemon,
    check_validator,
)


def run_checks(settings: Settings) -> list[Finding]:
    """Every doctor check; a check that crashes is reported as a problem, not raised."""
    findings = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            findings.append(check(settings))
        except (LocalStoreError, SyncError) as exc:
            # A known condition (a damaged or unreadable index...) carries its own fix; it was
            # reported as "the check failed: ..." with "report a bug" as the fix.
            findings.append(Finding(name, "problem", exc.message, exc.hint or "see the message"))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            findings.append(Finding(name, "problem", f"the check failed: {exc}", "report a bug"))
    return findings
