"""Secrets never reach a log line or an error message, whatever a hostile or broken server says.

A real HTTP server on 127.0.0.1 plays the cloud (tests/security/hostile_server.py): the supabase
client really sends its requests and parses the answers. Its errors quote the request they
refused (headers and body, as a debugging proxy or a broken gateway does), and its session
answers are malformed (pydantic's error text quotes the input it refused). The password, the
anon key, the access and refresh tokens must appear in none of: the raised error, its hint, the
log at DEBUG, the CLI's --json error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli
from localstore.config import Settings, load_settings
from sync import supabase_remote as sr
from sync.errors import SyncError

from .hostile_server import HostileCloud, echo, fake_jwt, session_body

PASSWORD = 'hunter2-Pa$$w0rd-\u00e9"q'  # a quote and non-ASCII: JSON-escaped in an echo
ANON_KEY = "anon-" + fake_jwt("anon")
REFRESH = "v2kq3gk3ovqp"  # GoTrue's refresh tokens are this short: pydantic's excerpt holds it
TOKEN_PATH = ("POST", "/auth/v1/token")


def _secrets(*extra: str) -> list[str]:
    return [PASSWORD, json.dumps(PASSWORD)[1:-1], ANON_KEY, REFRESH, *extra]


def _assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into: {text[:2000]}"


def _error_text(err: BaseException) -> str:
    return f"{err}\n{getattr(err, 'hint', '')}\n{err.args!r}"


def test_a_login_error_that_echoes_the_request_does_not_carry_the_password(
    settings: Settings, cloud: HostileCloud, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.answers[TOKEN_PATH] = echo(400)
    with caplog.at_level(logging.DEBUG), pytest.raises(SyncError) as info:
        sr.login(settings, cloud.url, ANON_KEY, "a@example.com", PASSWORD)
    assert "***" in info.value.message  # the echo is kept (it helps), without the secret
    _assert_clean(_error_text(info.value) + caplog.text, _secrets())


def test_a_malformed_session_answer_does_not_put_its_tokens_in_the_error(
    settings: Settings, cloud: HostileCloud, caplog: pytest.LogCaptureFixture
) -> None:
    access = fake_jwt(cloud.user_id)
    body = session_body(access, REFRESH, cloud.user_id)
    del body["user"]["id"]  # not a valid User: pydantic refuses the answer...
    body["refresh_token"] = body.pop("refresh_token")  # ...and its excerpt ends with this
    cloud.answers[TOKEN_PATH] = (200, body)
    with caplog.at_level(logging.DEBUG), pytest.raises(SyncError) as info:
        sr.login(settings, cloud.url, ANON_KEY, "a@example.com", PASSWORD)
    assert "user.id" in info.value.message or "id" in info.value.message
    _assert_clean(_error_text(info.value) + caplog.text, _secrets(access))


def test_the_cli_json_error_of_a_login_carries_no_password(
    settings: Settings, cloud: HostileCloud
) -> None:
    cloud.answers[TOKEN_PATH] = echo(400)
    args = ["--home", str(settings.paths.data.parent), "--json", "login", "--url", cloud.url]
    args += ["--anon-key", ANON_KEY, "--email", "a@example.com", "--password-stdin"]
    result = CliRunner().invoke(cli, args, input=PASSWORD + "\n", catch_exceptions=False)
    assert result.exit_code != 0
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert '"error"' in out or "error" in out
    _assert_clean(out, _secrets())


def test_refresh_and_rpc_errors_that_echo_the_request_carry_no_token(
    settings: Settings, cloud: HostileCloud, caplog: pytest.LogCaptureFixture
) -> None:
    access = fake_jwt(cloud.user_id)
    cloud.answers[TOKEN_PATH] = (200, session_body(access, REFRESH, cloud.user_id))
    sr.login(settings, cloud.url, ANON_KEY, "a@example.com", PASSWORD)
    # From now on the cloud quotes every request back: the refresh grant's body holds the
    # refresh token, every RPC's headers the anon key and the access token.
    cloud.answers[TOKEN_PATH] = echo(400)
    for rpc in ("server_info", "pull_changes", "localstore_schema_version"):
        cloud.answers[("POST", f"/rest/v1/rpc/{rpc}")] = echo(418)
    remote = sr.remote_from_settings(settings)
    try:
        with caplog.at_level(logging.DEBUG):
            with pytest.raises(SyncError) as refreshed:
                remote.refresh_auth()
            with pytest.raises(SyncError) as pulled:
                remote.pull(0)
    finally:
        remote.close()
    assert "***" in pulled.value.message
    text = _error_text(refreshed.value) + _error_text(pulled.value) + caplog.text
    _assert_clean(text, _secrets(access))


def test_a_wrong_bundle_passphrase_is_not_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from localstore import archive
    from localstore.crypto import ScryptParams
    from localstore.errors import DecryptionError
    from localstore.store import BlueprintStore

    right, wrong = "right-Passphrase-123", "WRONG-Passphrase-456"
    store = BlueprintStore(load_settings(home=tmp_path / "home", environ={}), maintenance=False)
    try:
        store.save("a/x", "v: 1\n")
        bundle = tmp_path / "b.lsbundle"
        fast = ScryptParams(log2_n=10, r=8, p=1)
        archive.export_bundle(store, bundle, passphrase=right, scrypt_params=fast)
        with caplog.at_level(logging.DEBUG), pytest.raises(DecryptionError) as info:
            archive.import_bundle(store, bundle, passphrase=wrong)
    finally:
        store.close()
    _assert_clean(_error_text(info.value) + caplog.text, [right, wrong])
