"""``localstore watch``: run the watcher in the foreground and print each change as it happens.

Events are handed from the watcher's worker thread to the main thread through a SimpleQueue (its
put() is safe in a signal handler), so printing never blocks ingesting, and Ctrl-C / SIGTERM stop
the watcher cleanly instead of killing it mid-transaction.
"""

from __future__ import annotations

import queue
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from localstore.cli import CliContext, errors_to_exit, pass_ctx
from localstore.events import Event

_STOP = object()


def human_line(event: Event) -> str:
    """One line for people: time, kind, path, and what else matters."""
    line = f"{event.ts}  {event.kind:<8}  {event.path}"
    if event.old_path:
        line += f"  (from {event.old_path})"
    if event.detail:
        line += f"  : {event.detail}"
    return line + f"  [{event.id[:8]} rev {event.rev}]"


@contextmanager
def _stop_on_signals(q: queue.SimpleQueue[Any]) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        q.put(_STOP)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@click.command("watch")
@pass_ctx
def watch_cmd(ctx: CliContext) -> None:
    """Watch the blueprints folder and print every change until Ctrl-C or SIGTERM.

    With --json each change is one JSON object per line.
    """
    from localstore.watcher import Watcher

    with errors_to_exit():
        # The watcher's start-up rescan records (and prints) what changed while nothing ran.
        # existing=True: a mistyped --home was made into a new home, watched for ever.
        # writes=: on a read-only home (a snapshot, a read-only disk) it says so, and what to
        # do; the usual open's "cannot write the index" named neither.
        store = ctx.store(existing=True, reconcile=False, writes="watch the blueprints folder")
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        watcher = Watcher(store)
        unsubscribe = store.subscribe(q.put)
        with _stop_on_signals(q):
            watcher.start()
            try:
                watcher.wait_idle(60)
                click.echo(f"watching {store.root} (Ctrl-C to stop)", err=True)
                if watcher.problem:  # e.g. the inotify limits: rescans only, and the fix
                    click.echo(f"warning: {watcher.problem}", err=True)
                if watcher.notice:  # e.g. a network file system: rescans on a timer too
                    click.echo(f"note: {watcher.notice}", err=True)
                _print_until_stopped(ctx, q)
            finally:
                unsubscribe()
                watcher.stop()
                watcher.join(30)


def _print_until_stopped(ctx: CliContext, q: queue.SimpleQueue[Any]) -> None:
    while True:
        try:
            # A timeout keeps the main thread responsive to signals on every platform.
            item = q.get(timeout=1.0)
        except queue.Empty:
            continue
        if item is _STOP:
            return
        if isinstance(item, Event):
            ctx.emit_line(item.to_dict(), human_line(item))
            sys.stdout.flush()
