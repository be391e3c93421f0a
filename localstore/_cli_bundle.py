"""``localstore export`` and ``localstore import``: bundles on the command line.

A passphrase never comes from argv (it would land in shell history and ``ps``): it is read from
``LOCALSTORE_PASSPHRASE`` or asked for without echo. Progress bars go to stderr, and only when it
is a terminal, so stdout stays clean for ``--json`` and ``--yaml -o -``.

``--on-conflict merge`` uses the sync package's merge ladder when it is installed. It is imported
here, lazily, inside the command: the ``localstore`` library itself never imports ``sync`` (the
archive API takes the merger as a parameter instead).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from localstore.archive import (
    CONFLICT_POLICIES,
    ExportResult,
    ImportItem,
    ImportResult,
    Merger,
    ProgressCallback,
    check_export,
    export_bundle,
    export_yaml,
    import_bundle,
    is_encrypted,
)
from localstore.cli import (
    EXIT_ATTENTION,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    FILTER,
    OUTPUT_PATH,
    CliContext,
    InputPath,
    errors_to_exit,
    fail,
    into_blueprints_folder,
    no_such_file,
    pass_ctx,
)

PASSPHRASE_ENV = "LOCALSTORE_PASSPHRASE"


def _passphrase(*, confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_ENV, "")
    if value:
        return value
    if not sys.stdin.isatty():
        fail(
            "a passphrase is needed and there is no terminal to ask for it",
            code=EXIT_USAGE,
            hint=f"set {PASSPHRASE_ENV}",
        )
    typed: str = click.prompt(
        "Bundle passphrase", hide_input=True, confirmation_prompt=confirm, err=True
    )
    return typed


@contextmanager
def _progress_bars() -> Iterator[ProgressCallback | None]:
    """Rich progress bars on stderr (one per phase) when it is a terminal; else no callback."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bars:
        tasks: dict[str, object] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)  # type: ignore[arg-type]

        yield update


def _sync_merger() -> Merger | None:
    """The sync merge ladder as a Merger, or None when the sync package is not installed."""
    try:
        from sync.merge import merge3_text
    except ImportError:
        return None

    def merger(base: str | None, local: str, incoming: str) -> str | None:
        outcome = merge3_text(base, local, incoming)
        return outcome.content if outcome.status == "clean" else None

    return merger


def _no_output(refs: tuple[str, ...], as_yaml: bool) -> NoReturn:
    """Refuse an export without -o, with the command that was meant. 'localstore export
    out.lsbundle' read the bundle's name as a blueprint to export and only said "Missing option
    '-o' / '--output'"."""
    named = [r for r in refs if r.lower().endswith((".lsbundle", ".zip"))]
    if named:
        rest = " ".join(r for r in refs if r not in named)
        example = f"localstore export {rest + ' ' if rest else ''}-o {named[-1]}"
        hint = f"the bundle's name goes after -o: '{example}'"
    elif as_yaml:
        hint = "give the file to write with -o ('-o -' writes the YAML to stdout)"
    else:
        hint = "give the file to write with -o, e.g. 'localstore export -o blueprints.lsbundle'"
    fail("export needs an output file (-o / --output)", code=EXIT_USAGE, hint=hint)


@click.command("export")
@click.argument("refs", nargs=-1)
@click.option("--folder", type=FILTER, help="Export the blueprints in this folder (and below).")
@click.option("--tag", type=FILTER, help="Export the blueprints with this tag.")
@click.option(
    "-o",
    "--output",
    type=OUTPUT_PATH,
    help="The bundle to write ('-' with --yaml: stdout). Required.",
)
@click.option(
    "--encrypt",
    is_flag=True,
    help="Seal the bundle with a passphrase (asked twice on the terminal; in a script, "
    "LOCALSTORE_PASSPHRASE).",
)
@click.option("--yaml", "as_yaml", is_flag=True, help="Write one blueprint as plain YAML.")
@pass_ctx
def export_cmd(
    ctx: CliContext,
    refs: tuple[str, ...],
    folder: str | None,
    tag: str | None,
    output: str | None,
    encrypt: bool,
    as_yaml: bool,
) -> None:
    """Export blueprints (REFs, a --folder, a --tag; all when none is given) to a .lsbundle.

    A --folder or --tag that matches no blueprint is an error (exit 4, no file written): a
    mistyped tag gave a bundle of nothing. A home with no blueprints still exports (all of it).
    """
    if output is None:
        _no_output(refs, as_yaml)
    if as_yaml:
        _export_yaml(ctx, refs, folder, tag, output, encrypt)
        return
    if output == "-":
        fail("a bundle cannot go to stdout", code=EXIT_USAGE, hint="give a file with -o")
    with errors_to_exit():
        store = ctx.store(existing=True, read_only_ok=True)
        if encrypt:
            # What the export would refuse (a missing home, a ref or filter that matches
            # nothing, a destination folder that does not exist, too many blueprints) is
            # refused before someone types a passphrase twice for nothing.
            check_export(store, output, refs=refs, folder=folder, tag=tag)
    passphrase = _passphrase(confirm=True) if encrypt else None
    with errors_to_exit(), _progress_bars() as progress:
        result = export_bundle(
            store,
            output,
            refs=refs,
            folder=folder,
            tag=tag,
            passphrase=passphrase,
            progress=progress,
        )
    ctx.emit(result.to_dict(), lambda: _print_export(result))


def _print_export(result: ExportResult) -> None:
    click.echo(
        f"exported {result.count} blueprint(s) to {result.path}"
        + (" (encrypted)" if result.encrypted else ""),
        err=True,
    )
    if result.flagged:
        # Their files here do not parse; the bundle holds the version last indexed instead.
        click.echo(
            f"note: {len(result.flagged)} blueprint(s) whose files do not parse were exported as "
            f"last saved: {', '.join(result.flagged)} (see 'localstore check')",
            err=True,
        )


def _export_yaml(
    ctx: CliContext,
    refs: tuple[str, ...],
    folder: str | None,
    tag: str | None,
    output: str,
    encrypt: bool,
) -> None:
    if len(refs) != 1 or folder or tag or encrypt:
        fail(
            "--yaml exports exactly one blueprint, unencrypted",
            code=EXIT_USAGE,
            hint="give one REF and no --folder, --tag or --encrypt",
        )
    if output == "-" and ctx.json:
        fail("--yaml -o - writes raw YAML to stdout; drop --json", code=EXIT_USAGE)
    with errors_to_exit():
        data = export_yaml(
            ctx.store(existing=True, read_only_ok=True), refs[0], None if output == "-" else output
        )
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    ctx.emit(
        {"path": output, "size": len(data), "ref": refs[0]},
        lambda: click.echo(f"wrote {refs[0]} to {output}", err=True),
    )


def _import_takes() -> str:
    return (
        "import takes one .lsbundle file, as 'localstore export -o FILE' writes it; to bring in "
        f"a folder's blueprints, {into_blueprints_folder()}"
    )


@click.command("import")
@click.argument("file", type=InputPath("the bundle to import", for_a_folder=_import_takes))
@click.option(
    "--on-conflict",
    type=click.Choice(CONFLICT_POLICIES),
    default="skip",
    show_default=True,
    help="What to do when a blueprint differs here and in the bundle.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--require-encrypted",
    is_flag=True,
    help="Refuse a bundle that is not encrypted (only an encrypted one proves its writer "
    "knew the passphrase).",
)
@pass_ctx
def import_cmd(
    ctx: CliContext, file: str, on_conflict: str, dry_run: bool, require_encrypted: bool
) -> None:
    """Import a .lsbundle: verify it completely, then save each blueprint (origin 'import').

    An encrypted bundle's passphrase is asked on the terminal (in a script:
    LOCALSTORE_PASSPHRASE). Exit code 3 when blueprints were left as they are here (conflicts,
    files here that do not parse; with --dry-run: would be), 1 when some blueprint was refused or
    could not be saved. The closing notes say what to do about each kind. FILE is a bundle, not
    a folder: a folder's .blueprint.yaml files are copied into the blueprints folder instead (the
    next localstore command records them).
    """
    with errors_to_exit():
        encrypted = _is_encrypted(file)
        if not encrypted and not require_encrypted and os.environ.get(PASSPHRASE_ENV):
            # A script that sets the passphrase expects encrypted bundles; a plain one in its
            # place (anyone who can write the file can make one) went through without a word.
            click.echo(
                f"note: {file} is not encrypted, so {PASSPHRASE_ENV} was not used and nothing "
                "proves who wrote it (--require-encrypted refuses such bundles)",
                err=True,
            )
        with _nothing_imported_on_ctrl_c(dry_run):
            passphrase = _passphrase(confirm=False) if encrypted else None
            # (--dry-run too: it may stage the bundle's files in the home's cache.)
            store = ctx.store(writes="import a bundle")
        merger = _sync_merger() if on_conflict == "merge" else None
        with _progress_bars() as bars:
            progress = _ImportProgress(bars)
            try:
                result = import_bundle(
                    store,
                    file,
                    on_conflict=on_conflict,
                    dry_run=dry_run,
                    passphrase=passphrase,
                    merger=merger,
                    progress=progress,
                    require_encrypted=require_encrypted,
                )
            except KeyboardInterrupt:
                _import_interrupted(progress, dry_run)
    notes = _closing_notes(result)
    ctx.emit({**result.to_dict(), "notes": notes}, lambda: _print_result(result, notes))
    if result.failed:
        raise SystemExit(EXIT_ERROR)
    if result.conflicts_skipped:
        # A dry run too: it exited 0 where the import would exit 3, so a script that checks
        # first learnt nothing from it.
        raise SystemExit(EXIT_ATTENTION)


def _is_encrypted(file: str) -> bool:
    """Whether the bundle ``file`` is encrypted; exit 2 when there is no such file."""
    from localstore.errors import NotFoundError

    try:
        return is_encrypted(file)
    except NotFoundError:
        no_such_file(file, "bundle")


class _ImportProgress:
    """The progress callback of an import: forwards to the bars (if any) and keeps how many of
    the bundle's blueprints the import went through, for the message of a Ctrl-C."""

    def __init__(self, bars: ProgressCallback | None) -> None:
        self._bars = bars
        self.done = 0
        self.total = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase == "import":  # (reported once a batch is committed)
            self.done, self.total = done, total
        if self._bars is not None:
            self._bars(phase, done, total)


@contextmanager
def _nothing_imported_on_ctrl_c(dry_run: bool) -> Iterator[None]:
    """Say that nothing was imported when Ctrl-C stops the passphrase prompt or the store's
    opening: the command's generic "interrupted" left that to guess. (click's prompt turns the
    KeyboardInterrupt into click.Abort; an Abort from EOF at the prompt stays click's.)"""
    try:
        yield
    except KeyboardInterrupt:
        _import_interrupted(_ImportProgress(None), dry_run)
    except click.Abort as exc:
        if not isinstance(exc.__context__, KeyboardInterrupt):
            raise
        _import_interrupted(_ImportProgress(None), dry_run)


def _import_interrupted(progress: _ImportProgress, dry_run: bool) -> NoReturn:
    """Say how far an import stopped by Ctrl-C got, and how to finish it. It printed only
    "interrupted": whether anything was imported, and what to do now, was left to guess.
    Each batch is one transaction (a batch cut short is put back as it was), and an import run
    again leaves what is here already as it is, so running it again finishes the job."""
    click.echo(err=True)  # end the line the terminal's ^C echo left open
    if dry_run:
        fail("interrupted (a dry run changes nothing)", code=EXIT_INTERRUPTED)
    done, total = progress.done, progress.total
    if not total:
        fail(
            "interrupted before any blueprint was imported",
            code=EXIT_INTERRUPTED,
            hint="nothing was changed here; run the same import again",
            extra={"imported": 0},
        )
    fail(
        f"interrupted after importing {done} of the bundle's {total} blueprints",
        code=EXIT_INTERRUPTED,
        hint=f"import the same bundle again to import the other {total - done}: the "
        "blueprints it already brought in are left as they are",
        extra={"imported": done, "total": total},
    )


def _print_result(result: ImportResult, notes: list[str]) -> None:
    verb = "would" if result.dry_run else "did"
    for it in result.items:
        if it.action != "unchanged" or it.status == "failed":
            click.echo(_item_line(it))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(_summary_counts(result).items()))
    # "would: nothing" read the same for an empty bundle (an export of an empty home) as for
    # one whose blueprints are all here already.
    click.echo(f"{verb}: {counts or 'nothing (the bundle holds no blueprints)'}", err=True)
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _item_line(it: ImportItem) -> str:
    why = [it.reason] if it.reason else []
    line = f"{it.action:<10} {it.path}"
    if it.action == "skip":
        # A skipped blueprint stays where it is: "a -> b" read as a move this import makes.
        if it.target_path and it.target_path != it.path:
            why.insert(0, f"stays at {it.target_path} here")
    elif it.target_path and it.target_path != it.path:
        line += f" -> {it.target_path}"
    if it.action == "refused":
        # Refused by the plan, never attempted: "FAILED" read as a write gone wrong, and in a
        # dry run as one already made.
        why.append(it.error)
    if why:
        line += f"  ({'; '.join(why)})"
    if it.status == "failed" and it.action != "refused":
        line += f"  FAILED: {it.error}"
    return line


def _summary_counts(result: ImportResult) -> dict[str, int]:
    """Items per action, as ``counts()`` but a refused item counted as refused: "failed" is kept
    for a save that went wrong ("would: 1 failed" in a dry run read as an attempt made)."""
    out: dict[str, int] = {}
    for it in result.items:
        key = "failed" if it.status == "failed" and it.action != "refused" else it.action
        out[key] = out.get(key, 0) + 1
    return out


# The file manager's files a note names (a bundle zipped again holds one in every folder).
_IGNORED_SHOWN = 5


def _closing_notes(result: ImportResult) -> list[str]:
    """What to do about the items left as they are, by why each was: advice that cannot help
    (--on-conflict overwrite for a file that does not parse, which no policy writes over) sent
    the person round in circles. Exit 3 says something needs attention; these say what."""
    left = "would be left" if result.dry_run else "were left"
    skipped = result.skipped()
    notes: list[str] = []
    if skipped.get("conflict"):
        notes.append(
            f"{skipped['conflict']} blueprint(s) in conflict (changed both here and in the "
            "bundle, deleted here, or at a path another blueprint holds here; each line says "
            f"which) {left} as they are here; to take the bundle's, import with --on-conflict "
            "merge (3-way; keeps both where it cannot merge), keep-both or overwrite"
        )
    if skipped.get("unparsable"):
        notes.append(
            f"{skipped['unparsable']} blueprint(s) whose file here does not parse {left} as "
            "they are under every --on-conflict policy (the file holds an edit no revision "
            "has); fix or delete each file named above, then import again"
        )
    if skipped.get("path-held"):
        notes.append(
            f"{skipped['path-held']} blueprint(s) renamed in the bundle to a path another "
            f"blueprint holds here {left} where they are under every --on-conflict policy; "
            "move one of the two to another path ('localstore mv'), then import again"
        )
    if result.ignored_entries:
        # Finder's "Icon\r" with its carriage return escaped: written as it is, it sent the
        # cursor back to the line's start, and the rest of the note overwrote its beginning.
        shown = [n.replace("\r", "\\r") for n in result.ignored_entries[:_IGNORED_SHOWN]]
        more = len(result.ignored_entries) - len(shown)
        notes.append(
            f"{len(result.ignored_entries)} file(s) a file manager leaves in folders were passed "
            f"by: {', '.join(shown)}{f' and {more} more' if more else ''} (the bundle was "
            "unzipped and zipped again; its blueprints are verified against its manifest all "
            "the same)"
        )
    refused = sum(1 for it in result.items if it.action == "refused")
    if refused:
        notes.append(
            f"{refused} blueprint(s) this home cannot save where the bundle puts them "
            + ("would be refused" if result.dry_run else "were refused")
            + " (each line says why, and what to change to import them)"
        )
    failed = result.failed - refused
    if failed:
        notes.append(
            f"{failed} blueprint(s) could not be saved (each FAILED line says why); importing "
            "the bundle again retries them"
        )
    return notes
