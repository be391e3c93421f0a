"""``LocalCloud``: a whole Supabase-compatible project on this machine, for tests and offline work.

Entering it starts a throw-away PostgreSQL cluster (or reuses one you pass), applies the bootstrap
and the project's migrations, gives the ``authenticator`` role a random password and starts the
gateway on a background event loop. ``url``, ``anon_key`` and ``service_key`` are what
``supabase.create_client`` needs. Leaving it stops the gateway (no thread, task, pool or slot is
left) and the cluster if it started it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from sync.localcloud.cluster import LocalCloudError, PostgresCluster
from sync.localcloud.gateway import GatewayConfig, GatewayThread, ProjectKeys
from sync.localcloud.gateway.realtime import DEFAULT_IDLE_TIMEOUT_S
from sync.localcloud.schema import apply_bootstrap, apply_migrations, set_authenticator_password

__all__ = ["LocalCloud"]


class LocalCloud:
    """A running local stack; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        access_token_ttl: int = 3600,
        port: int = 0,
        cluster: PostgresCluster | None = None,
        jwt_secret: str | None = None,
        change_source: str = "auto",
        poll_interval: float = 0.05,
        migrations_dir: Path | None = None,
        realtime_idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.base_dir = base_dir
        self.access_token_ttl = access_token_ttl
        self.keys = ProjectKeys.create(jwt_secret)
        self._requested_port = port
        self._given_cluster = cluster
        self._change_source = change_source
        self._poll_interval = poll_interval
        self._realtime_idle_timeout_s = realtime_idle_timeout_s
        # Another directory of migrations (tests: a project that has only some of them).
        self._migrations_dir = migrations_dir
        self._cluster: PostgresCluster | None = None
        self._gateway: GatewayThread | None = None
        self._authenticator_password = secrets.token_urlsafe(24)
        self._port: int | None = None
        self.migrations_applied: list[str] = []

    # ------------------------------------------------------------------ attributes

    @property
    def cluster(self) -> PostgresCluster:
        """The PostgreSQL cluster behind the gateway."""
        if self._cluster is None:
            raise LocalCloudError("the local cloud is not running", hint="call start() first")
        return self._cluster

    @property
    def url(self) -> str:
        """Project URL for ``create_client`` (``http://127.0.0.1:PORT``)."""
        if self._gateway is None:
            raise LocalCloudError("the local cloud is not running", hint="call start() first")
        return self._gateway.url

    @property
    def port(self) -> int:
        """The gateway's TCP port (kept across restart_gateway())."""
        if self._port is None:
            raise LocalCloudError("the local cloud is not running", hint="call start() first")
        return self._port

    @property
    def anon_key(self) -> str:
        """The anon API key (a JWT with role anon)."""
        return self.keys.anon_key

    @property
    def service_key(self) -> str:
        """The service_role API key (bypasses RLS)."""
        return self.keys.service_key

    @property
    def jwt_secret(self) -> str:
        """The HS256 secret every token is signed with."""
        return self.keys.jwt_secret

    @property
    def superuser_dsn(self) -> str:
        """Conninfo of the cluster's superuser (for tests and tools)."""
        return self.cluster.superuser_dsn

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start (or reuse) the cluster, prepare the schema and start the gateway."""
        if self._gateway is not None:
            return self
        try:
            if self._given_cluster is not None:
                self._cluster = self._given_cluster
                if not self._cluster.running:
                    self._cluster.start()
            else:
                self._cluster = PostgresCluster(self.base_dir).start()
            dsn = self._cluster.superuser_dsn
            apply_bootstrap(dsn)
            self.migrations_applied = apply_migrations(dsn, directory=self._migrations_dir)
            set_authenticator_password(dsn, self._authenticator_password)
            self._start_gateway(self._requested_port)
        except BaseException:
            self.stop()
            raise
        return self

    def _gateway_config(self, port: int) -> GatewayConfig:
        cluster = self.cluster
        return GatewayConfig(
            authenticator_dsn=cluster.dsn("authenticator", self._authenticator_password),
            admin_dsn=cluster.superuser_dsn,
            keys=self.keys,
            port=port,
            access_token_ttl=self.access_token_ttl,
            change_source=self._change_source,
            poll_interval=self._poll_interval,
            realtime_idle_timeout_s=self._realtime_idle_timeout_s,
        )

    def _start_gateway(self, port: int) -> None:
        gateway = GatewayThread(self._gateway_config(port))
        gateway.start()
        self._gateway = gateway
        self._port = gateway.port

    def stop(self) -> None:
        """Stop the gateway, then the cluster unless it was given to us."""
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self._cluster is not None and self._given_cluster is None:
            self._cluster.stop()
        self._cluster = None
        self._port = None

    def stop_gateway(self) -> None:
        """Stop only the gateway (Postgres keeps running); start again with start_gateway()."""
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None

    def start_gateway(self) -> None:
        """Start the gateway again on the same port after stop_gateway()."""
        if self._gateway is None:
            self._start_gateway(self.port)

    def restart_gateway(self) -> None:
        """Stop and start the gateway on the same port, keeping Postgres (fault injection)."""
        self.stop_gateway()
        self.start_gateway()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers

    def create_user(self, email: str, password: str, **user_metadata: Any) -> str:
        """Create a confirmed user through ``POST /auth/v1/admin/users``; return its id."""
        response = httpx.post(
            f"{self.url}/auth/v1/admin/users",
            headers={"apikey": self.service_key, "Authorization": f"Bearer {self.service_key}"},
            json={
                "email": email,
                "password": password,
                "email_confirm": True,
                "user_metadata": user_metadata,
            },
            timeout=30,
        )
        if response.status_code != 200:
            raise LocalCloudError(f"creating user {email} failed: {response.text}")
        return str(response.json()["id"])

    def __repr__(self) -> str:
        state = self._gateway.url if self._gateway is not None else "stopped"
        return f"<LocalCloud {state}>"
