"""The GoTrue (Supabase Auth) subset under ``/auth/v1``.

Users, sessions and refresh tokens live in the same database (``auth.users``, ``auth.sessions``,
``auth.refresh_tokens`` from the bootstrap), so project foreign keys to ``auth.users`` and triggers on
it behave as on Supabase. Passwords are bcrypt via pgcrypto's ``crypt(pw, gen_salt('bf'))``, as GoTrue
stores them. Refresh tokens rotate on every use; presenting a revoked one revokes the whole session's
tokens and answers ``refresh_token_already_used`` (GoTrue's reuse detection, without its reuse window
unless one is configured), except for the parent of the session's active token: it gets the active
token back, as GoTrue >= v2.105.0 answers a client that lost the answer to its last refresh. Errors
use the 2024-01-01 API shape ``{"code","message"}``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from aiohttp import web
from psycopg.rows import dict_row

from sync.localcloud.gateway.context import bearer_of, require_api_key
from sync.localcloud.gateway.db import Database
from sync.localcloud.gateway.errors import GatewayKeyError
from sync.localcloud.gateway.keys import JWTCheckError, ProjectKeys, sign

log = logging.getLogger(__name__)

API_VERSION = "2024-01-01"
MIN_PASSWORD_LENGTH = 6
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_USER_COLUMNS = """
  u.id::text, u.aud, u.role, u.email, u.phone, u.email_confirmed_at, u.last_sign_in_at,
  u.raw_app_meta_data, u.raw_user_meta_data, u.created_at, u.updated_at, u.is_anonymous
"""


class AuthError(Exception):
    """An auth error answered as ``{"code","message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self) -> web.Response:
        """Render as GoTrue does for clients sending X-Supabase-Api-Version."""
        body = {"code": self.code, "message": self.message, **self.extra}
        return web.json_response(
            body, status=self.status, headers={"X-Supabase-Api-Version": API_VERSION}
        )


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Tunables of the auth subset."""

    access_token_ttl: int = 3600
    refresh_reuse_interval: int = 0  # seconds a just-rotated token may still be used (GoTrue: 10)
    issuer: str = "http://127.0.0.1/auth/v1"


class GoTrueHandler:
    """aiohttp handlers for ``/auth/v1``."""

    def __init__(self, db: Database, keys: ProjectKeys, settings: AuthSettings) -> None:
        self.db = db
        self.keys = keys
        self.settings = settings

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount on the application."""
        g = self._guard
        return [
            web.get("/auth/v1/health", g(self.health)),
            web.get("/auth/v1/settings", g(self.app_settings)),
            web.post("/auth/v1/signup", g(self.signup)),
            web.post("/auth/v1/token", g(self.token)),
            web.get("/auth/v1/user", g(self.get_user)),
            web.post("/auth/v1/logout", g(self.logout)),
            web.post("/auth/v1/admin/users", g(self.admin_create_user)),
            web.get("/auth/v1/admin/users", g(self.admin_list_users)),
            web.get("/auth/v1/admin/users/{uid}", g(self.admin_get_user)),
            web.delete("/auth/v1/admin/users/{uid}", g(self.admin_delete_user)),
        ]

    def _guard(self, handler: Any) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                require_api_key(request, self.keys)
                response: web.StreamResponse = await handler(request)
            except GatewayKeyError as exc:
                return exc.response()
            except AuthError as exc:
                return exc.response()
            except psycopg.Error as exc:
                log.error(
                    "auth %s %s failed in the database: %s", request.method, request.path, exc
                )
                return AuthError(500, "unexpected_failure", "Database error").response()
            response.headers["X-Supabase-Api-Version"] = API_VERSION
            return response

        return wrapped

    # ------------------------------------------------------------------ public endpoints

    async def health(self, request: web.Request) -> web.StreamResponse:
        """Liveness, shaped like GoTrue's."""
        return web.json_response(
            {"version": "localcloud", "name": "GoTrue", "description": "localcloud auth subset"}
        )

    async def app_settings(self, request: web.Request) -> web.StreamResponse:
        """What sign-up methods exist."""
        return web.json_response(
            {
                "external": {"email": True, "phone": False},
                "disable_signup": False,
                "mailer_autoconfirm": True,
                "phone_autoconfirm": False,
                "sms_provider": "",
                "saml_enabled": False,
            }
        )

    async def signup(self, request: web.Request) -> web.StreamResponse:
        """``POST /signup``: create a confirmed user and answer with a session (autoconfirm)."""
        body = await _body(request)
        email, password = _email_password(body)
        _check_password(password)
        data = body.get("data")
        user_meta: dict[str, Any] = data if isinstance(data, dict) else {}
        async with self.db.admin.connection() as conn, conn.transaction():
            user = await self._insert_user(conn, email, password, user_meta, sign_in=True)
            session = await self._new_session(conn, user)
        return web.json_response(session)

    async def token(self, request: web.Request) -> web.StreamResponse:
        """``POST /token?grant_type=password|refresh_token``."""
        grant = request.query.get("grant_type", "")
        body = await _body(request)
        if grant == "password":
            return web.json_response(await self._password_grant(body))
        if grant == "refresh_token":
            return web.json_response(await self._refresh_grant(body))
        raise AuthError(400, "validation_failed", f"unsupported_grant_type: {grant or '(none)'}")

    async def get_user(self, request: web.Request) -> web.StreamResponse:
        """``GET /user``: the user of the bearer token."""
        claims = self._user_claims(request)
        async with self.db.admin.connection() as conn:
            user = await self._check_session_user(conn, claims)
        return web.json_response(_user_json(user))

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """``POST /logout?scope=global|local|others``: end sessions (refresh tokens cascade)."""
        claims = self._user_claims(request)
        scope = request.query.get("scope", "global")
        if scope not in ("global", "local", "others"):
            raise AuthError(400, "validation_failed", f"Unsupported logout scope {scope!r}")
        session_id = claims.get("session_id")
        where = {
            "global": "user_id = %s::uuid",
            "local": "user_id = %s::uuid and id = %s::uuid",
            "others": "user_id = %s::uuid and id <> %s::uuid",
        }[scope]
        params = [claims["sub"]] + ([] if scope == "global" else [session_id])
        async with self.db.admin.connection() as conn:
            await conn.execute(f"delete from auth.sessions where {where}", params)
        return web.Response(status=204)

    # ------------------------------------------------------------------ admin endpoints

    async def admin_create_user(self, request: web.Request) -> web.StreamResponse:
        """``POST /admin/users`` (service key): create a user without the public sign-up."""
        self._require_admin(request)
        body = await _body(request)
        email, password = _email_password(body)
        _check_password(password)
        meta = body.get("user_metadata")
        user_meta: dict[str, Any] = meta if isinstance(meta, dict) else {}
        async with self.db.admin.connection() as conn, conn.transaction():
            user = await self._insert_user(conn, email, password, user_meta, sign_in=False)
        return web.json_response(_user_json(user))

    async def admin_list_users(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/users`` (service key)."""
        self._require_admin(request)
        async with self.db.admin.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(f"select {_USER_COLUMNS} from auth.users u order by created_at")
            users = await cur.fetchall()
        return web.json_response({"users": [_user_json(u) for u in users], "aud": "authenticated"})

    async def admin_get_user(self, request: web.Request) -> web.StreamResponse:
        """``GET /admin/users/{uid}`` (service key)."""
        self._require_admin(request)
        async with self.db.admin.connection() as conn:
            user = await _load_user(conn, request.match_info["uid"])
        if user is None:
            raise AuthError(404, "user_not_found", "User not found")
        return web.json_response(_user_json(user))

    async def admin_delete_user(self, request: web.Request) -> web.StreamResponse:
        """``DELETE /admin/users/{uid}`` (service key); sessions and tokens cascade."""
        self._require_admin(request)
        async with self.db.admin.connection() as conn:
            cur = await conn.execute(
                "delete from auth.users where id::text = %s", (request.match_info["uid"],)
            )
        if cur.rowcount == 0:
            raise AuthError(404, "user_not_found", "User not found")
        return web.json_response({})

    # ------------------------------------------------------------------ grants

    async def _password_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        email, password = _email_password(body)
        async with self.db.admin.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"""update auth.users u set last_sign_in_at = now()
                    where lower(u.email) = lower(%s) and u.deleted_at is null
                      and u.encrypted_password = extensions.crypt(%s, u.encrypted_password)
                    returning {_USER_COLUMNS}""",
                (email, password),
            )
            user = await cur.fetchone()
            if user is None:
                raise AuthError(400, "invalid_credentials", "Invalid login credentials")
            return await self._new_session(conn, user)

    async def _refresh_grant(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("refresh_token")
        if not isinstance(token, str) or not token:
            raise AuthError(400, "validation_failed", "refresh_token required")
        async with self.db.admin.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """select id, revoked, session_id::text, user_id, updated_at
                       from auth.refresh_tokens where token = %s for update""",
                (token,),
            )
            row = await cur.fetchone()
            if row is None:
                raise AuthError(
                    400,
                    "refresh_token_not_found",
                    "Invalid Refresh Token: Refresh Token Not Found",
                )
            token_id, revoked, session_id, user_id, updated_at = row
            if revoked:
                active = await _active_child(conn, session_id, token)
                if active is not None:
                    # The parent of the session's active token: its client lost the answer to
                    # its last refresh (a crash before storing it, a dropped connection). GoTrue
                    # (>= v2.105.0) hands the active token back and rotates nothing, so asking
                    # again any number of times converges on the one token.
                    return await self._reissue(conn, session_id, user_id, active)
            if revoked and not self._within_reuse_window(updated_at):
                # Reuse of a rotated token: assume it leaked and end the session (GoTrue
                # revokes the token family); the error is answered after the commit.
                await conn.execute(
                    "update auth.refresh_tokens set revoked = true, updated_at = now()"
                    " where session_id = %s::uuid",
                    (session_id,),
                )
            else:
                return await self._rotate(conn, token_id, token, session_id, user_id)
        raise AuthError(400, "refresh_token_already_used", "Invalid Refresh Token: Already Used")

    async def _reissue(
        self, conn: psycopg.AsyncConnection[Any], session_id: str, user_id: str, active: str
    ) -> dict[str, Any]:
        user = await _refreshed_session_user(conn, session_id, user_id)
        return self._session_json(user, session_id, active)

    def _within_reuse_window(self, updated_at: datetime) -> bool:
        interval = self.settings.refresh_reuse_interval
        return interval > 0 and time.time() - updated_at.timestamp() <= interval

    async def _rotate(
        self,
        conn: psycopg.AsyncConnection[Any],
        token_id: int,
        token: str,
        session_id: str,
        user_id: str,
    ) -> dict[str, Any]:
        await conn.execute(
            "update auth.refresh_tokens set revoked = true, updated_at = now() where id = %s",
            (token_id,),
        )
        user = await _refreshed_session_user(conn, session_id, user_id)
        new_token = await _insert_refresh_token(conn, user["id"], session_id, parent=token)
        return self._session_json(user, session_id, new_token)

    # ------------------------------------------------------------------ helpers

    async def _insert_user(
        self,
        conn: psycopg.AsyncConnection[Any],
        email: str,
        password: str,
        user_meta: dict[str, Any],
        *,
        sign_in: bool,
    ) -> dict[str, Any]:
        cur = conn.cursor(row_factory=dict_row)
        app_meta = {"provider": "email", "providers": ["email"]}
        try:
            async with conn.transaction():
                await cur.execute(
                    f"""insert into auth.users as u (instance_id, id, aud, role, email,
                          encrypted_password, email_confirmed_at, last_sign_in_at,
                          raw_app_meta_data, raw_user_meta_data)
                        values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(),
                          'authenticated', 'authenticated', lower(%s),
                          extensions.crypt(%s, extensions.gen_salt('bf')), now(),
                          case when %s then now() end, %s::jsonb, %s::jsonb)
                        returning {_USER_COLUMNS}""",
                    (email, password, sign_in, json.dumps(app_meta), json.dumps(user_meta)),
                )
        except psycopg.errors.UniqueViolation as exc:
            raise AuthError(422, "user_already_exists", "User already registered") from exc
        user = await cur.fetchone()
        assert user is not None
        return user

    async def _new_session(
        self, conn: psycopg.AsyncConnection[Any], user: dict[str, Any]
    ) -> dict[str, Any]:
        cur = await conn.execute(
            "insert into auth.sessions (user_id) values (%s::uuid) returning id::text",
            (user["id"],),
        )
        row = await cur.fetchone()
        assert row is not None
        session_id = row[0]
        token = await _insert_refresh_token(conn, user["id"], session_id, parent=None)
        return self._session_json(user, session_id, token)

    def _session_json(self, user: dict[str, Any], session_id: str, refresh: str) -> dict[str, Any]:
        now = int(time.time())
        ttl = self.settings.access_token_ttl
        claims = {
            "iss": self.settings.issuer,
            "sub": user["id"],
            "aud": "authenticated",
            "exp": now + ttl,
            "iat": now,
            "email": user["email"] or "",
            "phone": user["phone"] or "",
            "app_metadata": user["raw_app_meta_data"] or {},
            "user_metadata": user["raw_user_meta_data"] or {},
            "role": user["role"] or "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": session_id,
            "is_anonymous": bool(user["is_anonymous"]),
        }
        return {
            "access_token": sign(claims, self.keys.jwt_secret),
            "token_type": "bearer",
            "expires_in": ttl,
            "expires_at": now + ttl,
            "refresh_token": refresh,
            "user": _user_json(user),
            "weak_password": None,
        }

    def _user_claims(self, request: web.Request) -> dict[str, Any]:
        token = bearer_of(request)
        if token is None:
            raise AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")
        try:
            claims = self.keys.verify(token)
        except JWTCheckError as exc:
            raise AuthError(
                403, "bad_jwt", f"invalid JWT: unable to parse or verify signature, {exc.message}"
            ) from exc
        if not isinstance(claims.get("sub"), str):
            raise AuthError(403, "bad_jwt", "invalid claim: missing sub claim")
        return claims

    def _require_admin(self, request: web.Request) -> None:
        token = bearer_of(request)
        if token is None:
            raise AuthError(401, "no_authorization", "This endpoint requires a valid Bearer token")
        try:
            claims = self.keys.verify(token)
        except JWTCheckError as exc:
            raise AuthError(403, "bad_jwt", f"invalid JWT: {exc.message}") from exc
        if claims.get("role") not in ("service_role", "supabase_admin"):
            raise AuthError(403, "not_admin", "User not allowed")

    async def _check_session_user(
        self, conn: psycopg.AsyncConnection[Any], claims: dict[str, Any]
    ) -> dict[str, Any]:
        user = await _load_user(conn, claims["sub"])
        if user is None:
            raise AuthError(403, "user_not_found", "User from sub claim in JWT does not exist")
        session_id = claims.get("session_id")
        if session_id:
            cur = await conn.execute(
                "select 1 from auth.sessions where id::text = %s", (str(session_id),)
            )
            if await cur.fetchone() is None:
                raise AuthError(
                    403, "session_not_found", "Session from session_id claim in JWT does not exist"
                )
        return user


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuthError(400, "bad_json", "Could not parse request body as JSON") from exc
    if not isinstance(body, dict):
        raise AuthError(400, "bad_json", "Request body must be a JSON object")
    return body


def _email_password(body: dict[str, Any]) -> tuple[str, str]:
    email = body.get("email")
    password = body.get("password")
    if not isinstance(email, str) or not email:
        raise AuthError(400, "validation_failed", "Only an email address is supported locally")
    if not _EMAIL.match(email):
        raise AuthError(
            400, "validation_failed", "Unable to validate email address: invalid format"
        )
    if not isinstance(password, str) or not password:
        raise AuthError(400, "validation_failed", "Signup requires a valid password")
    return email, password


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(
            422,
            "weak_password",
            f"Password should be at least {MIN_PASSWORD_LENGTH} characters.",
            weak_password={"reasons": ["length"]},
        )


async def _load_user(conn: psycopg.AsyncConnection[Any], user_id: str) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"select {_USER_COLUMNS} from auth.users u where u.id::text = %s and u.deleted_at is null",
        (user_id,),
    )
    return await cur.fetchone()


async def _refreshed_session_user(
    conn: psycopg.AsyncConnection[Any], session_id: str, user_id: str
) -> dict[str, Any]:
    """Mark the session refreshed now and return its user, for a refresh grant that answers
    (a rotation or the active token handed back); a user deleted meanwhile is answered as
    GoTrue answers a token it cannot find (the caller's transaction rolls back)."""
    await conn.execute(
        "update auth.sessions set refreshed_at = now() at time zone 'utc', updated_at = now()"
        " where id = %s::uuid",
        (session_id,),
    )
    user = await _load_user(conn, user_id)
    if user is None:
        raise AuthError(
            400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"
        )
    return user


async def _active_child(
    conn: psycopg.AsyncConnection[Any], session_id: str, parent: str
) -> str | None:
    """The session's active (newest unrevoked) refresh token if it was rotated from ``parent``.

    GoTrue's ``FindCurrentlyActiveRefreshToken`` and its parent check."""
    cur = await conn.execute(
        """select token, parent from auth.refresh_tokens
               where session_id = %s::uuid and not revoked order by id desc limit 1""",
        (session_id,),
    )
    row = await cur.fetchone()
    if row is None or row[1] != parent:
        return None
    return str(row[0])


async def _insert_refresh_token(
    conn: psycopg.AsyncConnection[Any], user_id: str, session_id: str, *, parent: str | None
) -> str:
    token = secrets.token_urlsafe(16)
    await conn.execute(
        """insert into auth.refresh_tokens (instance_id, token, user_id, session_id, parent)
           values ('00000000-0000-0000-0000-000000000000', %s, %s, %s::uuid, %s)""",
        (token, user_id, session_id, parent),
    )
    return token


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _user_json(user: dict[str, Any]) -> dict[str, Any]:
    confirmed = _iso(user["email_confirmed_at"])
    return {
        "id": user["id"],
        "aud": user["aud"] or "authenticated",
        "role": user["role"] or "authenticated",
        "email": user["email"] or "",
        "email_confirmed_at": confirmed,
        "phone": user["phone"] or "",
        "confirmed_at": confirmed,
        "last_sign_in_at": _iso(user["last_sign_in_at"]),
        "app_metadata": user["raw_app_meta_data"] or {},
        "user_metadata": user["raw_user_meta_data"] or {},
        "identities": [],
        "created_at": _iso(user["created_at"]),
        "updated_at": _iso(user["updated_at"]),
        "is_anonymous": bool(user["is_anonymous"]),
    }
