"""``localstore cred set|get|rm|ls``: credentials in the OS keychain.

Values never come from argv (they would land in shell history and ``ps``): ``set`` reads stdin when
it is piped, else prompts without echo. ``get`` prints the value and nothing else on stdout, so
``$(localstore cred get NAME)`` works; it refuses ``--json`` because JSON output must never carry a
secret. Names of localstore's own data keys are listed only with ``ls --all`` and cannot be changed
here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from localstore.cli import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CliContext,
    errors_to_exit,
    fail,
    pass_ctx,
    write_bytes,
)
from localstore.credentials import MAX_VALUE_BYTES, CredentialStore, is_internal
from localstore.errors import (
    CredentialNotFoundError,
    InvalidInputError,
    LocalStoreError,
    PermissionDeniedError,
)
from localstore.index import Index

if TYPE_CHECKING:
    from localstore.config import Settings


def _open(ctx: CliContext, *, existing: bool = True, writes: str | None = None) -> CredentialStore:
    """The credential store of the selected home.

    ``existing``: a home that does not exist holds no credential names (its `ls` listed none,
    `get` and `rm` found nothing), and opening it made the home at a mistyped --home; only
    `set` (existing=False) creates one.

    ``writes``: what a command that changes credentials does (``"store a credential"``); on a
    home this user cannot write it says that the home is read-only and what to do. Without it
    (ls, get: they only read the index) such a home's index is opened read-only instead, with a
    note on stderr, as ``CliContext.store(read_only_ok=True)`` does for the store's reading
    commands. Both failed with "cannot write the index".
    """
    if existing:
        ctx.require_home()
    settings = ctx.settings
    try:
        return _credential_store(settings)
    except PermissionDeniedError as exc:
        if writes is not None:
            ctx.refuse_read_only(writes, exc)
            raise
        refused = exc
    from localstore._read_only import unwritable_reason
    from localstore.config import home_name

    reason = unwritable_reason(settings.paths)
    try:
        store = _credential_store(settings, read_only=reason)
    except LocalStoreError as exc:
        raise exc from refused  # (what stops the read, not the usual open's "cannot write")
    click.echo(f"note: opened {home_name(settings)} read-only ({reason})", err=True)
    return store


def _credential_store(settings: Settings, *, read_only: str | None = None) -> CredentialStore:
    """The home's credential store, its index closed with the command; ``read_only``: why the
    index must not be written (it is then opened read-only, and no folder is made)."""
    if read_only is None:
        settings.paths.ensure()
    index = Index(
        settings.paths.index_db, busy_timeout_ms=settings.busy_timeout_ms, read_only=read_only
    )
    try:
        store = CredentialStore(index, settings)
    except BaseException:
        index.close()
        raise
    click.get_current_context().call_on_close(index.close)
    return store


@contextmanager
def _cred_errors() -> Iterator[None]:
    """errors_to_exit, plus exit 4 for a missing credential (the documented not-found code)."""
    with errors_to_exit():
        try:
            yield
        except CredentialNotFoundError as exc:
            fail(exc.message, code=EXIT_NOT_FOUND, hint=exc.hint)


def _refuse_internal(name: str) -> None:
    if is_internal(name):
        raise InvalidInputError(
            f"{name!r} is a data key managed by localstore",
            hint="rotate data keys through the app-data store, not by hand",
        )


def _read_value(name: str, before_prompt: Callable[[], None]) -> str:
    stdin = sys.stdin
    if stdin.isatty():
        before_prompt()
        value: str = click.prompt(
            f"Value for {name}", hide_input=True, confirmation_prompt=True, err=True
        )
        return value
    # Bounded: a value over the limit is refused without reading the rest, which may be a
    # mistaken `< big.iso` or never end (`yes |`). A value within MAX_VALUE_BYTES has at most that
    # many characters, plus the "\r\n" dropped below.
    limit = MAX_VALUE_BYTES + 2
    data = stdin.read(limit + 1)
    if len(data) > limit:
        raise InvalidInputError(
            f"the value of {name!r} is over the keychain limit here, {MAX_VALUE_BYTES} bytes",
            hint="store large data encrypted in the app-data store instead",
        )
    # `echo secret | localstore cred set X` appends one newline that is not part of the secret.
    if data.endswith("\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith("\n") else data


@click.group(name="cred")
def cred_group() -> None:
    """Manage credentials in the OS keychain (values are never taken from the command line)."""


@cred_group.command("set")
@click.argument("name")
@pass_ctx
def set_cmd(ctx: CliContext, name: str) -> None:
    """Store NAME; the value comes from stdin when piped, else from a hidden prompt."""
    with _cred_errors():
        _refuse_internal(name)
        store = _open(ctx, existing=False, writes="store a credential")
        # At a terminal the backend is chosen before the prompt: with no usable keychain the
        # typed error comes at once, not after the secret was typed twice. Piped input is read
        # first, as before: that costs nobody anything, and an oversized value is refused first.
        store.set(name, _read_value(name, before_prompt=store.ensure_backend))
        ctx.emit(
            {"name": name, "service": store.service, "stored": True},
            lambda: click.echo(f"stored {name} in {store.service}", err=True),
        )


@cred_group.command("get")
@click.argument("name")
@pass_ctx
def get_cmd(ctx: CliContext, name: str) -> None:
    """Print NAME's value, and only the value, on stdout."""
    if ctx.json:
        fail("'cred get' prints only the raw value; drop --json", code=EXIT_USAGE)
    with _cred_errors():
        _refuse_internal(name)
        value = _open(ctx).get(name)
    # A trailing newline for people at a terminal; none when captured, so the value is exact.
    # Its UTF-8 bytes whatever the stdout's encoding: the CLI makes that escape what it cannot
    # encode (localstore.cli.main), which must never silently change a secret.
    write_bytes((value + ("\n" if sys.stdout.isatty() else "")).encode("utf-8"))


@cred_group.command("rm")
@click.argument("name")
@pass_ctx
def rm_cmd(ctx: CliContext, name: str) -> None:
    """Delete NAME from the keychain."""
    with _cred_errors():
        _refuse_internal(name)
        store = _open(ctx, writes="delete a credential")
        store.delete(name)
        ctx.emit(
            {"name": name, "service": store.service, "deleted": True},
            lambda: click.echo(f"deleted {name} from {store.service}", err=True),
        )


@cred_group.command("ls")
@click.option("--all", "show_all", is_flag=True, help="Include localstore's own data keys.")
@pass_ctx
def ls_cmd(ctx: CliContext, show_all: bool) -> None:
    """List the names of stored credentials (never their values)."""
    with _cred_errors():
        store = _open(ctx)
        names = store.list_names(include_internal=show_all)

    def human() -> None:
        for n in names:
            click.echo(n)

    ctx.emit({"service": store.service, "names": names}, human)
