"""Refs and index rows read: a REF (path, id or id prefix) resolved to its row, the live or
deleted row at a path or of an id, and the checks of a save that read rows (its id free, its
paths' rows). The layer above ``_StoreCore``.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from localstore import files as fs
from localstore._revisions import revision_text
from localstore._store_args import _ambiguous_prefix, _flag_arg
from localstore._store_core import _StoreCore
from localstore._store_types import _ROW_COLUMNS, Row, SaveRequest, _Unknown
from localstore.blueprint import Blueprint, BlueprintInfo, is_uuid
from localstore.errors import (
    AlreadyExistsError,
    InvalidRefError,
    LocalStoreError,
    NotFoundError,
    UnsafePathError,
    wrong_type,
)

# The shortest id prefix a REF may be: shorter ones match too many ids to be worth a lookup.
MIN_ID_PREFIX = 4


# How many of the blueprints an ambiguous id prefix matches its error names.
_AMBIGUOUS_SHOWN = 5


def _ref_text(ref: fs.StrPath) -> str:
    """A REF as text, as given (not stripped). Raises InvalidRefError for one that is neither
    text nor a relative pathlib path, or is blank."""
    if not isinstance(ref, str):
        text = fs.path_text(ref)  # (a relative pathlib path names the blueprint at it)
        if not isinstance(text, str):
            raise InvalidRefError(
                f"the reference must be a string, not {type(ref).__name__}",
                hint="give an id, an id prefix or a path as text (or a relative pathlib.Path)",
            )
        ref = text
    if not ref.strip():
        raise InvalidRefError("empty reference", hint="give an id, an id prefix or a path")
    return ref


class _StoreRefs(_StoreCore):
    """Refs resolved and index rows read (the layer above ``_StoreCore``)."""

    def _current_row(self, req: SaveRequest) -> Row | None:
        """The live row a meta-only save request is likely to update (read without the lock;
        the save finds it again inside)."""
        with self.index.read() as cur:
            if isinstance(req.id, str) and is_uuid(req.id.lower()):
                row = self._row_by(cur, "id = ? AND deleted = 0", (req.id.lower(),))
            else:
                rel = fs.normalize_path(req.path)
                row = self._live_at(cur, rel)
        return row

    def _row_by(self, cur: Any, where: str, args: Sequence[Any]) -> Row | None:
        rows = cur.execute(f"SELECT {_ROW_COLUMNS} FROM blueprints WHERE {where}", args).fetchall()
        return Row.from_tuple(rows[0]) if rows else None

    def _live_at(self, cur: Any, rel: str) -> Row | None:
        """The live row at exactly ``rel``, else the one holding its key (``rel`` in other case)."""
        holder = self._row_by(cur, "path_key = ? AND deleted = 0", (fs.path_key(rel),))
        if holder is not None and holder.path == rel:
            return holder
        return self._exact_row(cur, rel) or holder

    def _exact_row(self, cur: Any, rel: str) -> Row | None:
        """The live row at exactly ``rel`` when another row holds its key, or none does.

        Core v11 changed the key: two blueprints whose names it now makes one (``ΐ`` beside
        ``Ϊ́``) are both kept, the second under a key no path has (index._v11_path_keys), and
        the key alone finds only the first. Asked only when the key lookup did not find ``rel``
        itself (a new path, or another case of it): one more indexed lookup there.
        """
        return self._row_by(cur, "path = ? AND deleted = 0", (rel,))

    def _resolve(self, cur: Any, ref: fs.StrPath, *, include_deleted: bool = False) -> Row:
        given = _ref_text(ref)
        ref = given.strip()
        live = "" if include_deleted else " AND deleted = 0"
        if is_uuid(ref.lower()):
            row = self._row_by(cur, "id = ?" + live, (ref.lower(),))
            if row:
                return row
        row, rels, refused = self._row_at_path(cur, given, ref, include_deleted=include_deleted)
        if row:
            return row
        looks_like_id = all(c in "0123456789abcdef-" for c in ref.lower())
        if len(ref) >= MIN_ID_PREFIX and looks_like_id:
            row = self._row_by_prefix(cur, ref, live)
            if row:
                return row
        raise self._no_match(
            cur, ref, rels, refused, include_deleted=include_deleted, looks_like_id=looks_like_id
        )

    def _row_at_path(
        self, cur: Any, given: str, ref: str, *, include_deleted: bool
    ) -> tuple[Row | None, builtins.list[str], UnsafePathError | None]:
        """The row at the path ``given`` names (``ref`` is it stripped), the deleted one's too
        with ``include_deleted``; else None, the paths tried and the refusal of a form no path
        can have."""
        rels: builtins.list[str] = []
        refused: UnsafePathError | None = None
        # The path as given first: a name may start with spaces, and ``x `` is the file
        # ``x .blueprint.yaml`` (only a part's last character may not be a space). Stripped
        # first, ``rm " lead"`` deleted ``lead`` and `` lead`` could not be named at all. The
        # stripped form stays the fallback (an id or path pasted with a space or newline).
        for candidate in dict.fromkeys((given, ref)):
            try:
                rel = fs.normalize_path(candidate)
            except UnsafePathError as exc:
                refused = exc
                continue
            rels.append(rel)
            row = self._live_at(cur, rel)
            if row:
                return row, rels, refused
            if include_deleted:
                row = self._row_by(
                    cur,
                    "path_key = ? AND deleted = 1 ORDER BY op_id DESC LIMIT 1",
                    (fs.path_key(rel),),
                )
                if row:
                    return row, rels, refused
        return None, rels, refused

    def _row_by_prefix(self, cur: Any, ref: str, live: str) -> Row | None:
        """The one row whose id starts with ``ref``, or None. Raises AmbiguousRefError when
        more than one does."""
        span = f"FROM blueprints WHERE id >= ? AND id < ?{live}"
        bounds = (ref.lower(), ref.lower() + "\uffff")
        rows = cur.execute(
            f"SELECT {_ROW_COLUMNS} {span} ORDER BY path LIMIT {_AMBIGUOUS_SHOWN + 1}", bounds
        ).fetchall()
        if len(rows) > 1:
            count = len(rows)
            if count > _AMBIGUOUS_SHOWN:
                count = cur.execute(f"SELECT COUNT(*) {span}", bounds).fetchone()[0]
            paths = [Row.from_tuple(r).path for r in rows[:_AMBIGUOUS_SHOWN]]
            raise _ambiguous_prefix(ref, paths, count)
        return Row.from_tuple(rows[0]) if rows else None

    def _no_match(
        self,
        cur: Any,
        ref: str,
        rels: builtins.list[str],
        refused: UnsafePathError | None,
        *,
        include_deleted: bool,
        looks_like_id: bool,
    ) -> NotFoundError:
        """The error for a REF no row matches, saying why when it can (deleted, an id prefix
        too short, a form no path can have)."""
        gone = None if include_deleted else self._deleted_by(cur, ref, rels[0] if rels else None)
        if gone is not None:
            # ('localstore ls' would not show it: what helps is its history.)
            return NotFoundError(
                f"{ref!r} was deleted ({gone.path}, id {gone.id})",
                hint=f"'localstore history {gone.id}' lists its revisions; 'localstore restore "
                f"{gone.id} {gone.rev - 1}' brings it back",
            )
        if looks_like_id and len(ref) < MIN_ID_PREFIX:
            # `show 3f` said "no blueprint matches" even when an id starts with 3f: a shorter
            # prefix is never looked up (it would match too many), which nothing said.
            return NotFoundError(
                f"no blueprint matches {ref!r}: an id prefix needs at least "
                f"{MIN_ID_PREFIX} characters",
                hint=f"give {MIN_ID_PREFIX} or more characters of the id, or the path "
                "(see 'localstore ls')",
            )
        if refused is not None and not rels:
            return self._unsafe_ref(ref, refused)
        return NotFoundError(f"no blueprint matches {ref!r}", hint="see 'localstore ls'")

    def _unsafe_ref(self, ref: str, refused: UnsafePathError) -> NotFoundError:
        """ "No blueprint matches" a REF no blueprint's path can have, saying why and how to write it.

        Not found, still (exists() is False, exit 4 as before): but "no blueprint matches
        './a/x'" alone, beside a blueprint a/x, read as if a/x did not exist.
        """
        hint = refused.hint
        try:
            inside = PurePosixPath(ref).relative_to(self.root.as_posix()).as_posix()
        except ValueError:
            inside = ""
        if inside and inside != ".":
            # (A full path pasted from a file manager or a shell's completion.)
            hint = f"give {inside!r}, the path relative to the blueprints folder"
        return NotFoundError(f"no blueprint matches {ref!r}: {refused.message}", hint=hint)

    def _deleted_by(self, cur: Any, ref: str, rel: str | None) -> Row | None:
        """The deleted blueprint with this id or last at this path, if any."""
        if is_uuid(ref.lower()):
            row = self._row_by(cur, "id = ? AND deleted = 1", (ref.lower(),))
            if row is not None:
                return row
        if rel is None:
            return None
        return self._row_by(
            cur, "path_key = ? AND deleted = 1 ORDER BY op_id DESC LIMIT 1", (fs.path_key(rel),)
        )

    def resolve(self, ref: fs.StrPath, *, include_deleted: bool = False) -> BlueprintInfo:
        """Find a blueprint by id, unique id prefix (at least MIN_ID_PREFIX characters) or path.

        Raises NotFoundError, AmbiguousRefError.
        """
        self._check_open()
        _flag_arg("include_deleted", include_deleted)
        with self.index.read() as cur:
            return self._resolve(cur, ref, include_deleted=include_deleted).info()

    def row_by_id(self, blueprint_id: str, cur: Any = None) -> Row | None:
        """The index row with this id, deleted or not, or None: one lookup, no reference
        resolving. ``cur`` reads inside the caller's transaction (sync applies pulled pages so)."""
        if not isinstance(blueprint_id, str):
            raise wrong_type(
                "blueprint_id",
                blueprint_id,
                "a string",
                hint="pass a blueprint's id as text (BlueprintInfo.id)",
            )
        where, args = "id = ?", (blueprint_id.lower(),)
        if cur is not None:
            return self._row_by(cur, where, args)
        self._check_open()
        with self.index.read() as own:
            return self._row_by(own, where, args)

    def row(self, ref: fs.StrPath, *, include_deleted: bool = False) -> Row:
        """The raw index row of a blueprint (for sync and tools)."""
        self._check_open()
        _flag_arg("include_deleted", include_deleted)
        with self.index.read() as cur:
            return self._resolve(cur, ref, include_deleted=include_deleted)

    def _check_id_free(self, cur: Any, rel: str, blueprint_id: str) -> None:
        """Refuse a new blueprint whose meta carries an id the index already has (a copied meta
        file); the unique index would otherwise fail the whole transaction."""
        other = self._row_by(cur, "id = ?", (blueprint_id,))
        if other is None:
            return
        state = "deleted blueprint" if other.deleted else "blueprint"
        raise AlreadyExistsError(
            f"the meta for {rel} carries id {blueprint_id}, which belongs to the {state} at "
            f"{other.path}",
            hint="drop 'id' from the meta to create a new blueprint, or pass id= to update "
            "(or restore) that one",
        )

    def _request_paths(self, requests: Sequence[SaveRequest]) -> builtins.list[str]:
        """The paths a batch's requests may replace: each one's path, and the path of the
        blueprint its id names (a move). A path that is not one is the save's to refuse."""
        rels: list[str] = []
        ids: list[str] = []
        for req in requests:
            with contextlib.suppress(LocalStoreError, TypeError, AttributeError):
                rels.append(fs.normalize_path(req.path))
            if isinstance(req.id, str) and is_uuid(req.id.lower()):
                ids.append(req.id.lower())
        if ids:
            with self.index.read() as cur:
                for bp_id in ids:
                    row = self._row_by(cur, "id = ? AND deleted = 0", (bp_id,))
                    if row is not None:
                        rels.append(row.path)
        return rels

    def _find_for_save(
        self, cur: Any, rel: str, blueprint_id: str | None
    ) -> tuple[Row | None, Row | _Unknown | None]:
        """The row a save updates, and (when already known) the live row holding the path's
        case-folded key, which _check_path_free would otherwise look up again."""
        if blueprint_id is not None:
            # One statement for both (a download saves thousands of blueprints by id).
            rows = cur.execute(
                f"SELECT 0, {_ROW_COLUMNS} FROM blueprints WHERE id = ? UNION ALL "
                f"SELECT 1, {_ROW_COLUMNS} FROM blueprints WHERE path_key = ? AND deleted = 0",
                (blueprint_id.lower(), fs.path_key(rel)),
            ).fetchall()
            by_id = next((Row.from_tuple(r[1:]) for r in rows if r[0] == 0), None)
            on_path = next((r for r in rows if r[0] == 1), None)
            if on_path is None:
                return by_id, None
            if by_id is not None and on_path[1] == by_id.rid:
                return by_id, by_id
            return by_id, Row.from_tuple(on_path[1:])
        # Exact path only: a save to a case variant of another blueprint's path is a collision,
        # not a rename (renames go through move(), which passes the id). One lookup by the
        # case-folded key answers both questions.
        holder = self._row_by(cur, "path_key = ? AND deleted = 0", (fs.path_key(rel),))
        if holder is not None and holder.path == rel:
            return holder, holder
        return self._exact_row(cur, rel), holder

    def _read_current_yaml(self, row: Row) -> bytes:
        try:
            return fs.read_regular(self.abspath(row.path), self.limits.max_bytes)
        except FileNotFoundError:
            with self.index.read() as cur:
                rows = cur.execute(
                    "SELECT content FROM revisions WHERE id = ? AND rev = ?", (row.id, row.rev)
                ).fetchall()
            if not rows:
                raise NotFoundError(f"the YAML file of {row.path} is missing") from None
            return revision_text(rows[0][0]).encode("utf-8")

    def _blueprint_from(self, row: Row, text: str) -> Blueprint:
        return Blueprint(
            path=row.path,
            content=text,
            meta=row.meta,
            rev=row.rev,
            content_hash=row.content_hash,
            valid=row.valid and row.flagged is None,
            problems=row.problems + ((row.flagged,) if row.flagged else ()),
        )

    def _restore_targets(self, blueprint_id: str, path: fs.StrPath | None) -> builtins.list[str]:
        """The paths a restore may replace: the blueprint's (live or where it was deleted) and
        ``path`` (when it is one a save takes: a bad one is the save's to refuse)."""
        with self.index.read() as cur:
            row = self._row_by(cur, "id = ?", (blueprint_id,))
        rels = [] if row is None else [row.path]
        if path is not None:
            with contextlib.suppress(LocalStoreError):
                rels.append(fs.normalize_path(path))
        return rels
