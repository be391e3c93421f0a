"""What recording a file nobody recorded yet, at a path no live blueprint holds, would make of it.

A write records such a file before it decides anything (``BlueprintStore._record_edits_first``;
an import does so for its bundle's paths). A dry run may not write, and planned a "create" over a
YAML an editor had put there while no watcher ran, which the import then found taken and decided
by its --on-conflict policy. This gives the row the recording would make, recording nothing
(``BlueprintStore._as_if_recorded`` does the same for an edit of a recorded blueprint).

It follows ``Reconciler.ingest_locked`` for such a path in its identity rules, with the same
lookups: the id in the meta file; a copied pair's meta (its id live at another path) gets a new
id; a lone YAML is the blueprint whose file vanished with that hash, else a new blueprint.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from localstore import files as fs
from localstore.blueprint import (
    MAX_META_BYTES,
    BlueprintMeta,
    check_yaml,
    content_hash,
    decode_meta,
    encode_meta,
    new_id,
    sha256_hex,
    utc_now,
)
from localstore.errors import LocalStoreError
from localstore.store import Row, _not_a_blueprint

if TYPE_CHECKING:
    from localstore._reconcile import Reconciler

# The fields a row has before its first recording (replaced from the files below).
_NO_ROW = Row(
    rid=0,
    id="",
    path="",
    name="",
    description="",
    author="",
    version="",
    tags=(),
    created="",
    modified="",
    yaml_sha256="",
    meta_sha256="",
    content_hash="",
    yaml_size=0,
    yaml_mtime_ns=0,
    meta_size=-1,
    meta_mtime_ns=0,
    valid=True,
    problems=(),
    meta_json="",
    flagged=None,
    rev=0,
    op_id=0,
    deleted=False,
)


def as_if_new(rec: Reconciler, rel: str) -> Row | None:
    """The row recording the unrecorded pair at ``rel`` would make; None when no file is there.

    Its id is '' when the recording makes one up (a YAML without a meta, a copy of another
    blueprint's pair): known only once recorded. Raises AlreadyExistsError, as a save there
    does, for files the recording leaves out (a YAML or meta that does not read or parse, a
    folder or link in a file's place): nothing is recorded, and nothing may be written over it.
    """
    store = rec.store
    yaml_abs = store.abspath(rel)
    if not os.path.lexists(yaml_abs):
        return None
    store._refuse_not_files(rel, indexed=False)
    try:
        data = fs.read_regular(yaml_abs, store.limits.max_bytes)
        data.decode("utf-8")
        check_yaml(data, store.limits)
        meta = _meta_beside(rec, rel)
    except (OSError, UnicodeDecodeError, LocalStoreError) as exc:
        raise _not_a_blueprint(rel) from exc
    with store.index.read() as cur:
        identity, meta, made_up = _identity(rec, cur, rel, meta, sha256_hex(data))
    base = identity if identity is not None else _NO_ROW
    return dataclasses.replace(
        base,
        id="" if made_up else meta.id,
        path=rel,
        name=meta.name,
        description=meta.description,
        author=meta.author,
        version=meta.version,
        tags=tuple(meta.tags),
        created=meta.created,
        modified=meta.modified,
        yaml_sha256=sha256_hex(data),
        content_hash=content_hash(data, meta),
        meta_json=encode_meta(meta).decode("utf-8"),
        flagged=None,
        deleted=False,
        rev=base.rev + 1,
    )


def _meta_beside(rec: Reconciler, rel: str) -> BlueprintMeta | None:
    """The meta file beside the YAML at ``rel``, None when there is none. Raises
    InvalidMetaError when it does not decode (the recording then records nothing)."""
    try:
        raw = fs.read_regular(rec.store.abspath(fs.meta_path_for(rel)), MAX_META_BYTES)
    except FileNotFoundError:
        return None
    return decode_meta(raw, source=fs.meta_path_for(rel))


def _identity(
    rec: Reconciler, cur: Any, rel: str, meta: BlueprintMeta | None, digest: str
) -> tuple[Row | None, BlueprintMeta, bool]:
    """The blueprint the pair at ``rel`` is recorded as (None: a new one), its meta, and
    whether its id is made up by the recording."""
    if meta is None:
        moved = rec._match_moved_yaml(cur, digest)
        if moved is not None:  # moved here without its meta: the meta follows (or the index's)
            return moved, rec._meta_left_behind(moved) or moved.meta, False
        now = utc_now()
        name = fs.display_name(rel)
        return None, BlueprintMeta(id=new_id(), name=name, created=now, modified=now), True
    identity = rec._with_id(cur, meta.id)
    if rec._copy_source(identity, rel):
        return None, meta.replace(id=new_id(), created=utc_now()), True
    return identity, meta, False
