"""What a hostile or broken server says reaches the index, the terminal and the log made safe.

A rejection message, an error's text, hint and code, a pulled row's path: each is the server's to
choose. Stored in a quarantine record or as the last error, it is printed by every
``localstore status`` (and ``sync --json``) and written to the log, so it must carry no secret of
the request (the access token echoed back), no terminal escape (``\\x1b]0;`` retitles the window,
``\\x1b[2J`` clears it), no newline forging a log line, no bidi override, and not a megabyte.
The supabase client talks to a real HTTP server here (tests/security/hostile_server.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import Settings
from localstore.store import BlueprintStore
from sync import supabase_remote as sr
from sync._shown import escaped, shown
from sync.engine import SyncEngine
from sync.errors import SyncError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import PROTOCOL_VERSION, Change
from tests.sync_engine.conftest import close_device, open_device

from .hostile_server import Answer, HostileCloud, fake_jwt, session_body
from .test_hostile_rows import _meta, _tamper

ANON_KEY = "anon-" + fake_jwt("anon")
REFRESH = "v2kq3gk3ovqp"
# What a terminal must never receive from a server: a window title, a screen clear, a forged
# log line, a right-to-left override that shows "exe.pdf" as "fdp.exe".
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\n2026-01-01 00:00:00 INFO sync: all synced\r\u202efdp.exe"
HIDDEN = ("\x1b", "\x07", "\n", "\r", "\u202e")


def _body(request: str) -> dict[str, object]:
    body = json.loads(request[request.index("\n\n") + 2 :])
    assert isinstance(body, dict)
    return body


def _assert_safe(text: str, secrets: list[str], *, limit: int = 2100) -> None:
    for ch in HIDDEN:
        assert ch not in text, f"{ch!r} reached: {text[:300]!r}"
    for secret in secrets:
        assert secret not in text, f"{secret!r} reached: {text[:300]!r}"
    assert len(text) < limit, f"{len(text)} characters: {text[:300]!r}"


def test_a_rejection_and_an_error_text_from_the_server_are_stored_and_shown_safely(
    settings: Settings, cloud: HostileCloud, caplog: pytest.LogCaptureFixture
) -> None:
    access = fake_jwt(cloud.user_id)
    cloud.answers[("POST", "/auth/v1/token")] = (200, session_body(access, REFRESH, cloud.user_id))
    sr.login(settings, cloud.url, ANON_KEY, "a@example.com", "pw-123456")
    secrets = [access, REFRESH, ANON_KEY]

    def rpc(name: str, answer: Answer | object) -> None:
        cloud.answers[("POST", f"/rest/v1/rpc/{name}")] = answer  # type: ignore[assignment]

    rpc(
        "server_info",
        (200, {"protocol": PROTOCOL_VERSION, "max_batch": 500, "max_content_bytes": 1 << 20}),
    )
    rpc(sr.SCHEMA_VERSION_RPC, (200, 20261122000900))

    def refuse(request: str) -> Answer:
        # Every change rejected, with the request's token quoted in a long, hostile message.
        changes = _body(request)["changes"]
        assert isinstance(changes, list)
        message = f"refused{HOSTILE} for {access} " + "A" * 100_000
        code = "bad\x1b[31m" + "c" * 1000
        results = [
            {"op_id": c["op_id"], "id": c["id"], "status": "rejected", "code": code, "msg": 1}
            | {"message": message}
            for c in changes
        ]
        return 200, results

    rpc("push_changes", refuse)
    # Then the pull fails with an error (a 22023 keeps the server's hint) of the same kind.
    rpc(
        "pull_changes",
        (
            400,
            {
                "code": "22023",
                "message": f"bad{HOSTILE} {access} " + "B" * 100_000,
                "hint": f"do{HOSTILE} " + "C" * 100_000,
                "details": None,
            },
        ),
    )
    store = BlueprintStore(settings, maintenance=False)
    remote = sr.remote_from_settings(settings)
    engine = SyncEngine(store, remote)
    try:
        store.save("notes/x", "a: 1\n")
        with caplog.at_level(logging.DEBUG), pytest.raises(SyncError) as info:
            engine.sync_once()
        [entry] = engine.quarantined()
        status = engine.status()
    finally:
        engine.stop()
        remote.close()
        store.close()
    _assert_safe(info.value.message, secrets)
    _assert_safe(info.value.hint, secrets)
    assert "bad\\x1b]0;pwned\\x07" in info.value.message  # escaped, not dropped
    _assert_safe(entry.message, secrets)
    assert entry.message.startswith("refused\\x1b]0;pwned")
    assert "more characters)" in entry.message
    _assert_safe(entry.code, secrets, limit=100)
    assert status.last_error is not None
    _assert_safe(status.last_error, secrets)
    for record in caplog.records:
        _assert_safe(record.getMessage(), secrets, limit=4000)

    home = str(settings.paths.data.parent)
    runner = CliRunner()
    for args in (["status"], ["--json", "status"]):
        result = runner.invoke(cli, ["--home", home, *args], catch_exceptions=False)
        out = result.output + (result.stderr if result.stderr_bytes is not None else "")
        assert "refused" in out
        assert len(out) < 8000
        for line in out.splitlines():  # (the output's own lines; none of the server's)
            _assert_safe(line, secrets, limit=4000)


def test_a_pulled_row_with_a_hostile_path_is_quarantined_with_the_path_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The quarantine record keeps the server's path (for the person to see), escaped and cut."""
    server = MemoryServer()
    dev = open_device(tmp_path / "devices", "a", server)
    try:
        ident = str(uuid.uuid4())
        change = Change(1, ident, None, "in/ok.blueprint.yaml", "v: 1\n", _meta(ident), "0" * 64)
        assert MemoryRemote(server, user="u").push([change], device="raw")[0].status == "applied"
        _tamper(server, ident, f"in/{HOSTILE}" + "d" * 50_000 + ".blueprint.yaml")
        with caplog.at_level(logging.DEBUG):
            report = dev.sync()
        [entry] = dev.engine.quarantined()
    finally:
        close_device(dev)
    _assert_safe(entry.path, [])
    _assert_safe(entry.message, [])
    assert entry.path.startswith("in/\\x1b]0;pwned")
    for line in [*report.errors, *(r.getMessage() for r in caplog.records)]:
        _assert_safe(line, [], limit=4000)


PERSIAN = "می\u200cخواهم"  # noqa: RUF001 ("I want": its letters are meant)
# Written with format characters (Cf) that are part of the text: the zero-width non-joiner of
# Persian and Hindi, the joiner of emoji sequences and Indic conjuncts, a flag's tag sequence.
LEGIT = (
    PERSIAN,
    "👨\u200d💻 dev setup",  # the technologist emoji
    "👩\u200d❤\ufe0f\u200d👨",  # a couple with a heart (a variation selector inside)
    "क्\u200dष",  # a Devanagari conjunct written with a joiner
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f scotland",
    "東京都の天気 🌧️ café ñ",
)


@pytest.mark.parametrize("text", LEGIT)
def test_text_in_scripts_and_emoji_that_use_joiners_is_shown_as_it_is(text: str) -> None:
    """Escaped, a Persian or Hindi name read "\\u200c" mid-word and an emoji sequence fell
    apart: in a quarantine record's path, which then no longer named the blueprint."""
    assert escaped(text) == text
    assert shown(text) == text


def test_joiners_and_tags_that_join_nothing_visible_are_still_escaped() -> None:
    # Between ASCII letters a joiner only makes a look-alike of another name.
    assert escaped("rep\u200dort") == "rep\\u200dort"
    assert escaped("\u200dlead") == "\\u200dlead"
    assert escaped("東\u200d") == "東\\u200d"
    assert escaped("東\u200d\u202e京") == "東\\u200d\\u202e京"
    # Tag characters outside a flag are invisible text; written with all their digits.
    assert escaped("ok\U000e0041\U000e0042") == "ok\\U000e0041\\U000e0042"
    # Escaping twice changes nothing (quarantined() escapes a stored record again).
    for text in (*LEGIT, "rep\u200dort", HOSTILE):
        assert escaped(escaped(text)) == escaped(text)


def test_a_pulled_path_with_joiners_keeps_them_and_escapes_the_rest(tmp_path: Path) -> None:
    server = MemoryServer()
    dev = open_device(tmp_path / "devices", "a", server)
    try:
        ident = str(uuid.uuid4())
        change = Change(1, ident, None, "in/ok.blueprint.yaml", "v: 1\n", _meta(ident), "0" * 64)
        assert MemoryRemote(server, user="u").push([change], device="raw")[0].status == "applied"
        # Refused here for its escape character (a control character), not for the rest.
        _tamper(server, ident, f"in/👨\u200d💻 {PERSIAN}\x1b.blueprint.yaml")
        dev.sync()
        [entry] = dev.engine.quarantined()
    finally:
        close_device(dev)
    assert entry.path == f"in/👨\u200d💻 {PERSIAN}\\x1b.blueprint.yaml"


def test_a_text_cut_twice_counts_every_character_left_out() -> None:
    # A server's message cut by the remote (2 * MAX_SHOWN) is shown again by a PushResult
    # (MAX_SHOWN): the second count included the first cut's "... (N more characters)" instead
    # of the N characters it stands for.
    text = "x" * 3000
    once = shown(text, 1000)
    assert once == "x" * 1000 + "... (2,000 more characters)"
    assert shown(once, 500) == "x" * 500 + "... (2,500 more characters)"
    assert shown(shown(once, 700), 500) == shown(text, 500)
    # Kept as it is when the first cut fits the new limit (no cut inside the count).
    assert shown(once, 1000) == once
    assert shown(once, 1010) == once
