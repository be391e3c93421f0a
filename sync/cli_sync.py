"""Sync commands: ``login``, ``logout``, ``sync``, ``status`` and ``conflicts``.

The cloud client is imported inside the commands that need it, so ``localstore status`` and
``localstore conflicts`` work offline and without the Supabase packages loaded. Exit codes follow
the CLI contract: 0 ok, 1 error, 2 usage, 3 needs attention (conflicts, quarantine, local edits
that cannot sync until fixed, or differences found by ``sync --verify``), 4 not found.
``status`` exits 1 when sync is stopped by an error (its last error says what to do).
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from localstore._daemon_state import (
    OUTDATED_DAEMON_FIX,
    PAUSED_DETAIL,
    daemon_running,
    outdated_daemon,
    read_pause,
)
from localstore.cli import (
    CONFLICT_NUMBER,
    EXIT_ATTENTION,
    EXIT_NOT_FOUND,
    CliContext,
    errors_to_exit,
    fail,
    file_words_for_encoding,
    pass_ctx,
)
from localstore.config import check_cloud_url, cleartext_url_warning
from localstore.errors import FolderAwayError
from sync._kept_merges import drop_if_taken, keep_merge, sweep_kept_merges
from sync._local import (
    _udiff,
    attention_hints,
    conflict_local_text,
    conflict_remote_text,
    first_hint,
    refuse_deleted_copy,
    status_hint,
    unaccepted_files,
)
from sync.engine import (
    SyncEngine,
    SyncReport,
    SyncStatus,
    conflict_diff,
    get_conflict,
    list_conflicts,
    list_flagged,
    list_quarantine,
    local_status,
    resolve_conflict,
)
from sync.errors import ConflictError

if TYPE_CHECKING:
    from localstore.config import Settings
    from sync.remote import Remote


# -- login / logout -------------------------------------------------------------------------------


@click.command("login")
@click.option("--url", required=True, help="The Supabase project URL.")
@click.option("--anon-key", required=True, help="The project's anon (public) key.")
@click.option("--email", required=True, help="Your account's e-mail address.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--signup", is_flag=True, help="Create the account first if it does not exist.")
@click.option(
    "--switch-user",
    is_flag=True,
    help="Let this account take over a home that synced with another user of the project: "
    "its blueprints are uploaded to this account at the next sync.",
)
@pass_ctx
def login_cmd(
    cli: CliContext,
    url: str,
    anon_key: str,
    email: str,
    password_stdin: bool,
    signup: bool,
    switch_user: bool,
) -> None:
    """Sign in to a Supabase project; the session is kept in the OS keychain.

    A home belongs to the account it synced with: logging in as another user of the same
    project is refused (use another home with --home), unless --switch-user is given.
    """
    with errors_to_exit():
        check_cloud_url(url, "--url", name="url")
    # Said before the password is read or sent, so it can be stopped with Ctrl-C.
    cleartext = cleartext_url_warning(url.rstrip("/"))
    if cleartext:
        click.echo(f"warning: {cleartext}", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        with errors_to_exit():
            from sync.supabase_remote import check_keychain

            # Before the prompt: nobody types a password only to learn that there is no
            # keychain to keep the session in (login() checks again, before signing in).
            check_keychain(cli.settings)
        password = click.prompt("Password", hide_input=True)
    with errors_to_exit():
        from sync.supabase_remote import login

        result = login(
            cli.settings, url, anon_key, email, password, signup=signup, switch_user=switch_user
        )
    data = {
        "url": result.url,
        "user_id": result.user_id,
        "email": result.email,
        "signed_up": result.signed_up,
        "note": result.note,
    }
    verb = "signed up and logged in" if result.signed_up else "logged in"
    if result.note:
        click.echo(f"note: {result.note}", err=True)
    cli.emit(data, lambda: click.echo(f"{verb} as {result.email} at {result.url}"))


@click.command("logout")
@pass_ctx
def logout_cmd(cli: CliContext) -> None:
    """Sign out: revoke this machine's session and delete it from the keychain."""
    with errors_to_exit():
        # A home that does not exist was never logged in: opening its credentials made the
        # home at a mistyped --home (and said "logged out").
        cli.require_home()
        from sync.supabase_remote import has_login, logout

        # Asked first: logging out of a home never logged in said "the server could not
        # confirm", as if the network had failed.
        was_logged_in = has_login(cli.settings)
        revoked = logout(cli.settings)
    if not was_logged_in:
        note = " (this home was not logged in)"
    elif not revoked:
        note = " (the server could not confirm; the local session is gone)"
    else:
        note = ""
    data = {"logged_out": True, "revoked": revoked, "was_logged_in": was_logged_in}
    cli.emit(data, lambda: click.echo("logged out" + note))


# -- sync -----------------------------------------------------------------------------------------


def _open_remote(settings: Settings) -> Remote:
    from sync.supabase_remote import remote_from_settings

    # In the foreground: a locked keychain may ask the person who ran it to unlock it.
    return remote_from_settings(settings, keychain_prompt=True)


@click.command("sync")
@click.option(
    "--verify", is_flag=True, help="Compare local ids, hashes and revisions with the server's."
)
@click.option(
    "--retry-quarantined", is_flag=True, help="Retry the changes the server refused before."
)
@pass_ctx
def sync_cmd(cli: CliContext, verify: bool, retry_quarantined: bool) -> None:
    """Run one sync cycle (push, pull, merge). Exit 3 when something needs attention.

    When a daemon syncs this home, the cycle runs there (one syncing process per home), and so
    does --verify.
    """
    with errors_to_exit():
        # Only `login` makes a home syncable: at a mistyped --home this made a whole new home
        # and then failed on the missing login (or the keychain), leaving it behind.
        cli.require_home()
    if verify:
        # The daemon holds the home's lock: un-parking here failed with "another process is
        # syncing this home". It un-parks them and runs the cycle that retries them.
        if retry_quarantined and _daemon_sync(cli.settings, retry_quarantined=True) is not None:
            retry_quarantined = False
        verified = _daemon_verify(cli.settings)
        if verified is not None:
            _emit_verify(cli, verified)
            return
    delegated = None if verify else _daemon_sync(cli.settings, retry_quarantined)
    if delegated is not None:
        report = _report_from(delegated["report"])
        flagged = delegated.get("flagged_files")
        if not isinstance(flagged, list):  # (a daemon older than its flagged_files reply)
            with errors_to_exit():
                flagged = _flagged_files(cli.store(existing=True))
        status = dict(delegated.get("status") or {})
        _finish(cli, delegated, report, status, int(delegated["retried"]), flagged)
        return
    with errors_to_exit():
        store = cli.store(writes="sync")
        remote = _open_remote(cli.settings)
        try:
            engine = SyncEngine(store, remote, lock=_home_lock(cli.settings))
            retried = engine.retry_quarantined() if retry_quarantined else 0
            if verify:
                _verify(cli, engine)
                return
            report = _sync_with_progress(cli, engine)
            status = engine.status().to_dict()
            flagged = _flagged_files(store)
        finally:
            remote.close()
    data = {"report": report.to_dict(), "status": status, "retried": retried}
    _finish(cli, data, report, status, retried, flagged)


def _finish(
    cli: CliContext,
    data: dict[str, Any],
    report: SyncReport,
    status: dict[str, Any],
    retried: int,
    flagged: list[dict[str, Any]],
) -> None:
    # The engine's count has only indexed blueprints: new files that never parsed have no row
    # (the summary said nothing of them and exited 0). The list has both, as `status` shows.
    status["flagged"] = len(flagged)
    data["status"] = status
    data["flagged_files"] = flagged
    cli.emit(data, lambda: _print_report(report, status, retried, flagged))
    if _needs_attention(status):
        raise SystemExit(EXIT_ATTENTION)


def _flagged_files(store: Any) -> list[dict[str, Any]]:
    """Every blueprint file whose edits cannot leave this device, as dicts: indexed ones whose
    file no longer parses, and new ones that never did (so no index row, and no engine count)."""
    return [f.to_dict() for f in (*list_flagged(store), *unaccepted_files(store))]


def _needs_attention(status: dict[str, Any]) -> bool:
    """SyncStatus.needs_attention for a status dict (possibly a daemon's, possibly older)."""
    validator = status.get("validator")
    # A daemon that cannot judge with the validator its config names holds every edit.
    broken = isinstance(validator, dict) and validator.get("problem") is True
    return broken or any(status.get(k) for k in ("conflicts", "quarantined", "held", "flagged"))


def _report_from(data: dict[str, Any]) -> SyncReport:
    known = set(SyncReport.__dataclass_fields__)
    return SyncReport(**{k: v for k, v in data.items() if k in known})


def _home_lock(settings: Settings) -> Any:
    """The home's single-sync-process lock (shared with the daemon), when that module exists."""
    try:
        embed = importlib.import_module("sync.embed")
    except ImportError:
        return None
    return embed.HomeLock.for_settings(settings)


# How long the CLI waits for the daemon's report of the cycle it asked for.
DAEMON_SYNC_WAIT_S = 120.0


def _daemon_client(settings: Settings, doing: str, instead: str) -> tuple[Any, Any] | None:
    """(the control module, a connected client) of this home's running daemon, or None when
    none runs, the control component is missing or the connection fails (a hung daemon's
    handshake too), with a note on stderr that the CLI does it itself (``instead``)."""
    if daemon_state(settings) is None:
        return None
    try:
        control = importlib.import_module("sync.control")
    except ImportError:
        return None
    try:
        return control, control.ControlClient.connect(settings, timeout=10.0)
    except Exception as exc:  # noqa: BLE001 - any control failure: done here instead
        click.echo(f"note: the daemon did not {doing} ({exc}); {instead}", err=True)
        return None


def _daemon_sync(settings: Settings, retry_quarantined: bool = False) -> dict[str, Any] | None:
    """Run the cycle in this home's daemon; None when none runs (or it cannot be reached).

    With ``retry_quarantined`` the daemon un-parks the quarantined changes first: it holds the
    home's lock, so they cannot be un-parked here while it runs.

    A daemon that answers with an error (not logged in, paused, its session revoked) is the
    answer: it holds the home's lock, so syncing here would only fail with "another process is
    syncing this home" and hide the daemon's reason. Only a control connection that fails
    falls back to syncing here.
    """
    connected = _daemon_client(settings, "run the sync", "syncing here")
    if connected is None:
        return None
    control, client = connected
    try:
        with client:
            answer = client.sync(
                wait=True, retry_quarantined=retry_quarantined, timeout=DAEMON_SYNC_WAIT_S
            )
    except control.ControlRequestError as exc:
        fail(f"the daemon did not sync: {exc.message}", hint=exc.hint)
    except control.ControlError as exc:
        if isinstance(exc.__cause__, TimeoutError):
            # The request reached it: the cycle goes on there (a disconnect does not stop a
            # running one) and it holds the home's lock, so syncing here would only fail with
            # "another process is syncing this home", sending the user after another process.
            fail(
                f"the daemon is still syncing (no report within {DAEMON_SYNC_WAIT_S:g} s)",
                hint="the cycle goes on in the daemon: `localstore status` shows how it goes",
            )
        click.echo(f"note: the daemon did not run the sync ({exc}); syncing here", err=True)
        return None
    except Exception as exc:  # noqa: BLE001 - any control failure: try syncing here instead
        click.echo(f"note: the daemon did not run the sync ({exc}); syncing here", err=True)
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("report"), dict):
        return None
    if retry_quarantined and not isinstance(answer.get("retried"), int):
        # A daemon from before the option ran the cycle without un-parking anything.
        fail(
            "the running daemon is too old to retry quarantined changes",
            hint="restart it (`localstore daemon --stop`, then start it or its service again) "
            "and run this command again",
        )
    answer.setdefault("retried", 0)
    answer["daemon"] = True
    return answer


def _daemon_verify(settings: Settings) -> dict[str, Any] | None:
    """Run ``verify`` in this home's daemon; None when none runs, it cannot be reached, or it
    is too old for the op (then it runs here: it takes no lock and writes nothing).

    In the daemon it runs between two of its cycles: here, a push of the daemon's between the
    read of the server and the read of the index showed as a difference that was not one.
    """
    connected = _daemon_client(settings, "verify", "verifying here")
    if connected is None:
        return None
    control, client = connected
    try:
        # (Connected apart: a handshake that timed out is no verify still running there.)
        with client:
            answer = client.verify(timeout=DAEMON_SYNC_WAIT_S)
    except control.ControlRequestError as exc:
        if exc.code == "unknown_op":  # a daemon from before the op
            return None
        fail(f"the daemon could not verify: {exc.message}", hint=exc.hint)
    except control.ControlError as exc:
        if isinstance(exc.__cause__, TimeoutError):
            fail(
                f"the daemon did not finish verifying within {DAEMON_SYNC_WAIT_S:g} s",
                hint="it may be in a long cycle: `localstore status` shows how it goes; "
                "run this command again later",
            )
        click.echo(f"note: the daemon did not verify ({exc}); verifying here", err=True)
        return None
    except Exception as exc:  # noqa: BLE001 - any control failure: verify here instead
        click.echo(f"note: the daemon did not verify ({exc}); verifying here", err=True)
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("differences"), list):
        return None
    return answer


def _verify(cli: CliContext, engine: SyncEngine) -> None:
    _emit_verify(cli, engine.verify().to_dict())


def _emit_verify(cli: CliContext, report: dict[str, Any]) -> None:
    """Print a ``VerifyReport.to_dict()`` (this process's, or the daemon's); exit 3 if unclean."""
    differences: list[dict[str, Any]] = report["differences"]

    def human() -> None:
        click.echo(f"local {report.get('local')}, server {report.get('remote')} live blueprints")
        for diff in differences:
            if diff.get("kind") == "flagged":
                click.echo(f"  flagged: {diff['path']}: {diff['detail']} (not synced until fixed)")
                continue
            pending = " (pending upload)" if diff.get("pending") else ""
            if diff.get("kind") == "rev_differs":
                pending = (
                    f" (holds rev {diff.get('base_rev')}, the server rev {diff.get('server_rev')})"
                )
            click.echo(f"  {diff.get('kind')}: {diff.get('id')}{pending}")
        click.echo("in sync" if not differences else f"{len(differences)} difference(s)")

    cli.emit(report, human)
    if differences:
        raise SystemExit(EXIT_ATTENTION)


def _sync_with_progress(cli: CliContext, engine: SyncEngine) -> SyncReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    disabled = cli.json or not sys.stderr.isatty()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=cli.console(stderr=True),
        transient=True,
        disable=disabled,
    )
    task = progress.add_task("sync", total=None)

    def on_status(status: SyncStatus) -> None:
        done, total = status.progress or (0, 0)
        progress.update(task, description=status.state, completed=done, total=total or None)

    unsubscribe = engine.subscribe_status(on_status)
    try:
        with progress:
            return engine.sync_once()
    finally:
        unsubscribe()


def _print_report(
    report: SyncReport, status: dict[str, Any], retried: int, flagged: list[dict[str, Any]]
) -> None:
    if retried:
        click.echo(f"retrying {retried} quarantined change(s)")
    click.echo(
        f"pushed {report.pushed}, pulled {report.pulled}, merged {report.merged}, "
        f"conflicts {report.conflicts}, quarantined {report.quarantined}"
    )
    for error in report.errors:
        click.echo(f"  problem: {error}")
    for key, line in attention_hints(status).items():
        click.echo(line)
        if key == "flagged":
            for f in flagged:
                click.echo(f"  {f['path']}: {f['reason']}")


# -- status ---------------------------------------------------------------------------------------


def daemon_state(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's state for this home, or None (its pid must live and hold the lock)."""
    return daemon_running(settings)


def _daemon_status(settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
    """Ask a running daemon for its live sync status: (that status, None), or (None, why a
    daemon that runs did not answer), or (None, None) when none runs."""
    if daemon_state(settings) is None:
        return None, None
    try:
        # The daemon component's client; optional, so status works without it.
        control = importlib.import_module("sync.control")
    except ImportError:
        return None, None
    try:
        with control.ControlClient.connect(settings, timeout=5.0) as client:
            answer = client.status()
    except Exception as exc:  # noqa: BLE001 - any control-channel failure: fall back to the index
        click.echo(f"note: the daemon did not answer ({exc}); showing local status", err=True)
        return None, str(exc) or type(exc).__name__
    sync_part = answer.get("sync") if isinstance(answer, dict) else None
    if not isinstance(sync_part, dict):
        return None, None
    out = dict(sync_part)
    validator = answer.get("validator")
    if isinstance(validator, dict):  # (an older daemon sends none)
        out["validator"] = validator
    if isinstance(answer.get("realtime"), dict):  # (none while sync is off; older daemons)
        out["realtime"] = answer["realtime"]
    return out, None


def _login_state(settings: Settings, store: Any) -> dict[str, Any] | None:
    """Whether this home can sync for its login, when no daemon answered: ``logged_in``, and
    when False the ``detail`` (why) and ``hint`` (what to do). None when nobody can tell here.

    Read from the index's list of stored credential names, not the keychain (no prompt, no
    D-Bus round trip), and without the supabase client (half a second to import). Without it a
    new home said "idle" after `init`, and nothing told the user that sync needs a login.
    """
    from localstore._daemon_state import lock_is_held
    from localstore.errors import LocalStoreError
    from sync.errors import NotLoggedInError
    from sync.login_names import login_listed

    if lock_is_held(settings.paths.state):
        # Someone syncs this home: a daemon that did not answer, `localstore sync`, or an app
        # syncing in-process, maybe with a remote of its own that needs no login here.
        return None
    try:
        listed = login_listed(store.index, settings)
    except LocalStoreError:
        return None  # (the list of names cannot be read: cannot tell)
    if not listed:
        return {"logged_in": False, "detail": "not logged in", "hint": NotLoggedInError.hint}
    from localstore.credentials import CredentialStore  # (keyring: only for a home logged in)

    try:
        # Logged in, but the session is out of reach when the keychain is (a headless session,
        # a keyring config that selects no backend): name that, as a daemon would.
        CredentialStore(store.index, settings).ensure_backend()
    except LocalStoreError as exc:
        return {"logged_in": False, "detail": exc.message, "hint": exc.hint}
    return {"logged_in": True}


@click.command("status")
@pass_ctx
def status_cmd(cli: CliContext) -> None:
    """Show sync status: pending uploads, conflicts, quarantine, last sync, cursor.

    Exit 3 when something needs attention (conflicts, quarantined changes, local edits that
    cannot sync until fixed), 1 when sync is stopped by an error. A home that is not logged in
    (or whose keychain cannot be read) is said so, with what to do, and exits 0.
    """
    parts = _gather_status(cli)
    data, to_sync = _status_data(cli.settings, parts)
    cli.emit(data, lambda: _print_status(data, parts, to_sync))
    _status_exit(data, parts)


@dataclass(frozen=True)
class _StatusParts:
    """What `status` reads before it builds its answer."""

    live: dict[str, Any] | None  # the daemon's sync status, None when none answered
    silent: str | None  # why a daemon that runs did not answer
    store: Any
    away: FolderAwayError | None  # the refusal of the usual open (blueprints folder away)
    outdated: str | None  # why the running daemon cannot write to this index
    local: SyncStatus
    quarantine: list[dict[str, Any]]
    flagged: list[dict[str, Any]]


def _gather_status(cli: CliContext) -> _StatusParts:
    """Read what `status` shows: the daemon's answer, then the index's."""
    with errors_to_exit():
        live, silent = _daemon_status(cli.settings)
        store, away = _status_store(cli)
        outdated = _outdated_daemon(cli.settings, store)
        local = local_status(store)
        quarantine = [q.to_dict() for q in list_quarantine(store)]
        flagged = _flagged_files(store)
    return _StatusParts(live, silent, store, away, outdated, local, quarantine, flagged)


def _status_data(settings: Settings, parts: _StatusParts) -> tuple[dict[str, Any], str | None]:
    """The status answer (the JSON object), and the login's hint the human lines show."""
    live = parts.live
    data = dict(live) if live is not None else parts.local.to_dict()
    # What to do so that sync runs at all (a login): the daemon's, without the attention lines
    # it adds by its own counts; they are made again below by this status's (one builder,
    # sync._local.status_hint, for both ways and for an app's EmbeddedSync.status()).
    first = first_hint(live) if live is not None else None
    _fill_missing_counts(data, parts.local)
    data["daemon"] = live is not None
    login = _login_state(settings, parts.store) if live is None else None
    if login is not None:
        first = _note_login(data, login)
    if parts.silent is not None:
        # A daemon runs (its pid lives and holds the home's lock) but did not answer: hung, or
        # overloaded. Shown as the index's "idle" alone, that looked like a healthy home.
        data["daemon_not_answering"] = parts.silent
    pause = read_pause(settings.paths.state) if live is None else None
    if pause is not None and data.get("state") != "error":
        _note_pause(data, pause)
    if parts.outdated is not None:
        # An older daemon on an index this version upgraded: every write of it is refused
        # (it stops by itself once it sees that, from the version that added the check).
        data["daemon_outdated"] = parts.outdated
        first = "; ".join(h for h in (OUTDATED_DAEMON_FIX, first) if h)
    data["quarantine"] = parts.quarantine
    data["flagged_files"] = parts.flagged
    # New files that never parsed have no index row, so no count has them: the list does.
    data["flagged"] = len(parts.flagged)
    # What to do: the login's hint, then what needs attention, as an app's
    # EmbeddedSync.status() and the daemon's status say it (sync._local.status_hint).
    to_sync = first if data.get("logged_in") is False else None
    _set_status_hint(data, first, parts.away)
    return data, to_sync


def _fill_missing_counts(data: dict[str, Any], local: SyncStatus) -> None:
    """Fill the counts a daemon's answer lacks from the index's."""
    for key, value in local.to_dict().items():
        # A daemon that is not syncing reported only its state (older ones still do), and a
        # missing or null count printed as "pending uploads: None". The index has them all.
        if data.get(key) is None:
            data[key] = value


def _note_login(data: dict[str, Any], login: dict[str, Any]) -> str | None:
    """Add the login state to the status; the login's hint (what to do first)."""
    data.update(login)
    if data.get("state") == "idle" and not login["logged_in"]:
        # As a daemon says it: nothing syncs. (An "error" or "offline" the last sync left
        # stays, with its exit code.)
        data["state"] = "offline"
    return login.get("hint")


def _note_pause(data: dict[str, Any], pause: dict[str, Any]) -> None:
    """Show the status as paused."""
    # No daemon runs, but the next one starts paused (docs/daemon.md, "Pause").
    detail = "; ".join(d for d in (data.get("detail"), PAUSED_DETAIL) if d)
    data.update(state="paused", detail=detail, paused_since=pause.get("since"))


def _set_status_hint(data: dict[str, Any], first: str | None, away: FolderAwayError | None) -> None:
    """Set the status's ``hint`` (none when there is nothing to do), and its ``problem``."""
    if away is not None:
        # (A daemon's status carries the same hint already: not said twice.)
        data["problem"] = away.message
        first = "; ".join(h for h in (away.hint, first) if h and h not in (first or ""))
    hint = status_hint(data, first)
    data.pop("hint", None)
    if hint is not None:  # (no key when there is nothing to do, as before)
        data["hint"] = hint


def _print_status(data: dict[str, Any], parts: _StatusParts, to_sync: str | None) -> None:
    """Print the status for a person."""
    _print_status_state(data, parts, to_sync)
    click.echo(f"pending uploads: {data.get('pending')}")
    if data.get("held"):
        click.echo(f"held back (invalid or not judged): {data.get('held')}")
    _print_validator(data.get("validator"))
    if data.get("flagged") or parts.flagged:
        click.echo(
            f"not synced, file cannot be read (fix it; `localstore check`): {len(parts.flagged)}"
        )
        for f in parts.flagged:
            click.echo(f"  {f['path']}: {f['reason']}")
    click.echo(f"conflicts: {data.get('conflicts')}")
    click.echo(f"quarantined: {data.get('quarantined')}")
    for q in parts.quarantine:
        click.echo(f"  {q['path']}: {q['code']}: {q['message']} (retry: {q['retry']})")
    click.echo(f"last synced: {data.get('last_synced_at') or 'never'}")
    if data.get("last_error"):
        click.echo(f"last error: {data.get('last_error')}")
    _print_realtime(data.get("realtime"))
    click.echo(f"cursor: {data.get('cursor')}")
    for line in attention_hints(data).values():
        click.echo(line)


def _print_status_state(data: dict[str, Any], parts: _StatusParts, to_sync: str | None) -> None:
    """Print the state line: where it comes from, and what stops sync, with the fix."""
    source = "daemon" if parts.live is not None else "local index"
    if parts.silent is not None:
        source += "; the daemon runs but did not answer (`localstore doctor` says what to do)"
    if data.get("detail"):  # why a daemon is offline or paused ("not logged in", ...)
        source += f": {data['detail']}"
    click.echo(f"state: {data.get('state')} ({source})")
    if parts.away is not None:
        click.echo(f"  problem: {parts.away.message}")
        click.echo(f"  fix: {parts.away.hint}")
    if parts.outdated is not None:
        click.echo(f"  daemon: {parts.outdated}")
        click.echo(f"  fix: {OUTDATED_DAEMON_FIX}")
    if to_sync:
        click.echo(f"  to sync: {to_sync}")


def _status_exit(data: dict[str, Any], parts: _StatusParts) -> None:
    """Exit as the status says: 3 when it needs attention, 1 when sync is stopped."""
    if parts.away is not None:
        # Needs a person (put the folder back or confirm it empty), said above with the fix;
        # a daemon's "error" state is this same refusal of its sync.
        raise SystemExit(EXIT_ATTENTION)
    if data.get("state") == "error":
        # Documented: exit 1 is an error with one line on stderr saying what to do.
        fail(f"sync is stopped: {data.get('last_error') or 'see the daemon log'}")
    if _needs_attention(data) or parts.outdated is not None:
        raise SystemExit(EXIT_ATTENTION)


def _status_store(cli: CliContext) -> tuple[Any, FolderAwayError | None]:
    """The store status reads, and the refusal of the usual open when the blueprints folder is
    away (the index is then read read-only: status only reads, and exited 1 with the refusal)."""
    try:
        # It only reads: a home this user cannot write (a snapshot, another user's) says what
        # its index holds, as ls does.
        return cli.store(existing=True, read_only_ok=True), None
    except FolderAwayError as exc:
        return cli.store(existing=True, read_only=True), exc


def _outdated_daemon(settings: Settings, store: Any) -> str | None:
    """Why the running daemon cannot write to this home's index (older than it), or None."""
    state = daemon_state(settings)
    if state is None:
        return None
    with store.index.read() as cur:
        core = int(cur.execute("PRAGMA user_version").fetchall()[0][0])
    return outdated_daemon(state, core)


def _print_realtime(realtime: Any) -> None:
    """The daemon's realtime channel, when it is down (nothing when it is fine: sync works the
    same either way, realtime only makes other devices' changes arrive sooner)."""
    if not isinstance(realtime, dict) or realtime.get("state") != "down":
        return
    why = f" ({realtime['problem']})" if realtime.get("problem") else ""
    wait = realtime.get("retry_in_s") or 0
    when = f"next try within {wait:.0f} s" if wait >= 1 else "reconnecting"
    click.echo(
        f"realtime: down{why}; {when}, sync polls meanwhile (other devices' changes arrive "
        "at the next poll)"
    )


def _print_validator(validator: Any) -> None:
    """The daemon's account of the app's validator, when it judges with it or should."""
    if not isinstance(validator, dict) or not validator.get("detail"):
        return
    click.echo(f"validator: {validator['detail']}")
    if validator.get("hint"):
        click.echo(f"  fix: {validator['hint']}")


# -- conflicts ------------------------------------------------------------------------------------


@click.group("conflicts", invoke_without_command=True)
@click.pass_context
def conflicts_group(ctx: click.Context) -> None:
    """List, show and resolve sync conflicts (no command: list the open ones)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@conflicts_group.command("list")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Include resolved conflicts (kept 90 days, the last 200).",
)
@pass_ctx
def list_cmd(cli: CliContext, show_all: bool = False) -> None:
    """List conflicts, oldest first."""
    with errors_to_exit():
        # It only reads: a home this user cannot write (a snapshot) lists what its index holds.
        store = cli.store(existing=True, read_only_ok=True)
        records = list_conflicts(store, include_resolved=show_all)

    def human() -> None:
        if not records:
            click.echo("no conflicts")
        for r in records:
            state = "open" if r.open else f"resolved ({r.resolution})"
            copy = f" -> copy {r.copy_path}" if r.copy_path else ""
            click.echo(f"#{r.cid} {r.path}{copy} [{state}] {r.reason}")

    cli.emit([r.to_dict() for r in records], human)


@conflicts_group.command("show")
@click.argument("cid", type=CONFLICT_NUMBER)
@pass_ctx
def show_cmd(cli: CliContext, cid: int) -> None:
    """Show one conflict: base, local and remote, with unified diffs."""
    with errors_to_exit():
        store = cli.store(existing=True, read_only_ok=True)
        record = get_conflict(store, cid)
        # The blueprint as it is now: another device may have edited it again since the
        # conflict, and that is what `--take remote` keeps and `--take local` replaces.
        current = conflict_remote_text(store, record) if record.open else None
    changed = current is not None and current != record.remote

    def human() -> None:
        click.echo(f"#{record.cid} {record.path} ({record.reason})")
        if record.copy_path:
            click.echo(f"local version kept as {record.copy_path}")
        click.echo(conflict_diff(record), nl=False)
        if changed:
            assert current is not None
            click.echo(
                f"note: {record.path} changed since this conflict; `--take remote` keeps it "
                "as it is now, `--take local` replaces it (remote as recorded -> now):"
            )
            click.echo(_udiff(record.remote, current, "remote", "now"), nl=False)

    data = record.to_dict(texts=True)
    data["diff"] = conflict_diff(record)
    data["current"] = current
    data["changed_since"] = changed
    cli.emit(data, human)


@conflicts_group.command("resolve")
@click.argument("cid", type=CONFLICT_NUMBER)
# UNPROCESSED, not the default string type the CLI makes UTF-8-only text: a FILE's name may be
# any bytes (localstore.cli._text_params).
@click.option(
    "--take",
    "take",
    type=click.UNPROCESSED,
    help="local, remote, or a FILE holding the resolved text.",
)
@click.option(
    "--tool", is_flag=True, help="Run the merge_tool setting (%BASE %LOCAL %REMOTE %MERGED)."
)
@pass_ctx
def resolve_cmd(cli: CliContext, cid: int, take: str | None, tool: bool) -> None:
    """Resolve a conflict; the result syncs like any edit and the conflict copy is removed.

    With --tool, a merge that cannot be taken (not a valid blueprint, not UTF-8, conflict
    markers left in, the conflict resolved meanwhile) or that the tool saved before exiting
    non-zero is kept in the home's state folder; the error names the file, to fix and pass to
    --take. A tool that exits 0 leaving MERGED as it was written (closed without saving)
    resolves nothing: exit 3, the conflict stays open (--take local keeps that side).
    When the blueprint changed since the conflict (another device edited it again), --take
    local or FILE replaces that version and says so (history keeps it); --tool gets it as
    REMOTE.
    """
    if (take is None) == (not tool):
        fail("give either --take local|remote|FILE or --tool", code=2)
    with errors_to_exit():
        # (existing: a conflict lives only in a home that exists; a mistyped --home made one.)
        store = cli.store(existing=True, writes="resolve a conflict")
        if tool:
            record = get_conflict(store, cid)
            if not record.open:
                raise ConflictError(f"conflict #{cid} is already resolved ({record.resolution})")
            record = _resolve_with_tool(cli.settings, store, record)
        elif take in ("local", "remote"):
            record = resolve_conflict(store, cid, take=take)  # type: ignore[arg-type]
        else:
            assert take is not None
            text = _read_take_file(take)
            record = resolve_conflict(store, cid, content=text, how=f"file {take}")
            # Its text is now the blueprint's (and in history): the kept merge it came from,
            # if that is what was taken, has done its job.
            drop_if_taken(store.paths.state, cid, take)
        sweep_kept_merges(store, now=datetime.now(UTC))
    if record.replaced_rev is not None:
        # (stderr, with or without --json: the JSON carries it as "replaced".) Said, not only
        # done: the blueprint held an edit made since the conflict, which the person may never
        # have seen, and it is now replaced on every device.
        click.echo(
            f"note: {record.path} changed since conflict #{cid} was recorded (an edit from "
            f"another device, or made here); that version (rev {record.replaced_rev}) is "
            "replaced and kept in history: "
            f"`localstore restore {record.id} {record.replaced_rev}` brings it back",
            err=True,
        )
    cli.emit(record.to_dict(), lambda: click.echo(f"#{cid} resolved: {record.resolution}"))


def _read_take_file(name: str) -> str:
    """The text of `--take FILE`; exit 2 when there is no such file, 1 when it cannot be read or
    is not UTF-8 (in `save -f`'s words: its own were Python's codec error)."""
    from localstore.blueprint import decode_yaml

    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError:
        # (Exit 2, as for any input file named on the command line that does not exist.)
        fail(
            f"{name} is neither local, remote nor a file",
            code=2,
            hint="--take takes local, remote, or the path of a file holding the resolved text",
        )
    except OSError as exc:
        fail(f"cannot read {name}: {exc}", hint="give a UTF-8 YAML file")
    with file_words_for_encoding():
        return decode_yaml(raw)


def _resolve_with_tool(settings: Settings, store: Any, record: Any) -> Any:
    """Run the merge tool on an open conflict and resolve it with what the tool left in MERGED.

    A merge the conflict cannot take (not UTF-8, conflict markers left in, not a valid blueprint,
    or the conflict resolved from another terminal while the tool was open) is kept in the home's state folder and named
    in the error, with the command that takes it once fixed: it was in the temp folder, deleted
    with it, and the person's merging was lost.
    """
    start = conflict_local_text(store, record)
    # (LOCAL and MERGED start from the copy: a deleted one left the text recorded at the
    # conflict, older than the copy's last edits, as what the person was to merge. Checked
    # after the read, which records a delete the index had not seen yet.)
    refuse_deleted_copy(store, record)
    remote = conflict_remote_text(store, record)
    code, merged = _run_merge_tool(settings, record, start, remote)
    merged = _saved_merge(settings, record, start, code, merged)
    text = _merged_text(settings, record.cid, merged)
    return _take_merge(settings, store, record.cid, merged, text, remote)


def _saved_merge(
    settings: Settings, record: Any, start: str, code: int, merged: bytes | None
) -> bytes:
    """What the merge tool saved to MERGED; exit 3 when it failed or saved nothing new."""
    if code != 0:
        note, extra = "", dict[str, str]()
        if merged is not None and merged != start.encode("utf-8"):
            # (A tool can save before it fails, or the person saved, then quit with an error.)
            kept, extra = _keep_merge(settings, record.cid, merged)
            note = f"{_earlier_note(extra)}; what it wrote to MERGED is kept at {kept}"
        fail(
            f"the merge tool exited with {code}; the conflict stays open{note}",
            code=EXIT_ATTENTION,
            extra=extra,
        )
    if merged is None:
        fail(
            "the merge tool exited 0 but left no merged file; the conflict stays open",
            code=EXIT_ATTENTION,
            hint="check that merge_tool writes its result to %MERGED",
        )
    if merged == start.encode("utf-8"):
        # Many tools exit 0 when closed without saving (git's mergetool, trustExitCode=false,
        # asks "was the merge successful?" then). Taking MERGED as written silently dropped the
        # remote side's edit from the files. The same bytes saved again are refused too (they
        # cannot be told apart): that is exactly `--take local`, which the hint names.
        fail(
            "the merge tool exited without saving a merge (MERGED is unchanged); "
            "the conflict stays open",
            code=EXIT_ATTENTION,
            hint="merge and save in the tool, or keep one side with "
            f"`localstore conflicts resolve {record.cid} --take local|remote`",
        )
    return merged


def _merged_text(settings: Settings, cid: int, merged: bytes) -> str:
    """The merge as text; exit 1, the merge kept, when it holds conflict markers or is not UTF-8."""
    if _has_conflict_markers(merged):
        # Markers where YAML allows them (a block scalar) passed validation: a merge left
        # unfinished became the blueprint. Named as such, not as the YAML error they often cause.
        _fail_kept(settings, cid, merged, "the merged text still holds conflict markers", 1)
    try:
        return merged.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail_kept(settings, cid, merged, f"the merged text is not UTF-8 ({exc})", 1)


def _take_merge(
    settings: Settings, store: Any, cid: int, merged: bytes, text: str, remote: str
) -> Any:
    """Resolve the conflict with the merge; when it is refused, keep the merge and exit."""
    try:
        return resolve_conflict(store, cid, content=text, how="merge tool", merged_with=remote)
    except Exception as exc:
        message = getattr(exc, "message", None)
        if not isinstance(message, str):
            # An error nobody expected: kept all the same, and reported as one (a traceback
            # with --debug) by the CLI's catch-all.
            kept, extra = _keep_merge(settings, cid, merged)
            click.echo(f"note{_earlier_note(extra)}; the merged text is kept at {kept}", err=True)
            raise
        from localstore.errors import NotFoundError

        code = EXIT_NOT_FOUND if isinstance(exc, NotFoundError) else 1
        _fail_kept(settings, cid, merged, message, code)


# A conflict-marker block as merge tools write it (git, diff3): "<<<<<<<", "=======" and
# ">>>>>>>" lines in that order, at any indentation (a block scalar indents them). A label is
# the rest of its line ([^\n]*): with `.*`, which DOTALL lets cross lines, the search took time
# in the square of the merge's lines (a 160 KB merge: 9 s).
_MARKERS = re.compile(
    rb"^[ \t]*<{7}(?:[ \t][^\n]*)?$.*?^[ \t]*={7}[ \t]*$.*?^[ \t]*>{7}(?:[ \t][^\n]*)?$",
    re.MULTILINE | re.DOTALL,
)


def _has_conflict_markers(merged: bytes) -> bool:
    return _MARKERS.search(merged) is not None


def _keep_merge(settings: Settings, cid: int, merged: bytes) -> tuple[Path, dict[str, str]]:
    """Write a merge the conflict did not take where it outlives the temp folder; its path, and
    the error's JSON fields: ``kept``, and ``earlier`` when the merge a failed attempt kept
    before moved to make room.

    In the home's state folder (private to the user). A later failed attempt takes the name
    (the last merge is the one to carry on from); the earlier one is kept beside it, not
    overwritten. When they go: sync._kept_merges.
    """
    kept, earlier = keep_merge(settings.paths.state, cid, merged)
    extra = {"kept": str(kept)}
    if earlier is not None:
        extra["earlier"] = str(earlier)
    return kept, extra


def _earlier_note(extra: dict[str, str]) -> str:
    """A clause naming where the merge kept before went, if it moved; put before the "kept at"
    clause, which ends the message as it always did (scripts take the path from there)."""
    earlier = extra.get("earlier")
    return "" if earlier is None else f"; the merge kept before is now at {earlier}"


def _fail_kept(settings: Settings, cid: int, merged: bytes, message: str, code: int) -> NoReturn:
    kept, extra = _keep_merge(settings, cid, merged)
    fail(
        f"{message}{_earlier_note(extra)}; the merged text is kept at {kept}",
        code=code,
        hint=f"fix it, then run `localstore conflicts resolve {cid} --take {shlex.quote(str(kept))}`",
        extra=extra,
    )


def _run_merge_tool(
    settings: Settings, record: Any, local: str, remote: str
) -> tuple[int, bytes | None]:
    """Run ``settings.merge_tool`` on base/local/remote files; return its exit code and the
    bytes it left in MERGED (None when it deleted it).

    ``local`` is the conflict copy's current text (what ``--take local`` keeps), not the text
    recorded when the conflict happened: edits made to the copy since must reach the tool.
    ``remote`` is the blueprint's current text (what ``--take remote`` keeps), for the same
    reason: another device's edit made since must reach it, or the merge dropped it unseen.
    """
    words = _merge_tool_words(settings.merge_tool)
    with tempfile.TemporaryDirectory(prefix="localstore-merge-") as tmp:
        files = {
            "%BASE": Path(tmp, "base.yaml"),
            "%LOCAL": Path(tmp, "local.yaml"),
            "%REMOTE": Path(tmp, "remote.yaml"),
            "%MERGED": Path(tmp, "merged.yaml"),
        }
        texts = {
            "%BASE": record.base or "",
            "%LOCAL": local,
            "%REMOTE": remote,
            "%MERGED": local,
        }
        for key, path in files.items():
            # Bytes, not text: on Windows write_text turns each "\n" into "\r\n", so MERGED
            # never matched `start` below and a tool closed without saving resolved the
            # conflict with LOCAL (the remote side's edit dropped), in CRLF.
            path.write_bytes(texts[key].encode("utf-8"))
        argv = [_substitute(arg, files) for arg in words]
        try:
            done = subprocess.run(argv, check=False)
        except OSError as exc:
            fail(f"cannot run the merge tool {argv[0]!r}: {exc}", hint="check merge_tool")
        try:
            merged: bytes | None = files["%MERGED"].read_bytes()
        except FileNotFoundError:
            merged = None
        return done.returncode, merged


_TOOL_EXAMPLE = "e.g. 'meld %LOCAL %BASE %REMOTE -o %MERGED'"


def _merge_tool_words(setting: str) -> list[str]:
    """The merge_tool setting split into the command's words; a setting that cannot work is
    refused before the tool runs (exit 1), saying what to change.

    An unbalanced quote reached the person as "unexpected ValueError ... report it". A template
    without %MERGED ran the tool all the same: its merge (saved to %LOCAL, as vimdiff does, or
    nowhere) was then read from the untouched MERGED, the conflict stayed open with "merge and
    save in the tool", and the merging was deleted with the temp folder.
    """
    template = setting.strip()
    if not template:
        fail("no merge tool is configured", hint=f"set merge_tool in config.yaml, {_TOOL_EXAMPLE}")
    try:
        words = shlex.split(template)
    except ValueError as exc:
        fail(
            f"the merge_tool setting {template!r} is not a command line: {exc}",
            hint=f"close each quote (a path with spaces in '...'), {_TOOL_EXAMPLE}",
        )
    if not any("%MERGED" in word for word in words):
        fail(
            f"the merge_tool setting {template!r} has no %MERGED: the merge is read from that "
            "file, so whatever the tool saved elsewhere would be lost",
            hint=f"add %MERGED where the tool writes its result, {_TOOL_EXAMPLE}",
        )
    return words


def _substitute(arg: str, files: dict[str, Path]) -> str:
    for key, path in files.items():
        arg = arg.replace(key, str(path))
    return arg
