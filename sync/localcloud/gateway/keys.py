"""Project keys and JWT checks: the stand-in for Kong's key-auth and PostgREST's JWT verification.

The local stack signs everything with one HS256 secret, like a legacy Supabase project: the anon and
service_role API keys are long-lived JWTs with only ``role``/``iss``/``iat``/``exp`` claims, and user
access tokens are GoTrue-shaped JWTs signed with the same secret.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

ALGORITHM = "HS256"
ISSUER = "supabase-localcloud"
# PostgREST accepts exp/nbf/iat up to 30 s off (Auth/Jwt.hs allowedSkewSeconds).
CLOCK_SKEW_S = 30
# Legacy Supabase keys are valid for about ten years.
API_KEY_LIFETIME_S = 10 * 365 * 24 * 3600


class JWTCheckError(Exception):
    """A bearer token was refused; ``code``/``message`` are PostgREST's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ProjectKeys:
    """The JWT secret and the two API keys derived from it."""

    jwt_secret: str
    anon_key: str
    service_key: str
    api_keys: frozenset[str] = field(default=frozenset())

    @classmethod
    def create(cls, jwt_secret: str | None = None, *, issued_at: int | None = None) -> ProjectKeys:
        """Make keys from ``jwt_secret`` (a fresh random one when None)."""
        secret = jwt_secret or secrets.token_urlsafe(48)
        iat = int(time.time()) if issued_at is None else issued_at
        anon = sign(
            {"role": "anon", "iss": ISSUER, "iat": iat, "exp": iat + API_KEY_LIFETIME_S}, secret
        )
        service = sign(
            {"role": "service_role", "iss": ISSUER, "iat": iat, "exp": iat + API_KEY_LIFETIME_S},
            secret,
        )
        return cls(secret, anon, service, frozenset({anon, service}))

    def is_api_key(self, key: str) -> bool:
        """Whether ``key`` is one of this project's API keys (Kong's key-auth check)."""
        return key in self.api_keys

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of ``token``; raise JWTCheckError with PostgREST's code otherwise."""
        return verify(token, self.jwt_secret)


def sign(claims: dict[str, Any], secret: str) -> str:
    """Sign ``claims`` with HS256."""
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: str, secret: str) -> dict[str, Any]:
    """Verify signature and time claims; map failures to PGRST301 (decode) / PGRST303 (claims)."""
    parts = token.count(".") + 1
    if parts != 3:
        raise JWTCheckError("PGRST301", f"Expected 3 parts in JWT; got {parts}")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=CLOCK_SKEW_S,
            options={"verify_aud": False, "require": []},
        )
    except jwt.ExpiredSignatureError as exc:
        raise JWTCheckError("PGRST303", "JWT expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise JWTCheckError("PGRST303", "JWT not yet valid") from exc
    except jwt.InvalidIssuedAtError as exc:
        raise JWTCheckError("PGRST303", "JWT issued at future") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise JWTCheckError("PGRST301", "Wrong or unsupported encoding algorithm") from exc
    except jwt.InvalidSignatureError as exc:
        raise JWTCheckError("PGRST301", "No suitable key or wrong key type") from exc
    except jwt.InvalidTokenError as exc:
        raise JWTCheckError("PGRST301", f"JWT cryptographic operation failed: {exc}") from exc
    if not isinstance(claims, dict):  # pragma: no cover - pyjwt always returns a dict
        raise JWTCheckError("PGRST301", "JWT payload is not an object")
    return claims
