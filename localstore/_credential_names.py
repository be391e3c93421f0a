"""The keychain service of a profile and the credential names its index lists, without keyring.

:mod:`localstore.credentials` imports keyring and the crypto module (30-50 ms); ``localstore
status`` only needs to know which names a home stored (is it logged in?), which the index lists.
"""

from __future__ import annotations

from localstore.index import Index

__all__ = ["SERVICE_PREFIX", "listed_names", "service_name"]

SERVICE_PREFIX = "localstore:"


def service_name(profile: str) -> str:
    """Keychain service name of a profile."""
    return SERVICE_PREFIX + profile


def listed_names(index: Index, profile: str) -> set[str]:
    """Every name stored for ``profile`` (internal ones too). Reads only: a home that never
    stored one may have no table yet, and its empty set needs no write. Raises LocalStoreError."""
    with index.read() as cur:
        if not cur.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'credential_names'"
        ).fetchall():
            return set()
        rows = cur.execute(
            "SELECT name FROM credential_names WHERE service = ?", (service_name(profile),)
        ).fetchall()
    return {str(r[0]) for r in rows}
