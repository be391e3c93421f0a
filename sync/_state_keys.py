"""sync_state, the engine's key/value table: its accessors, the pull cursor, the keys that name the
account a home belongs to, and the reset when that account changes (tables: ``sync._state``)."""

from __future__ import annotations

from typing import Any

# -- sync_state ---------------------------------------------------------------------------------


def get_state(cur: Any, key: str, default: str | None = None) -> str | None:
    """One value of sync_state."""
    rows = cur.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchall()
    return str(rows[0][0]) if rows else default


def set_state(cur: Any, key: str, value: str) -> None:
    """Set one value of sync_state."""
    cur.execute(
        "INSERT INTO sync_state VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def del_state(cur: Any, key: str) -> None:
    """Remove one value of sync_state."""
    cur.execute("DELETE FROM sync_state WHERE key = ?", (key,))


def get_cursor(cur: Any) -> int:
    """The pull cursor (0 = from the beginning)."""
    return int(get_state(cur, "cursor", "0") or 0)


# -- the account a home belongs to --------------------------------------------------------------
#
# ``identity`` is the remote's ``<kind>:<server>:<user>`` this home last synced with. A home's
# synced data belongs to that account: another user of the same server (project) must not get it
# uploaded by logging in on the home (docs/sync-engine.md, "Identity"). ``accepted_identity`` is
# the one other user a person allowed to take the home over (``localstore login --switch-user``);
# the engine consumes it when it resets for that user.

ACCEPTED_KEY = "accepted_identity"
EMAIL_PREFIX = "email:"
SETTLED_KEY = "settled_op_id"


def identity_project(identity: str) -> str:
    """The server part of an identity (everything before the user: urls contain colons)."""
    return identity.rpartition(":")[0]


def identity_user(identity: str) -> str:
    """The user part of an identity."""
    return identity.rpartition(":")[2]


def foreign_identity(cur: Any, identity: str) -> str | None:
    """The identity this home synced with when it is another user of the same project, else None.

    None also when that user was accepted (:func:`accept_identity`), when the home never synced,
    or when the project differs (a new project gets the home's blueprints, see the docs).
    """
    known = get_state(cur, "identity")
    if known is None or known == identity:
        return None
    if identity_project(known) != identity_project(identity):
        return None
    if get_state(cur, ACCEPTED_KEY) == identity:
        return None
    return known


def remember_email(cur: Any, identity: str, email: str) -> None:
    """Note the e-mail a login used for ``identity`` (only to name the account in messages)."""
    set_state(cur, EMAIL_PREFIX + identity, email)


def describe_account(cur: Any, identity: str) -> str:
    """``alice@example.com (user 8c1f...)``, or ``user 8c1f...`` when no login noted an e-mail."""
    email = get_state(cur, EMAIL_PREFIX + identity)
    user = f"user {identity_user(identity)}"
    return f"{email} ({user})" if email else user


def accept_identity(cur: Any, identity: str | None) -> None:
    """Allow ``identity`` to take this home over at its next sync (None withdraws it)."""
    if identity is None:
        del_state(cur, ACCEPTED_KEY)
    else:
        set_state(cur, ACCEPTED_KEY, identity)


def restore_identity(cur: Any, identity: str | None, email: str | None = None) -> bool:
    """Take the home's account back into an index that has none; True if it did.

    After ``check --fix`` rebuilt the index, the account record kept besides it
    (``sync.account_record``) is the only trace of whom the home's blueprints belong to. An index
    that has an account keeps it (it is the authority); a home that never synced has no record.
    """
    if identity is None or get_state(cur, "identity") is not None:
        return False
    set_state(cur, "identity", identity)
    if email and get_state(cur, EMAIL_PREFIX + identity) is None:
        remember_email(cur, identity, email)
    return True


def reset_for_identity(cur: Any, identity: str) -> bool:
    """Forget server knowledge when the remote (server or user) changed; True if it did.

    Local files are untouched; every live blueprint becomes a create for the new account. The
    caller refuses another user of the same project first (:func:`foreign_identity`).
    """
    known = get_state(cur, "identity")
    if known == identity:
        return False
    if known is not None:
        for table in ("sync_items", "sync_bases", "sync_quarantine"):
            cur.execute(f"DELETE FROM {table}")
        for key in ("cursor", "horizon", "last_synced_at", "last_error", SETTLED_KEY):
            del_state(cur, key)
    del_state(cur, ACCEPTED_KEY)  # consumed (or stale: the home now belongs to this identity)
    set_state(cur, "identity", identity)
    return known is not None
