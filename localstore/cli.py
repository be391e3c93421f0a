"""The ``localstore`` command line.

Commands live in their own modules and are imported only when run (``_COMMANDS``), so ``localstore ls``
never pays for the cloud client, and the local package never imports ``sync`` unless a sync command is
used. Exit codes: 0 ok, 1 error, 2 usage, 3 needs attention, 4 not found, 130 interrupted (Ctrl-C).

Every failure reaches the user as one ``error:`` line on stderr (a JSON object with ``--json``) with a
hint; only ``--debug`` (or ``LOCALSTORE_DEBUG=1``) shows the traceback of an error nobody expected.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from localstore.errors import (
    AmbiguousRefError,
    InvalidInputError,
    InvalidMetaError,
    InvalidYAMLError,
    LimitExceededError,
    LocalStoreError,
    NotFoundError,
)

if TYPE_CHECKING:
    from rich.console import Console

    from localstore.config import Settings
    from localstore.store import BlueprintStore

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ATTENTION = 3
EXIT_NOT_FOUND = 4
# 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C.
EXIT_INTERRUPTED = 130
DEBUG_ENV = "LOCALSTORE_DEBUG"
# Values of DEBUG_ENV that leave it off (any other value turns it on).
_DEBUG_OFF = frozenset({"", "0", "false", "no", "off"})

# name -> "module:attribute" of a click command; imported lazily.
_COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("localstore._cli_store:init_cmd", "Create the folders and index of a home."),
    "save": ("localstore._cli_store:save_cmd", "Save a blueprint from a file or stdin."),
    "show": ("localstore._cli_store:show_cmd", "Print a blueprint's YAML or meta."),
    "ls": ("localstore._cli_store:ls_cmd", "List blueprints."),
    "search": ("localstore._cli_store:search_cmd", "Full-text search over blueprints."),
    "rm": ("localstore._cli_store:rm_cmd", "Delete a blueprint (restorable from history)."),
    "mv": ("localstore._cli_store:mv_cmd", "Move or rename a blueprint, keeping its id."),
    "history": ("localstore._cli_store:history_cmd", "List a blueprint's revisions."),
    "restore": ("localstore._cli_store:restore_cmd", "Restore a revision as the current version."),
    "check": (
        "localstore._cli_store:check_cmd",
        "Compare the index with the files; --fix repairs.",
    ),
    "cred": ("localstore._cli_cred:cred_group", "Manage credentials in the OS keychain."),
    "watch": ("localstore._cli_watch:watch_cmd", "Watch the blueprints folder and print events."),
    "export": ("localstore._cli_bundle:export_cmd", "Export blueprints to a .lsbundle."),
    "import": ("localstore._cli_bundle:import_cmd", "Import a .lsbundle."),
    "login": ("sync.cli_sync:login_cmd", "Sign in to a Supabase project."),
    "logout": ("sync.cli_sync:logout_cmd", "Sign out and forget the session."),
    "sync": ("sync.cli_sync:sync_cmd", "Run one sync cycle."),
    "status": ("sync.cli_sync:status_cmd", "Show sync status."),
    "conflicts": ("sync.cli_sync:conflicts_group", "List, show and resolve sync conflicts."),
    "daemon": ("sync.cli_daemon:daemon_cmd", "Run the background daemon in the foreground."),
    "cloud": ("sync.cli_cloud:cloud_group", "Start/stop the local Supabase-compatible stack."),
    "service": ("sync.cli_daemon:service_group", "Install the daemon as a per-user service."),
    "doctor": ("sync.cli_daemon:doctor_cmd", "Check the installation and say how to fix problems."),
}


@dataclass
class CliContext:
    """What every command gets: the home, output mode and a lazily opened store."""

    # The --home flag only: load_settings reads LOCALSTORE_HOME itself, so it can refuse a
    # relative variable and still take a relative flag (click's envvar= merged the two).
    home_flag: str | None
    json: bool
    debug: bool = False
    _store: BlueprintStore | None = field(default=None, repr=False)
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        """Settings of the selected home."""
        if self._settings is None:
            from localstore.config import load_settings

            self._settings = load_settings(home=self.home_flag)
        return self._settings

    @property
    def home(self) -> str | None:
        """The absolute home chosen by --home or LOCALSTORE_HOME; None for the platform folders."""
        home = self.settings.home
        return str(home) if home is not None else None

    def require_home(self) -> None:
        """Raise NotFoundError when the selected home does not exist (neither an index nor a
        blueprints folder): for a command that can only read or change what a home holds, so
        that a mistyped ``--home`` is an error, not a new empty home left behind."""
        from localstore.config import home_name

        paths = self.settings.paths
        if not any(p.exists() for p in (paths.index_db, paths.data, paths.blueprints)):
            raise NotFoundError(
                f"no LocalStore home at {home_name(self.settings)}",
                hint="check --home or LOCALSTORE_HOME; `localstore init` creates a home",
            )

    def store(
        self,
        *,
        existing: bool = False,
        read_only_ok: bool = False,
        writes: str | None = None,
        **kwargs: Any,
    ) -> BlueprintStore:
        """Open (once) the store of the selected home.

        ``existing``: for a command that only reads, a home with neither an index nor a
        blueprints folder is an error, not a new empty home (a mistyped ``--home`` made one, and
        an empty listing that looked like lost work).

        ``read_only_ok``: for a command that only reads (ls, show, search, history, export), a
        home this user cannot write (a backup snapshot, a read-only disk, another user's home)
        is opened read-only instead, with a note on stderr; when that fails too, its error is
        raised. The usual open comes first, so a writable home is opened
        (and reconciled) exactly as before.

        ``writes``: what a command that cannot run read-only does (``"watch the blueprints
        folder"``): when the usual open fails on a home this user cannot write, the error says
        that the home is read-only and what to do (ReadOnlyStoreError, exit 1), not "cannot
        write the index (attempt to write a readonly database)".
        """
        if self._store is None and existing:
            self.require_home()
        if self._store is None:
            from localstore.errors import PermissionDeniedError
            from localstore.store import BlueprintStore

            try:
                self._store = BlueprintStore(self.settings, **kwargs)
            except PermissionDeniedError as exc:
                if read_only_ok:
                    self._store = self._read_only_store(exc)
                else:
                    self.refuse_read_only(writes, exc)
                    raise
            click.get_current_context().call_on_close(self._store.close)
        return self._store

    def refuse_read_only(self, writes: str | None, cause: BaseException | None = None) -> None:
        """Raise ReadOnlyStoreError saying that ``writes`` cannot run on this home when the
        home is read-only (a read-only file system, data/ or index.db this user may not
        write); return otherwise (``writes`` None: the caller's own error stands)."""
        from localstore._read_only import refuse_read_only_home

        refusal = refuse_read_only_home(self.settings, writes) if writes else None
        if refusal is not None:
            raise refusal from cause

    def _read_only_store(self, refused: LocalStoreError) -> BlueprintStore:
        from localstore.config import home_name
        from localstore.store import BlueprintStore

        try:
            store = BlueprintStore(self.settings, read_only=True)
        except LocalStoreError as exc:
            # Its error, not the usual open's "cannot write": a command that only reads fails
            # for what stops the read (an index it cannot read, or cannot read as it is).
            raise exc from refused
        click.echo(
            f"note: opened {home_name(self.settings)} read-only "
            f"({store.read_only_reason}); what the index lists is as of its last save",
            err=True,
        )
        return store

    def console(self, *, stderr: bool = False) -> Console:
        """A rich console for human output."""
        from rich.console import Console

        return Console(stderr=stderr, highlight=False, soft_wrap=True)

    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        """Print one JSON document with --json, else run the human renderer."""
        if self.json:
            click.echo(json_text(data))
        elif human is not None:
            human()
        else:
            click.echo(data if isinstance(data, str) else json.dumps(data, indent=2, default=str))

    def emit_line(self, data: dict[str, Any], human: str) -> None:
        """Print one event of a stream: a JSON line with --json, else the human text."""
        if self.json:
            click.echo(json_text(data))
        else:
            click.echo(human)
        sys.stdout.flush()


def writes_any_text(stream: Any) -> bool:
    """Whether ``stream`` encodes every character (UTF-8, say; not cp1252 or Latin-1)."""
    try:
        "\U0001f680\u65e5".encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def json_text(data: Any, *, err: bool = False, **kwargs: Any) -> str:
    """``data`` as the JSON text the CLI prints on stdout (``err``: stderr).

    Characters as they are where the stream encodes them all, else as ``\\u`` escapes: on a
    stream that is not UTF-8 (Windows' code page when the output is redirected, a Latin-1
    locale) a name in Japanese was a UnicodeEncodeError, and an escape Python's stderr makes
    (``\\U0001f680``) is not JSON. Escaped, the document is ASCII and means the same.
    """
    ascii_only = not writes_any_text(sys.stderr if err else sys.stdout)
    return json.dumps(data, ensure_ascii=ascii_only, default=_json_default, **kwargs)


def write_bytes(data: bytes) -> None:
    """Write ``data`` to stdout as they are: a document or a secret, never re-encoded (nor,
    on Windows, its newlines translated)."""
    sys.stdout.flush()  # (what the text layer holds goes first)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes | set | frozenset | tuple):
        return list(value)
    return str(value)


def fail(
    message: str,
    *,
    code: int = EXIT_ERROR,
    hint: str = "",
    extra: dict[str, Any] | None = None,
    json_mode: bool | None = None,
) -> NoReturn:
    """Print one line on stderr (a JSON object with --json) and exit with ``code``.

    ``extra``: more keys of the JSON error object (the human line says them in ``message``).
    ``json_mode``: whether --json was given, for a caller that knows it before the context does.
    """
    if _json_mode() if json_mode is None else json_mode:
        # A script that asked for JSON parses the error too, instead of scraping a text line.
        error = {"message": message, "hint": hint, "exit_code": code, **(extra or {})}
        click.echo(json_text({"error": error}, err=True), err=True)
    else:
        click.echo(f"error: {message}" + (f" ({hint})" if hint else ""), err=True)
    raise SystemExit(code)


@contextmanager
def file_words_for_encoding() -> Iterator[None]:
    """Exit with the CLI's hint for YAML that is not UTF-8 (`save -f`, `conflicts resolve --take
    FILE`): the API's also says to pass the content as a str, which a file or a pipe cannot do."""
    from localstore.blueprint import NOT_UTF8_HINT, file_hint
    from localstore.errors import InvalidYAMLError

    try:
        yield
    except InvalidYAMLError as exc:
        if exc.hint != NOT_UTF8_HINT:
            raise
        fail(exc.message, code=exit_code_of(exc), hint=file_hint(exc))


def no_such_file(name: str, what: str = "file") -> NoReturn:
    """Exit 2 for an input file named on the command line that does not exist.

    Bad usage, as click's refusal of a folder for the same option and an ``-o`` in a folder that
    does not exist are: `save -f` said exit 1 and `import` exit 4 for the same mistyped name, and
    exit 4 is for what a home holds (a REF, a revision, a conflict) or lacks."""
    fail(f"no such {what}: {name}", code=EXIT_USAGE, hint="check the file name")


def _json_mode() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    obj = ctx.find_object(CliContext)
    if obj is not None:
        return obj.json
    # Before the group's callback made the CliContext (an unknown command is refused first):
    # the parsed option says it.
    return bool(ctx.find_root().params.get("as_json"))


def _debug_mode() -> bool:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(CliContext) if ctx is not None else None
    if obj is not None and obj.debug:
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in _DEBUG_OFF


# Refusals of what a file or stdin held (YAML that does not parse, a malformed meta, a document
# over a size or depth limit): the command line was right and the content was not, an error
# (exit 1) like a bundle that fails its check. Every other InvalidInputError refuses what was
# typed (a query with nothing to search for, an unsafe path, a malformed REF or name, an -o
# folder that does not exist): bad usage, exit 2, as click's own refusals of an option. It was
# exit 1, which a script could not tell from a failure worth retrying.
_CONTENT_ERRORS = (InvalidYAMLError, InvalidMetaError, LimitExceededError)


def exit_code_of(exc: LocalStoreError) -> int:
    """The documented exit code of a library error (docs/cli.md)."""
    if isinstance(exc, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(exc, AmbiguousRefError):
        # A REF that names more than one blueprint is a REF written too short: bad usage, as
        # a malformed one is (it was exit 1, a failure a script might retry).
        return EXIT_USAGE
    if isinstance(exc, InvalidInputError) and not isinstance(exc, _CONTENT_ERRORS):
        return EXIT_USAGE
    return EXIT_ERROR


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn LocalStoreError (sync's SyncError is one) into one stderr line and the documented
    exit code."""
    try:
        yield
    except LocalStoreError as exc:
        fail(exc.message, code=exit_code_of(exc), hint=exc.hint)


pass_ctx = click.make_pass_decorator(CliContext)


class _BadText(click.UsageError):
    """Bad usage reported as one ``error:`` line (click's default adds the usage and a blank line)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Utf8Text(click.ParamType):
    """A text option: bytes that are not UTF-8 (argv decodes them to surrogates) are bad usage.

    Left as they are, they reach the index and the YAML writer and fail there with a
    UnicodeEncodeError traceback.
    """

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            where = param.opts[0] if param is not None and param.opts else "a value"
            raise _BadText(
                f"{where} is not UTF-8 text ({text!r}) (pass it in UTF-8; check your locale)",
                ctx=ctx,
            ) from None
        return text


TEXT = _Utf8Text()


class _FilterText(_Utf8Text):
    """A --folder or --tag filter: empty (or blank) is bad usage, not "no filter".

    `ls --tag ''` (a variable left unset in a script, `--tag "$T"`) listed every blueprint, and
    `export --tag ''` exported them all, where no blueprint has an empty tag."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        if not text.strip():
            where = param.opts[0] if param is not None and param.opts else "the filter"
            fix = f"leave {where} out for every blueprint, or give one"
            if where == "--folder":
                fix += "; --folder / is the top folder only"
            raise _BadText(f"{where} is empty ({fix})", ctx=ctx)
        return text


FILTER = _FilterText()


def _refuse_empty_path(
    text: str, param: click.Parameter | None, ctx: click.Context | None, what: str
) -> None:
    """Bad usage for an empty file path (a variable left unset), said in the command's words:
    the API's were "dest '' is not a usable file path ... pass the bundle file's real path as
    dest" (or "as path"), its parameter's name. ``what``: the file the path is for."""
    if text:
        return
    if isinstance(param, click.Option):
        where = param.opts[0]
    else:
        where = param.human_readable_name if param is not None else "the path"
    raise _BadText(f"{where} is empty (give {where} the path of {what})", ctx=ctx)


class _OutputPath(_Utf8Text):
    """A file to write (`export -o`): empty is bad usage."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = super().convert(value, param, ctx)
        _refuse_empty_path(text, param, ctx, "the file to write")
        return text


OUTPUT_PATH = _OutputPath()


class InputPath(click.Path):
    """A file to read (`import FILE`): a click.Path (a file name may be any bytes), and empty or
    a folder is bad usage. ``what``: the file, for the error ("the bundle to import");
    ``for_a_folder``: what to tell of a folder given instead."""

    def __init__(
        self, what: str, *, for_a_folder: Callable[[], str], allow_dash: bool = False
    ) -> None:
        super().__init__(dir_okay=False, allow_dash=allow_dash)
        self.what = what
        self.for_a_folder = for_a_folder

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        _refuse_empty_path(os.fsdecode(value), param, ctx, self.what)
        if os.path.isdir(value) and not (self.allow_dash and value == "-"):
            # click's refusal came with the usage text and "File 'x' is a directory": true,
            # and no word on what the command takes or how a folder's blueprints get in.
            raise _BadText(
                f"{click.format_filename(value)} is a folder; {self.for_a_folder()}", ctx=ctx
            )
        return super().convert(value, param, ctx)


def into_blueprints_folder() -> str:
    """How a folder of blueprint files gets into this home, for an error that refuses one."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(CliContext) if ctx is not None else None
    try:
        folder = str(obj.settings.paths.blueprints) if obj is not None else ""
    except LocalStoreError:
        folder = ""  # (a broken config says so once the command opens the home)
    return (
        f"copy its .blueprint.yaml files into {folder or 'the blueprints folder'} (the next "
        "localstore command records them), or save each with 'localstore save PATH -f FILE'"
    )


class _TagText(_Utf8Text):
    """A tag a save sets (`save --tag`): refused as the API refuses it (empty, over
    MAX_TAG_CHARS, a control character), as bad usage; `--tag ""` cleared every tag."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from localstore.blueprint import MAX_TAG_CHARS, tag_problem

        text = super().convert(value, param, ctx)
        problem = tag_problem(text)
        if problem:
            shown = text if len(text) <= 60 else text[:60] + "..."
            raise _BadText(
                f"--tag {shown!r} {problem} (give each tag as a label of 1-{MAX_TAG_CHARS} "
                "characters on one line; leave --tag out to keep the tags)",
                ctx=ctx,
            )
        return text


TAG = _TagText()


class _Ordinal(click.ParamType):
    """A number that counts from 1 (a revision, a conflict): one below 1 is bad usage (exit 2)
    that says where the numbers start, not "no revision -1" (exit 4) or an empty answer.

    A person who typed -1 meant the latest (as Python's index), which the not-found error did
    not tell them how to name. ``latest``: what leaving the option out means ("" for none)."""

    name = "integer"  # (the help's metavar, as click.INT's: docs/cli.md unchanged)

    def __init__(self, noun: str, counts: str, listed: str, latest: str = "") -> None:
        self.noun, self.counts, self.listed, self.latest = noun, counts, listed, latest

    def advice(self, param: click.Parameter | None) -> str:
        """Where the numbers start, how to leave ``param`` out (an option), where to list them."""
        latest = ""
        if isinstance(param, click.Option) and self.latest:
            latest = f"leave {param.opts[0]} out {self.latest}; "
        return f"{self.counts}; {latest}{self.listed}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = click.INT.convert(value, param, ctx)
        if number < 1:
            if isinstance(param, click.Option):
                where = param.opts[0]
            else:
                where = param.human_readable_name if param is not None else self.noun
            raise _BadText(f"{where} {number} is not a {self.noun} ({self.advice(param)})", ctx=ctx)
        return number


_REVISIONS = (
    "revisions count from 1, the first save",
    "'localstore history REF' lists them, the latest first",
)
REVISION = _Ordinal("revision", *_REVISIONS, latest="for the latest")
# `history --before 0` (or -1) listed nothing, exit 0: an empty history, to a script paging
# through it. (--before 1 stays an empty page: nothing is older than the first revision.)
BEFORE_REVISION = _Ordinal("revision", *_REVISIONS, latest="to start at the latest")
# `conflicts show -- -1` was the library's "cid must be >= 0", and `conflicts show 0` "there is
# no conflict #0" (exit 4): conflicts are numbered from 1, as a new index's first one is.
CONFLICT_NUMBER = _Ordinal(
    "conflict number",
    "conflicts are numbered from 1",
    "'localstore conflicts list --all' lists them",
)


class _Count(click.IntRange):
    """A count of items (--limit): below ``minimum`` is bad usage that says what to give and
    what leaving the option out does (click's "0 is not in the range x>=1." said neither).

    An IntRange still, so the help shows the range."""

    def __init__(self, minimum: int, unset: str) -> None:
        super().__init__(min=minimum)
        self.unset = unset

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        count = click.INT.convert(value, param, ctx)
        if self.min is not None and count < self.min:
            where = param.opts[0] if isinstance(param, click.Option) else "the count"
            raise _BadText(
                f"{where} must be {self.min} or more, not {count} ({self.unset})", ctx=ctx
            )
        result: int = super().convert(count, param, ctx)
        return result


def limit_count(unset: str) -> click.ParamType:
    """The type of a --limit: 1 or more. (--limit 0 listed nothing, exit 0: to a script that
    computed it, an empty store or an empty history; -1 was click's bare "not in the range".)"""
    return _Count(1, unset)


def _text_params(cmd: click.Command) -> None:
    """Make every plain-string parameter of a command (and of a group's commands) TEXT, in one
    place: a REF, PATH or QUERY that is not UTF-8 was 'no blueprint matches' (exit 4), an unsafe
    path or 'nothing to search for' (exit 1), where it is bad usage. A parameter that may be a
    file name declares click.UNPROCESSED (a file name may be any bytes) or a click.Path."""
    for param in cmd.params:
        if param.type is click.STRING:
            param.type = TEXT
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _text_params(sub)


# Options of the group, not of its commands: after the command click calls them unknown.
_GLOBAL_OPTIONS = {"--home": "--home PATH", "--json": "--json", "--debug": "--debug"}


def _usage_hint(exc: click.UsageError, args: list[str]) -> str:
    """What a person who made this usage mistake should type instead, or "" (click's text will do).

    ``args``: the command line after the group's options, to find the word click cut short.
    """
    if exc.ctx is None:
        return ""
    if not isinstance(exc, click.NoSuchOption):
        return _file_as_word_hint(exc.ctx, args)
    name, path = exc.option_name, exc.ctx.command_path
    if name in _GLOBAL_OPTIONS:
        # `localstore ls --json`: click suggested '--sort' (its closest option) instead.
        root, _, rest = path.partition(" ")
        example = f"{root} {_GLOBAL_OPTIONS[name]} {rest}"
        return f"{name} is a global option: put it before the command, as in '{example}'"
    arguments = [p for p in exc.ctx.command.params if isinstance(p, click.Argument)]
    word = next((a for a in args if a.startswith(name) and not a.startswith("--")), None)
    # A negative number is a value, never an option (no option is a digit), however short.
    number = word is not None and word[1:].isdigit()
    ordinal = next((p.type for p in arguments if isinstance(p.type, _Ordinal)), None)
    if number and ordinal is not None:
        # `localstore restore REF -1` (the latest, as in Python?): "after '--'" would only lead
        # to the next error, as no revision (or conflict) is numbered below 1.
        return f"{word} is not a {ordinal.noun} either: {ordinal.advice(None)}"
    if arguments and word is not None and (len(word) > 2 or number) and not name.startswith("--"):
        # `localstore search -deploy` was "No such option '-d'": the query read as options.
        # (Not for a lone letter: `save -q x` is a mistyped option, and "save -- -q" would have
        # saved a blueprint named '-q'; `-1` was skipped as one.) The example keeps the other
        # words, options first.
        # (args start after the top command: a subcommand's name, which the path holds, is
        # not repeated: 'localstore conflicts show show -- -1'.)
        others = [a for a in _after_subcommands(args, path) if a != word]
        example = " ".join([path, *others, "--", word])
        return f"a value that starts with '-' goes after '--', as in '{example}'"
    return ""


def _file_as_word_hint(ctx: click.Context, args: list[str]) -> str:
    """For `localstore save flows/deploy deploy.yaml` (the file a second word, as cp takes it),
    which click answers "Got unexpected extra argument": the command reads its file from -f.
    "" when the command takes no -f or no extra word is a file (click's text will do)."""
    options = [p for p in ctx.command.params if isinstance(p, click.Option)]
    if not any("-f" in p.opts for p in options):
        return ""
    takes_value = {o for p in options if not p.is_flag for o in p.opts + p.secondary_opts}
    arguments = sum(1 for p in ctx.command.params if isinstance(p, click.Argument))
    positional: list[str] = []
    words = iter(_after_subcommands(args, ctx.command_path))
    for word in words:
        if word in takes_value:
            next(words, None)  # (its value)
        elif not word.startswith("-"):
            positional.append(word)
    files = [w for w in positional[arguments:] if os.path.isfile(w)]
    if len(files) != 1:
        return ""
    others = [w for w in _after_subcommands(args, ctx.command_path) if w != files[0]]
    example = shlex.join([*ctx.command_path.split(), *others, "-f", files[0]])
    return f"to save the YAML in a file, give it with -f: '{example}'"


def _after_subcommands(args: list[str], path: str) -> list[str]:
    """``args`` (the words after the top command) without the names of the subcommands in
    ``path`` ('localstore conflicts show': 'show'), each the first word so named."""
    words = list(args)
    for name in path.split()[2:]:
        if name in words:
            words.remove(name)
    return words


def _asks_for_json(args: list[str]) -> bool:
    """Whether the group's options in ``args`` (the words before the command) include --json."""
    words = iter(args)
    for word in words:
        if word == "--json":
            return True
        if word == "--home":
            next(words, None)  # its value, whatever it is
        elif word == "--" or not word.startswith("-"):
            return False  # the command: its own words are not the group's
    return False


class _LazyGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        words = list(args)  # (click's parser consumes the list it is given)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            # The group's own options (a --home that is a file, an unknown global option) are
            # parsed here, before invoke() and its CliContext: with --json that error was click's
            # usage text, which a script that asked for JSON cannot parse.
            if _asks_for_json(words):
                fail(
                    exc.format_message(),
                    code=EXIT_USAGE,
                    hint="see 'localstore --help'",
                    json_mode=True,
                )
            raise

    def invoke(self, ctx: click.Context) -> Any:
        args = list(ctx.args)  # (the words after the command's name, before click parses them)
        # One catch for every command: a library error read outside a command's own
        # errors_to_exit() (ctx.settings in sync, doctor, cloud, service, daemon) would be a traceback.
        try:
            try:
                with errors_to_exit():
                    return super().invoke(ctx)
            except click.UsageError as exc:
                hint = _usage_hint(exc, args)
                if not hint:
                    raise
                if _json_mode():
                    fail(exc.message, code=EXIT_USAGE, hint=hint)
                raise click.UsageError(f"{exc.message} ({hint})", ctx=exc.ctx) from None
        except KeyboardInterrupt:
            # click turns it into "Aborted!" and exit 1, which scripts cannot tell from a failure.
            _interrupted()
        except click.Abort as exc:
            # A prompt interrupted by Ctrl-C (click raises Abort from the KeyboardInterrupt);
            # an Abort from EOF on a prompt stays click's.
            if isinstance(exc.__context__, KeyboardInterrupt):
                _interrupted()
            raise
        except click.UsageError as exc:
            if _json_mode():
                # docs/cli.md: with --json an error is one JSON object; click's usage text (and
                # its "Error:" line) is not one a script can parse.
                where = exc.ctx.command_path if exc.ctx is not None else "localstore"
                fail(exc.format_message(), code=EXIT_USAGE, hint=f"see '{where} --help'")
            raise
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as exc:
            # A bug, or an error not translated yet: one line with what it was, not a traceback
            # a user cannot act on. --debug (LOCALSTORE_DEBUG=1) keeps the traceback for a report.
            if _debug_mode() or isinstance(exc, BrokenPipeError):
                raise  # (click silences a closed stdout, as in `localstore ls | head`)
            fail(
                f"unexpected {type(exc).__name__}: {exc}",
                hint="run again with --debug to see the traceback, and report it",
            )

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attr = spec[0].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(cmd_name, spec[1])
        cmd = getattr(module, attr)
        assert isinstance(cmd, click.Command)
        _text_params(cmd)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the registry so `--help` imports no command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, _COMMANDS[name][1]) for name in sorted(_COMMANDS)])


def _interrupted() -> NoReturn:
    click.echo(err=True)  # end the line the terminal's ^C echo left open
    fail("interrupted", code=EXIT_INTERRUPTED)


def _unavailable(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=help_text + " (not available in this build)")
    def cmd() -> None:
        fail(f"'{name}' is not available in this build", hint="upgrade localstore")

    return cmd


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("localstore")
    except PackageNotFoundError:  # pragma: no cover - a frozen binary without metadata
        from localstore import __version__

        return __version__


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    # readable=False: click's own check made a home that cannot be read a usage error (exit 2)
    # naming no fix; the store reports it as permission denied, with the path and a hint.
    type=click.Path(file_okay=False, readable=False),
    # No envvar=: load_settings reads LOCALSTORE_HOME, so it can tell the two apart.
    help="Keep everything under this folder (also LOCALSTORE_HOME).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option(
    "--debug",
    is_flag=True,
    # No envvar=: click parses one as a boolean and made every command a usage error (exit 2)
    # for LOCALSTORE_DEBUG=2; _debug_mode reads the variable, any value but 0/false/no/off.
    help="Show the traceback of an unexpected error (also LOCALSTORE_DEBUG=1).",
)
@click.version_option(version=None, package_name="localstore", message="localstore %(version)s")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool, debug: bool) -> None:
    """LocalStore keeps blueprints as plain files, indexed, versioned and synced.

    REF is an id, a unique id prefix (at least 4 characters), or a path relative to the
    blueprints folder.
    Exit codes: 0 ok, 1 error, 2 usage, 3 needs attention, 4 not found, 130 interrupted.
    """
    ctx.obj = CliContext(home_flag=home, json=as_json, debug=debug)
    _warn_unknown_env(as_json)


def _warn_unknown_env(as_json: bool) -> None:
    """One stderr line per misspelt LOCALSTORE_* variable (it was ignored with nothing said).

    Taken here, before any command loads the settings, so load_settings does not log them again.
    """
    from localstore.config import take_env_warnings

    for message, hint in take_env_warnings():
        if as_json:
            warning = {"message": message, "hint": hint}
            click.echo(json_text({"warning": warning}, err=True), err=True)
        else:
            click.echo(f"warning: {message} ({hint})", err=True)


def _open_closed_std_streams() -> None:
    """Put the null device on a standard stream that was closed when this process started.

    Python makes a closed stdin (`localstore save x <&-`, a bare service process) ``None``:
    reading it failed as "unexpected AttributeError: 'NoneType' object has no attribute
    'isatty'". It now reads as empty, like ``</dev/null``, whose refusals say what to do. The
    descriptor is filled too, so the first file opened (the home's lock) is not taken for a
    standard stream by a child process, such as the merge tool, that writes to or reads it.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # (the lowest free descriptor is fd: the ones below are open)
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _escape_what_stdout_cannot_encode() -> None:
    """Write a character stdout's encoding has no byte for as an escape (``\\u65e5``).

    Strict, a name in Japanese made `localstore ls > list.txt` on Windows (the ANSI code page)
    or `ls` under a Latin-1 locale fail halfway with "unexpected UnicodeEncodeError". (Stderr
    escapes so already; JSON escapes itself there, json_text; documents and secrets go out
    as their UTF-8 bytes, never escaped.)
    """
    stdout = sys.stdout
    if not writes_any_text(stdout) and hasattr(stdout, "reconfigure"):
        stdout.reconfigure(errors="backslashreplace")


def main() -> None:
    """Console-script entry point."""
    _open_closed_std_streams()
    _escape_what_stdout_cannot_encode()
    try:
        cli.main(prog_name="localstore", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C before a command runs
        raise SystemExit(EXIT_INTERRUPTED) from None


if __name__ == "__main__":
    # `python -m localstore.cli` runs this file as __main__, a second copy of the module whose
    # CliContext is not the class the command modules import from localstore.cli, so their
    # pass_ctx would find no context. Run the one importable copy's entry point instead.
    from localstore.cli import main as _main

    _main()
