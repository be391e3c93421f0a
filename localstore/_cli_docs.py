"""Render docs/cli.md from the click command tree, so the reference can never drift from --help.

.venv/bin/python -m localstore._cli_docs > docs/cli.md
"""

from __future__ import annotations

import click

from localstore.cli import _COMMANDS, cli

INTRO = """# Command line reference

Generated from the commands themselves (`python -m localstore._cli_docs > docs/cli.md`);
`tests/test_docs.py` fails when this page and `--help` disagree.

Global options go before the command: `--home PATH` keeps everything under one folder (also
`LOCALSTORE_HOME`), `--json` prints machine-readable output on stdout (one JSON document, or one per line
for streams such as `watch`). REF is an id, a unique id prefix (at least 4 characters), or a path
relative to the blueprints folder, as `ls` shows it (`./a/x`, `a/x/` or a full path is no such path:
the error says how to write it).
A command that starts a home's content (`init`, `save`, `import`, `login`, `cred set`, `daemon`)
creates the home if it does not exist; one that only reads (`ls`, `show`, `search`, `history`,
`check`, `export`, `status`, `conflicts`, `watch`, `cred ls`, `cred get`), changes what must already
be there (`rm`, `mv`, `restore`, `cred rm`, `logout`, `daemon --pause`/`--resume`) or needs a login
(`sync`) says `no LocalStore home at PATH` and exits 4, so that a mistyped `--home` is not an empty
home.
Lists (`ls`, `search`, `history`, ...) are tables on a terminal; piped or redirected they are plain
aligned lines with every cell whole (a table folded long paths mid-word), under the same title.
Filters: an empty `--folder` or `--tag` is bad usage (exit 2), not "no filter". One that matches
nothing is an empty answer for `ls` and `search` (exit 0; the title names the filter, a `note:` on
stderr says nothing matched, `--json` prints `[]`), and an error for `export` (exit 4, no file
written: a bundle of nothing is never what a mistyped tag asked for). `--folder` matches a folder
whatever its case (`--folder projects` lists `Projects/`): folder names that differ only by case are
one folder on macOS and Windows, and a save refuses to make the second. `mv` changes a folder's
case with the last blueprint that leaves it (`mv team/flow Team/flow` when nothing else is in
`team/`; on macOS and Windows the folder itself is renamed); a folder holding more is renamed by
moving its blueprints through a folder of another name (`mv team Team` says so: `mv` moves one
blueprint, exit 4). `save` of a path that
differs only by case from a recorded blueprint's (`Team/flow` beside `team/flow`) is refused too
(exit 2; the hint says to use the path as `ls` shows it, or to rename that blueprint first with
the `mv` it gives): a save has no policy to decide whether a case typo meant
that blueprint. `import` takes such a bundle path for the blueprint here (a path conflict its
`--on-conflict` decides, as at the very path; see docs/bundle-format.md): there the user chose the
policy, and a bundle made where case does not matter is not refused for it.
`--tag` matches the tag as written, case and all (`ops` is not `Ops`), by design: tags are labels,
not names on a disk.
A tag `save --tag` sets is a label of 1-128 characters on one line, at most 100 a blueprint; an
empty one, a control character (a newline, a tab) or more is bad usage (exit 2), nothing saved
(leave `--tag` out to keep the tags). Tags from sync, bundles and meta files edited by hand are kept.

Revisions count from 1 (the first save): `show --rev 0`, `restore REF -- -1` or `history --before 0`
is bad usage (exit 2), not "no revision" (exit 4) or an empty history; `show` without `--rev` shows
the latest, and `history` lists them, the latest first. A `--limit` (`ls`, `search`, `history`) is
1 or more: `--limit 0` is bad usage, not an empty answer; leave it out for all of them (20 hits for
`search`). Conflicts are numbered from 1 too: `conflicts show 0` is bad usage, not "no conflict".
A negative number click reads as an option (`search -1`) is told to go after `--`.

| exit code | meaning |
|---|---|
| 0 | ok |
| 1 | error (one line on stderr saying what and how to fix; also a blueprint's YAML or meta that a save refuses (it does not parse, is no mapping, is over a limit): the document is wrong, not the command line; also a home whose index a newer localstore wrote: upgrade. `localstore daemon` has its own codes for the cases a service must not restart: 66, 75, 77, 78, see docs/daemon.md) |
| 2 | usage: the command line, or a value the command was handed, is refused and nothing changed (an unknown option, a search query with nothing to search for or too many words, an unsafe path, a malformed REF or an id prefix that more than one blueprint has, an `-o` in a folder that does not exist, an input file that does not exist or is a folder (`save -f`, `import`, `conflicts resolve --take`), an empty credential value) |
| 3 | needs attention (conflicts, quarantine, check problems; `import` when it left blueprints as they are here (conflicts, files here that do not parse), and `import --dry-run` when it would) |
| 4 | not found (also a home that does not exist, for a command that needs one (above); an `export` filter that matches nothing) |
| 130 | interrupted (Ctrl-C) |

An error's line on stderr reads `error: WHAT (HINT)`; with `--json` it is one JSON object,
`{"error": {"message": ..., "hint": ..., "exit_code": ...}}`, bad usage (exit 2) included (an
error may add keys: `kept`, the file a merge `conflicts resolve --tool` could not take is kept
in). An error nobody expected (a bug) is reported the same way; `--debug` (or
`LOCALSTORE_DEBUG` set to anything but `0`, `false`, `no` or `off`) shows its Python traceback
instead.

Where stdout's encoding is not UTF-8 (Windows' code page when the output is redirected, a Latin-1
locale), `--json` output is ASCII with `\\uXXXX` escapes (the same JSON), and people's text
shows a character that encoding lacks as `\\uXXXX`; `show` and `cred get` write the document's or
the value's UTF-8 bytes, exactly as stored. A standard stream closed at start (`<&-`) is read as
empty.
"""


def _usage(cmd: click.Command, path: str) -> str:
    ctx = click.Context(cmd, info_name=path)
    return " ".join(cmd.collect_usage_pieces(ctx))


def _section(cmd: click.Command, path: str, level: int) -> list[str]:
    out = [f"{'#' * level} `{path}`", ""]
    help_text = (cmd.help or cmd.short_help or "").strip()
    if help_text:
        out += [click.unstyle(help_text).replace("\b\n", ""), ""]
    out += ["```", f"{path} {_usage(cmd, path)}".rstrip(), "```", ""]
    opts = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
    if opts:
        for p in opts:
            names = ", ".join(f"`{n}`" for n in (*p.opts, *p.secondary_opts))
            out.append(f"- {names}: {p.help or ''}".rstrip())
        out.append("")
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out += _section(cmd.commands[name], f"{path} {name}", level + 1)
    return out


def render() -> str:
    """The whole reference page."""
    lines = [INTRO, "## Global options", ""]
    for p in cli.params:
        if isinstance(p, click.Option):
            lines.append(f"- {', '.join(f'`{n}`' for n in p.opts)}: {p.help or ''}")
    lines.append("")
    lines.append("## Commands")
    lines.append("")
    ctx = click.Context(cli, info_name="localstore")
    for name in sorted(_COMMANDS):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        lines += _section(cmd, f"localstore {name}", 3)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
