"""The data-key layer of :class:`~localstore.kv.KVStore`: creating the current key, rotating it
with every item re-sealed, and retiring and deleting keys no item uses (see ``localstore.kv``'s
docstring for the crash-safe order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import apsw

from localstore._kv_codec import _aad
from localstore._kv_core import _KVCore
from localstore.crypto import DataKeys, new_key_id
from localstore.errors import DecryptionError, KeyNotFoundError, KVError, LocalStoreError

# (The name of the module callers know: apps filter app-data logs by it.)
log = logging.getLogger("localstore.kv")

ROTATION_BATCH = 64
# A pending key older than this was left by a crash between its row and its keychain write.
STALE_PENDING_KEY_S = 3600.0


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What :meth:`KVStore.rotate_data_key` did."""

    key_id: str
    reencrypted: int
    retired: tuple[str, ...]
    # Items left sealed with a data key the keychain does not have (a home copied to another
    # computer): kept as they are, readable again once the key is restored.
    unreadable: int = 0
    missing_keys: tuple[str, ...] = ()
    # Keys of items whose ciphertext did not decrypt (damaged, or sealed with a different key
    # than the keychain holds under its id): left as they are, their data key kept for them.
    damaged: tuple[str, ...] = ()
    # The key current when this rotation ended, when another process's rotation made it current
    # meanwhile (None when ``key_id`` is): that rotation re-seals the items and may have deleted
    # ``key_id`` from the keychain already. The key new items use is this one, then.
    overtaken_by: str | None = None


class _KVKeys(_KVCore):
    """Data keys: the current one, rotation, retiring (see ``localstore.kv.KVStore``)."""

    @staticmethod
    def _current_kid(cur: apsw.Cursor) -> str | None:
        rows = cur.execute("SELECT kid FROM kv_keys WHERE state = 'current'").fetchall()
        return str(rows[0][0]) if rows else None

    def _require_keys(self) -> DataKeys:
        if self._keys is None:
            raise KVError(
                "this store has no credentials for data keys",
                hint="pass credentials=CredentialStore(...) to KVStore",
            )
        return self._keys

    def _create_key(self, *, rotate: bool) -> str:
        """Add a data key (pending -> keychain -> current) and return the current key's id."""
        for _attempt in range(3):
            current = self._try_create_key(rotate=rotate)
            if current is not None:
                return current
        raise KVError(  # pragma: no cover - three keychain writes each outwaited the stale bound
            "cannot create a data key: another process kept taking it for a crash's leftover",
            hint="unlock the keychain (answer its prompt), then try again",
        )

    def _try_create_key(self, *, rotate: bool) -> str | None:
        """One attempt of :meth:`_create_key`; None if the new key was retired meanwhile."""
        keys = self._require_keys()
        kid = new_key_id()
        with self._index.write() as cur:
            if not rotate and (current := self._current_kid(cur)) is not None:
                return current
            cur.execute("INSERT INTO kv_keys VALUES (?, 'pending', ?)", (kid, self._clock()))
        keys.create(kid)  # outside any transaction: the keychain may write the index itself
        with self._index.write() as cur:
            pending = cur.execute(
                "SELECT 1 FROM kv_keys WHERE kid = ? AND state = 'pending'", (kid,)
            ).fetchall()
            current = self._current_kid(cur)
            if not pending:
                # The keychain write outwaited STALE_PENDING_KEY_S (a prompt left open over a
                # night): another process's recover_keys retired the row as a crash's leftover
                # and may have deleted the key already. Made current, everything sealed with it
                # could never be read again. Its row is put back as retired (the keychain item
                # may have landed after that process deleted it) and the caller starts over.
                cur.execute("INSERT OR IGNORE INTO kv_keys VALUES (?, 'retired', ?)", (kid, 0.0))
                current = None
            elif current is not None and not rotate:
                # Another process created the first key meanwhile: use it, retire ours.
                cur.execute("UPDATE kv_keys SET state = 'retired' WHERE kid = ?", (kid,))
            else:
                if current is not None:
                    cur.execute("UPDATE kv_keys SET state = 'retiring' WHERE kid = ?", (current,))
                cur.execute("UPDATE kv_keys SET state = 'current' WHERE kid = ?", (kid,))
                current = kid
        self._delete_retired()
        return current

    def _load_current_key(self) -> str | None:
        """Id of the current data key, its key now in memory (None before the first key).

        Raises KeyNotFoundError if the keychain lacks the key that is current.
        """
        kid = self.current_key_id()
        while kid is not None:
            try:
                self._require_keys().get(kid)
                return kid
            except KeyNotFoundError:
                # Another process's rotation may have made a new key current and retired this
                # one since we read the id (a save raised KeyNotFoundError so): take the new one.
                # Only while the current key changes, each change a rotation done elsewhere.
                latest = self.current_key_id()
                if latest == kid:
                    raise
                kid = latest
        return None

    def current_key_id(self) -> str | None:
        """Id of the data key new encrypted items use (None before the first one)."""
        self._check_open()
        if self._no_tables:
            return None
        with self._index.read() as cur:
            return self._current_kid(cur)

    def rotate_data_key(self) -> RotationReport:
        """Make a new data key current, re-seal every encrypted item, then retire unused keys.

        Crash-safe: an old key is deleted only after no item uses it; running this again
        finishes an interrupted rotation. Items whose key the keychain does not have (a home
        copied to another computer) are left as they are and counted in the report's
        ``unreadable`` and ``missing_keys``; their key stays listed, and once it is restored the
        next rotation re-seals them. New saves use the new key either way. A rotation another
        process's overtook names the key current at its end in ``overtaken_by``.
        """
        self._check_open()
        self._check_writable("rotate the app-data key")
        self.recover_keys()
        kid = self._create_key(rotate=True)
        count, looked_up, damaged = self._reseal_all(kid)
        retired = self._retire_unused()
        missing, unreadable = self._still_used(looked_up)
        if missing:
            log.warning(
                "app-data key rotation left %d items sealed with data keys missing from the "
                "keychain (%s): they stay on disk and are re-sealed once the keys are restored",
                unreadable,
                ", ".join(missing),
            )
        if damaged:
            log.warning(
                "app-data key rotation skipped %d items that do not decrypt (damaged, or sealed "
                "with another key than the keychain's): they keep their old data key",
                len(damaged),
            )
        # Read last: a rotation elsewhere that switched keys at any point up to here overtook
        # ours (its key is current, ours retiring or gone), and reporting ours as the new key
        # sent an app looking for a key that may be deleted.
        current = self.current_key_id()
        overtaken_by = None if current == kid else current
        log.info(
            "rotated app-data key to %s%s: %d items re-sealed, retired %s",
            kid,
            f" (overtaken by another rotation's {overtaken_by})" if overtaken_by else "",
            count,
            retired,
        )
        damaged_keys = tuple(sorted(damaged))
        return RotationReport(kid, count, retired, unreadable, missing, damaged_keys, overtaken_by)

    def _still_used(self, kids: set[str]) -> tuple[tuple[str, ...], int]:
        """Of ``kids`` (not found in the keychain), those items still use, and how many items.

        A key another process retired while the rotation read its items (its own rotation
        re-sealed them, or a purge, delete or save removed the last one) was not found either,
        rightly: no item uses it. Reported as missing, it sent people looking for a key that was
        gone by design. (A retiring key never gains items, so none used now is none for good.)
        """
        if not kids:
            return (), 0
        with self._index.read() as cur:
            rows = cur.execute(
                "SELECT key_id, count(*) FROM kv_items"
                f" WHERE key_id IN ({','.join('?' * len(kids))}) GROUP BY key_id",
                sorted(kids),
            ).fetchall()
        return tuple(sorted(str(r[0]) for r in rows)), sum(int(r[1]) for r in rows)

    def _reseal_all(self, kid: str) -> tuple[int, set[str], set[str]]:
        """Re-seal every item under ``kid``; return how many, missing key ids, damaged items."""
        keys = self._require_keys()
        count = 0
        missing: set[str] = set()
        damaged: set[str] = set()
        # Paged by key: each batch starts after the last key the previous one saw, so a skipped
        # item (damaged, or its key missing) is passed once and needs no variable of its own.
        # (A `key NOT IN (?, ...)` list of the damaged ones failed past SQLite's variable limit,
        # 32,766.) Items before `after` need no second look: they were re-sealed, skipped, or
        # changed by a save, which seals with the current key, `kid`, since before this started.
        after = ""
        while True:
            # One variable per data key id (a handful), not per item.
            skip = sorted(missing | {kid})
            with self._index.read() as cur:
                rows = cur.execute(
                    "SELECT key, value, key_id FROM kv_items WHERE key > ? AND key_id IS NOT NULL"
                    f" AND key_id NOT IN ({','.join('?' * len(skip))}) ORDER BY key LIMIT ?",
                    (after, *skip, ROTATION_BATCH),
                ).fetchall()
            if not rows:
                return count, missing, damaged
            after = str(rows[-1][0])
            resealed = []
            for k, v, old_kid in rows:
                try:
                    resealed.append(
                        (keys.reseal(bytes(v), kid, aad=_aad(str(k))), kid, str(k), bytes(v))
                    )
                except KeyNotFoundError:
                    # Not in this keychain (a copied home), or retired by another process after
                    # our read, with no item left using it (see _still_used): skipped either way.
                    missing.add(str(old_kid))
                except DecryptionError:
                    # One damaged item made every rotation fail here, half way, for good: its
                    # old key could never be retired. It is skipped (and keeps that key).
                    damaged.add(str(k))
            with self._write() as cur:
                if self._current_kid(cur) != kid:
                    # A newer rotation took over; it re-seals the rest.
                    return count, missing, damaged
                for new_value, new_kid, key, old_value in resealed:
                    # Compare-and-swap: a concurrent save already used the current key.
                    changed = cur.execute(
                        "UPDATE kv_items SET value = ?, key_id = ? WHERE key = ? AND value = ?"
                        " RETURNING key",
                        (new_value, new_kid, key, old_value),
                    ).fetchall()
                    count += len(changed)
                self._bump_generation(cur)

    def _retire_unused(self) -> tuple[str, ...]:
        with self._index.write() as cur:
            retiring = self._mark_unused_retired(cur)
        return tuple(sorted(set(retiring) | set(self._delete_retired())))

    @staticmethod
    def _mark_unused_retired(cur: apsw.Cursor) -> list[str]:
        """(in a write) Mark 'retiring' keys no item uses 'retired'; return their ids.

        A retiring key never gains items (saves and re-seals use the current one), so once none
        is left the key can go: _delete_retired then deletes it from the keychain and its row.
        """
        return [
            str(r[0])
            for r in cur.execute(
                "UPDATE kv_keys SET state = 'retired' WHERE state = 'retiring' AND NOT EXISTS"
                " (SELECT 1 FROM kv_items i WHERE i.key_id = kv_keys.kid) RETURNING kid"
            ).fetchall()
        ]

    @classmethod
    def _retire_if_unused(cls, cur: apsw.Cursor, kids: list[Any]) -> bool:
        """(in a write) After items sealed with ``kids`` went (deleted, purged, saved over):
        mark the retiring keys no item uses now 'retired'; whether any was.

        Only rotation retired keys before: one whose last items (skipped by it as damaged or
        missing their key, or left by an interrupted one) were then removed stayed in the
        keychain until the next rotation, for nothing, and with it the means to decrypt what
        the index file's free pages still hold of those items (SQLite has no secure_delete on).
        """
        sealed = sorted({kid for kid in kids if kid is not None})
        if not sealed:
            return False
        # A plain look first: nearly always the items went with the current key, and the UPDATE
        # ... RETURNING below opens a statement journal (tens of us) on every encrypted save.
        marks = ", ".join("?" * len(sealed))
        retiring = cur.execute(
            f"SELECT 1 FROM kv_keys WHERE state = 'retiring' AND kid IN ({marks}) LIMIT 1", sealed
        ).fetchall()
        return bool(retiring) and bool(cls._mark_unused_retired(cur))

    def _delete_retired_after(self, action: str) -> None:
        """Delete from the keychain the keys ``action`` (a save or delete) just retired.

        The write stands whatever happens here: a failure is logged, and the key (its row
        'retired') is deleted by the next purge, rotation or recover_keys(). A store without
        credentials leaves it to one with them, as its purge does.
        """
        if self._keys is None:
            return
        try:
            self._delete_retired()
        except LocalStoreError as exc:
            log.warning(
                "%s retired an old app-data key, but deleting it from the keychain failed (%s);"
                " the next purge, key rotation or recover_keys() deletes it",
                action,
                exc,
            )

    def _delete_retired(self) -> list[str]:
        """Delete 'retired' keys from the keychain, then their rows (idempotent after a crash)."""
        with self._index.read() as cur:
            kids = [
                str(r[0])
                for r in cur.execute("SELECT kid FROM kv_keys WHERE state = 'retired'").fetchall()
            ]
        if kids:
            keys = self._require_keys()
            for kid in kids:
                keys.delete(kid)
                with self._index.write() as cur:
                    cur.execute("DELETE FROM kv_keys WHERE kid = ? AND state = 'retired'", (kid,))
        return kids

    def recover_keys(self) -> None:
        """Finish what a crash interrupted: drop stale pending keys, delete retired ones."""
        self._check_open()
        if self._keys is None:
            return
        self._check_writable("recover app-data keys")
        with self._index.write() as cur:
            cur.execute(
                "UPDATE kv_keys SET state = 'retired' WHERE state = 'pending' AND created < ?",
                (self._clock() - STALE_PENDING_KEY_S,),
            )
        self._delete_retired()
