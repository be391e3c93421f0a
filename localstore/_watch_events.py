"""Raw events into per-path due times: one part of ``Watcher`` (see ``_watch_state``).

Each watchdog event is mapped to the YAML path it is about and sets that path's due time (see
the table in ``watcher``'s docstring); a folder's event does so for every path under it. Fences
(files laid in the folder whose event says every earlier one was seen) and the ignore file's
saves, waited out before its rules are read again, are handled here too.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from watchdog import events as wd_events
from watchdog.events import FileSystemEvent

from localstore import files as fs
from localstore._listing import below
from localstore._watch_health import _FolderHealth
from localstore._watch_state import _ignore_file_sig, _PathState, log
from localstore.errors import LocalStoreError

FENCE_RELAY_S = 5.0
_FENCE_PREFIX = ".lswatch-"


class _EventIntake(_FolderHealth):
    """Raw events into per-path due times (the layer above ``_FolderHealth``)."""

    def _on_fs_event(self, ev: FileSystemEvent, now: float) -> None:
        src = os.fsdecode(ev.src_path)
        dest = os.fsdecode(ev.dest_path) if ev.dest_path else ""
        if self._is_fence(src):
            self._release_gated(now)
            return
        synthetic = getattr(ev, "is_synthetic", False)
        if not ev.is_directory:
            self._rules_event(ev.event_type, src, dest, now)
        if ev.is_directory:
            # watchdog adds synthetic events for sub-folders; the top folder's event covers them.
            if not synthetic:
                self._on_dir_event(ev, src, dest, now)
            return
        if ev.event_type == wd_events.EVENT_TYPE_MOVED:
            if not fs.swapped_out(src, dest):
                # (A save that replaced the file swaps it out to its temp's name while the new
                # version takes its place, the other half of that swap: never a vanish, whose
                # grace would hold the echo's check back 400 ms instead of the settle's 40.)
                self._vanish(self._key(src), now)
            self._appear(self._key(dest), now)
        elif ev.event_type == wd_events.EVENT_TYPE_DELETED:
            self._vanish(self._key(src), now)
        elif ev.event_type == wd_events.EVENT_TYPE_CLOSED:
            self._appear(self._key(src), now)
        elif ev.event_type == wd_events.EVENT_TYPE_CREATED and synthetic:
            # Listed inside a folder that appeared: complete unless a write event says otherwise.
            key = self._key(src)
            if key is not None:
                self._found_by_rescan(key, now, missing=False)
        elif ev.event_type in (wd_events.EVENT_TYPE_CREATED, wd_events.EVENT_TYPE_MODIFIED):
            self._writing(self._key(src), now)
        elif ev.event_type == getattr(wd_events, "EVENT_TYPE_ATTRIB", "attrib"):
            self._touched(self._key(src), now)

    def _on_dir_event(self, ev: FileSystemEvent, src: str, dest: str, now: float) -> None:
        if ev.event_type == getattr(wd_events, "EVENT_TYPE_ATTRIB", "attrib"):
            if self._unlistable:  # a chmod or chown may have made it readable: look now
                self._rescan_wanted = "folder-permissions"
            return
        if ev.event_type in (wd_events.EVENT_TYPE_CREATED, wd_events.EVENT_TYPE_MOVED):
            # watchdog watches a new folder, or silently does not (the watch limit): look.
            self._watch_check_due = True
        if src and ev.event_type in (wd_events.EVENT_TYPE_DELETED, wd_events.EVENT_TYPE_MOVED):
            # (No source: moved in from outside the tree; see _new_observer.)
            if os.path.abspath(src) == str(self.root):
                log.error("the blueprints folder %s itself went away", self.root)
                self._rescan_wanted = "root-gone"
                return
            self._vanish_tree(src, now)
        if ev.event_type == wd_events.EVENT_TYPE_MOVED and dest:
            self._appear_tree(dest, now, strong=True)
        elif ev.event_type == wd_events.EVENT_TYPE_MOVED and self._stale_since is None:
            self._stale_since = now  # moved out of the tree: its watches went with it
        elif ev.event_type == wd_events.EVENT_TYPE_CREATED:
            self._appear_tree(src, now, strong=False)

    def _lay_fence(self) -> int:
        n = next(self._fence_counter)
        if self._observer is None:
            # Rescan-only mode: no event would bring a fence file back. The worker's queue keeps
            # order as inotify does, so a fence queued behind the work stands for it.
            self._q.put(("fence", n))
            return n
        fence = self.root / f"{_FENCE_PREFIX}{self._token}-{n}{fs.TEMP_SUFFIX}"
        os.close(os.open(fence, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        # (A scanner opens a new file on Windows: a plain unlink failed the flush or sync.)
        fs.unlink_file(fence)
        return n

    def _is_fence(self, abs_path: str) -> bool:
        name = os.path.basename(abs_path)
        prefix = f"{_FENCE_PREFIX}{self._token}-"
        if not name.startswith(prefix):
            return False
        with contextlib.suppress(ValueError):
            n = int(name[len(prefix) : -len(fs.TEMP_SUFFIX)])
            with self._cond:
                self._fence_seen = max(self._fence_seen, n)
                self._idle = False  # not idle until this round's work is done
        return True

    def _fence_back(self, n: int, now: float) -> None:
        """A fence queued in rescan-only mode reached the worker (see ``_lay_fence``)."""
        with self._cond:
            self._fence_seen = max(self._fence_seen, n)
            self._idle = False
        self._release_gated(now)

    def _release_gated(self, now: float) -> None:
        """A fence came back: the deletes that waited for it are due again."""
        for key in list(self._gated):
            st = self._pending.get(key)
            if st is None or st.gate == 0:
                self._gated.discard(key)
            elif st.gate <= self._fence_seen:
                st.due = min(st.due, now)
                self._gated.discard(key)

    def _rules_event(self, kind: str, src: str, dest: str, now: float) -> None:
        """An event of the ignore file: read its rules again once the save is done.

        Editors save it as any file: vim renames it away and writes a new one, VS Code truncates
        it and writes. Read at the first event, the rules came from a missing or empty file
        (the default patterns alone), and the rescan that followed took every pair in an
        ignored folder for a new blueprint (``created`` events that sync pushed, meta files
        written into that folder). So a save is waited out as a blueprint's is: the settle
        window after a close or a move-in, the quiet period while written, the delete grace
        after a vanish; the rules in force meanwhile are the old ones.
        """
        ignore = str(self.root / fs.IGNORE_FILE_NAME)
        if dest == ignore:
            delay, self._rules_writing = self.settle_s, False  # moved in: complete
        elif src != ignore:
            return
        elif kind in (wd_events.EVENT_TYPE_MOVED, wd_events.EVENT_TYPE_DELETED):
            delay, self._rules_writing = self.grace_s, False
        elif kind in (wd_events.EVENT_TYPE_CREATED, wd_events.EVENT_TYPE_MODIFIED):
            delay, self._rules_writing = self.write_quiet_s, True
        elif kind == wd_events.EVENT_TYPE_CLOSED:
            delay, self._rules_writing = self.settle_s, False
        elif self._rules_writing:
            return  # an attribute change mid-write: the close or the quiet period decides
        else:
            delay = self.settle_s
        self._rules_at = now + delay

    def _rules_due(self, now: float) -> None:
        """Read the ignore file's rules if its save is done and the file changed; rescan then."""
        if self._rules_at is None or now < self._rules_at:
            return
        self._rules_at, self._rules_writing = None, False
        sig = _ignore_file_sig(self.root)
        if sig != self._rules_sig:
            self._rules_sig = sig
            self._ignore = fs.IgnoreRules.for_root(self.root)
            self._rescan_wanted = "ignore-rules"

    def _look_at_rules(self, now: float) -> None:
        """At a rescan: take an ignore file changed without an event (rescan-only mode, a network
        file system, a change while stopped) once it is settled, as ``_rules_event`` would; a
        save under way keeps the rules in force until then."""
        # The same patterns, anew: the rules cache each folder's verdict, and a long-running
        # watcher sees folders come and go (the rescan used to read the file each time).
        self._ignore = fs.IgnoreRules(self._ignore.patterns)
        if self._rules_at is not None:
            return  # a save is being waited out
        sig = _ignore_file_sig(self.root)
        if sig == self._rules_sig:
            return
        if sig is None:
            self._rules_at = now + self.grace_s  # gone, or renamed away by a save
            return
        age = time.time() - max(sig[1], sig[2]) / 1e9
        if 0 <= age < self.write_quiet_s:
            self._rules_at = now + (self.write_quiet_s - age)
            return
        self._rules_sig = sig
        self._ignore = fs.IgnoreRules.for_root(self.root)

    def _key(self, abs_path: str) -> str | None:
        """The YAML path a raw event is about, or None if it is not a blueprint file we track."""
        try:
            rel = Path(abs_path).relative_to(self.root).as_posix()
        except ValueError:
            return None
        if rel == fs.IGNORE_FILE_NAME:
            return None  # (its rules: _rules_event)
        if rel.endswith(fs.META_SUFFIX):
            yaml_rel = fs.yaml_path_for(rel)
        elif rel.endswith(fs.YAML_SUFFIX):
            yaml_rel = rel
        else:
            return None
        # The full scan's own rules (IgnoreRules.scans): hidden folders, side files.
        if not self._ignore.scans(rel):
            return None
        return yaml_rel if _canonical(yaml_rel) else None

    def _state_for(self, key: str, now: float) -> _PathState:
        st = self._pending.get(key)
        if st is None:
            st = self._pending[key] = _PathState(due=now)
        return st

    def _appear(self, key: str | None, now: float) -> None:
        """Closed after writing, or moved in: complete; ingest after the settle window."""
        if key is None:
            return
        st = self._state_for(key, now)
        st.writing = False
        st.vanished_at = None
        st.gate = 0
        st.quiet_s = 0.0
        st.due = now + self.settle_s

    def _writing(self, key: str | None, now: float) -> None:
        """Created or written without a close yet: wait for the close (or a quiet period)."""
        if key is None:
            return
        st = self._state_for(key, now)
        st.writing = True
        st.vanished_at = None
        st.gate = 0
        st.due = now + self.write_quiet_s

    def _touched(self, key: str | None, now: float) -> None:
        """Attributes changed (touch, chmod): cheap to check once settled, unless mid-write."""
        if key is None:
            return
        st = self._state_for(key, now)
        if not st.writing:
            st.vanished_at = None
            st.due = now + self.settle_s

    def _vanish(self, key: str | None, now: float) -> None:
        """Deleted or moved away: hold for the grace period (an editor may be saving)."""
        if key is None:
            return
        st = self._state_for(key, now)
        st.writing = False
        st.vanished_at = now
        st.gate = 0  # a new vanish: its move partner may be behind any fence laid so far
        # Only an indexed blueprint can be deleted by mistake; anything else is looked at at once.
        st.due = now + self.grace_s if self._indexed(key) else now

    def _found_by_rescan(self, key: str, now: float, *, missing: bool) -> None:
        if key in self._pending:
            return  # events already drive it
        if missing:
            self._vanish(key, now)
        else:
            st = self._state_for(key, now)
            st.due = now + self.settle_s
            st.quiet_s = self.write_quiet_s

    def _vanish_tree(self, abs_dir: str, now: float) -> None:
        try:
            low, high = below(Path(abs_dir).relative_to(self.root).as_posix())
        except ValueError:
            return
        with self.store.index.read() as cur:
            paths = [
                str(r[0])
                for r in cur.execute(
                    # (One range of the path index; an emoji-named sub-folder is in it too.)
                    "SELECT path FROM blueprints WHERE deleted = 0 AND path >= ? AND path < ?",
                    (low, high),
                )
            ]
        paths += [k for k in self._pending if k.startswith(low)]
        for rel in paths:
            self._vanish(rel, now)

    def _appear_tree(self, abs_dir: str, now: float, *, strong: bool) -> None:
        unlistable: list[tuple[str, OSError]] = []
        for rel, _ in fs.walk_blueprint_files(
            Path(abs_dir), fs.IgnoreRules(()), unlistable=unlistable
        ):
            key = self._key(os.path.join(abs_dir, rel))
            if key is None:
                continue
            if strong:
                self._appear(key, now)
            else:
                self._found_by_rescan(key, now, missing=False)
        if unlistable:
            # The rescan reports it (state DEGRADED) and keeps what is under it as unknown.
            self._rescan_wanted = "unlistable-folder"

    def _indexed(self, key: str) -> bool:
        # By the path itself, not its key: a row core v11 kept under a key of its own
        # (index._v11_path_keys) is indexed at its path all the same.
        with self.store.index.read() as cur:
            rows = cur.execute(
                "SELECT 1 FROM blueprints WHERE path = ? AND deleted = 0",
                (key,),
            ).fetchall()
        return bool(rows)


def _canonical(rel: str) -> bool:
    """Whether ``rel`` is a path the store would save under (anything else is not tracked)."""
    try:
        return fs.normalize_path(rel) == rel
    except (LocalStoreError, ValueError):
        # ValueError: a name that is not valid UTF-8 (surrogate escapes) fails to encode; it is
        # not a blueprint the store could hold, and it must not stop the watcher.
        return False
