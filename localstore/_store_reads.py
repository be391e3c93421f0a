"""Reads: load (what the files hold when the index lags them), exists, list, count and search.
The layer above ``_StoreSave``.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from localstore import files as fs
from localstore._folder_filter import folder_filter
from localstore._listing import INFO_COLUMNS, collector_paused, infos, one_snapshot
from localstore._revisions import revision_text
from localstore._store_args import (
    _SQL_INT_MAX,
    SORT_COLUMNS,
    _count_arg,
    _flag_arg,
    _folder_arg,
    _order_sql,
    _tag_arg,
    _tag_forms,
)
from localstore._store_save import _StoreSave
from localstore._store_search import _folder_rows, _fts_queries, _Search
from localstore._store_types import Row, SearchHit
from localstore.blueprint import (
    MAX_META_BYTES,
    Blueprint,
    BlueprintInfo,
    BlueprintMeta,
    check_yaml,
    content_hash,
    decode_meta,
    encode_meta,
    sha256_hex,
)
from localstore.errors import (
    InvalidInputError,
    LocalStoreError,
    NotFoundError,
    RevisionNotFoundError,
)


def _lstat_or_none(path: str) -> os.stat_result | None:
    """The file's own stat (a link's, not its target's), or None if nothing has the name
    (also when one of its folders is a file now: ENOTDIR, the file is gone as surely)."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _meta_stale(row: Row, m_st: os.stat_result | None) -> bool:
    """True when the meta file is not as indexed (gone, or there for a row indexed without)."""
    if m_st is None:
        return row.meta_size != -1  # (-1: indexed without a meta file, a flagged row)
    return not fs.stat_unchanged(
        m_st, row.meta_size, row.meta_mtime_ns, row.meta_ctime_ns, row.meta_ino
    )


def _sort_arg(sort: object) -> None:
    """Raise InvalidInputError for a sort list() does not know."""
    # (isinstance first: a list or dict as the sort was a raw "unhashable type" TypeError.)
    if not isinstance(sort, str) or sort not in SORT_COLUMNS:
        raise InvalidInputError(
            f"cannot sort by {sort!r}", hint=f"use one of {', '.join(SORT_COLUMNS)}"
        )


def _tag_join(tags: Sequence[str]) -> str:
    """list()'s JOIN to the blueprints holding one of the tag's forms ("" for no tag)."""
    if len(tags) == 1:
        return " JOIN blueprint_tags t ON t.rid = b.rid AND t.tag = ?"
    if tags:  # (a blueprint may hold both forms: joined once)
        marks = ", ".join("?" * len(tags))
        join = f" JOIN (SELECT DISTINCT rid FROM blueprint_tags WHERE tag IN ({marks})) t"
        return join + " ON t.rid = b.rid"
    return ""


class _StoreReads(_StoreSave):
    """load, list, count and search (the layer above ``_StoreSave``)."""

    # -- load --------------------------------------------------------------------------------------

    def load(self, ref: fs.StrPath) -> Blueprint:
        """Read a blueprint (its YAML verbatim and its meta). Raises NotFoundError, AmbiguousRefError.

        If its YAML or meta file changed on disk since it was indexed (an edit not yet seen by a
        watcher), the change is ingested first, so what is returned always matches the files;
        except an empty YAML (an editor's in-place save before its write), which is left to the
        watcher and the next reconcile: the last good revision is returned, as for a file that
        does not parse. While a Watcher runs on this store, a YAML that vanished is left to it
        too (an editor's save may rename it away and write it anew; the watcher gives that a
        grace period) and the last revision is returned; without one its delete is recorded
        and NotFoundError raised. While a Watcher runs, a change it has pending or younger than
        its write-quiet period (1 s) is left to it as well (it waits for the write to end; half
        an in-place save that parses was recorded): the file's current text is returned with
        the last recorded ``rev`` and meta, unrecorded (the last revision if it does not parse).
        Without a watcher nothing tells when a write ends: the change is recorded at once;
        unless another process (the daemon, an app) runs a watcher on this home (a CLI command
        beside it): a change younger than that watcher's write-quiet period is then left to it
        too, and so is a vanished YAML whose folder changed within its delete grace.
        """
        self._check_open()
        row = self._load_row(ref)
        yaml_abs = str(self.abspath(row.path))
        meta_abs = yaml_abs[: -len(fs.YAML_SUFFIX)] + fs.META_SUFFIX
        # Both files' stats, taken before any read: an edit landing after them is seen by the
        # next look. The meta's counts as much as the YAML's (its name, tags and description
        # are the blueprint's too): a meta edited while no watcher ran was served stale.
        st = _lstat_or_none(yaml_abs)
        m_st = _lstat_or_none(meta_abs)
        yaml_stale = st is None or not fs.stat_unchanged(
            st, row.yaml_size, row.yaml_mtime_ns, row.yaml_ctime_ns, row.yaml_ino
        )
        meta_stale = _meta_stale(row, m_st)
        if yaml_stale or meta_stale:
            served = self._served_unrecorded(row, yaml_abs, meta_abs, st, m_st, meta_stale)
            if served is not None:
                return served
            row = self._ingest_change(row)
        return self._blueprint_from(row, self._current_text(row, yaml_abs))

    def _load_row(self, ref: fs.StrPath) -> Row:
        """The row load() reads. Raises NotFoundError (on a read-only store saying so of a
        blueprint file the index does not hold yet), AmbiguousRefError."""
        with self.index.read() as cur:
            try:
                return self._resolve(cur, ref)
            except NotFoundError:
                if self.read_only_reason is not None:
                    self._refuse_unindexed(ref)
                raise

    def _served_unrecorded(
        self,
        row: Row,
        yaml_abs: str,
        meta_abs: str,
        st: os.stat_result | None,
        m_st: os.stat_result | None,
        meta_stale: bool,
    ) -> Blueprint | None:
        """What load() returns for a row whose files changed, recording nothing; None when the
        change is to be recorded first (see load)."""
        if self.read_only_reason is not None:
            # Nothing may be recorded: what the files hold now, as the reconcile would read it.
            return self._as_files_hold(row, yaml_abs, meta_abs, gone=st is None)
        if self._left_for_now(row, st):
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        text = self._same_bytes_text(row, yaml_abs, meta_abs, st, m_st, meta_stale)
        if text is not None:
            return self._blueprint_from(row, text)
        if st is not None and self._settling(row.path, st, m_st):
            # A change this fresh is the running watcher's to record: it waits for the write's
            # close. An in-place save is truncate then write, maybe in chunks; read in a pause,
            # half a file cut at a line often parses, and was recorded as a revision (an event,
            # history, a sync push of a blueprint nobody saved). The file as it is now is
            # returned, unrecorded; one that does not parse (yet) gives the last revision.
            return self._unrecorded(row, yaml_abs)
        return None

    def _left_for_now(self, row: Row, st: os.stat_result | None) -> bool:
        """True when the changed YAML is empty, or vanished while a watcher gives it a grace:
        load() returns the last revision and records nothing."""
        if st is not None and st.st_size == 0:
            # Most likely an editor's in-place save between its truncate and its write. An
            # empty YAML is never a revision (it would be flagged, and load of a flagged row
            # returns the last good revision anyway): recording it here only told the app's
            # subscribers "invalid" for an edit about to complete. The watcher waits for the
            # close; one left empty is flagged by it or the next reconcile (open, check).
            return True
        # Gone for a moment in an editor's save (vim renames the file away and writes a new
        # one; IDEs delete and create). The watcher gives a vanished file a grace period
        # before it records a delete; load recorded it at once, and the file written next
        # became a new blueprint with a new id. Without a watcher nothing else would see
        # the delete before the next open, so load still records it then (so it does when
        # the watcher is another process's and the file's folder has been still longer
        # than its grace: that watcher would have recorded the delete by now).
        return st is None and self._vanish_settling(row.path)

    def _same_bytes_text(
        self,
        row: Row,
        yaml_abs: str,
        meta_abs: str,
        st: os.stat_result | None,
        m_st: os.stat_result | None,
        meta_stale: bool,
    ) -> str | None:
        """The YAML's text when the changed files hold the indexed bytes (only their times
        changed), else None."""
        if (
            not row.flagged
            and st is not None
            and m_st is not None
            and st.st_size == row.yaml_size
            and m_st.st_size == row.meta_size
        ):
            # The bytes decide. A file put back by a rename (a failed save's undo on a full disk)
            # has a new change time but the indexed bytes: recording that time is a write, which
            # a read must not need (load failed with DiskFullError). Reconcile records it later.
            try:
                data = fs.read_regular(yaml_abs, self.limits.max_bytes)
                same = sha256_hex(data) == row.yaml_sha256 and (
                    not meta_stale
                    or sha256_hex(fs.read_regular(meta_abs, MAX_META_BYTES)) == row.meta_sha256
                )
            except FileNotFoundError:
                same = False
            if same:
                return data.decode("utf-8")
        return None

    def _ingest_change(self, row: Row) -> Row:
        """Record the change of the row's files (as reconcile does); the row as it is then."""
        from localstore._reconcile import Reconciler

        Reconciler(self._as_store).ingest_path(row.path)
        with self.index.read() as cur:
            return self._resolve(cur, row.id)

    def _current_text(self, row: Row, yaml_abs: str) -> str:
        """The YAML text load() returns for a recorded row: the file's, or the last revision's
        when the row is flagged or the file is gone."""
        if row.flagged:
            return self._revision_content(row.id, row.rev)
        try:
            return fs.read_regular(yaml_abs, self.limits.max_bytes).decode("utf-8")
        except FileNotFoundError:
            return self._revision_content(row.id, row.rev)

    def _refuse_unindexed(self, ref: fs.StrPath) -> None:
        """load() on a read-only store of a path the index does not hold: when a blueprint file
        is there (added after the index's last commit), raise NotFoundError saying so; it said
        only "no blueprint matches" of a file the user could see. (Not read as a blueprint: it
        has no recorded id, and a meta, if any, no revision.)"""
        try:
            rel = fs.normalize_path(ref)
            path = self.abspath(rel)
        except LocalStoreError:  # (not a path: an id or id prefix the index does not hold)
            return
        if os.path.isfile(path):
            raise NotFoundError(
                f"{rel} is in {self._root_str} but not in the index: it was added after the "
                "index's last save, and this store is read-only, so it cannot record it",
                hint=f"read the file itself ({path}), or copy the home to a folder you may "
                "write and open the copy (that records it); 'localstore check' lists such files",
            ) from None

    def _as_if_recorded(self, row: Row) -> tuple[Row, str | None] | None:
        """The row as recording the unrecorded edit of its files would make it, and the YAML
        text they hold, recording nothing (a dry run's view: it may not write, and load()
        records); None when its files hold no such edit, or the row is deleted.

        A YAML that does not read or parse, or a meta file that does not decode, flags the row
        (no text), as the recording would; a missing meta, or one naming another id, leaves the
        recorded meta (as _as_files_hold). A new revision's number is the recorded one's + 1."""
        yaml_abs = str(self.abspath(row.path))
        if row.deleted or not self._edited_on_disk(row, yaml_abs):
            return None
        try:
            data = fs.read_regular(yaml_abs, self.limits.max_bytes)
            check_yaml(data, self.limits)  # (first: it says what to do with bytes not UTF-8)
            text = data.decode("utf-8")
            meta = self._meta_file_of(row, yaml_abs[: -len(fs.YAML_SUFFIX)] + fs.META_SUFFIX)
        except (OSError, UnicodeDecodeError, LocalStoreError) as exc:
            from localstore._reconcile import flag_reason

            why = flag_reason(exc, row.path) if isinstance(exc, LocalStoreError) else str(exc)
            return dataclasses.replace(row, flagged=why), None
        chash = content_hash(data, meta)
        if chash == row.content_hash:  # a touch, or only 'modified' changed: no revision
            return dataclasses.replace(row, flagged=None), text
        return dataclasses.replace(
            row,
            content_hash=chash,
            yaml_sha256=sha256_hex(data),
            meta_json=encode_meta(meta).decode("utf-8"),
            created=meta.created,
            flagged=None,
            rev=row.rev + 1,
        ), text

    def _meta_file_of(self, row: Row, meta_abs: str) -> BlueprintMeta:
        """The meta ``row``'s meta file holds, or the recorded one when it is missing or names
        another id. Raises InvalidMetaError for a file that does not decode."""
        try:
            found = decode_meta(fs.read_regular(meta_abs, MAX_META_BYTES))
        except FileNotFoundError:
            return row.meta
        return found if found.id == row.id else row.meta

    def _as_files_hold(self, row: Row, yaml_abs: str, meta_abs: str, *, gone: bool) -> Blueprint:
        """load() on a read-only store of a blueprint whose files changed after the index's last
        commit (a snapshot that caught a save between its files' rename and its commit, or an
        edit nobody recorded): the YAML and meta the files hold, unrecorded, with the recorded
        ``rev`` and verdict. The last revision when the YAML does not read or parse, or when
        the blueprints folder itself is not there (a copy of data/ alone). Raises NotFoundError
        when the YAML is gone from a folder that is there: deleted after the last commit.
        """
        if gone and os.path.isdir(self._root_str):
            raise NotFoundError(
                f"{row.path} is no longer in {self._root_str}: it was deleted after the index's "
                "last save (this store is read-only, so the index still lists it)",
                hint=f"'localstore history {row.id}' lists its revisions; 'localstore show "
                f"{row.id} --rev {row.rev}' prints the last one",
            )
        read = self._checked_file(yaml_abs)
        if read is None:
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        data, text = read
        meta = row.meta
        try:
            found: BlueprintMeta | None = decode_meta(fs.read_regular(meta_abs, MAX_META_BYTES))
        except (OSError, LocalStoreError):
            found = None  # (missing or damaged: the reconcile would keep the indexed meta too)
        if found is not None and found.id == row.id:
            meta = found
        return dataclasses.replace(
            self._blueprint_from(row, text), meta=meta, content_hash=content_hash(data, meta)
        )

    def _unrecorded(self, row: Row, yaml_abs: str) -> Blueprint:
        """The blueprint with its YAML as the file holds it now, not recorded: the recorded
        revision's number and meta, the content's own hash. The last revision if the file does
        not read or parse as a blueprint (as for an empty one)."""
        read = self._checked_file(yaml_abs)
        if read is None:
            return self._blueprint_from(row, self._revision_content(row.id, row.rev))
        data, text = read
        bp = self._blueprint_from(row, text)
        return dataclasses.replace(bp, content_hash=content_hash(data, row.meta))

    def _checked_file(self, yaml_abs: str) -> tuple[bytes, str] | None:
        """The YAML file's bytes and text when it reads and parses as a blueprint, else None."""
        try:
            data = fs.read_regular(yaml_abs, self.limits.max_bytes)
            check_yaml(data, self.limits)  # (first: it says what to do with bytes not UTF-8)
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError, LocalStoreError):
            return None
        return data, text

    def _revision_content(self, blueprint_id: str, rev: int) -> str:
        with self.index.read() as cur:
            rows = cur.execute(
                "SELECT content FROM revisions WHERE id = ? AND rev = ?", (blueprint_id, rev)
            ).fetchall()
        if not rows:
            raise RevisionNotFoundError(f"revision {rev} of {blueprint_id} is not in history")
        return revision_text(rows[0][0])

    def exists(self, ref: fs.StrPath) -> bool:
        """True if a live blueprint matches the reference."""
        try:
            self.resolve(ref)
        except NotFoundError:
            return False
        return True

    # -- queries -----------------------------------------------------------------------------------

    def list(
        self,
        *,
        folder: fs.StrPath | None = None,
        tag: str | None = None,
        sort: str = "path",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        recursive: bool = True,
    ) -> builtins.list[BlueprintInfo]:
        """List live blueprints, filtered by folder and tag, sorted and paged.

        ``folder="/"`` lists the top folder only. A folder matches whatever its case and Unicode
        form, as paths collide (files.path_key: ``"projects"`` lists ``Projects/``); a tag as
        written, case and all. A tag matches in either Unicode form (NFC or
        NFD: rows saved before tags were normalized, meta files written by other tools).

        Raises InvalidInputError for an unknown sort, a folder or tag that is not a string, a
        folder no blueprint can be in (a form a save refuses: a backslash, '.' or '..' parts), an
        empty or blank folder or tag (``None`` is no filter; ``folder="/"`` the top folder), a limit or offset
        that is not a whole number >= 0 (``limit=None`` lists everything), a ``descending`` or
        ``recursive`` that is not a bool.
        """
        self._check_open()
        folder = _folder_arg(folder)
        tags = _tag_forms(_tag_arg(tag))
        limit = None if limit is None else _count_arg("limit", limit)
        offset = _count_arg("offset", offset)
        _flag_arg("descending", descending)
        _flag_arg("recursive", recursive)
        _sort_arg(sort)
        join = _tag_join(tags)
        # (One snapshot: the folder's spellings, whether a stamp sorts by its moment, the rows.)
        with self.index.read() as cur, one_snapshot(cur):
            if folder is None and not join and not self.index.write_open:
                # (No filter in the query: ``folder is None``, since "/" strips to "" and still
                # filters to the top folder.)
                # The full listing comes from the cache (see localstore._listing); a page of it
                # only when it is cached already (reading 10,000 rows for one page would not pay).
                view = self._listing.lookup(cur, sort, descending, load=limit is None)
                if view is not None:
                    return view[offset:] if limit is None else view[offset : offset + limit]
            where, args = self._listed_where(cur, tags, folder, recursive=recursive)
            args += [] if limit is None else [limit, offset]
            args += [offset] if limit is None and offset else []
            sql = f"SELECT {INFO_COLUMNS} FROM blueprints b{join} WHERE {where} "
            sql += _order_sql(cur, sort, descending, paged=limit is not None, offset=offset)
            with collector_paused(limit is None or limit > 1000):
                return infos(cur.execute(sql, args).fetchall())

    def _listed_where(
        self, cur: Any, tags: Sequence[str], folder: str | None, *, recursive: bool
    ) -> tuple[str, builtins.list[Any]]:
        """list()'s WHERE clause and its values (the tags' first: the JOIN takes them)."""
        where, args = "b.deleted = 0", builtins.list[Any](tags)
        if folder is not None:
            in_folder, values = folder_filter(
                cur, folder, recursive=recursive, known=self._spellings
            )
            where, args = f"{where} AND {in_folder}", args + values
        return where, args

    def count(self) -> int:
        """Number of live blueprints."""
        self._check_open()
        with self.index.read() as cur:
            return int(
                cur.execute("SELECT count(*) FROM blueprints WHERE deleted = 0").fetchall()[0][0]
            )

    def search(
        self,
        query: str,
        *,
        limit: int = 20,
        offset: int = 0,
        folder: fs.StrPath | None = None,
        tag: str | None = None,
    ) -> builtins.list[SearchHit]:
        """Full-text search over name, description, tags, content and path, best first (BM25).

        Words match whole, and the last one also as a prefix (search as you type: ``kube``
        finds kubernetes); quote a phrase to match it exactly. Blueprints matching the words as
        typed come before those matching only through the prefix. Ranking costs time in
        proportion to the number of matches, so a query matching more than ``SEARCH_RANK_CAP``
        blueprints is answered in two tiers: those whose name, tags, description or path match
        (ranked, or newest first if they too are over the cap), then the rest newest first
        (score 0); hits that tie in score come newest first, so ``offset`` pages through one
        order (``search(q, limit=n, offset=k)`` is ``search(q, limit=k + n)[k:]``: each skipped
        hit is ranked too, but only the page's hits are given snippets). Chinese, Japanese,
        Korean and Thai text is searched by character, so any part of a run without spaces is
        found (``東京`` in ``東京都の天気``). Any character that is neither a letter, a digit nor a
        combining mark separates words, a NUL too (``kube\\x00deploy`` searches ``kube deploy``;
        no indexed text holds one). See docs/architecture.md, "Search". Folder and tag filter as
        in :meth:`list`. Raises InvalidInputError for an empty
        query or one that is not a string, a limit or offset that is not a whole number >= 0, a
        folder or tag that is not a string, a folder no blueprint can be in, an empty folder or tag;
        LimitExceededError for a query of more than ``SEARCH_MAX_WORDS`` words.
        """
        self._check_open()
        limit = _count_arg("limit", limit)
        offset = _count_arg("offset", offset)
        folder = _folder_arg(folder)
        tags = _tag_forms(_tag_arg(tag))
        exact, typed = _fts_queries(query)
        filters = ""
        args: list[Any] = []
        if tags:
            marks = ", ".join("?" * len(tags))
            filters += (
                " AND EXISTS (SELECT 1 FROM blueprint_tags t WHERE t.rid = b.rid"
                f" AND t.tag IN ({marks}))"
            )
            args += tags
        if offset:
            # The answer's order does not depend on the limit (ties broken by rowid, tiers
            # fixed by counts), so a page is the tail of a longer answer. (Offset 0, the
            # common case, runs exactly as before.)
            return self._search(
                exact,
                typed,
                filters,
                args,
                min(limit + offset, _SQL_INT_MAX),
                skip=offset,
                folder=folder,
            )
        return self._search(exact, typed, filters, args, limit, folder=folder)

    def _search(
        self,
        exact: str,
        typed: str,
        filters: str,
        args: Sequence[Any],
        limit: int,
        *,
        skip: int = 0,
        folder: str | None = None,
    ) -> builtins.list[SearchHit]:
        # One snapshot for all of a search's statements (folder rows, counts, hits, their
        # rows and snippets): each in its own read, another connection's commit in between
        # (the daemon's watcher or sync next to an app) answered a hit with the row of after
        # and the snippet of before, a deleted blueprint as a hit, and a page past the first
        # failed with a KeyError (a hit no longer matched when its snippet was made).
        with self.index.read() as cur, one_snapshot(cur):
            # Past the first page, snippets only for the hits kept (FTS5 tokenizes a hit's
            # text again for its snippet, ~60 us: page 50 made 1,000 of them for 20).
            rows = None
            if folder is not None:  # (before the tag filter, in the SQL and in its values)
                in_folder, values = folder_filter(
                    cur, folder, recursive=True, known=self._spellings
                )
                filters, args = f" AND {in_folder}{filters}", [*values, *args]
                rows = _folder_rows(cur, in_folder, values)
            if rows is not None and not rows[0]:
                return []  # (an empty folder, or none: nothing to walk the matches for)
            search = _Search(cur, filters, args, snippets=not skip, rows=rows)
            if skip:
                return search.add_snippets(self._hits(search, exact, typed, limit)[skip:])
            return self._hits(search, exact, typed, limit)

    @staticmethod
    def _hits(search: _Search, exact: str, typed: str, limit: int) -> builtins.list[SearchHit]:
        # Whole words first: a prefix makes FTS5 merge the doclists of every word it matches
        # before it can count or rank, and a common word fills the page on its own.
        hits = search.answer(exact, limit)
        if len(hits) < limit and typed != exact:
            rest = f"({typed}) NOT ({exact})"
            if hits:
                # Below whole-word hits, the prefix-only ones newest first: counting and
                # ranking them cost as much as the whole-word pass (a name like
                # workflow-123 matched one blueprint, then paid 2 ms for the remainder).
                hits += search.top(rest, limit - len(hits))
            else:  # the prefix is all there is (search as you type): ranked as usual
                hits += search.answer(rest, limit)
        return hits
