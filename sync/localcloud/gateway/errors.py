"""PostgREST-shaped errors: SQLSTATE -> HTTP status, JSON bodies with string codes, Proxy-Status.

The official client parses a non-2xx body only when it is a JSON object whose ``code`` is a string
(``postgrest.exceptions.APIErrorFromJSON``), and it never sees the HTTP status, so the code is what
callers branch on. The status table is PostgREST's ``Error.hs: mapSQLtoHTTP``.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from aiohttp import web

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class ApiError(Exception):
    """An error answered as ``{"code","message","details","hint"}`` with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body PostgREST sends."""
        return {
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        }

    def response(self) -> web.Response:
        """Render as an aiohttp response."""
        headers = {"Proxy-Status": f"PostgREST; error={self.code}", **self.headers}
        if self.status == 401 and "WWW-Authenticate" not in headers:
            headers["WWW-Authenticate"] = _www_authenticate(self.message)
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )


class GatewayKeyError(Exception):
    """Kong's key-auth refusal: 401 with a bare ``{"message"}`` body (no code)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def response(self) -> web.Response:
        """Render as Kong does."""
        return web.json_response({"message": self.message}, status=401)


def _www_authenticate(message: str) -> str:
    escaped = message.replace('"', "'")
    return f'Bearer error="invalid_token", error_description="{escaped}"'


def status_for_sqlstate(code: str, message: str, *, authenticated: bool) -> int:
    """Map a SQLSTATE to PostgREST's HTTP status."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "42883": 404,
        "42P01": 404,
        "42P17": 500,
        "53400": 500,
        "57P01": 503,
        "P0001": 400,
    }
    if code in exact:
        return exact[code]
    if code == "42501":
        return 403 if authenticated else 401
    if code == "21000":
        return 400 if "requires a WHERE clause" in message else 500
    if code == "22023":
        return 401 if "role" in message and "does not exist" in message else 400
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    prefixes = [
        ("08", 503), ("09", 500), ("0L", 403), ("0P", 403), ("25", 500), ("2D", 500),
        ("38", 500), ("39", 500), ("3B", 500), ("40", 500), ("28", 403), ("53", 503),
        ("54", 500), ("55", 500), ("58", 500), ("F0", 500), ("HV", 500), ("XX", 500),
        ("57", 500), ("P0", 500),
    ]  # fmt: skip
    for prefix, status in prefixes:
        if code.startswith(prefix):
            return status
    return 400


def from_psycopg(exc: psycopg.Error, *, authenticated: bool) -> ApiError:
    """Translate a database error into PostgREST's JSON error."""
    diag = exc.diag
    code = exc.sqlstate or "XX000"
    message = diag.message_primary or str(exc)
    details = diag.message_detail
    hint = diag.message_hint
    if code == "PGRST":
        return _from_pgrst_raise(message, details)
    status = status_for_sqlstate(code, message, authenticated=authenticated)
    return ApiError(status, code, message, details=details, hint=hint)


def _from_pgrst_raise(message: str, details: str | None) -> ApiError:
    """``RAISE SQLSTATE 'PGRST' USING message = json, detail = json`` (PostgREST's custom errors)."""
    try:
        body = json.loads(message)
        extra = json.loads(details or "{}")
    except json.JSONDecodeError:
        return ApiError(500, "PGRST121", "Could not parse JSON in the RAISE SQLSTATE 'PGRST' error")
    status = int(extra.get("status", 400))
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    return ApiError(
        status,
        str(body.get("code", "PGRST")),
        str(body.get("message", "")),
        details=body.get("details"),
        hint=body.get("hint"),
        headers=headers,
    )


def connection_lost(exc: BaseException) -> ApiError:
    """Postgres is unreachable: PostgREST answers 503 PGRST000/001."""
    return ApiError(
        503, "PGRST001", "Database client error. Retrying the connection.", details=str(exc)
    )
