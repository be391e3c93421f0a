"""Verdicts of the app's validator: YAML judged ahead of a write's lock (``check_yaml``, a
save's texts before its transaction) and remembered by the bytes' hash, and the home's validator
with ``revalidate``. The layer above ``_StorePaths``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from localstore import files as fs
from localstore._revisions import revision_text
from localstore._store_args import _content_bytes, _flag_arg, _not_unicode
from localstore._store_paths import _StorePaths
from localstore._store_types import RevalidateReport, Row, SaveRequest
from localstore.blueprint import Validator, check_yaml, parse_yaml, run_validator
from localstore.errors import InvalidInputError, LocalStoreError, wrong_type

# The settings key of the home's validator: the name of the one the app last opened it with.
HOME_VALIDATOR_KEY = "validator"


# Blueprints judged per revalidate round: read, judged without the lock, then written at once.
_REJUDGE_ROWS = 200


# The most texts one write judges ahead of its lock (_judge_texts_ahead): half the memo of an
# app's validator, which drops only its older half when full, so none of them is lost before
# the write uses it.
JUDGED_AHEAD = 2_048


class _StoreJudge(_StorePaths):
    """The validator's verdicts, reached ahead of a write (the layer above ``_StorePaths``)."""

    def check_yaml(self, content: bytes | str) -> None:
        """Check YAML exactly as a save into this store would (its limits; InvalidYAMLError,
        LimitExceededError). A later save of the same bytes skips its own check (an import checks
        a whole bundle before writing any of it, then saves it). Text is checked as its UTF-8
        bytes; anything else is InvalidInputError."""
        if isinstance(content, str):
            try:
                content = content.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _not_unicode("content", exc, InvalidInputError) from exc
        elif not isinstance(content, bytes | bytearray | memoryview):
            raise wrong_type(
                "content",
                content,
                "YAML bytes or text",
                hint="pass the YAML file's bytes (or its text)",
            )
        self._judge_ahead(bytes(content))

    def _judge_ahead(self, raw: bytes) -> None:
        """Check ``raw`` and run the validator on it now, remembering the verdict for a save of
        the same bytes (raises what the save would for bad YAML).

        Callers do this before they take the index's write lock: a slow validator inside the
        write transaction made every other process's write wait for it (and past the busy
        timeout fail). The verdict is keyed by the bytes, so a save of anything else (the file
        changed in between) is judged again inside the lock: nothing stale is recorded.
        """
        digest = hashlib.sha256(raw).digest()
        validator = self.validator
        if self._known_verdict(digest, validator) is not None:
            return
        if validator is None:
            # Nothing will look at the parsed document: check it without building it.
            check_yaml(raw, self.limits)
            problems: tuple[str, ...] = ()
        else:
            problems = run_validator(validator, parse_yaml(raw, self.limits))
        self._remember_verdict(digest, validator, problems)

    def _known_verdict(self, digest: bytes, validator: Validator | None) -> tuple[str, ...] | None:
        """The remembered verdict of ``validator`` on the bytes with this sha256, or None; kept
        as the newest (a verdict looked up ahead again is about to be used)."""
        with self._judged_lock:
            known = self._judged.pop(digest, None)
            if known is None or known[0] is not validator:
                return None
            self._judged[digest] = known
            return known[1]

    def _remember_verdict(
        self, digest: bytes, validator: Validator | None, problems: tuple[str, ...]
    ) -> None:
        # Bounded: an import checks a whole bundle ahead; a verdict's problems are at most
        # MAX_PROBLEMS texts of MAX_PROBLEM_CHARS, so a full memo is some tens of MB at worst.
        # Full, the older half goes (not all of it): a write that judged up to JUDGED_AHEAD
        # texts ahead keeps every one of them (a sync page, a reconcile), where clearing the
        # memo lost the verdicts judged just before and judged them again inside the lock.
        with self._judged_lock:
            limit = 65_536 if validator is None else 4_096
            if len(self._judged) >= limit:
                for old in list(itertools.islice(self._judged, limit // 2)):
                    del self._judged[old]
            self._judged[digest] = (validator, problems)
            self._judged_count += 1

    def _judge_texts_ahead(self, contents: Iterable[str | bytes]) -> int:
        """Judge YAML texts a write is about to save with the app's validator, before it takes
        the write lock (see _judge_ahead); returns how many verdicts that remembered.

        For writes whose texts are known ahead but not as save requests: a sync pass's pulled
        rows and merge results (sync._apply.Applier.judge_ahead), the open-time reconcile's
        changed files. Bad YAML is left to the save, which refuses it inside as before. At most
        JUDGED_AHEAD texts: the memo keeps no more for certain; the rest are judged inside.
        """
        if self.validator is None:
            return 0  # the YAML check alone is fast: not worth a second one
        start = self._judged_count
        for n, content in enumerate(contents):
            if n >= JUDGED_AHEAD:
                break
            try:
                self._judge_ahead(_content_bytes(content))
            except (LocalStoreError, ValueError, TypeError):
                continue
        return self._judged_count - start

    def _merge_verdict(self, text: str, document: Mapping[str, Any]) -> tuple[str, ...]:
        """The validator's problems with a text a merge made (``document`` is its loaded data),
        remembered for the save of those bytes (sync.merge's ``judge``).

        A merge run before the write lock (Applier.judge_ahead) judges its results here; the
        same merge inside the lock, and the save of its result, then find the verdicts instead
        of running the validator in the transaction. Remembered only when the save's own check
        of the bytes (this store's limits) passes: a hit skips that check.
        """
        validator = self.validator
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            return run_validator(validator, document)  # (no save takes it either)
        digest = hashlib.sha256(raw).digest()
        known = self._known_verdict(digest, validator)
        if known is not None:
            return known
        problems = run_validator(validator, document)
        try:
            check_yaml(raw, self.limits)
        except LocalStoreError:
            return problems
        self._remember_verdict(digest, validator, problems)
        return problems

    def _row_verdict_holds(self, row: Row | None, digest: bytes) -> bool:
        """Whether ``row`` records this store's validator's verdict on the YAML with this sha256
        (by its name: a rule set has one name, and rules changed under it are judged again with
        revalidate(every=True), which rewrites every row)."""
        return (
            row is not None
            and not row.deleted
            and row.flagged is None
            and row.judged_by == self.validator_name
            and row.yaml_sha256 == digest.hex()
        )

    def _prejudge(self, requests: Sequence[SaveRequest]) -> None:
        """Judge the YAML of a batch's requests with the app's validator before the write lock
        (see _judge_ahead); a request whose YAML is bad or cannot be found is left to the save,
        which refuses it with the same error inside the lock."""
        if self.validator is None:
            return  # the YAML check alone is fast (~0.2 ms): not worth a second dump or read
        for req in requests:
            try:
                if req.content is None:
                    row = self._current_row(req)
                    if row is None or (
                        row.flagged is None and row.judged_by == self.validator_name
                    ):
                        # The save keeps the row's own verdict for the bytes it recorded (see
                        # _row_verdict_holds); a file edited since is recorded (and judged)
                        # first, inside.
                        continue
                    raw = self._read_current_yaml(row)
                else:
                    raw = _content_bytes(req.content)
                self._judge_ahead(raw)
            except (LocalStoreError, ValueError, TypeError, OSError):
                continue

    def revalidate(self, *, every: bool = False) -> RevalidateReport:
        """Judge blueprints again with this store's validator, and make it the home's.

        By default only those judged by another validator, or by none (an edit the daemon's
        watcher or the CLI recorded: they have no validator); ``every`` judges all (rules that
        changed under the same ``validator_name``; verdicts reached ahead of a save, by
        ``check_yaml``, are forgotten too). Records no revision and writes no file: a
        blueprint's current text is judged, and its ``valid`` and ``problems`` updated, also of
        a flagged one (its last good revision). A store without a validator makes the home
        have none: every blueprint counts as valid again (how an app drops its rules).

        The validator runs outside the write lock, a few hundred blueprints at a time; one
        changed meanwhile is left to the verdict its writer gave (counted in ``skipped``), and
        so is every one left when another store makes its validator the home's meanwhile.
        Raises InvalidInputError for a non-bool ``every``.
        """
        self._check_writable("judge blueprints again")
        _flag_arg("every", every)
        if every:
            # The rules changed under the same validator: a verdict reached ahead of a save
            # (check_yaml, _prejudge) is by the old ones, and would be taken for those bytes.
            with self._judged_lock:
                self._judged.clear()
        with self.index.write() as cur:
            if self.validator is None:
                cur.execute("DELETE FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,))
            else:
                cur.execute(
                    "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value WHERE value != excluded.value",
                    (HOME_VALIDATOR_KEY, self.validator_name),
                )
        return self._rejudge(
            "1" if every else "b.judged_by IS NOT ?", () if every else (self.validator_name,)
        )

    def home_validator(self) -> str | None:
        """The name of the home's validator (the one the app last opened it with), or None."""
        self._check_open()
        with self.index.read() as cur:
            row = cur.execute(
                "SELECT value FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _may_claim_home(self) -> bool:
        """Claim the home's validator for this store's if it has none; whether it is ours now.

        In one write, so an app that registers its validator meanwhile is never overwritten:
        the daemon's config may name the rules of an older (or newer) version of the app, and
        replacing the app's name would judge everything by them and hold the app's own edits.
        """
        with self.index.write() as cur:
            cur.execute(
                "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (HOME_VALIDATOR_KEY, self.validator_name),
            )
            row = cur.execute(
                "SELECT value FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,)
            ).fetchone()
        return row is not None and row[0] == self.validator_name

    def _rejudge(self, where: str, args: Sequence[Any]) -> RevalidateReport:
        """Judge the live rows matching ``where`` (over ``b``) again, in rounds."""
        report = RevalidateReport()
        after = 0
        while True:
            with self.index.read() as cur:
                rows = cur.execute(
                    "SELECT b.rid, b.path, b.rev, b.content_hash, b.valid, r.content "
                    "FROM blueprints b JOIN revisions r ON r.id = b.id AND r.rev = b.rev "
                    f"WHERE b.deleted = 0 AND b.rid > ? AND ({where}) ORDER BY b.rid LIMIT ?",
                    (after, *args, _REJUDGE_ROWS),
                ).fetchall()
            if not rows:
                return report
            after = int(rows[-1][0])
            verdicts = [(r, self._verdict(revision_text(r[5]).encode("utf-8"))) for r in rows]
            with self.index.write() as cur:
                home = cur.execute(
                    "SELECT value FROM settings WHERE key = ?", (HOME_VALIDATOR_KEY,)
                ).fetchone()
                if (home[0] if home is not None else "") != self.validator_name:
                    # Another store made its validator the home's while this one judged (an
                    # app opening beside the daemon's sync pass) and may have judged these
                    # rows already: written now, these verdicts by rules no longer the home's
                    # made the rows held again, the app's verdicts lost until its next open.
                    report.skipped += len(verdicts)
                    return report
                for (rid, path, rev, chash, was_valid, _), problems in verdicts:
                    cur.execute(
                        "UPDATE blueprints SET valid = ?, problems = ?, judged_by = ? "
                        "WHERE rid = ? AND rev = ? AND content_hash = ? AND deleted = 0",
                        (
                            int(not problems),
                            json.dumps(list(problems), ensure_ascii=False),
                            self.validator_name,
                            rid,
                            rev,
                            chash,
                        ),
                    )
                    if not cur.connection.changes():
                        report.skipped += 1  # written meanwhile: judged by its writer
                        continue
                    report.judged += 1
                    if bool(was_valid) != (not problems):
                        (report.now_valid if not problems else report.now_invalid).append(path)

    def _verdict(self, raw: bytes) -> tuple[str, ...]:
        """The problems this store's validator finds in a recorded revision's text."""
        if self.validator is None:
            return ()
        try:
            return run_validator(self.validator, parse_yaml(raw, self.limits))
        except LocalStoreError as exc:
            # A revision that no longer loads under this store's limits (lowered since).
            return (exc.message,)

    def _judge_files_ahead(self, rels: Iterable[str]) -> None:
        """Run the validator on the YAML files at ``rels`` before a write ingests them (an edit
        found unrecorded by a save, a delete or a restore, or by a sync pass): the ingest
        inside the lock uses the verdict only if it reads the very same bytes. A file that
        cannot be read here is left to the ingest, which reports it."""
        if self.validator is None:
            return
        texts: list[bytes] = []
        for rel in rels:
            try:
                texts.append(fs.read_regular(self.abspath(rel), self.limits.max_bytes))
            except (LocalStoreError, OSError):
                continue
        self._judge_texts_ahead(texts)
