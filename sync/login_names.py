"""The keychain names of a home's cloud login, and whether its index lists them.

Kept apart from :mod:`sync.supabase_remote`, which imports the supabase client (half a second):
``localstore status`` and ``doctor`` ask whether a home is logged in, and must stay quick and work
offline and without the Supabase packages. A login stores the session and the project under these
names, and the credential store lists every stored name in the index (``credential_names``), so
"is this home logged in?" is one index read, no keychain access (which can be slow, prompt, or be
missing on a headless machine).
"""

from __future__ import annotations

import hashlib

from localstore._credential_names import listed_names
from localstore.config import Settings
from localstore.index import Index

__all__ = [
    "PROJECT_NAME_PREFIX",
    "SESSION_NAME_PREFIX",
    "login_listed",
    "project_credential_name",
    "session_credential_name",
]

SESSION_NAME_PREFIX = "cloud.session."
PROJECT_NAME_PREFIX = "cloud.project."


def home_key(settings: Settings) -> str:
    """The part of the names that is this home's."""
    # One login per home: two homes of one profile share a keychain service, and a refresh token
    # rotated by one must never be reused by the other (that reads as "revoked").
    return hashlib.sha256(str(settings.paths.data).encode()).hexdigest()[:12]


def session_credential_name(settings: Settings) -> str:
    """Keychain name of this home's cloud session."""
    return SESSION_NAME_PREFIX + home_key(settings)


def project_credential_name(settings: Settings) -> str:
    """Keychain name of this home's cloud project (url, anon key, user)."""
    return PROJECT_NAME_PREFIX + home_key(settings)


def login_listed(index: Index, settings: Settings) -> bool:
    """Whether the index lists this home's cloud session or project (raises LocalStoreError)."""
    names = listed_names(index, settings.profile)
    return bool({session_credential_name(settings), project_credential_name(settings)} & names)
