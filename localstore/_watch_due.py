"""Which pending paths are due, and which deletes wait: one part of ``Watcher`` (see
``_watch_state``).

A due path is judged present, gone (its grace over), nothing to do, or not yet (a file still
written, a lone YAML whose meta may follow, a pair that may be a move applied as copy then
delete). Deletes are let through only once their folder is quiet, a fence laid after the file
vanished has come back, and no file that may be the same blueprint moved is still settling;
moved files go first, so that a copy never takes a moved blueprint's identity.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from localstore import files as fs
from localstore._reconcile import moved_first
from localstore._watch_events import FENCE_RELAY_S
from localstore._watch_health import HEALTH_CHECK_S
from localstore._watch_ingest import _Ingest
from localstore._watch_state import _PathState, log

MAX_DELETE_HOLD_S = 5.0
# A delete is recorded only once nothing has vanished for this long under its folder (the
# nearest one still there): `rm -rf` of the blueprints folder is over by then, the folder gone.
# Not `write_quiet_ms`: that is set for slow writers, and would hold every delete as long.
DELETE_QUIET_S = 1.0


class _DuePaths(_Ingest):
    """Which pending paths are due, and which deletes wait (the layer above ``_Ingest``)."""

    def _process_due(self) -> None:
        while True:
            now = time.monotonic()
            present: list[str] = []
            gone: list[str] = []
            for key, st in list(self._pending.items()):
                if st.due > now:
                    continue
                verdict = self._verdict(key, st, now)
                if verdict == "present":
                    present.append(key)
                elif verdict == "gone":
                    gone.append(key)
                elif verdict == "drop":
                    del self._pending[key]
                    self._gated.discard(key)
                    if self._forget_failure(key):
                        self._update_ingest_problem()
            gone = self._hold_deletes(self._gate_deletes(self._quiet_deletes(gone, now), now), now)
            # (A folder that was just watched anew gets its rescan before any delete goes out.)
            if gone and (not self._check_observer() or self._rescan_wanted is not None):
                # Everything looks gone when the folder itself is: hold every delete until the
                # folder is back (or replaced by one with blueprints); then the paths are checked
                # again. Without this, a drive unmounted for a second deleted every blueprint.
                for key in gone:
                    self._pending[key].due = now + HEALTH_CHECK_S
                gone = []
            present = self._moves_first(sorted(present), now)
            if not present and not gone:
                return
            # Existing files first: a move's new path claims the identity before its old path is
            # looked at (which then finds nothing to delete).
            items = [(k, False) for k in present] + [(k, True) for k in sorted(gone)]
            for k, _ in items:
                del self._pending[k]
                self._gated.discard(k)
            for i in range(0, len(items), self.batch_size):
                self._ingest_batch(items[i : i + self.batch_size])

    def _moves_first(self, present: list[str], now: float) -> list[str]:
        """The due paths, those whose YAML has the inode the index recorded for a vanished
        path first (``moved_first``); none while such a moved file is still settling.

        ``cp m.* backup/; mv m.* z/``: in path order ``backup/m`` found ``m`` gone and took the
        blueprint's identity as a move (its history, tags and sync record), and the original,
        moved to ``z/``, got a new id. The copy is often due before the move (closed a moment
        earlier): it is then held until the move is due too (at most a settle window, and only
        while a vanished blueprint's very file is pending elsewhere), so they go in one batch,
        the move first. Pulling the move forward instead could ingest its YAML before its meta
        had followed it.
        """
        vanished = [k for k, st in self._pending.items() if st.vanished_at is not None]
        if not present or not vanished:
            return present
        gone = self._recorded_inos(vanished)
        if not gone:
            return present
        taken = set(present)
        settling = [
            st.due
            for k, st in self._pending.items()
            if k not in taken
            and st.vanished_at is None
            and not st.writing
            and st.due > now  # (one due now was judged already: present, or rescheduled)
            and self._yaml_ino(k) in gone
        ]
        if settling:
            release = max(settling)
            for k in present:
                self._pending[k].due = max(self._pending[k].due, release)
            return []
        moved_first(present, self._yaml_ino, gone)
        return present

    def _recorded_inos(self, paths: Iterable[str]) -> set[int]:
        """The YAML inodes the index recorded for the live blueprints at ``paths``."""
        with self.store.index.read() as cur:
            return {
                int(r[0])
                for key in paths
                for r in cur.execute(
                    "SELECT yaml_ino FROM blueprints WHERE path = ? AND deleted = 0 "
                    "AND yaml_ino IS NOT NULL",
                    (key,),
                )
            }

    def _quiet_deletes(self, gone: list[str], now: float) -> list[str]:
        """Let a delete through only once nothing has vanished for ``DELETE_QUIET_S`` under the
        nearest folder of it still standing; the others are due again when it will be quiet.

        ``rm -rf`` of the blueprints folder removes file by file for seconds, the folder
        itself last: each delete recorded once its grace was over, while the folder was still
        there, was pushed by sync to every device (about a third of the blueprints; the rest
        was then held as a folder away). Held until the deleting stops, the deletes find the
        folder gone (``_process_due`` holds them as before). A sub-folder's own files are
        judged under the folder above it once it is gone, so a big ``rm -rf team`` records
        them all once it ends. A vanish undone (a save dance) no longer counts.
        """
        standing: dict[str, str] = {}
        latest: dict[str, float] = {}
        ready = []
        for key in gone:
            folder = self._standing_folder(os.path.dirname(key), standing)
            if folder not in latest:
                latest[folder] = self._last_vanish_below(folder)
            quiet_at = latest[folder] + DELETE_QUIET_S
            if now >= quiet_at:
                ready.append(key)
            else:
                self._pending[key].due = quiet_at
        return ready

    def _standing_folder(self, folder: str, known: dict[str, str]) -> str:
        """``folder`` (relative) or its nearest parent that is still there ("": the root)."""
        if folder not in known:
            up = folder
            while up and not os.path.isdir(self.root / up):
                up = os.path.dirname(up)
            known[folder] = up
        return known[folder]

    def _last_vanish_below(self, folder: str) -> float:
        """When the latest pending vanish under ``folder`` (relative; "": everywhere) was seen."""
        prefix = f"{folder}/" if folder else ""
        return max(
            (
                st.vanished_at
                for key, st in self._pending.items()
                if st.vanished_at is not None and key.startswith(prefix)
            ),
            default=0.0,
        )

    def _gate_deletes(self, gone: list[str], now: float) -> list[str]:
        """Let a delete through only once a fence laid after its file was found gone has come back.

        A rename is done before its source is found missing, so both of its events are in the
        kernel queue before such a fence; inotify keeps order, so by the time the fence is seen the
        destination is pending and ``_hold_deletes`` keeps the delete back until it is ingested.
        Without the fence the destination could still be in flight: watchdog pairs a move's two
        halves for only 0.5 s, and when the second half comes later (a stalled thread under load)
        it reports the source deleted and, later, the destination created. A delete ingested in
        between lost the blueprint's identity (about one case-only rename in 1,000 under load).
        """
        passed = [k for k in gone if 0 < self._pending[k].gate <= self._fence_seen]
        waiting = [k for k in gone if not 0 < self._pending[k].gate <= self._fence_seen]
        if not waiting:
            return passed
        try:
            n = self._lay_fence()
        except OSError as exc:
            # No fence, no events from this folder either (it is gone or read-only): the rescan
            # and the hold are all there is; waiting would only stall every delete.
            log.warning("cannot lay a fence in %s (%s); deleting without one", self.root, exc)
            return gone
        for key in waiting:
            st = self._pending[key]
            st.gate = n
            # Re-checked when the fence comes back; if it was lost (overflow), a new one then.
            st.due = now + FENCE_RELAY_S
            self._gated.add(key)
        return passed

    def _hold_deletes(self, gone: list[str], now: float) -> list[str]:
        """Keep deletes back while a file that appeared is still settling: it may be the same
        blueprint moved (its YAML matched by hash or its meta by id); deleting first would lose
        the identity. Bounded, so a folder that never settles still gets its deletes."""
        waiting = [st.due for st in self._pending.values() if st.vanished_at is None]
        if not gone or not waiting:
            return gone
        release = min(waiting) + self.settle_s
        kept = []
        for key in gone:
            st = self._pending[key]
            assert st.vanished_at is not None
            if now < st.vanished_at + self.grace_s + MAX_DELETE_HOLD_S:
                st.due = release
            else:
                kept.append(key)
        return kept

    def _verdict(self, key: str, st: _PathState, now: float) -> str:
        """'present', 'gone' (grace over), 'drop' (nothing to do) or 'wait' (rescheduled)."""
        if not self._ignore.scans(key) and not self._indexed(key):
            # Pending from before the ignore rules took it out (a pattern just added): a new
            # blueprint is never made of an ignored file.
            return "drop"
        try:
            y = os.stat(self.root / key, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):  # (ENOTDIR: a folder of it is a file)
            if not self._indexed(key):
                # Nothing indexed here (our own delete's echo, a temp that came and went): no
                # delete to hold back; if the file comes back, its event schedules it again.
                return "drop"
            if st.vanished_at is None:
                st.vanished_at = now
            if now < st.vanished_at + self.grace_s:
                st.due = st.vanished_at + self.grace_s
                return "wait"
            return "gone"
        except OSError:
            return "present"  # the ingest reports the read error and retries
        if st.quiet_s and not st.writing:
            # Found by a rescan, not by a close: a file modified moments ago may still be written.
            age = time.time() - y.st_mtime
            if 0 <= age < st.quiet_s:
                st.due = now + (st.quiet_s - age)
                return "wait"
        if not os.path.lexists(self.root / fs.meta_path_for(key)):
            if self._yaml_as_recorded(key, y):
                # Only its meta went: the watcher cannot tell a meta deleted alone from a folder
                # deleted file by file (`rm -rf`, in no pair order, maybe stalled for seconds
                # between the two files). Written back, the meta landed after `rm` had listed
                # the folder, and `rm` failed ("Directory not empty"); no quiet wait rules that
                # out. The open's reconcile and `check --fix` write it (`check` reports it).
                return "drop"
            if (wait := self._lone_yaml_wait(y)) > 0:
                st.due = now + wait
                return "wait"
        elif (wait := self._copy_wait(key, y)) > 0:
            st.due = now + wait
            return "wait"
        return "present"

    def _lone_yaml_wait(self, y: os.stat_result) -> float:
        """Seconds to hold a YAML found without its meta; 0 to ingest it (its meta is written).

        A YAML written moments ago: a tool writing the pair (unzip, scp, git checkout or rebase)
        is likely to bring its meta next. Ingested at once, it got a new id and a meta written
        by us; the real meta then replaced it, and the store recorded a junk blueprint created
        and deleted (which sync pushed), or git refused the next checkout over the meta we had
        left. Its age counts from its last status change too (a rename sets st_ctime; on
        Windows that field is the creation time, also "now" for a tool's temp file): sync tools
        (Syncthing, Dropbox, rsync -t) give the file the other device's older mtime, so an
        mtime-only age let the lone YAML through at once. An mtime in the future (the other
        device's clock ahead) says nothing of when the file changed here: it made the age
        negative, and the YAML went through at once all the same.
        """
        wall = time.time()
        age = wall - (y.st_ctime if y.st_mtime > wall else max(y.st_mtime, y.st_ctime))
        return self.write_quiet_s - age if 0 <= age < self.write_quiet_s else 0.0

    def _yaml_as_recorded(self, key: str, y: os.stat_result) -> bool:
        """Whether the YAML at ``key`` has the stat the live row there recorded (unchanged)."""
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT yaml_size, yaml_mtime_ns, yaml_ctime_ns, yaml_ino FROM blueprints "
                "WHERE path = ? AND deleted = 0",
                (key,),
            ).fetchall()
        return bool(rows) and fs.stat_unchanged(y, *rows[0])

    def _copy_wait(self, key: str, y: os.stat_result) -> float:
        """Seconds to hold a pair that arrived less than the delete grace ago and would be taken
        for a copy of a live pair now (``Reconciler.copied_from``); 0 to ingest it.

        A sync tool (Syncthing, and others that do the same) applies a move made on another
        device as "write the pair at the new path, then delete the old one", the delete often
        well past the settle window. Taken at once, the new pair found the old one still live
        with its id, and the copy rule gave it a new id and rewrote its meta; the old id was
        then recorded deleted (history split, sync pushed a delete and a create, the rewritten
        meta went back to the other device). Held until the grace is over, the ingest finds the
        old pair gone (a move: id and history kept, an edit a new revision) or still there (a
        copy, as before). The age counts from the pair's last status change (a rename into
        place or a write sets it; sync tools set the other device's older mtime).
        """
        try:
            m = os.stat(self.root / fs.meta_path_for(key), follow_symlinks=False)
        except OSError:
            return 0.0
        age = time.time() - max(y.st_ctime, m.st_ctime)
        if not 0 <= age < self.grace_s:
            return 0.0
        with self.store.index.read() as cur:
            if self._copies.copied_from(cur, key) is None:
                return 0.0
        return self.grace_s - age
