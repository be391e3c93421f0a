"""CLI commands of the local store: init, save, show, ls, search, rm, mv, history, restore, check."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

import click

from localstore.cli import (
    BEFORE_REVISION,
    EXIT_ATTENTION,
    EXIT_USAGE,
    FILTER,
    REVISION,
    TAG,
    TEXT,
    CliContext,
    InputPath,
    errors_to_exit,
    fail,
    file_words_for_encoding,
    into_blueprints_folder,
    json_text,
    limit_count,
    no_such_file,
    pass_ctx,
    write_bytes,
)
from localstore.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from rich.console import Console
    from rich.text import Text

    from localstore.store import BlueprintInfo, BlueprintStore, CheckReport, Row, SearchHit

# Up to this many rows a listing is a rich table; more are printed as plain aligned lines,
# streamed. rich lays out a whole table in memory before printing it (about 0.5 ms and 8 KB a
# row): `ls` of 100,000 blueprints took two minutes and 860 MB.
TABLE_MAX_ROWS = 1_000
# Lines (or JSON items) written to stdout at a time when streaming.
_STREAM_CHUNK = 1_000
# C0 and C1 control characters (escape sequences, a newline in a name) shown as '?', as rich's
# Text does not: printed raw, a name could move the cursor or recolour the terminal.
_CONTROLS = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _shown(cell: str) -> str:
    """A cell as a listing shows it, on a terminal or in a pipe: its control characters as '?'
    (a newline in a tag kept from a hand-edited meta made a two-line cell on a terminal)."""
    return cell.translate(_CONTROLS)


def _table(
    title: str,
    columns: list[str],
    rows: Sequence[Sequence[str | Text]],
    console: Console | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(highlight=False)
    if not console.is_terminal:
        # Piped or redirected: rich drew the table 80 columns wide and folded long paths in
        # the middle of a word (`team/pre.blueprint` / `.yaml`), which grep and copy-paste then
        # missed. Plain aligned lines keep every cell whole, as `ls` past 1,000 rows does.
        click.echo(title)
        plain = [[c.plain if isinstance(c, Text) else c for c in r] for r in rows]
        _stream(_plain_rows(columns, plain))
        return
    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        # Text, not str: file names and snippets must never be read as rich markup.
        table.add_row(*(Text(_shown(c)) if isinstance(c, str) else c for c in r))
    console.print(table)


def _snippet(hit: SearchHit, console: Console) -> Text:
    """A hit's snippet on one line, its matches shown as matches: in reverse video on a terminal
    (the text's own brackets then stay brackets), between [ ] elsewhere (a pipe, NO_COLOR), as
    ``SearchHit.snippet`` has them."""
    from rich.text import Text

    if not hit.snippet_parts or console.no_color or not console.is_terminal:
        return Text(" ".join(hit.snippet.split()))
    parts = [(re.sub(r"\s+", " ", text), is_hit) for text, is_hit in hit.snippet_parts]
    parts[0] = (parts[0][0].lstrip(), parts[0][1])
    parts[-1] = (parts[-1][0].rstrip(), parts[-1][1])
    out = Text()
    for text, is_hit in parts:
        out.append(text, "reverse" if is_hit else None)
    return out


def _plain_rows(columns: list[str], rows: Sequence[Sequence[str]]) -> Iterable[str]:
    """Lines of a plain table: each column padded to its widest cell (in terminal cells)."""
    from rich.cells import cell_len

    clean = [[_shown(c) for c in r] for r in rows]
    widths = [cell_len(c) for c in columns]
    for r in clean:
        for k, c in enumerate(r):
            widths[k] = max(widths[k], cell_len(c))

    def line(cells: Sequence[str]) -> str:
        padded = [c + " " * (w - cell_len(c)) for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]])

    yield line(columns)
    for r in clean:
        yield line(r)


def _stream(lines: Iterable[str]) -> None:
    """Write lines to stdout in chunks (never the whole output as one string)."""
    chunk: list[str] = []
    for text in lines:
        chunk.append(text)
        if len(chunk) >= _STREAM_CHUNK:
            click.echo("\n".join(chunk))
            chunk = []
    if chunk:
        click.echo("\n".join(chunk))


def _emit_json_list(items: Sequence[BlueprintInfo]) -> None:
    """Print ``[item, ...]`` as ``json.dumps`` would, item by item (no whole-list string)."""

    def parts() -> Iterable[str]:
        for k, i in enumerate(items):
            text = json_text(i.to_dict())
            yield ("[" if k == 0 else ", ") + text
        yield "[]" if not items else "]"

    chunk: list[str] = []
    for part in parts():
        chunk.append(part)
        if len(chunk) >= _STREAM_CHUNK:
            click.echo("".join(chunk), nl=False)
            chunk = []
    click.echo("".join(chunk))


def _title(head: str, folder: str | None, tag: str | None) -> str:
    """A listing's title, naming its filter: "0 blueprint(s) with tag 'nope'"."""
    from localstore._listing import filter_words

    return " ".join(w for w in (head, filter_words(folder, tag)) if w)


def _note_nothing_matched(store: BlueprintStore, folder: str | None, tag: str | None) -> None:
    """Say on stderr that a filter matched nothing (exit 0 still: the empty answer is one).

    The title alone ("0 blueprint(s)") read the same for a typo in a tag or folder as for an
    empty folder; this names what was asked and where to look. Only when no blueprint at all
    matches the filter: an empty answer for other reasons (a search whose words found nothing
    among the blueprints tagged so, an --offset past the end) is no typo in it, and
    the note sent the user looking for one."""
    from localstore._listing import filter_words

    if (folder or tag is not None) and not store.list(folder=folder, tag=tag, limit=1):
        click.echo(
            f"note: no blueprint {filter_words(folder, tag)} (check the spelling; "
            "'localstore ls' lists the blueprints with their folders and tags)",
            err=True,
        )


@click.command("init")
@pass_ctx
def init_cmd(ctx: CliContext) -> None:
    """Create the folders and index of a home (safe to run again)."""
    with errors_to_exit():
        store = ctx.store(writes="set up the home")
        p = store.paths
        data = {
            "blueprints": str(p.blueprints),
            "data": str(p.data),
            "config": str(p.config),
            "cache": str(p.cache),
            "state": str(p.state),
            "device_id": store.device_id,
            "count": store.count(),
        }
        ctx.emit(
            data,
            lambda: click.echo(
                f"Ready: {data['count']} blueprint(s) in {p.blueprints}\nindex: {p.index_db}"
            ),
        )


def _save_takes() -> str:
    return f"-f takes one YAML file; to bring in a folder's blueprints, {into_blueprints_folder()}"


@click.command("save")
@click.argument("path")
@click.option(
    "-f",
    "--file",
    "source",
    type=InputPath("the YAML file to save", for_a_folder=_save_takes, allow_dash=True),
    help="Read the YAML from FILE ('-' for stdin). Default: stdin.",
)
@click.option("--tag", "tags", multiple=True, type=TAG, help="Set tags (repeatable).")
@click.option("--name", type=TEXT, help="Display name.")
@click.option("--description", type=TEXT, help="Description.")
@pass_ctx
def save_cmd(
    ctx: CliContext,
    path: str,
    source: str | None,
    tags: tuple[str, ...],
    name: str | None,
    description: str | None,
) -> None:
    """Save a blueprint at PATH from a file or stdin, keeping its text byte for byte."""
    with errors_to_exit():
        limit = ctx.settings.max_yaml_bytes
    _check_tag_count(tags)
    if source in (None, "-"):
        if source is None and sys.stdin.isatty():
            fail("no content given", code=2, hint="use -f FILE, or pipe the YAML on stdin")
        content = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(source, "rb") as fh:
                content = fh.read(limit + 1)
        except FileNotFoundError:
            no_such_file(source)
        except OSError as exc:
            fail(f"cannot read {source}: {exc.strerror}", hint="check the file name")
    # Read one byte past the limit, never all of it: a multi-GB pipe would fill memory first.
    if len(content) > limit:
        fail(
            f"YAML is over the limit of {limit} bytes",
            hint="split the blueprint or raise max_yaml_bytes in config.yaml",
        )
    with errors_to_exit(), file_words_for_encoding():
        bp = ctx.store(writes="save a blueprint").save(
            path, content, tags=list(tags) or None, name=name, description=description
        )
        ctx.emit(
            {k: v for k, v in bp.to_dict().items() if k != "content"},
            lambda: click.echo(f"saved {bp.path} (id {bp.id}, rev {bp.rev})"),
        )


def _check_tag_count(tags: Sequence[str]) -> None:
    """Exit 2 for more --tag options than a blueprint may have (the API's limit)."""
    from localstore.blueprint import MAX_TAGS, normalize_tags

    if len(normalize_tags(tags)) > MAX_TAGS:
        fail(
            f"{len(normalize_tags(tags)):,} tags, over the limit of {MAX_TAGS} a blueprint has",
            code=EXIT_USAGE,
            hint="keep the tags to a few labels; --description holds longer text",
        )


@click.command("show")
@click.argument("ref")
@click.option("--meta", is_flag=True, help="Print the meta instead of the YAML.")
@click.option("--rev", type=REVISION, help="Show a past revision.")
@pass_ctx
def show_cmd(ctx: CliContext, ref: str, meta: bool, rev: int | None) -> None:
    """Print a blueprint's YAML (exactly as stored) or its meta."""
    with errors_to_exit():
        store = ctx.store(existing=True, read_only_ok=True)
        bp = store.load_revision(ref, rev) if rev is not None else store.load(ref)
        if ctx.json:
            ctx.emit(bp.to_dict())
        elif meta:
            click.echo(json_text(bp.meta.to_dict(), indent=2))
        else:
            # Its bytes (the stored text is their UTF-8 decoding): as text, a character the
            # stdout's encoding lacks (cp1252, Latin-1) failed or came out escaped, and
            # Windows' text mode turned each CRLF into CR CR LF.
            write_bytes(bp.content.encode("utf-8"))


@click.command("ls")
@click.option("--folder", type=FILTER, help="Only this folder (and below), in any case.")
@click.option("--tag", type=FILTER, help="Only blueprints with this tag (exact case).")
@click.option(
    "--sort",
    type=click.Choice(["path", "name", "modified", "created"]),
    default="path",
    show_default=True,
    help="Order by path, name, modified or created.",
)
@click.option("--desc", is_flag=True, help="Reverse the order.")
# A range: a count below it is bad usage (exit 2), not a failure (it was exit 1).
@click.option(
    "--limit", type=limit_count("leave --limit out for all of them"), help="At most this many."
)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many.")
@pass_ctx
def ls_cmd(
    ctx: CliContext,
    folder: str | None,
    tag: str | None,
    sort: str,
    desc: bool,
    limit: int | None,
    offset: int,
) -> None:
    """List blueprints (more than 1,000 as plain aligned lines, printed as they come)."""
    with errors_to_exit():
        store = ctx.store(existing=True, read_only_ok=True)
        items = store.list(
            folder=folder, tag=tag, sort=sort, descending=desc, limit=limit, offset=offset
        )
        if ctx.json:
            _emit_json_list(items)
            return
        if not items:
            _note_nothing_matched(store, folder, tag)
        columns = ["path", "name", "tags", "modified", "id"]
        rows = [
            [
                i.path + ("" if i.valid else "  (invalid)"),
                i.name,
                ", ".join(i.tags),
                i.modified[:19],
                i.id[:8],
            ]
            for i in items
        ]
        title = _title(f"{len(items)} blueprint(s)", folder, tag)
        if len(rows) <= TABLE_MAX_ROWS:
            _table(title, columns, rows)
            return
        click.echo(title)
        _stream(_plain_rows(columns, rows))


@click.command("search")
@click.argument("query")
@click.option(
    "--limit",
    type=limit_count("leave --limit out for 20"),
    default=20,
    show_default=True,
    help="At most this many hits.",
)
@click.option(
    "--offset", type=click.IntRange(min=0), default=0, help="Skip this many (the next page)."
)
@click.option("--folder", type=FILTER, help="Only this folder (and below), in any case.")
@click.option("--tag", type=FILTER, help="Only blueprints with this tag (exact case).")
@pass_ctx
def search_cmd(
    ctx: CliContext, query: str, limit: int, offset: int, folder: str | None, tag: str | None
) -> None:
    """Full-text search over names, descriptions, tags, content and paths, best first.

    Words match whole, the last one also as a prefix (kube finds kubernetes); quote a phrase to
    match it exactly ('"make deploy"'). Punctuation only separates words: c++ searches c, and
    AND, OR, NOT and NEAR are words. A query starting with '-' goes after '--'.
    """
    from localstore.errors import InvalidInputError

    with errors_to_exit():
        store = ctx.store(existing=True, read_only_ok=True)
        try:
            hits = store.search(query, limit=limit, offset=offset, folder=folder, tag=tag)
        except InvalidInputError as exc:
            # A search reads no file: whatever it refuses is the query or an option, bad usage,
            # its word limit (a LimitExceededError, which for a saved document is exit 1) too.
            fail(exc.message, code=EXIT_USAGE, hint=exc.hint)

        def show() -> None:
            from rich.console import Console

            if not hits:
                _note_nothing_matched(store, folder, tag)
            console = Console(highlight=False)
            _table(
                _title(f"{len(hits)} match(es) for {query!r}", folder, tag),
                ["path", "name", "snippet"],
                [[h.info.path, h.info.name, _snippet(h, console)] for h in hits],
                console,
            )

        ctx.emit([h.to_dict() for h in hits], show)


@click.command("rm")
@click.argument("ref")
@pass_ctx
def rm_cmd(ctx: CliContext, ref: str) -> None:
    """Delete a blueprint; 'localstore history' and 'restore' bring it back."""
    with errors_to_exit():
        # existing=True: in a home that does not exist there is no blueprint to delete, and a
        # mistyped --home must not be left behind as a new, empty home.
        rev = ctx.store(existing=True, writes="delete a blueprint").delete(ref)
        ctx.emit(
            rev.to_dict(),
            lambda: click.echo(
                f"deleted {rev.path} (restore with: localstore restore {rev.id} {rev.rev - 1})"
            ),
        )


@click.command("mv")
@click.argument("ref")
@click.argument("new_path")
@pass_ctx
def mv_cmd(ctx: CliContext, ref: str, new_path: str) -> None:
    """Move or rename a blueprint; its id and history are kept.

    NEW_PATH ending in '/' is a folder: the blueprint keeps its file name there ('mv team/flow
    archive/'). A folder's letter case changes with the last blueprint that leaves it ('mv
    team/flow Team/flow' when nothing else is in 'team'); a folder holding more is renamed by
    moving its blueprints through a folder of another name.
    """
    with errors_to_exit():
        store = ctx.store(existing=True, writes="move a blueprint")  # (as rm)
        try:
            old = store.resolve(ref).path
        except NotFoundError:
            old = ref  # (move says what is wrong: it explains a folder given as REF too)
        else:
            new_path = _into_folder(new_path, old)
        bp = store.move(ref, new_path)

        def human() -> None:
            if bp.path == old:
                # ("moved to" read as if something had happened.)
                click.echo(f"{bp.path} is already there: nothing moved (id {bp.id})")
            else:
                click.echo(f"moved {old} to {bp.path} (id {bp.id})")

        ctx.emit({k: v for k, v in bp.to_dict().items() if k != "content"}, human)


def _into_folder(new_path: str, old: str) -> str:
    """``new_path`` with the blueprint's file name added when it names a folder (ends in a
    slash), as ``mv`` does. It was refused ("has no file name"), and people typed it."""
    if not new_path.endswith(("/", os.sep)):
        return new_path
    name = old.rsplit("/", 1)[-1]
    # ('./' is the blueprints folder itself, as a shell user writes it.)
    return name if new_path in ("./", "." + os.sep) else new_path + name


@click.command("history")
@click.argument("ref")
@click.option(
    "--limit",
    type=limit_count("leave --limit out for all of them"),
    help="At most this many revisions (default: all of them).",
)
@click.option(
    "--before",
    type=BEFORE_REVISION,
    metavar="REV",
    help="Only revisions older than REV: the next page is --before the last rev listed.",
)
@pass_ctx
def history_cmd(ctx: CliContext, ref: str, limit: int | None, before: int | None) -> None:
    """List a blueprint's revisions, newest first.

    --limit N shows the N newest; --before REV starts below revision REV. A page cut by --limit
    ends with a note on stderr naming the command for the next page; with --json the next page
    is --before the last item's "rev", and a page shorter than --limit is the last.
    """
    with errors_to_exit():
        store = ctx.store(existing=True, read_only_ok=True)
        # One more than asked: whether older revisions remain, for the note (asking again with
        # --before would say it too, but a second read could race a save).
        revs = store.history(ref, limit=None if limit is None else limit + 1, before=before)
        more = limit is not None and len(revs) > limit
        revs = revs[:limit]

        def human() -> None:
            rows = [
                [
                    str(r.rev) + (" (deleted)" if r.deleted else ""),
                    r.ts[:19],
                    r.origin,
                    r.path,
                    r.content_hash[:10],
                ]
                for r in revs
            ]
            columns = ["rev", "when", "origin", "path", "hash"]
            if len(rows) <= TABLE_MAX_ROWS:
                _table("history", columns, rows)
            else:  # (as ls: rich lays out a whole table in memory first)
                click.echo("history")
                _stream(_plain_rows(columns, rows))
            if more and revs:
                import shlex

                click.echo(
                    f"note: older revisions remain: localstore history {shlex.quote(ref)} "
                    f"--limit {limit} --before {revs[-1].rev}",
                    err=True,
                )

        ctx.emit([r.to_dict() for r in revs], human)


@click.command("restore")
@click.argument("ref")
@click.argument("rev", type=REVISION, required=False)
@click.option("--path", "target", help="Restore to another path (when the old one is taken).")
@pass_ctx
def restore_cmd(ctx: CliContext, ref: str, rev: int | None, target: str | None) -> None:
    """Make revision REV current again (also undeletes).

    The restore is recorded as a new revision; history keeps every revision. The blueprint
    stays at its path (a deleted one comes back where it was deleted); --path puts it
    elsewhere. REF may be the id of a deleted blueprint ('localstore rm' prints it); without
    REV, a deleted blueprint comes back as it was when deleted.
    """
    with errors_to_exit():
        store = ctx.store(existing=True, writes="restore a revision")  # (as rm)
        before = store.row(ref, include_deleted=True)
        rev = _rev_to_restore(ref, before, rev)
        bp = store.restore(ref, rev, path=target)

        def human() -> None:
            if bp.rev == before.rev and not before.deleted:
                # (Same content already: nothing recorded. "restored ... (now rev 3)" read
                # as if a revision had been added.)
                click.echo(f"{bp.path} already has the content of rev {rev} (rev {bp.rev})")
            else:
                click.echo(f"restored {bp.path} to the content of rev {rev} (now rev {bp.rev})")

        ctx.emit({k: v for k, v in bp.to_dict().items() if k != "content"}, human)


def _rev_to_restore(ref: str, row: Row, rev: int | None) -> int:
    """The revision ``restore`` brings back: REV, or for a deleted blueprint the one before its
    delete (what 'localstore rm' prints). People undoing an rm typed 'restore REF' and got a
    usage error; a live blueprint has no such obvious revision, so it still needs REV."""
    if rev is not None:
        return rev
    if row.deleted:
        return row.rev - 1
    raise click.UsageError(
        f"{ref!r} is not deleted (it is at rev {row.rev}): say which revision to restore; "
        f"'localstore history {ref}' lists them"
    )


def _say_steps(report: CheckReport, fix: bool) -> None:
    """check's closing lines: what to do about each kind of problem left. It said "'localstore
    check --fix' repairs what is safe to repair" after a --fix too, which had repaired all it
    could: the person ran it again, to the same report."""
    from localstore._check_steps import check_steps

    left = " left that --fix could not repair" if fix else ""
    click.echo(f"{len(report.problems)} problem(s){left}; what to do:", err=True)
    for kinds, what in check_steps((p["kind"] for p in report.problems), after_fix=fix):
        click.echo(f"  {kinds}: {what}", err=True)


@click.command("check")
@click.option(
    "--fix",
    is_flag=True,
    help="Repair what can be repaired safely. An index made by an older localstore is also "
    "rewritten once (VACUUM) so it can give free space back: about 1 s per 60 MB of index, "
    "and it needs that much free disk space again.",
)
@pass_ctx
def check_cmd(ctx: CliContext, fix: bool) -> None:
    """Compare the index with the files; exit 3 if problems remain.

    Each problem line names the file and what is wrong; the closing lines (stderr) say what to
    do about each kind: run --fix for what it repairs (the index following the files), fix the
    file for the rest. After --fix they list only what --fix could not repair.
    """
    with errors_to_exit():
        # Without --fix it only reads: a home this user cannot write is checked read-only
        # (reported, nothing fixed); --fix there says that the home is read-only.
        store = ctx.store(
            existing=True,
            read_only_ok=not fix,
            writes="repair the index" if fix else None,
            reconcile=False,
            recover_index=fix,
        )
        report = store.check(fix=fix)

        def human() -> None:
            for f in report.fixed:
                click.echo(f"fixed   {f['kind']:<14} {f['path']}  {f['detail']}")
            for p in report.problems:
                click.echo(f"problem {p['kind']:<14} {p['path']}  {p['detail']}")
            if report.clean:
                click.echo("index and files agree")
            elif store.read_only:
                # (--fix cannot run here: it would fail as any write does.)
                click.echo(
                    f"{len(report.problems)} problem(s); this home is read-only: copy it to a "
                    "folder you may write and run 'localstore check --fix' on the copy",
                    err=True,
                )
            else:
                _say_steps(report, fix)

        ctx.emit(report.to_dict(), human)
        if not report.clean:
            raise SystemExit(EXIT_ATTENTION)
