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
    arriving in one callback must not skip the rest, and still stops the program after them."""
    first: BaseException | None = None
    for callback in callbacks:
        try:
            callback()
        except BaseException as exc:  # noqa: BLE001 - logged, or returned to be raised once all ran
            if logged is not None and isinstance(exc, Exception):
                logged[0].exception(logged[1], callback)
            elif first is None:
                first = exc
    return first
