"""Calling every callback of a change that has happened, whatever one of them raises."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable


def call_each(
    callbacks: Iterable[Callable[[], None]],
    *,
    logged: tuple[logging.Logger, str] | None,
) -> BaseException | None:
    """Call every callback, whatever one raises; return the first exception for the caller to
    raise once all ran. With ``logged`` (a logger, a message with one %r for the callback), an
    Exception is logged instead (only a BaseException, KeyboardInterrupt and the like, is
    returned).

    For what must follow a committed change (its events, its kept files' removal): a Ctrl-C
    arriving in one callback must not skip the rest, and still stops the program after them.
    Nor one arriving between two callbacks: Python raises a signal's exception at the loop's next
    step (its back-edge), or in the except clause while a failure is logged, both outside the
    try around the call; so the whole loop is inside a second try, and resumes with the next
    callback. What it cannot keep: an interrupt inside a generator ``callbacks`` ends the
    generator (the rest of it is never made), and a second Ctrl-C landing as the loop resumes
    goes on at once (as a second Ctrl-C is meant to)."""
    first: BaseException | None = None
    pending = iter(callbacks)
    while True:
        try:
            for callback in pending:
                try:
                    callback()
                except BaseException as exc:  # noqa: BLE001 - logged, or returned once all ran
                    if logged is not None and isinstance(exc, Exception):
                        logged[0].exception(logged[1], callback)
                    elif first is None:
                        first = exc
            return first
        except BaseException as exc:  # noqa: BLE001 - an interrupt between two callbacks: kept
            if first is None:
                first = exc
