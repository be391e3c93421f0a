"""Every exception the supabase client can raise maps to a classified, non-destructive SyncError."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pydantic
import pytest
from postgrest.exceptions import APIError
from supabase_auth import errors as auth_errors

from localstore.errors import CredentialError
from sync.engine import SPLIT_CODES
from sync.errors import (
    ACTIONS,
    AuthError,
    AuthExpiredError,
    AuthRevokedError,
    NotLoggedInError,
    OfflineError,
    ProtocolError,
    RateLimitedError,
    RemoteConfigError,
    SyncError,
    TransientError,
)
from sync.localcloud.stack import LocalCloud
from sync.supabase_remote import (
    MAPPED_EXCEPTIONS,
    MAX_RETRY_AFTER_S,
    ServerClock,
    SupabaseRemote,
    map_error,
    retry_after_of,
    retry_after_seconds,
)

from .conftest import Homes, new_email

_REQUEST = httpx.Request("POST", "http://127.0.0.1:1/rest/v1/rpc/push_changes")


def _httpx_instance(cls: type[Exception]) -> Exception:
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("500", request=_REQUEST, response=httpx.Response(500, request=_REQUEST))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=_REQUEST)
    if issubclass(cls, httpx.StreamError | httpx.RequestNotRead | httpx.ResponseNotRead):
        try:
            return cls()  # type: ignore[call-arg]
        except TypeError:
            return cls("boom")
    return cls("boom")


def _auth_instance(cls: type[auth_errors.AuthError]) -> auth_errors.AuthError:
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    values: dict[str, Any] = {
        "message": "boom",
        "status": 400,
        "code": None,
        "name": "X",
        "original_error": ValueError("x"),
        "reasons": [],
        "details": None,
    }
    return cls(*[values[p] for p in params])


def _all_httpx() -> list[type[Exception]]:
    return [o for o in vars(httpx).values() if inspect.isclass(o) and issubclass(o, Exception)]


def _all_auth() -> list[type[auth_errors.AuthError]]:
    return [
        o
        for o in vars(auth_errors).values()
        if inspect.isclass(o) and issubclass(o, auth_errors.AuthError)
    ]


def _validation_error() -> pydantic.ValidationError:
    class M(pydantic.BaseModel):
        x: int

    try:
        M.model_validate({"x": "no"})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


def _instances() -> list[BaseException]:
    out: list[BaseException] = [_httpx_instance(c) for c in _all_httpx()]
    out += [_auth_instance(c) for c in _all_auth()]
    out += [
        APIError({"code": "XX999", "message": "m"}),
        APIError({}),
        _validation_error(),
        ValueError("Expecting value: line 1 column 1"),
        ConnectionResetError(104, "reset"),
        CredentialError("keychain locked"),
    ]
    return out


@pytest.mark.parametrize("exc", _instances(), ids=lambda e: type(e).__name__)
def test_every_client_exception_maps_to_a_safe_sync_error(exc: BaseException) -> None:
    assert isinstance(exc, MAPPED_EXCEPTIONS), f"{type(exc).__name__} is not in MAPPED_EXCEPTIONS"
    mapped = map_error(exc, what="push_changes")
    assert isinstance(mapped, SyncError)
    assert mapped.action in ACTIONS
    # Whole-call failures are never "quarantine": that is for per-change rejections only.
    assert mapped.action != "quarantine"
    assert mapped.message.startswith("push_changes")


def test_every_mapped_class_is_exercised() -> None:
    instances = _instances()
    for cls in MAPPED_EXCEPTIONS:
        assert any(isinstance(e, cls) for e in instances), cls


@pytest.mark.parametrize(
    ("body", "expected", "action"),
    [
        ({"code": "PGRST301", "message": "JWT invalid"}, AuthExpiredError, "refresh_auth"),
        ({"code": "PGRST303", "message": "JWT expired"}, AuthExpiredError, "refresh_auth"),
        ({"code": "401", "message": "Unauthorized"}, AuthExpiredError, "refresh_auth"),
        (
            {"code": "42501", "message": "permission denied for table"},
            RemoteConfigError,
            "tell_user",
        ),
        ({"code": "42501", "message": "not signed in"}, NotLoggedInError, "tell_user"),
        ({"code": "40001", "message": "could not serialize access"}, TransientError, "retry"),
        ({"code": "40P01", "message": "deadlock detected"}, TransientError, "retry"),
        (
            {"code": "57014", "message": "canceling statement due to statement timeout"},
            TransientError,
            "retry",
        ),
        ({"code": "08006", "message": "connection failure"}, TransientError, "retry"),
        ({"code": "53300", "message": "too many connections"}, TransientError, "retry"),
        ({"code": "503", "message": "Service Unavailable"}, TransientError, "retry"),
        ({"code": "429", "message": "Too Many Requests"}, RateLimitedError, "retry"),
        ({"code": "PGRST202", "message": "function not found"}, RemoteConfigError, "tell_user"),
        ({"code": "22023", "message": "too many changes"}, ProtocolError, "tell_user"),
        ({"message": "Invalid authentication credentials"}, RemoteConfigError, "tell_user"),
        ({"code": "23505", "message": "duplicate key"}, TransientError, "retry"),
        ({"code": "P0001", "message": "raised"}, TransientError, "retry"),
    ],
)
def test_postgrest_codes(body: dict[str, str], expected: type[SyncError], action: str) -> None:
    mapped = map_error(APIError(body), what="rpc")
    assert type(mapped) is expected
    assert mapped.action == action


@pytest.mark.parametrize(
    ("code", "status", "expected", "action"),
    [
        ("refresh_token_already_used", 400, AuthRevokedError, "tell_user"),
        ("refresh_token_not_found", 400, AuthRevokedError, "tell_user"),
        ("session_not_found", 403, AuthRevokedError, "tell_user"),
        ("user_not_found", 403, AuthRevokedError, "tell_user"),
        ("invalid_credentials", 400, AuthError, "tell_user"),
        ("over_request_rate_limit", 429, RateLimitedError, "retry"),
        ("bad_jwt", 403, AuthExpiredError, "refresh_auth"),
        (None, 500, TransientError, "retry"),
        (None, 418, TransientError, "retry"),
    ],
)
def test_auth_codes(code: str | None, status: int, expected: type[SyncError], action: str) -> None:
    mapped = map_error(auth_errors.AuthApiError("m", status, code), what="refresh")  # type: ignore[arg-type]
    assert type(mapped) is expected
    assert mapped.action == action
    if expected is AuthRevokedError:
        assert "log in again" in str(mapped)


def test_transport_errors() -> None:
    assert type(map_error(httpx.ConnectError("refused", request=_REQUEST), what="x")) is (
        OfflineError
    )
    for cls in (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError):
        mapped = map_error(cls("boom", request=_REQUEST), what="x")
        assert type(mapped) is TransientError and mapped.action == "retry"
    assert map_error(auth_errors.AuthRetryableError("down", 503), what="x").action == "retry"
    assert type(map_error(auth_errors.AuthSessionMissingError(), what="x")) is NotLoggedInError


def test_sync_errors_pass_through() -> None:
    err = ProtocolError("bad")
    assert map_error(err, what="x") is err


def _sign_in_error(url: str, password: str = "pw") -> Exception:
    """The exception the real supabase client raises for this sign-in (nothing listens at :9)."""
    from supabase import create_client

    try:
        client = create_client(url, "k")
        client.auth.sign_in_with_password({"email": "a@b.c", "password": password})
    except Exception as exc:
        return exc
    raise AssertionError("the sign-in succeeded")


@pytest.mark.parametrize(
    "url,password,cls,message,hint",
    [
        ("notaurl", "pw", RemoteConfigError, "'notaurl' is not a project URL", "project URL"),
        ("http://127.0.0.1:9", "pw", OfflineError, "cannot reach http://127.0.0.1:9", "log in"),
        ("http://127.0.0.1:9", "p\udcffw", AuthError, "not valid UTF-8", "UTF-8"),
    ],
)
def test_login_errors_have_login_hints_and_log_nothing(
    caplog: pytest.LogCaptureFixture, url: str, password: str, cls: type, message: str, hint: str
) -> None:
    """Login runs once: no "will retry" log line, no sync retry hint, a bad URL is no network
    problem."""
    from sync.supabase_remote import map_login_error

    exc = _sign_in_error(url, password)
    with caplog.at_level("DEBUG"):
        err = map_login_error(exc, url)
    assert type(err) is cls and message in err.message and hint in err.hint, (err, err.hint)
    assert "retries by itself" not in err.hint and "sync" not in err.hint
    assert not caplog.records  # no "will retry" line besides the one error


class _GatewayRefuses(httpx.BaseTransport):
    """Fault injection: the API gateway in front of PostgREST answers the next ``times`` RPCs
    itself (the local stack has no such gateway); everything else reaches the real server."""

    def __init__(
        self, inner: httpx.BaseTransport, response: httpx.Response, *, times: int = 1
    ) -> None:
        self.inner = inner
        self.response = response
        self.times = times
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.times > 0 and "/rest/v1/rpc/" in request.url.path:
            self.times -= 1
            self.refused += 1
            request.read()
            r = self.response
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _refuse_next_rpc(remote: SupabaseRemote, response: httpx.Response) -> _GatewayRefuses:
    fault = _GatewayRefuses(remote._http._transport, response)
    remote._http._transport = fault
    return fault


@pytest.mark.parametrize(
    ("status", "headers", "body", "retry_after"),
    [
        # Kong's rate-limiting plugin: JSON without a "code", the wait in Retry-After.
        (429, {"Retry-After": "7"}, b'{"message":"API rate limit exceeded"}', 7.0),
        (429, {}, b'{"message":"API rate limit exceeded"}', None),
        # A project under maintenance: an HTML page and a date to come back at.
        (503, {"Retry-After": "@in-40s"}, b"<html>maintenance</html>", 40.0),
        (429, {"Retry-After": "864000"}, b"slow down", 3600.0),  # capped at an hour
    ],
)
def test_a_gateway_asking_to_wait_gives_rate_limited_with_its_retry_after(
    cloud: LocalCloud,
    homes: Homes,
    status: int,
    headers: dict[str, str],
    body: bytes,
    retry_after: float | None,
) -> None:
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email())
    if headers.get("Retry-After") == "@in-40s":
        headers = {"Retry-After": formatdate(time.time() + 40.5, usegmt=True)}
    fault = _refuse_next_rpc(remote, httpx.Response(status, headers=headers, content=body))
    with pytest.raises(RateLimitedError) as info:
        remote.pull(0)
    assert fault.refused == 1
    assert info.value.action == "retry"
    if retry_after is None:
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after == pytest.approx(retry_after, abs=1.5)
    assert remote.pull(0).changes == []  # the next call goes through


@pytest.mark.parametrize(
    "body",
    [
        # Hosted Supabase's API gateway for a key it does not know (supabase/supabase-csharp#108,
        # nuxt-modules/supabase#195), and for a legacy anon key after the project disabled the
        # legacy keys (dyad-sh/dyad#4173): a 401, JSON without a "code".
        b'{"message":"Invalid API key","hint":"Double check your Supabase `anon` or'
        b' `service_role` API key."}',
        b'{"message":"Legacy API keys are disabled"}',
    ],
)
def test_the_hosted_gateway_refusing_the_key_says_so(
    cloud: LocalCloud, homes: Homes, body: bytes
) -> None:
    # It was an unclassified error: "unexpected APIError", retried every cycle for good, with no
    # word about the key. PostgREST's own 401s (an expired or bad JWT) all carry a PGRST code;
    # one without a code is the gateway refusing the project key, which no retry fixes.
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email())
    fault = _refuse_next_rpc(
        remote,
        httpx.Response(401, headers={"Content-Type": "application/json"}, content=body),
    )
    with pytest.raises(RemoteConfigError) as info:
        remote.pull(0)
    assert fault.refused == 1
    assert info.value.action == "tell_user"
    assert "anon key" in info.value.hint
    assert remote.pull(0).changes == []  # a fixed key (here: the next call) goes through


def test_retry_after_values() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "-5", "1.5e3", "nan"):
        assert retry_after_seconds(bad) is None, bad


def test_a_retry_after_date_is_read_on_the_servers_clock() -> None:
    # The laptop's clock is a day behind (or ahead): "retry at the server's 12:00:30" is 30 s.
    server = time.time() + 86_400
    headers = {"Date": formatdate(server, usegmt=True)}
    headers["Retry-After"] = formatdate(server + 30, usegmt=True)
    assert retry_after_of(headers) == 30.0
    headers["Date"] = formatdate(server - 2 * 86_400, usegmt=True)  # the client a day ahead
    assert retry_after_of(headers) == MAX_RETRY_AFTER_S
    assert retry_after_of({"Retry-After": "7"}) == 7.0  # delta-seconds need no clock
    for date in ("garbage", "Mon, 23 Nov 2026 12:00:00 -0000"):  # no usable server clock
        headers = {"Date": date, "Retry-After": formatdate(time.time() + 60, usegmt=True)}
        assert retry_after_of(headers) == pytest.approx(60, abs=2)


def test_the_servers_clock_is_learned_only_from_a_date_far_enough_off_and_plausible() -> None:
    clock = ServerClock()
    clock.note(formatdate(time.time() - 7200, usegmt=True))  # this clock is two hours ahead
    assert clock.offset == pytest.approx(-7200, abs=5)
    assert clock.now() == pytest.approx(time.time() - 7200, abs=5)
    # A second or two is the header's resolution and the network's delay, not a skew.
    clock.note(formatdate(time.time() + 2, usegmt=True))
    assert clock.offset == 0.0
    clock.note(formatdate(time.time() + 3600, usegmt=True))
    assert clock.offset == pytest.approx(3600, abs=5)
    # A broken Date (unreadable, of no zone, decades off) leaves what was learned.
    for bad in (None, "", "garbage", "Mon, 23 Nov 2026 12:00:00 -0000", formatdate(0, usegmt=True)):
        clock.note(bad)
        assert clock.offset == pytest.approx(3600, abs=5), bad
    clock.note(formatdate(time.time() + 30 * 86_400, usegmt=True))  # a month off: not a clock
    assert clock.offset == pytest.approx(3600, abs=5)


@pytest.fixture(scope="module")
def untrusted_tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real TLS server on 127.0.0.1 whose certificate no system trusts (self-signed)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError), conn:
                conn.settimeout(2)
                ctx.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, name="untrusted-tls", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _client_error(url: str, call: str) -> Exception:
    """What the real supabase client raises for one call to ``url`` (no session needed)."""
    from supabase import ClientOptions, create_client

    http = httpx.Client(timeout=5)
    try:
        client = create_client(url, "anon", ClientOptions(httpx_client=http))
        if call == "rpc":
            client.rpc("pull_changes", {"since": 0}).execute()
        else:
            client.auth.refresh_session("a-refresh-token")
    except Exception as exc:
        return exc
    finally:
        http.close()
    raise AssertionError(f"{call} to {url} succeeded")


@pytest.mark.parametrize("call", ["rpc", "refresh"])
def test_a_dns_failure_is_offline_for_rpcs_and_refreshes_alike(call: str) -> None:
    # .invalid never resolves (RFC 2606): a real DNS failure, as on a laptop without network.
    mapped = map_error(_client_error("http://localstore-sync.invalid", call), what=call)
    assert type(mapped) is OfflineError, (type(mapped), mapped)
    assert mapped.action == "retry"


@pytest.mark.parametrize("call", ["rpc", "refresh"])
def test_a_refused_tls_certificate_is_retried_but_not_offline(
    untrusted_tls_port: int, call: str
) -> None:
    exc = _client_error(f"https://127.0.0.1:{untrusted_tls_port}", call)
    mapped = map_error(exc, what=call)
    assert type(mapped) is TransientError, (type(mapped), mapped)
    assert mapped.action == "retry" and mapped.code == "tls"
    assert "certificate" in mapped.hint and "sign-in page" in mapped.hint


# PostgreSQL's JSON parser refuses about 20,000 levels at the default max_stack_depth (2 MB).
_PAST_STACK_DEPTH = 30_000


def _nested(depth: int) -> list[Any]:
    deep: list[Any] = []
    for _ in range(depth):
        deep = [deep]
    return deep


def _raised_in_a_deep_thread(call: Callable[[], object], depth: int) -> BaseException | None:
    """What ``call`` raised, run where Python can encode (and the in-process gateway decode)
    JSON nested ``depth`` deep: a thread with a large stack, under a raised recursion limit."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test, which asserts on it
            caught.append(exc)

    old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(4 * depth + 1000)
    try:
        threading.stack_size(512 * 2**20)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    return caught[0] if caught else None


def test_a_call_nested_past_the_servers_stack_depth_is_split_not_sent_again(
    cloud: LocalCloud, homes: Homes
) -> None:
    """PostgreSQL refuses an argument nested past its stack depth with 54001 (statement too
    complex), and will refuse it so every time. It matched the retryable class 5, without the
    code the engine splits on: a push so refused went again unchanged, with its batch, forever.
    Class 54 is a call past a server limit now, split by the engine (SPLIT_CODES), and a change
    refused alone is parked (tests/sync_engine/test_push_batches.py)."""
    _, remote = homes.device(cloud.url, cloud.anon_key, new_email())
    args = {"changes": _nested(_PAST_STACK_DEPTH), "device": "d"}
    err = _raised_in_a_deep_thread(lambda: remote._rpc("push_changes", args), _PAST_STACK_DEPTH)
    assert isinstance(err, TransientError), repr(err)
    assert err.code == "54001" and "stack depth limit exceeded" in err.message
    assert err.code in SPLIT_CODES
    assert "pushes smaller batches" in err.hint  # ours, not PostgreSQL's "max_stack_depth"
    assert remote.pull(0).changes == []  # the next call goes through
