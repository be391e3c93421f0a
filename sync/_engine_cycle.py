"""One sync cycle (``sync_once``): the session, server and identity checks, recovery of what a
kill or a rebuilt index left, push, pull and the extra rounds; the cycle's success or failure
recorded in the status and the index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import apsw

from localstore.blueprint import utc_now
from localstore.errors import LocalStoreError, NewerIndexError
from localstore.index import map_apsw_error
from sync import _state as st
from sync import account_record
from sync._engine_conditions import _local_condition, newer_index_detail
from sync._engine_push import _EnginePush
from sync._kept_merges import sweep_kept_merges
from sync._keychain_watch import keychain_failure
from sync._local import LAST_ERROR_STATE_KEY, SyncReport, SyncStateName
from sync._shown import MAX_SHOWN, shown
from sync.errors import AccountMismatchError, OfflineError, SyncError

log = logging.getLogger("sync.engine")

MAX_ROUNDS = 4


class _EngineCycle(_EnginePush):
    """Run one cycle and record how it ended."""

    def sync_once(self) -> SyncReport:
        """Push, pull and apply until nothing is left (bounded rounds); return what happened.

        Raises SyncError subclasses (each with an ``action``) and the store's errors; nothing is
        lost or skipped when it raises, and calling again resumes.
        """
        with self._cycle_held("sync_once"), self._guard():
            self._refreshed = False
            report = SyncReport()
            try:
                with _index_errors():
                    self._cycle(report)
                    # (Inside: a full or locked index can fail this write too, and is then
                    # recorded and classified like any failure of the cycle.)
                    self._record_success()
                self._record_bases(report)
            except BaseException as exc:
                if isinstance(exc, SyncError):
                    # The cloud failed or refused: the server that answers next may not be the
                    # one server_info described (see _check_server).
                    self._checked_server = False
                self._record_error(exc)
                raise
            return report

    def _cycle(self, report: SyncReport) -> None:
        newer = self.store.index.newer_version()
        if newer is not None:
            # Refused before anything goes to the server or into state/: the steps before the
            # first write only read (an idle poll takes no write lock until its end), and this
            # version must not push from tables a newer localstore upgraded. (One pragma when no
            # other connection committed; the writes check again, for an upgrade mid-cycle.)
            raise newer
        self._push_count, self._push_bytes = self.batch_size, self.batch_bytes
        self._reasked_for_refusal = False
        self._record_held_bases()  # before anything can fail on the network
        # Local upkeep, here so that a daemon offline for weeks does it too: old merges kept
        # for conflicts resolved since (an empty listing in the usual case).
        sweep_kept_merges(self.store, now=self.now())
        self._set_state("connecting")
        self._check_session()
        self._check_server()
        self._check_identity()
        self._recover_journal()
        self._recover_bases()
        # Before the check below asks whether there is anything to push: an edit another process
        # recorded unjudged is held until judged, and uncounted there it skipped the check and
        # went up in the push pass (which judges it too, for the later rounds' passes).
        self._judge_dirty()
        self._reconcile_before_push(report)
        self._push_pass(report)
        self._rerun_unblocked(report)
        self._pull_all(report)
        report.rounds = 1
        # Merges above made new local changes (merged texts, conflict copies, moved paths):
        # push them now rather than on the next poll; bounded, since other devices keep writing.
        while report.rounds < MAX_ROUNDS and self._pushable() > 0:
            if self._push_pass(report):
                self._pull_all(report)
            report.rounds += 1
        with self.store.index.read() as cur:
            report.held = st.held_count(cur)
            settled = st.conflicts_with_deleted_copy(cur)
        if settled:
            # Deleting the conflict copy (an editor, `localstore rm`, another device) is the
            # person's decision to keep the other version; left open, status counted the
            # record for good. The copy's text stays in history.
            with self.store.index.write() as cur:
                for cid in settled:
                    st.resolve_conflict(cur, cid, "copy deleted")
            log.info("sync: %d conflict(s) settled by deleting their copies", len(settled))

    def _check_session(self) -> None:
        """Before anything goes to the server: the remote's session must still be the stored one.

        A remote that can tell (``check_session``, SupabaseRemote: one stat of the session marker)
        raises SessionChangedError after a logout, or another user's login, since it was opened.
        """
        check = getattr(self.remote, "check_session", None)
        if callable(check):
            check()

    def _check_identity(self) -> None:
        """Sync only as the account this home belongs to (docs/sync-engine.md, "Identity").

        A home that synced with another user of the same project is refused
        (AccountMismatchError) unless that switch was accepted at login: its blueprints are not
        the new user's to upload. A new project (or an accepted switch) resets the server
        knowledge and uploads the home. The account is also kept besides the index
        (``sync.account_record``), so a rebuilt index (`check --fix`) keeps refusing.
        """
        identity = self.remote.identity
        state_dir = self.store.settings.paths.state
        if self._account is None:
            # Once per engine: afterwards this engine is the one that writes it.
            self._account = account_record.read(state_dir)
        recorded = self._account
        with self.store.index.read() as cur:
            # The usual poll: the index already names this account and the watermark was
            # recomputed, so the steps below would only read. Read without the write lock, which
            # every other process's writer waits for (the email as the write below reads it).
            same = self._settled and st.get_state(cur, "identity") == identity
            email = st.get_state(cur, st.EMAIL_PREFIX + identity) if same else None
        if not same:
            email = self._take_identity(identity, recorded)
        current = account_record.AccountRecord(identity, email)
        if current != recorded and account_record.write_quietly(state_dir, current):
            self._account = current

    def _take_identity(
        self, identity: str, recorded: account_record.AccountRecord | None
    ) -> str | None:
        """The writes of ``_check_identity`` (restore, refuse, reset, settle); the e-mail noted
        for ``identity``. Raises AccountMismatchError for another user of the project."""
        with self.store.index.write() as cur:
            if recorded is not None and st.restore_identity(cur, recorded.identity, recorded.email):
                # The index was rebuilt (`check --fix`): the account survives it.
                log.info("sync: this home's account taken from %s", account_record.RECORD_FILE)
            known = st.foreign_identity(cur, identity)
            if known is not None:
                raise AccountMismatchError(
                    f"this home's blueprints synced with {st.describe_account(cur, known)}; "
                    f"they are not uploaded to {st.describe_account(cur, identity)}, the other "
                    "account of this project logged in now",
                    code="account_mismatch",
                )
            if st.reset_for_identity(cur, identity):
                log.warning("sync: new remote %s; local blueprints will be uploaded", identity)
            email = st.get_state(cur, st.EMAIL_PREFIX + identity)
            if not self._settled:
                # Once per engine the watermark is recomputed from nothing: an index written by
                # an older version (no watermark) or copied around is never trusted blindly.
                st.settle(cur, rescan=True)
                self._settled = True
        return email

    def _record_success(self) -> None:
        self._last_error = self._last_hint = None
        self._keychain_failed = False
        with self.store.index.write() as cur:
            st.set_state(cur, "last_synced_at", utc_now())
            st.del_state(cur, "last_error")
            st.del_state(cur, LAST_ERROR_STATE_KEY)
            st.settle(cur)  # idle polls and status reads then look at no row
        self._set_state("idle", progress=None)

    def _record_error(self, exc: BaseException) -> None:
        if not isinstance(exc, Exception) or self._store_gone(exc):
            return  # KeyboardInterrupt / SystemExit, or a closed store: nothing to record
        condition = _local_condition(exc)
        self._last_hint = condition.hint if condition and condition.needs_person else None
        if isinstance(exc, NewerIndexError):
            # Not written to the index: the write would be refused too.
            self._last_error = newer_index_detail(exc)
            self._set_state("error", progress=None)
            return
        self._keychain_failed = keychain_failure(exc)
        if self._keychain_failed and condition is None and isinstance(exc, SyncError):
            # A locked keychain waits for a person, as a local condition does: the status's
            # hint says what to do ("unlock the login keychain"), not only last_error's text.
            self._last_hint = exc.hint or None
        if condition is not None:
            self._last_error = condition.describe(exc)
        else:
            # (A cloud error quotes the server: sync.supabase_remote escapes and cuts it; this
            # holds for any remote.)
            self._last_error = shown(str(exc) or type(exc).__name__, 4 * MAX_SHOWN)
        state: SyncStateName = "offline" if isinstance(exc, OfflineError) else "error"
        if condition is None or condition.record:
            try:
                with _index_errors(), self.store.index.write() as cur:
                    st.set_state(cur, "last_error", self._last_error)
                    st.set_state(cur, LAST_ERROR_STATE_KEY, state)  # `status` without an engine
            except LocalStoreError as err:  # the index failed too; the status still shows it
                if condition is None:
                    log.warning("sync: could not record the error in the index: %s", err)
                else:  # (a full disk: expected to fail as the cycle did)
                    log.debug("sync: could not record the error in the index: %s", err)
        self._set_state(state, progress=None)


@contextmanager
def _index_errors() -> Iterator[None]:
    """Translate apsw errors of sync's own statements (on index cursors) into the store's tree.

    localstore's Index maps the errors of BEGIN and COMMIT, not of the statements run inside a
    write (some callers catch apsw's there on purpose): a full index raised apsw.FullError out of
    sync_once(), where no caller could tell it was a full disk.
    """
    try:
        yield
    except apsw.Error as exc:
        raise map_apsw_error(exc, "write sync state to the index") from exc
