"""The wire shapes parse strictly, and every sync error is classified and documented."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from postgrest.exceptions import APIError

import sync.errors as errors_module
from sync.engine import SPLIT_CODES
from sync.errors import ACTIONS, ProtocolError, SyncError, TransientError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import (
    Change,
    FetchPage,
    PullPage,
    PushResult,
    ServerInfo,
    ServerRow,
    VerifyPage,
)
from sync.supabase_remote import map_error

ROW = {
    "id": "6f1c1f0e-8a57-4c1e-9d7e-3f1d2a9b0c11",
    "path": "a.yaml",
    "content": "a: 1\n",
    "meta": {"name": "A"},
    "content_hash": "00" * 32,
    "rev": 2,
    "seq": 9,
    "deleted": False,
    "device": "d",
    "updated_at": "2025-01-01T00:00:00+00:00",
}

SYNC_ERRORS = [
    cls
    for _, cls in inspect.getmembers(errors_module, inspect.isclass)
    if issubclass(cls, SyncError)
]


@pytest.mark.parametrize("cls", SYNC_ERRORS, ids=lambda c: c.__name__)
def test_every_error_is_classified_documented_and_drawn(cls: type[SyncError]) -> None:
    assert cls.action in ACTIONS
    assert cls.__doc__ and "\n" not in cls.__doc__.strip()
    assert cls.__name__ in (errors_module.__doc__ or "")
    err = cls("boom")
    assert err.message == "boom" and str(err).startswith("boom")
    assert err.action == cls.action


@pytest.mark.parametrize(
    "name,action",
    [
        ("TransientError", "retry"),
        ("OfflineError", "retry"),
        ("RateLimitedError", "retry"),
        ("AuthExpiredError", "refresh_auth"),
        ("AuthRevokedError", "tell_user"),
        ("NotLoggedInError", "tell_user"),
        ("RejectedChangeError", "quarantine"),
        ("ProtocolError", "tell_user"),
        ("RemoteConfigError", "tell_user"),
        ("MergeError", "tell_user"),
    ],
)
def test_actions(name: str, action: str) -> None:
    assert getattr(errors_module, name).action == action


def test_hint_and_code_are_kept() -> None:
    err = errors_module.RejectedChangeError(
        "path is absolute", code="invalid_path", op_id=4, id="x", hint="rename it"
    )
    assert (err.code, err.op_id, err.id, err.hint) == ("invalid_path", 4, "x", "rename it")
    assert str(err) == "path is absolute (rename it)"
    assert errors_module.RateLimitedError("slow", retry_after=2.5).retry_after == 2.5


def test_row_round_trips_through_json() -> None:
    row = ServerRow.from_json(json.loads(json.dumps(ROW)))
    assert row.to_json() == ROW


@pytest.mark.parametrize(
    "result",
    [
        {"op_id": 1, "id": ROW["id"], "status": "applied", "rev": 1, "seq": 5},
        {"op_id": 2, "id": ROW["id"], "status": "conflict", "reason": "missing", "current": None},
        {"op_id": 3, "id": ROW["id"], "status": "conflict", "reason": "exists", "current": ROW},
        {"op_id": 4, "id": "x", "status": "rejected", "code": "invalid_id", "message": "bad id"},
    ],
)
def test_push_results_round_trip(result: dict) -> None:
    assert PushResult.from_json(result).to_json() == result


@pytest.mark.parametrize(
    "broken",
    [
        {**ROW, "rev": True},
        {**ROW, "rev": "2"},
        {k: v for k, v in ROW.items() if k != "seq"},
        {k: v for k, v in ROW.items() if k != "meta"},
        [ROW],
    ],
    ids=["bool-rev", "str-rev", "missing-seq", "missing-meta", "not-object"],
)
def test_malformed_rows_raise_protocol_error(broken: object) -> None:
    with pytest.raises(ProtocolError):
        ServerRow.from_json(broken)


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ([], "its meta is an array, not a JSON object"),
        ("x", "its meta is a str, not a JSON object"),
        ({"n": float("inf")}, "out of a double's range"),
        ({"n": 10**5000}, "an integer of more than 4300 digits"),
        ({"n": {"m": ["\ud800"]}}, "lone UTF-16 surrogate"),
        ({"n\x00": 1}, "a key of its meta holds a NUL"),
        ({"n": [[[[]]]]}, None),
        ({"n": 10**4299, "f": 1e308}, None),
    ],
    ids=["list", "str", "inf", "huge-int", "surrogate", "nul-key", "nested-ok", "big-ok"],
)
def test_a_meta_the_client_cannot_hold_is_the_rows_problem(
    meta: object, reason: str | None
) -> None:
    # A malformed meta is one row's, not the answer's: the row comes marked and with an empty
    # meta (the engine parks a live one), instead of failing the page and every pull after it.
    row = ServerRow.from_json({**ROW, "meta": meta})
    if reason is None:
        assert (row.unreadable, row.meta) == (None, meta)
    else:
        assert row.unreadable is not None and reason in row.unreadable
        assert row.meta == {}


@pytest.mark.parametrize(
    "broken",
    [
        {"op_id": 1, "id": "x", "status": "maybe"},
        {"op_id": 1, "id": "x", "status": "conflict", "reason": "because", "current": None},
        {"op_id": 1, "id": "x", "status": "applied", "rev": 1},
    ],
)
def test_malformed_results_raise_protocol_error(broken: dict) -> None:
    with pytest.raises(ProtocolError):
        PushResult.from_json(broken)


def test_pull_page_parses_and_refuses_descending_seqs() -> None:
    later = {**ROW, "seq": 10, "id": "7f1c1f0e-8a57-4c1e-9d7e-3f1d2a9b0c11"}
    page = {
        "changes": [ROW, later],
        "next": 10,
        "more": False,
        "horizon": 0,
        "reset_required": False,
    }
    assert [r.seq for r in PullPage.from_json(page).changes] == [9, 10]
    with pytest.raises(ProtocolError):
        PullPage.from_json({**page, "changes": [later, ROW]})
    with pytest.raises(ProtocolError):
        PullPage.from_json({**page, "changes": None})


def test_verify_page_and_server_info_parse() -> None:
    page = VerifyPage.from_json(
        {
            "rows": [{"id": "a", "rev": 1, "content_hash": "h", "deleted": True, "seq": 3}],
            "next": "a",
            "more": False,
        }
    )
    assert page.rows[0].deleted and page.next == "a"
    assert VerifyPage.from_json({"rows": [], "next": None, "more": False}).next is None
    info = ServerInfo.from_json(
        {"protocol": 1, "max_batch": 500, "max_content_bytes": 10, "region": "local"}
    )
    assert info.extra == {"region": "local"}
    with pytest.raises(ProtocolError):
        ServerInfo.from_json({"protocol": 1})


# -- the two remotes raise the same errors for the server's whole-call refusals ----------------


def _memory_push_error(setup: Callable[[MemoryRemote], str]) -> SyncError:
    remote = MemoryRemote(MemoryServer())
    change = Change(1, str(uuid.uuid4()), None, "a.yaml", "x" * 2000, {}, "h")
    device = setup(remote)
    with pytest.raises(SyncError) as info:
        remote.push([change], device=device)
    return info.value


@pytest.mark.parametrize(
    "api_error,setup",
    [
        # The server's words for each (PostgreSQL's messages; the gateway's 413 comes as
        # postgrest's fallback for a body that is not JSON).
        (
            {"code": "57014", "message": "canceling statement due to statement timeout"},
            lambda r: r.refuse_push_above(1000, code="57014") or "dev",
        ),
        (
            {
                "code": "54000",
                "message": "total size of jsonb array elements exceeds the maximum of "
                "268435455 bytes",
            },
            lambda r: r.refuse_push_above(1000, code="54000") or "dev",
        ),
        (
            # As the local stack's PostgreSQL answered a push_changes whose argument was nested
            # 30,000 deep (tests/sync_supabase/test_errors.py provokes it through the client).
            {
                "code": "54001",
                "message": "stack depth limit exceeded",
                "hint": 'Increase the configuration parameter "max_stack_depth" (currently '
                "2048kB), after ensuring the platform's stack depth limit is adequate.",
                "details": None,
            },
            lambda r: r.refuse_push_above(1000, code="54001") or "dev",
        ),
        (
            {
                "code": "413",
                "message": "Request Entity Too Large",
                "hint": None,
                "details": "Maximum request body size 67108864 exceeded.",
            },
            lambda r: r.refuse_push_above(1000, code="413") or "dev",
        ),
        (
            {
                "code": "22023",
                "message": "device must be a non-empty string of at most 128 characters",
            },
            lambda r: "d" * 129,
        ),
    ],
)
def test_memory_remote_fails_a_push_as_supabase_remote_maps_the_server(
    api_error: dict[str, Any], setup: Callable[[MemoryRemote], str]
) -> None:
    supabase = map_error(APIError(api_error), what="push_changes")
    memory = _memory_push_error(setup)
    assert (type(memory), memory.code, memory.action) == (
        type(supabase),
        supabase.code,
        supabase.action,
    )
    assert str(memory) == str(supabase)  # message and hint
    if isinstance(supabase, TransientError):
        # The engine splits such a push instead of sending it again as it was.
        assert supabase.code in SPLIT_CODES


@pytest.mark.parametrize("code", ["54000", "54001", "54011", "54023", "57014", "413"])
@pytest.mark.parametrize(
    ("rpc", "says"),
    [
        ("push_changes", "pushes smaller batches"),
        ("fetch_rows", "asks for fewer rows"),
        ("fetch_rows_page", "asks for fewer rows"),
        ("pull_changes", "tries again later"),
    ],
)
def test_a_call_too_large_or_too_slow_is_hinted_for_what_sync_does_with_that_call(
    code: str, rpc: str, says: str
) -> None:
    """Every such error said "sync pushes smaller batches by itself", also for a pull or a fetch,
    where nothing is pushed: the user was told of a remedy that was not the one under way."""
    mapped = map_error(APIError({"code": code, "message": "too big"}), what=rpc)
    assert isinstance(mapped, TransientError)
    assert says in mapped.hint and "nothing is lost" in mapped.hint


def _fetched_row(rid: str) -> dict[str, Any]:
    """One row as fetch_rows_page sends it, written by a MemoryServer."""
    remote = MemoryRemote(MemoryServer())
    change = Change(1, rid, None, f"{rid}.yaml", "a: 1\n", {}, "h", False)
    assert remote.push([change], device="d")[0].status == "applied"
    return remote.fetch([rid])[0].to_json()


@pytest.mark.parametrize(
    ("rows", "rest", "says"),
    [
        ([], ["b"], "rest without any row"),
        (["a"], ["a"], "both a row and in rest"),
        (["a"], ["z"], "not asked for"),
        (["z"], [], "a row was not asked for"),
        (["b", "a"], [], "ascending id order"),
    ],
)
def test_a_fetch_answer_the_client_could_loop_on_is_refused(
    rows: list[str], rest: list[str], says: str
) -> None:
    """A server that answered a rest with no row, or the same ids again, would have the client
    ask for ever; one that sends what was not asked for is broken."""
    ids = {k: str(uuid.UUID(int=n + 1, version=4)) for n, k in enumerate("abz")}
    asked = [ids["a"], ids["b"]]
    reply = {"rows": [_fetched_row(ids[k]) for k in rows], "rest": [ids[k] for k in rest]}
    with pytest.raises(ProtocolError, match=says):
        FetchPage.from_json(reply, asked)
    ok = FetchPage.from_json({"rows": [_fetched_row(ids["a"])], "rest": [ids["b"]]}, asked)
    assert ([r.id for r in ok.rows], ok.rest) == ([ids["a"]], [ids["b"]])
