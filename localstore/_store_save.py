"""save and save_many: a batch's items prepared (bytes, meta, verdict), checked, written and
recorded in one transaction, run again without an item a hook refused or after recording an
edit met on the way. The layer above ``_StoreFiles``.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw

from localstore import files as fs
from localstore._kept_edits import keep_flagged, note_kept
from localstore._store_args import (
    _composed_request,
    _content_bytes,
    _flag_arg,
    _hook_arg,
    _meta_text_arg,
    _no_nul,
    _not_unicode,
    _origin_arg,
    _requests_arg,
    _rev_arg,
    _tags_arg,
)
from localstore._store_files import _StoreFiles
from localstore._store_types import (
    Row,
    SaveRequest,
    TxHook,
    _Batch,
    _ItemRefused,
    _Prepared,
    _RecordFirst,
)
from localstore.blueprint import (
    MAX_META_BYTES,
    Blueprint,
    BlueprintMeta,
    check_yaml,
    content_hash,
    dump_yaml,
    encode_meta,
    is_uuid,
    new_id,
    parse_yaml,
    run_validator,
    sha256_hex,
    utc_now,
)
from localstore.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidMetaError,
    LocalStoreError,
    NotFoundError,
    RevisionConflictError,
)
from localstore.index import WriteOutcome, map_apsw_error

# The errors that fail one item of a batch (the others go on); anything else aborts the batch.
_ITEM_ERRORS = (InvalidInputError, AlreadyExistsError, RevisionConflictError, NotFoundError)


# A local batch runs again once for each file another program saved (or created) between the
# batch's check of it and its placing, after recording that program's version (as before), and
# at most this many more times in all for files it meets again (an editor's autosave): then it
# fails with files.KeptChangingError (see _save_batch). A run again places such a file right
# after its item, so its window is one item's write (~1 ms, the temps' fsyncs), not the rest of
# the batch: an editor saving every second meets it again only by chance, and one file saved in
# that window 5 runs in a row is one a program keeps rewriting. (In all, not per file: a program
# rewriting the whole folder over and over must not make a batch of N run 5N times.)
_RACE_REPEATS_MAX = 4


def _file_seen(path: str) -> tuple[int, int, int, int] | None:
    """What is at ``path`` (inode, size, modification and change times), None if nothing: a
    batch's run again compares it with the last race's to tell a new save from none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _not_a_blueprint(rel: str) -> AlreadyExistsError:
    """The refusal of a save over a file no blueprint is recorded for and none can be: its YAML
    or meta does not parse (writing over it would lose it with no revision anywhere)."""
    return AlreadyExistsError(
        f"{rel} is taken by a file that is not a valid blueprint (it is not in the "
        "index, so saving here would destroy it)",
        hint="fix or move that file first (see 'localstore check'), or save under another path",
    )


def _moves_to_a_new_name(row: Row, rel: str) -> bool:
    """Whether a save of the live ``row`` at ``rel`` moves its pair to another name (not only
    to another case or Unicode form of its own, whose meta file is the pair's)."""
    return fs.path_key(row.path) != fs.path_key(rel)


def _check_id_and_hook(req: SaveRequest) -> None:
    """Refuse a request whose id is not a UUID or whose tx_hook is not callable (raises
    InvalidInputError)."""
    if req.id is not None and (not isinstance(req.id, str) or not is_uuid(req.id.lower())):
        raise InvalidInputError(
            f"{req.id!r} is not a valid blueprint id",
            hint="leave id out for a new blueprint, or give an existing one's UUID as text",
        )
    if req.tx_hook is not None:
        _hook_arg(req.tx_hook)


def _check_expected_rev(rel: str, existing: Row | None, expected_rev: int | None) -> None:
    """Refuse a save whose ``expected_rev`` is not the revision of ``existing`` (raises
    RevisionConflictError)."""
    if expected_rev is not None and (existing.rev if existing else 0) != expected_rev:
        raise RevisionConflictError(
            f"{rel} is at revision {existing.rev if existing else 0}, not {expected_rev}",
            hint="load it again and reapply your change",
        )


def _run_hook(hook: TxHook, cur: Any, bp: Blueprint) -> None:
    """Run an item's tx_hook; an _ITEM_ERRORS it raises refuses the item (_ItemRefused)."""
    try:
        hook(cur, bp)
    except _ITEM_ERRORS as exc:
        raise _ItemRefused(exc) from exc


def _content_text(rel: str, content: str | bytes | Mapping[str, Any]) -> tuple[str | None, bytes]:
    """The content a save writes to ``rel``: as text when it came as text (or was dumped), else
    None; and its bytes. Raises InvalidInputError for a lone surrogate or another type."""
    text: str | None = None  # the content as text, when it came as text (or was dumped)
    try:
        if isinstance(content, str):
            text = content
        elif isinstance(content, Mapping):
            text = dump_yaml(content)
        raw = text.encode("utf-8") if text is not None else _content_bytes(content)
    except UnicodeEncodeError as exc:
        raise _not_unicode(f"{rel}: the content", exc, InvalidInputError) from exc
    return text, raw


def _meta_file_bytes(rel: str, meta: BlueprintMeta) -> bytes:
    """The meta file a save writes beside ``rel``. Raises InvalidMetaError for a lone surrogate
    or a file over MAX_META_BYTES."""
    try:
        meta_bytes = encode_meta(meta)
    except UnicodeEncodeError as exc:
        raise _not_unicode(f"{rel}: the meta", exc, InvalidMetaError) from exc
    if len(meta_bytes) > MAX_META_BYTES:
        # Written, it could not be read back: reconcile would flag the blueprint, and sync
        # could not push what no store reads.
        raise InvalidMetaError(
            f"{rel}: the meta file would be {len(meta_bytes):,} bytes, over the"
            f" {MAX_META_BYTES:,}-byte limit of meta files",
            hint="shorten the description, tags or extra meta fields",
        )
    return meta_bytes


class _StoreSave(_StoreFiles):
    """save and save_many (the layer above ``_StoreFiles``)."""

    # -- save --------------------------------------------------------------------------------------

    def _prepare(
        self,
        rel: str,
        content: str | bytes | Mapping[str, Any],
        meta: BlueprintMeta,
        prior: Row | None = None,
    ) -> _Prepared:
        text, raw = _content_text(rel, content)
        digest = hashlib.sha256(raw).digest()  # (the YAML's sha256 too: the row keeps it)
        problems = self._save_verdict(raw, digest, prior)
        if text is None:
            # (Cannot fail: the checks, here or in _judge_ahead, refuse bytes that are not UTF-8.)
            text = raw.decode("utf-8")
        meta_bytes = _meta_file_bytes(rel, meta)
        return _Prepared(
            path=rel,
            yaml_bytes=raw,
            meta=meta,
            meta_bytes=meta_bytes,
            content_hash=content_hash(raw, meta),
            valid=not problems,
            problems=problems,
            judged_by=self.validator_name,
            text=text,
            yaml_sha256=digest.hex(),
        )

    def _save_verdict(self, raw: bytes, digest: bytes, prior: Row | None) -> tuple[str, ...]:
        """The validator's problems with the YAML a save writes (``digest`` its sha256), judged
        ahead, recorded in ``prior``'s row or judged now. Raises InvalidYAMLError,
        LimitExceededError."""
        validator = self.validator
        # Looked up, not taken out: another item of the same write may save the same bytes (a
        # pulled page or an import of blueprints made from one template). Taken out, the first
        # used the verdict reached ahead and every other was judged again inside the lock.
        known = self._known_verdict(digest, validator)
        if known is not None:
            problems = known  # judged before the lock (_judge_ahead): these very bytes
        elif validator is not None and self._row_verdict_holds(prior, digest):
            # The row's own verdict on these very bytes, by this validator's name (a move, a
            # meta-only save, a conflict's blueprint moved aside): judging them again inside
            # the lock would only make every other writer wait. Still checked against this
            # store's limits, as any save is.
            assert prior is not None
            check_yaml(raw, self.limits)
            problems = prior.problems
        elif validator is None:
            # Nothing will look at the parsed document: check it without building it (most of a
            # save's CPU time went into constructing Python objects nobody used).
            check_yaml(raw, self.limits)
            problems = ()
        else:
            problems = run_validator(validator, parse_yaml(raw, self.limits))
        return problems

    def _merge_meta(
        self,
        base: BlueprintMeta | None,
        rel: str,
        blueprint_id: str | None,
        meta: BlueprintMeta | Mapping[str, Any] | None,
        fields: Mapping[str, Any],
        keep_modified: bool,
    ) -> BlueprintMeta:
        # The clock is read only when a time is filled in (a download's metas carry both), once.
        now = ""
        if meta is not None:
            if not isinstance(meta, BlueprintMeta | Mapping):
                raise InvalidMetaError(
                    f"meta must be a BlueprintMeta or a mapping, not {type(meta).__name__}",
                    hint="pass meta=blueprint.meta (or its to_dict()), or the name=/tags=/... "
                    "keywords",
                )
            m = meta if isinstance(meta, BlueprintMeta) else BlueprintMeta.from_dict(meta)
            # As for save's keywords: saved, a NUL could never sync (the cloud's jsonb holds none).
            for key in ("name", "description", "author", "version"):
                text = getattr(m, key)
                if isinstance(text, str):
                    _no_nul(f"meta {key}", text)
            for tag in m.tags:
                if isinstance(tag, str):
                    _no_nul("the tag", tag)
            if base is not None and m.id != base.id:
                raise InvalidInputError(
                    f"meta id {m.id} does not match the blueprint's id {base.id}",
                    hint="the id of a blueprint never changes",
                )
        elif base is not None:
            m = base
        else:
            now = utc_now()
            m = BlueprintMeta(
                id=blueprint_id or new_id(), name=fs.display_name(rel), created=now, modified=now
            )
        changes = {k: v for k, v in fields.items() if v is not None}
        # (Anything else was written and then refused by every read of the meta file, or taken
        # as something else: tags=[5] became the tag "5".)
        for key in ("public", "encrypted"):
            if key in changes:
                _flag_arg(key, changes[key])
        for key in ("name", "description", "author", "version"):
            if key in changes:
                _meta_text_arg(key, changes[key])
        if "tags" in changes:
            changes["tags"] = _tags_arg(changes["tags"])
        if changes:
            m = m.replace(**changes)
        if not m.created:
            now = now or utc_now()
            m = m.replace(created=(base.created if base and base.created else now))
        if not (keep_modified and m.modified):
            m = m.replace(modified=now or utc_now())
        return m

    def save(
        self,
        path: fs.StrPath,
        content: str | bytes | Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        author: str | None = None,
        version: str | None = None,
        tags: Sequence[str] | None = None,
        public: bool | None = None,
        encrypted: bool | None = None,
        meta: BlueprintMeta | Mapping[str, Any] | None = None,
        id: str | None = None,
        origin: str = "local",
        expected_rev: int | None = None,
        tx_hook: TxHook | None = None,
    ) -> Blueprint:
        """Create or update the blueprint at ``path`` (or with ``id``, moving it to ``path``).

        Text content is stored byte for byte (comments and formatting kept); a mapping is dumped as
        YAML. ``content=None`` keeps the current YAML (a meta-only change). Saving identical content
        again is a no-op that returns the current revision. ``tx_hook(cursor, blueprint)`` runs inside
        the index transaction (sync uses it to record its base atomically).

        Raises InvalidYAMLError, LimitExceededError, InvalidMetaError, UnsafePathError,
        AlreadyExistsError (path taken by another blueprint), RevisionConflictError (expected_rev is
        stale), StorageError (the previous version stays intact).
        """
        self._check_open()
        _origin_arg(origin)
        if expected_rev is not None:
            _rev_arg("expected_rev", expected_rev)
        fields = {
            "name": name,
            "description": description,
            "author": author,
            "version": version,
            "tags": tags,
            "public": public,
            "encrypted": encrypted,
        }
        request = SaveRequest(
            path=path,
            content=content,
            meta=meta,
            id=id,
            fields=fields,
            expected_rev=expected_rev,
            tx_hook=tx_hook,
        )
        result = self._save_batch([request], origin, strict=True)[0]
        assert isinstance(result, Blueprint)
        return result

    def save_many(
        self, requests: Sequence[SaveRequest], *, origin: str = "local"
    ) -> builtins.list[Blueprint | LocalStoreError]:
        """Save many blueprints in one transaction with few disk flushes (sync and import use it).

        Each result is the saved Blueprint, or the error of an item with bad input (the other items
        go on). A storage failure aborts the whole batch, restores what was there, and raises. A crash
        is survived per blueprint: after a kill each item is either as before or fully saved (the
        renames that happened are recorded by reconcile on the next open), never a half pair.
        """
        self._check_open()
        _origin_arg(origin)
        return self._save_batch(_requests_arg(requests), origin, strict=False)

    def _save_batch(
        self, requests: Sequence[SaveRequest], origin: str, *, strict: bool
    ) -> builtins.list[Blueprint | LocalStoreError]:
        """Save ``requests`` in one transaction, run again as the handlers below say.

        Kept whole: its handlers share the race counts that bound its runs (_RACE_REPEATS_MAX).
        """
        self._check_writable("save")
        requests = self._requests_judged(requests, origin)
        refused: dict[int, LocalStoreError] = {}
        recorded_first = None if origin == "remote" or self.index.write_open else set[str]()
        # Per file found taken or changed at its placing: how many times, and the file found
        # there the last time (see _file_seen).
        races: dict[str, tuple[int, tuple[int, int, int, int] | None]] = {}
        repeats = 0  # (runs again for a file met before: bounded by _RACE_REPEATS_MAX)
        # The path keys of those files: a run again places each right after its item.
        place_at_once: set[str] = set()
        settled: set[str] = set()  # (see _Batch.settled)
        orphans_kept: dict[str, tuple[str, Path, str]] = {}  # (see _Batch.orphans_kept)
        while True:
            try:
                results = self._save_attempt(
                    requests, origin, refused, recorded_first, settled, place_at_once, orphans_kept
                )
                break
            except _RecordFirst as first:
                assert recorded_first is not None  # (raised only when it is a set)
                self._commit_batch_edits(requests, first.rel, recorded_first)
            except fs.NameTakenError as taken:
                # Another program (an editor, which takes no lock of ours) created a name this
                # attempt found free, or saved over a file it had checked, between its look and
                # its placing the file there: nothing of it was replaced (a changed file is
                # back in place, see files.replace_recorded), the attempt was undone, and it
                # runs again. That one finds the file, as any unrecorded file at a save's
                # target: recorded first (or in the batch), then saved over with its version in
                # history, or the item refused.
                if isinstance(taken, fs.TargetChangedError) and taken.set_aside:
                    self._keep_set_aside(taken.set_aside, taken.target)
                rel = self._rel_of(taken.target)
                count, before = races.get(taken.target, (0, None))
                seen = _file_seen(taken.target)
                if count and (origin == "remote" or seen == before):
                    # Taken again with nothing new there: a name the folder's listing cannot
                    # show (a Windows short name). Or a download's again, whose next attempt
                    # refused that item (it never reaches a file it found edited). Reported
                    # (nothing changed) rather than tried forever.
                    raise
                if count and repeats == _RACE_REPEATS_MAX:
                    # Another program saved this file again on run after run: still saving
                    # it. Its latest version is recorded too (as each before it), so history
                    # holds every one, and nothing of the batch was written.
                    if recorded_first is not None:
                        self._commit_batch_edits(requests, rel, recorded_first)
                    raise fs.KeptChangingError(
                        taken.target, rel, count + 1, recorded=recorded_first is not None
                    ) from taken
                # Another program's save (an autosaving editor) or a new file of its since the
                # last attempt: its version is recorded, and the batch runs again, that file
                # placed right after its item (the window narrowed from the rest of the batch
                # to one item), up to _RACE_REPEATS_MAX more times. Before, a second race on
                # the same file failed the batch: an editor autosaving every second during a
                # batch of a second or more made local saves fail almost every time.
                repeats += 1 if count else 0
                races[taken.target] = (count + 1, seen)
                if origin != "remote":  # (a download's next attempt refuses that item instead)
                    place_at_once.add(fs.path_key(rel))
                if recorded_first is not None:
                    self._commit_batch_edits(requests, rel, recorded_first)
                elif origin == "remote":
                    # The next attempt records that file inside and refuses its item: settled
                    # first (the swap meets an in-place editor at its truncate: read at once,
                    # the empty file was recorded, an invalid revision; see _await_settled, which
                    # inside a caller's transaction waits under its lock, at most
                    # _SETTLE_WAIT_MAX_S, only in this race), then judged, its ingest taking
                    # the verdict.
                    self._await_settled([rel])
                    settled.add(rel)
                    self._judge_unrecorded_ahead([rel])
            except _ItemRefused as refusal:
                # A hook refused its item after the item was written: the attempt was undone
                # (index and files), and runs again without that item, so the refused item
                # leaves nothing behind. Rejected: a SAVEPOINT per item with a hook, which cost
                # ~300 us a blueprint (its statement journal) for a refusal that is rare.
                refused[refusal.position] = refusal.error
        if strict and isinstance(results[0], LocalStoreError):
            raise results[0]
        return results

    def _requests_judged(
        self, requests: Sequence[SaveRequest], origin: str
    ) -> Sequence[SaveRequest]:
        """The batch's ``requests`` as it saves them, judged before the write lock."""
        if origin == "local":
            # What the app hands in, typed on any system: macOS text fields and file names give
            # decomposed (NFD) text, others composed (NFC). Stored as one form, a tag filter or a
            # search word typed on another device finds it. Not what sync, merge or import
            # apply: those carry another device's content hash, which a change would break.
            requests = [_composed_request(r) for r in requests]
        # Before the write lock: a slow validator must not hold every other writer up.
        self._prejudge(requests)
        if origin == "remote" and self.validator is not None:
            self._judge_unrecorded_ahead(self._request_paths(requests), self._new_path_check())
        return requests

    def _commit_batch_edits(
        self, requests: Sequence[SaveRequest], first: str, recorded_first: set[str]
    ) -> None:
        """Commit the unrecorded edit at ``first`` and at every other path of the batch that
        holds one, before the batch runs again (see _record_first)."""
        # Every path, not only the one met: one at a time, a batch over N edited files (a git
        # pull with no watcher, then the app rewriting them) ran N+1 attempts, each writing and
        # undoing the files of every item before the one that stopped it (N squared writes).
        todo = [first] + [
            rel
            for rel in self._unrecorded_paths(
                self._request_paths(requests), new_files=self._new_path_check()
            )
            if rel not in recorded_first and rel != first
        ]
        recorded_first.update(todo)
        self._commit_ingest(todo)

    def _rel_of(self, target: str) -> str:
        """The YAML path (relative, '/'-separated) of the pair that holds the file ``target``."""
        rel = os.path.relpath(target, self._root_str).replace(os.sep, "/")
        return fs.yaml_path_for(rel) if rel.endswith(fs.META_SUFFIX) else rel

    def _save_attempt(
        self,
        requests: Sequence[SaveRequest],
        origin: str,
        refused: Mapping[int, LocalStoreError],
        recorded_first: set[str] | None = None,
        settled: set[str] | None = None,
        place_at_once: Collection[str] = frozenset(),
        orphans_kept: dict[str, tuple[str, Path, str]] | None = None,
    ) -> builtins.list[Blueprint | LocalStoreError]:
        """One run of a batch. ``place_at_once``: the path keys whose files another program
        saved or created at their placing in an earlier run (see _save_batch), placed right
        after their item's write."""
        batch = self._new_batch(len(requests), recorded_first, settled, orphans_kept)
        pending = batch.pending
        outcome = WriteOutcome()
        try:
            with self.index.write(outcome) as cur:
                results = self._save_items(cur, requests, origin, refused, batch, place_at_once)
                self._place_files(cur, batch)
        except BaseException as exc:
            if outcome.done:
                # Raised once the index committed (Ctrl-C right after the COMMIT, a commit
                # listener): the files are what the index holds, so they stay, and the save is
                # finished as one that returned; undone, the next open recorded them as deleted
                # (or edited back), and sync pushed that.
                self._saved(batch, pending)
            else:
                self._undo_attempt(batch)
            if isinstance(exc, apsw.Error):  # never leaks out of the public API
                raise map_apsw_error(exc, "save") from exc
            raise
        self._saved(batch, pending)
        return results

    def _new_batch(
        self,
        count: int,
        recorded_first: set[str] | None,
        settled: set[str] | None,
        orphans_kept: dict[str, tuple[str, Path, str]] | None,
    ) -> _Batch:
        """The _Batch of one run of ``count`` requests (see _save_attempt for the others)."""
        pending = fs.PendingWrites(
            expected_files=2 * count,
            flusher=self._flusher,
            # On a nearly full disk the replaced files are kept until the commit: a failed one
            # is then undone by renames, where rewriting from history would need free space.
            keep_previous=fs.space_is_low(self._root_str),
        )
        return _Batch(
            pending,
            recorded_first=recorded_first,
            settled=set() if settled is None else settled,
            orphans_kept={} if orphans_kept is None else orphans_kept,
        )

    def _save_items(
        self,
        cur: Any,
        requests: Sequence[SaveRequest],
        origin: str,
        refused: Mapping[int, LocalStoreError],
        batch: _Batch,
        place_at_once: Collection[str],
    ) -> builtins.list[Blueprint | LocalStoreError]:
        """Save each request but the ``refused`` ones (their errors are their results) in the
        transaction; an item's bad input is its result. Raises _ItemRefused (its position set)."""
        results: builtins.list[Blueprint | LocalStoreError] = []
        for position, request in enumerate(requests):
            if position in refused:
                results.append(refused[position])
                continue
            try:
                saved = self._save_one(cur, request, origin, batch)
            except _ITEM_ERRORS as exc:
                # Bad input is found before anything of this item touches the disk. The
                # transaction still commits (also for a single save): an unrecorded edit
                # ingested before the refusal must stay in history.
                results.append(exc)
                continue
            except _ItemRefused as refusal:
                refusal.position = position
                raise
            results.append(saved)
            if place_at_once and fs.path_key(saved.path) in place_at_once:
                # (Only in a run again after a race: one more flush there, none here.)
                self._place_files(cur, batch)
        return results

    def _undo_attempt(self, batch: _Batch) -> None:
        """Put back the files of a save attempt whose write failed before its commit."""
        # Whatever failed after files were written (a flush, the index commit, a hook),
        # the previous versions are put back so the caller's error means "nothing
        # changed".
        batch.pending.settle()
        batch.pending.abort()
        batch.pending.restore_previous()
        self._undo_touched(batch.touched, batch.ingested, batch.pending.placed, batch.orphans)
        self._keep_undone(batch.pending)

    def _saved(self, batch: _Batch, pending: fs.PendingWrites) -> None:
        """Finish a save attempt whose write committed (or was released into a caller's)."""
        pending.settle()  # (after the commit: the unlinks ran beside it)
        if batch.touched:
            # Inside a caller's transaction (the sync engine's pass) this write was only a
            # savepoint: if that transaction rolls back later, these files must go back too, or
            # they stay on disk with no index row (a conflict copy that reconcile then adopts as
            # a new blueprint). Dropped at once when this write was the outermost (committed).
            touched, written, ingested = batch.touched, batch.written, batch.ingested
            orphans = batch.orphans
            self.index.undo_on_rollback(
                lambda: self._undo_released(touched, written, ingested, pending, orphans)
            )
        if pending.kept:
            # Kept until the outermost commit (at once if this write was it); on a rollback
            # the undo above puts them back instead and drops the rest.
            self.index.after_commit(pending.discard_previous)
        self.events.publish(batch.events)

    def _save_one(self, cur: Any, req: SaveRequest, origin: str, batch: _Batch) -> Blueprint:
        """Save one item in the batch's transaction (raises _ITEM_ERRORS, _ItemRefused)."""
        rel = fs.normalize_path(req.path)
        _check_id_and_hook(req)
        if fs.path_key(rel) in batch.keys or (req.id or "").lower() in batch.keys:
            # An earlier item of this batch wrote this blueprint or path: put its files in place
            # first, so renames and reads below see the disk as the index describes it.
            self._place_files(cur, batch)
        existing, holder = self._find_for_save(cur, rel, req.id)
        if existing is None or existing.deleted or existing.path != rel:
            self._check_new_name(rel, batch)  # (a path already indexed passed this when it came)
        target = self._abspath_in(rel, batch)
        if existing is not None and not existing.deleted:
            yaml_abs = target if existing.path == rel else self._abspath_in(existing.path, batch)
            if self._edited_on_disk(existing, yaml_abs):
                # An editor's change the watcher has not recorded yet (none running, or inside
                # its settle window): record it before deciding anything, so expected_rev and
                # the identical-save check compare with the disk, and nothing is overwritten
                # unseen. A stat pair per save; reading the files every time was the rejected
                # alternative.
                on_disk = existing.path
                recorded = self._ingest_unrecorded(cur, on_disk, batch)
                if recorded and origin == "remote":
                    self._refuse_remote(on_disk)
                self._refuse_not_files(on_disk)  # (here: a stat pair differed, no cost per save)
                existing, holder = self._find_for_save(cur, rel, req.id)
        if (existing is None or existing.deleted or existing.path != rel) and self._may_exist(
            target, batch
        ):
            # A file the index has not seen yet (an editor was faster than the watcher, or it
            # was created where a deleted blueprint lived): record it in history before anything
            # is decided, so the path check below sees it and nothing is overwritten unseen.
            recorded = self._ingest_unrecorded(cur, rel, batch)
            existing, holder = self._find_for_save(cur, rel, req.id)
            if recorded and holder is not None and origin == "remote":
                self._refuse_remote(rel)
            if holder is None and os.path.lexists(target):
                self._refuse_not_files(rel, indexed=False)
                # The file could not be recorded (its YAML or meta does not parse, or it is not a
                # regular file): writing over it would lose it with no revision anywhere.
                raise _not_a_blueprint(rel)
        _check_expected_rev(rel, existing, req.expected_rev)
        if existing is None or existing.deleted or existing.path != rel:
            # (A live row at exactly this path owns the path's case-folded key already.)
            owner = existing.id if existing else req.id
            self._check_path_free(cur, rel, owner, batch, target, holder)
            if origin in ("local", "import"):
                # Not for what sync applies: the server has the path already, and refusing it
                # here would leave this device out of step for good (a Linux device's ``q/``
                # beside another's ``Q/`` is a real pair of folders there).
                leaving = existing.path if existing is not None and not existing.deleted else None
                self._check_folders_case(cur, rel, batch.folders, leaving)
        prepared = self._prepared_for(cur, rel, req, origin, existing)
        if existing is not None and existing.holds(rel, prepared.content_hash):
            bp = self._blueprint_from(existing, prepared.text)
        else:
            bp = self._write_item(cur, existing, prepared, origin, batch, target)
        if req.tx_hook is not None:
            _run_hook(req.tx_hook, cur, bp)
        return bp

    def _check_new_name(self, rel: str, batch: _Batch) -> None:
        """Refuse a path new to this save that the scan never looks at (_check_scanned) or
        that no Windows device could hold (files.check_new_name). Raises UnsafePathError."""
        if batch.rules is None:
            batch.rules = fs.IgnoreRules.for_root(self.root)
        self._check_scanned(rel, batch.rules)
        fs.check_new_name(rel)

    def _ingest_unrecorded(self, cur: Any, rel: str, batch: _Batch) -> bool:
        """Record the unrecorded pair at ``rel``: committed first if the batch can (raises
        _RecordFirst), else settled and recorded in its transaction (see _ingest_first)."""
        self._record_first(batch, rel)
        self._settle_first(batch, rel)
        return self._ingest_first(cur, rel, batch)

    def _prepared_for(
        self, cur: Any, rel: str, req: SaveRequest, origin: str, existing: Row | None
    ) -> _Prepared:
        """The pair ``req`` saves at ``rel`` over ``existing``: its content (None: the current
        YAML's) and its meta merged. Raises InvalidInputError, AlreadyExistsError (the meta's
        id is another blueprint's) and what _prepare raises."""
        content = req.content
        if content is None:
            if existing is None or existing.deleted:
                raise InvalidInputError(f"{rel} does not exist yet: give content to create it")
            content = self._read_current_yaml(existing)
        keep_modified = req.meta is not None and origin in ("remote", "import", "merge")
        base_meta = existing.meta if existing else None
        new_meta = self._merge_meta(base_meta, rel, req.id, req.meta, req.fields, keep_modified)
        if existing is None and req.meta is not None and new_meta.id != (req.id or "").lower():
            self._check_id_free(cur, rel, new_meta.id)
        return self._prepare(rel, content, new_meta, existing)

    def _write_item(
        self,
        cur: Any,
        existing: Row | None,
        prepared: _Prepared,
        origin: str,
        batch: _Batch,
        target: str,
    ) -> Blueprint:
        """Write the item ``prepared`` (not what ``existing`` holds) at ``target``: the files a
        save replaces kept first where no revision holds them, then the pair (_commit_pair)."""
        rel = prepared.path
        batch.touched.append((existing, rel))
        batch.keys.update((fs.path_key(rel), prepared.meta.id))
        if existing is not None:
            batch.keys.add(fs.path_key(existing.path))
        # (A flagged row's attribute: no file is read for any other save.)
        kept = self._keep_flagged(cur, existing, batch) if existing and existing.flagged else ""
        if existing is None or existing.deleted or _moves_to_a_new_name(existing, rel):
            orphan = self._keep_orphan_meta(cur, rel, target, batch, existing)
            kept = "; ".join(filter(None, (kept, orphan)))
        mark = len(batch.events)
        bp = self._commit_pair(cur, existing, prepared, origin, batch, target)
        if kept:
            batch.events[mark:] = [
                dataclasses.replace(e, detail=e.detail or kept) for e in batch.events[mark:]
            ]
        return bp

    def _keep_flagged(self, cur: Any, row: Row, batch: _Batch) -> str:
        """Before a save replaces a flagged pair (a file that does not parse: its bytes are in
        no revision), keep them in <data>/recovered/ (see _kept_edits); returns the event's note.

        The bytes also become the batch's to put back: a failed save's undo otherwise wrote the
        last good revision over the person's file (it differs from the row's hashes)."""
        # (A link or folder in a file's place reads as missing: the save replaces the name.)
        yaml_bytes, meta_bytes = self._read_pair(row.path)
        if yaml_bytes is not None:
            batch.ingested.setdefault(row.path, (yaml_bytes, meta_bytes))
        return keep_flagged(self._as_store, cur, row, yaml_bytes, meta_bytes, "a save replaced")

    def _keep_orphan_meta(
        self, cur: Any, rel: str, target: str, batch: _Batch, existing: Row | None
    ) -> str:
        """Before a save creates the pair at ``rel`` (or moves ``existing``'s there) where a meta
        file sits without its YAML (an orphan: the YAML deleted by hand, another blueprint's meta
        copied there), keep that file as reconcile would (see _reconcile.orphan_home); returns
        the event's sentence ('' when nothing was kept). Raises StorageError.

        Written over, its bytes were gone, in no revision and no report. Only the leftover of an
        interrupted move (its blueprint lives elsewhere, its bytes a version the store has) is
        replaced quietly, as reconcile removes it; any other is copied to <data>/recovered/ and
        noted (check reports it until deleted). The batch then replaces only that very file,
        and puts it back if it fails (after a kill before the commit, check reports the copy,
        whose note rolled back, as one without a note: see _kept_edits.report_kept)."""
        from localstore._reconcile import keep_orphan_meta, orphan_home

        meta_abs = fs.meta_path_for(target)
        if not self._may_exist(meta_abs, batch):  # (a download's new names: its listing)
            return ""
        try:
            raw, seen = fs.read_regular_seen(meta_abs)
        except FileNotFoundError:  # (or a folder or link there: the write refuses it, says why)
            return ""
        batch.orphans[meta_abs] = (seen, raw)
        meta_rel = fs.meta_path_for(rel)
        lives, leftover = orphan_home(cur, meta_rel, raw)
        if leftover:
            return ""
        digest = sha256_hex(raw)
        done = batch.orphans_kept.get(meta_abs)
        if done is not None and done[0] == digest:
            kept, detail = done[1], done[2]
            note_kept(cur, self.paths.data, kept, meta_rel, detail)
        else:
            live = existing is not None and not existing.deleted
            when = (
                f"a move brought {fs.printable(existing.path)} there" if live and existing else ""
            )
            kept, detail = keep_orphan_meta(
                self._as_store, cur, meta_rel, raw, lives, when or f"a save created {rel}"
            )
            batch.orphans_kept[meta_abs] = (digest, kept, detail)
        return f"a meta file without its YAML was at its name; kept at {kept}"
