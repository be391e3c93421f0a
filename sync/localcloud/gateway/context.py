"""Who is calling: Kong's key-auth check, then the bearer JWT turned into claims and a role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sync.localcloud.gateway.errors import ApiError, GatewayKeyError
from sync.localcloud.gateway.keys import JWTCheckError, ProjectKeys

ANON_ROLE = "anon"


@dataclass(frozen=True, slots=True)
class Caller:
    """The verified identity of one request."""

    claims: dict[str, Any]
    token: str | None

    @property
    def role(self) -> str:
        """The database role PostgREST switches to."""
        role = self.claims.get("role")
        return role if isinstance(role, str) and role else ANON_ROLE

    @property
    def authenticated(self) -> bool:
        """Whether the role is not the anonymous one (decides 401 vs 403 on 42501)."""
        return self.role != ANON_ROLE

    @property
    def user_id(self) -> str | None:
        """The ``sub`` claim (a user id for GoTrue tokens)."""
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) else None


def api_key_of(request: web.Request) -> str | None:
    """The ``apikey`` header (any case) or query parameter."""
    return request.headers.get("apikey") or request.query.get("apikey")


def require_api_key(request: web.Request, keys: ProjectKeys) -> str:
    """Refuse the request as Kong does when the API key is missing or unknown."""
    key = api_key_of(request)
    if not key:
        raise GatewayKeyError("No API key found in request")
    if not keys.is_api_key(key):
        raise GatewayKeyError("Invalid authentication credentials")
    return key


def bearer_of(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def caller_of(request: web.Request, keys: ProjectKeys) -> Caller:
    """Verify the bearer like PostgREST: none -> anon; bad -> 401 PGRST301/PGRST303."""
    token = bearer_of(request)
    if token is None:
        return Caller({"role": ANON_ROLE}, None)
    try:
        claims = keys.verify(token)
    except JWTCheckError as exc:
        raise ApiError(401, exc.code, exc.message) from exc
    return Caller(claims, token)
