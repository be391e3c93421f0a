"""JSON values Python's json module cannot hold, kept as the text Postgres wrote and sent as is.

A jsonb value may hold an integer of more than 4,300 digits (``int()``'s limit), a decimal past a
double's range (it would read as infinity and be written back as ``Infinity``, which is no JSON)
or nesting past the recursion limit: Postgres takes them all, and Realtime (Elixir, with big
integers and no depth limit) sends them on as they are. The gateway parsed them with
``json.loads``, and the ValueError or RecursionError ended its change feed for every subscriber.
Such a value is now a :class:`RawJSON` and :func:`dumps` splices its text into the frame.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

__all__ = ["RawJSON", "dumps", "loads"]


class RawJSON:
    """Valid JSON text (from Postgres) to be sent verbatim."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"RawJSON({self.text[:40]!r}...)"


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"a number out of a double's range: {text[:40]}")
    return value


def loads(text: str) -> Any:
    """``json.loads(text)``, or a RawJSON of ``text`` where Python cannot hold the value."""
    try:
        return json.loads(text, parse_float=_finite)
    except (ValueError, RecursionError):
        return RawJSON(text)


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, default=str)`` with each RawJSON's text spliced in as it is."""
    raws: list[str] = []
    # A marker no encoded data can hold: a NUL (Postgres text and jsonb cannot hold one) and a
    # fresh random tag (a client's broadcast could hold a NUL).
    tag = "\x00" + secrets.token_hex(8) + ":"

    def default(obj: Any) -> Any:
        if isinstance(obj, RawJSON):
            raws.append(obj.text)
            return f"{tag}{len(raws) - 1}"
        return str(obj)

    text = json.dumps(value, default=default, **kwargs)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"{tag}{i}"), raw, 1)
    return text
