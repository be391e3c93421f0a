"""The control API's wire, shared by its server and client (``sync.control``): the errors, the
address and request limits, the token and peer checks, and the JSON codec of requests and
replies."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Any

from websockets.datastructures import Headers

from localstore.config import is_loopback_address
from sync.errors import SyncError

HOST = "127.0.0.1"
MAX_FRAME_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 64 * 1024
_TOKEN_HEADERS = ("X-LocalStore-Token",)


# -- errors ----------------------------------------------------------------------------------------


class ControlError(SyncError):
    """The control API cannot be reached or used."""

    hint = "check that the daemon runs: `localstore doctor`"


class DaemonNotRunningError(ControlError):
    """No daemon serves this home."""

    hint = "start it with `localstore daemon` (or `localstore service install`)"


class ControlRequestError(ControlError):
    """The daemon answered a request with an error (``code`` says which)."""

    hint = ""


class OpError(Exception):
    """Raised by a ControlHandler to send ``{"ok": false, "error": {code, message}}``."""

    def __init__(self, code: str, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint


# -- address and token checks ----------------------------------------------------------------------


def is_loopback_peer(address: Any) -> bool:
    """True when a socket peer address (``(host, port, ...)`` or a host string) is loopback."""
    host = address[0] if isinstance(address, tuple | list) and address else address
    return isinstance(host, str) and is_loopback_address(host)


def token_matches(expected: str, given: object) -> bool:
    """Constant-time comparison; anything that is not a non-empty string never matches."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _header_token(headers: Headers) -> str | None:
    auth = headers.get("Authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in _TOKEN_HEADERS:
        value = headers.get(name)
        if value:
            return value.strip()
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(raw: str | bytes) -> dict[str, Any] | OpError:
    if isinstance(raw, bytes):
        return OpError("bad_request", "binary frames are not accepted; send JSON text")
    if len(raw) > MAX_REQUEST_BYTES:
        return OpError("too_large", f"requests are limited to {MAX_REQUEST_BYTES} bytes")
    try:
        req = json.loads(raw)
    except (ValueError, RecursionError):
        return OpError("bad_json", "the message is not valid JSON")
    if not isinstance(req, dict):
        return OpError("bad_request", "a request is a JSON object with 'id' and 'op'")
    return req


def _valid_id(rid: object) -> bool:
    return (
        rid is None
        or (isinstance(rid, str) and len(rid) <= 200)
        or (isinstance(rid, int) and not isinstance(rid, bool) and abs(rid) < 2**53)
    )


def _safe_id(rid: object) -> Any:
    return rid if _valid_id(rid) else None


def _error(rid: Any, code: str, message: str, hint: str = "") -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if hint:
        err["hint"] = hint
    return {"id": rid, "ok": False, "error": err}


def _code_of(exc: SyncError) -> str:
    """``NotLoggedInError`` -> ``not_logged_in``: a stable code clients can branch on."""
    name = type(exc).__name__.removesuffix("Error") or "sync"
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
