"""push_changes refuses a meta that clients cannot hold (migration 20261122001800).

jsonb holds integers of any length, decimals past a double's range and any nesting; the client
reads integers of at most 4,300 digits, decimals as doubles (past the range: infinity) and at most
64 levels (sync.remote's limits). Such a meta was stored and answered ``applied``, and every other
device then parked the row as ``invalid_remote``. It is now that change's ``invalid_meta``, with
the texts of ``sync.remote.invalid_meta``; a meta at the limits still goes up, and the client's
own decoder reads it back.

Metas are spelled as JSON text here: Python's json can write neither 5,001 digits nor 9...9.5.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from sync.remote import MAX_META_DEPTH, MAX_META_INT_DIGITS, PullPage, invalid_meta
from sync.supabase_remote import decode_answer

from .helpers import Api, Db, change

pytestmark = pytest.mark.cloud

# The largest double is 2^1024 - 2^971; from half a unit above it on, a decimal reads as infinity.
ROUNDS_TO_INFINITY = 2**1024 - 2**970


def nested(levels: int, bottom: str = "[]") -> str:
    """A meta ``levels`` deep as JSON text (the meta object is level 1); ``bottom`` is the value
    at the deepest level."""
    return '{"n":' + "[" * (levels - 2) + bottom + "]" * (levels - 2) + "}"


def push_text(api: Api, metas: list[str]) -> list[dict[str, object]]:
    """push_changes with one create per meta, each meta spelled as given."""
    changes = [
        json.dumps(change(i + 1, meta={"m": "META"})).replace('{"m": "META"}', meta)
        for i, meta in enumerate(metas)
    ]
    body = "[" + ",".join(changes) + "]"
    result: list[dict[str, object]] = api.scalar(
        "select public.push_changes(changes := %s::jsonb, device := 'dev-a')", (body,)
    )
    return result


def pulled(api: Api) -> PullPage:
    """The next pull page as the client decodes and checks it."""
    raw = api.scalar("select public.pull_changes(since := 0)::text")
    return PullPage.from_json(decode_answer(raw.encode()))


# What the client says of each (the server's texts are its copy).
DEEP = invalid_meta(json.loads(nested(MAX_META_DEPTH + 1)))
INFINITE = invalid_meta({"n": math.inf})
LONG = invalid_meta({"n": 10**MAX_META_INT_DIGITS})

REFUSED = {
    "65 levels": (nested(MAX_META_DEPTH + 1), DEEP),
    "70 levels": (nested(70), DEEP),
    "2,000 levels": (nested(2000), DEEP),
    "10,000 levels": (nested(10_000), DEEP),
    "an object too deep": (nested(MAX_META_DEPTH, '{"k": {}}'), DEEP),
    "4,301 digits": ('{"n": -1' + "0" * MAX_META_INT_DIGITS + "}", LONG),
    "5,001 digits": ('{"n": ' + "1" * 5001 + "}", LONG),
    "deep in a list": ('{"a": [1, {"b": [' + "9" * 5001 + "]}]}", LONG),
    "9...9.5": ('{"n": ' + "9" * 400 + ".5}", INFINITE),
    "-9...9.5 deep": (nested(MAX_META_DEPTH, "-" + "9" * 400 + ".5"), INFINITE),
    "half a unit past the largest double": (f'{{"n": {ROUNDS_TO_INFINITY}.0}}', INFINITE),
}

HELD = {
    "64 levels": nested(MAX_META_DEPTH),
    "4,300 digits": '{"n": [' + "9" * MAX_META_INT_DIGITS + ", -" + "9" * 4300 + "]}",
    "the largest double": '{"n": [1.7976931348623157e308, -1.7976931348623157e308]}',
    "just below infinity": f'{{"n": {ROUNDS_TO_INFINITY - 1}.9}}',
    "1e400 (an integer)": '{"n": 1e400}',
    "1e-400": '{"n": 1e-400}',
    "400 digits in a string": '{"n": "' + "9" * 400 + '"}',
    "a string spelling a number": '{"n": "x, ' + "9" * 400 + '"}',
}


def test_the_client_limits_are_pythons_own() -> None:
    # MAX_META_INT_DIGITS is what json.loads reads unless an application changed it.
    assert sys.int_info.default_max_str_digits == MAX_META_INT_DIGITS
    assert None not in (DEEP, INFINITE, LONG)


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_meta_clients_cannot_hold_is_refused_alone(db: Db, kind: str) -> None:
    meta, message = REFUSED[kind]
    api = db.api(db.new_user())
    bad, good = push_text(api, [meta, '{"name": "fine"}'])
    assert (bad["status"], bad.get("code"), bad.get("message")) == (
        "rejected",
        "invalid_meta",
        message,
    )
    assert good["status"] == "applied"
    # Nothing of it is stored: another device pulls the good change alone, and reads it.
    page = pulled(api)
    assert [(r.id, r.unreadable) for r in page.changes] == [(good["id"], None)]


def test_every_meta_at_the_limits_is_applied_and_read_back(db: Db) -> None:
    api = db.api(db.new_user())
    results = push_text(api, list(HELD.values()))
    assert [(r["status"], r.get("message")) for r in results] == [("applied", None)] * len(HELD)
    page = pulled(api)
    assert [r.unreadable for r in page.changes] == [None] * len(HELD)
    assert page.changes[0].meta == json.loads(HELD["64 levels"])


def test_the_check_follows_the_other_per_change_checks_and_replays(db: Db) -> None:
    # Checks run in the documented order: a bad path, an oversized meta (never walked) or a bad
    # id is reported as such; the rejection is stored like any other and a resent change gets it.
    api = db.api(db.new_user())
    deep = json.loads(nested(70))
    changes = [
        change(1, path="../x.yaml", meta=deep),
        change(2, meta={"n": "x" * (8 * 2**20), "d": deep}),
        change(3, id="not-a-uuid", meta=deep),
        change(4, meta=deep),
    ]
    first = api.push(changes)
    assert [r["code"] for r in first] == ["invalid_path", "too_large", "invalid_id", "invalid_meta"]
    assert api.push(changes[3:]) == first[3:]
    assert pulled(api).changes == []
