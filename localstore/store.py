"""BlueprintStore: save, load, delete, move, list, search, history, restore, check.

Ordering rule (DESIGN.md §3): a change takes the index write lock (``BEGIN IMMEDIATE``) first, then
writes both files durably, then updates the index and commits. Taking the lock before touching files
serialises writers across threads *and* processes, so the index can never record an older write over a
newer file; if the process dies between the files and the commit, the files are the truth and the
reconcile pass on the next open records them.

``BlueprintStore`` is built in layers, each a class in a module of its own that adds one part of
the work to the one below it: ``_store_core._StoreCore`` (open, close, the state every layer
uses), ``_store_refs._StoreRefs`` (refs resolved, index rows read), ``_store_paths._StorePaths``
(where a write may put a pair), ``_store_judge._StoreJudge`` (the validator's verdicts),
``_store_unrecorded._StoreUnrecorded`` (editors' edits recorded before a write replaces them),
``_store_row_writes._StoreRowWrites`` (index rows, search text, revisions),
``_store_files._StoreFiles`` (pairs' files placed and undone), ``_store_save._StoreSave`` (save),
``_store_reads._StoreReads`` (load, list, search), ``_store_changes._StoreChanges`` (delete, move,
history, restore) and ``BlueprintStore`` here (check, reconcile). A layer calls only what it or
a layer below it defines (but for the open's judging, see ``_store_core``). The types are in
``_store_types``, the argument checks in ``_store_args``, search's queries in ``_store_search``;
their public names are re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

from localstore._kept_edits import report_kept

# The names marked F401 are re-exported: the public ones are localstore.store's API, the private
# ones what other modules of localstore and sync import from here.
from localstore._store_args import ORIGINS, SORT_COLUMNS, _count_arg, _flag_arg  # noqa: F401
from localstore._store_changes import _StoreChanges
from localstore._store_judge import HOME_VALIDATOR_KEY, JUDGED_AHEAD  # noqa: F401
from localstore._store_refs import MIN_ID_PREFIX  # noqa: F401
from localstore._store_row_writes import change_events  # noqa: F401
from localstore._store_save import _not_a_blueprint  # noqa: F401
from localstore._store_search import SEARCH_MAX_WORDS, SEARCH_RANK_CAP, fts_tags  # noqa: F401
from localstore._store_types import (  # noqa: F401
    _ROW_COLUMNS,
    CheckReport,
    RevalidateReport,
    Revision,
    Row,
    SaveRequest,
    SearchHit,
    TxHook,
    _Prepared,
)
from localstore._validator_name import validator_name_of  # noqa: F401
from localstore.blueprint import (
    BlueprintInfo,  # noqa: F401
    Validator,
)
from localstore.config import Settings, load_settings
from localstore.errors import ConfigError, DiskFullError


class BlueprintStore(_StoreChanges):
    """Blueprints as file pairs on disk, indexed in SQLite. Thread-safe; several processes may share a home."""

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> BlueprintStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reconcile / check -------------------------------------------------------------------------

    def reconcile(self) -> CheckReport:
        """Bring the index in line with the files (files are the truth); returns what changed."""
        self._check_writable("reconcile")
        from localstore._reconcile import Reconciler

        return Reconciler(self).run(fix=True)

    def check(self, *, fix: bool = False) -> CheckReport:
        """Compare index and files; with ``fix`` repair what can be repaired safely."""
        self._check_open()
        _flag_arg("fix", fix)
        if fix:
            self._check_writable("repair")
        from localstore._reconcile import Reconciler

        report = Reconciler(self).run(fix=fix)
        report_kept(self, report, fix=fix)
        if self.recovered_index is not None:
            report.fixed.insert(
                0,
                {
                    "kind": "index-rebuilt",
                    "path": str(self.recovered_index),
                    "detail": "the index was damaged and was rebuilt from the files; history "
                    "(revisions, deletions) before this point was not recovered; the damaged "
                    "index is kept at this path",
                },
            )
        problems = self.index.integrity_check()
        if fix and any(p.startswith("search index") for p in problems):
            # (Each check re-reads all indexed text: only a broken index pays for a second one.)
            for table in self.index.rebuild_search_indexes():
                report.fixed.append({"kind": "search-index-rebuilt", "path": "", "detail": table})
            problems = self.index.integrity_check()
        for problem in problems:
            report.problems.append({"kind": "index-integrity", "path": "", "detail": problem})
        if fix and not problems and self.index.page_usage()["auto_vacuum"] != 2:
            self._vacuum_index(report)
        return report

    def _vacuum_index(self, report: CheckReport) -> None:
        """Convert an index made before incremental auto_vacuum (check --fix, once): its free
        pages were only ever reused, so a burst, an upgrade's history compaction or purged app
        data left the file at its peak size for good."""
        try:
            freed = self.index.vacuum()
        except DiskFullError as exc:  # the repairs above stand; only the conversion waits
            report.problems.append(
                {"kind": "index-not-vacuumed", "path": str(self.paths.index_db), "detail": str(exc)}
            )
            return
        report.fixed.append(
            {
                "kind": "index-vacuumed",
                "path": str(self.paths.index_db),
                "detail": f"rewritten to give free space back as it accumulates; "
                f"{freed / 1_000_000:.1f} MB given back now",
            }
        )


def open_store(
    home: str | os.PathLike[str] | None = None,
    *,
    validator: Validator | None = None,
    validator_name: str | None = None,
    settings: Settings | None = None,
    reconcile: bool = True,
    maintenance: bool = True,
    read_only: bool = False,
    **overrides: Any,
) -> BlueprintStore:
    """Open the store of a home (``LOCALSTORE_HOME`` or the platform folders when None).

    ``overrides`` are settings (see :class:`localstore.config.Settings`). Give either ready
    ``settings`` or ``home`` and ``overrides``, not both (they would be ignored).
    ``read_only=True`` opens a home this user cannot write (a backup snapshot, a read-only
    disk, another user's home) and writes nothing there; every write then raises
    ReadOnlyStoreError (see :class:`BlueprintStore`). An open without it never falls back to
    read-only by itself: a home that cannot be written fails with PermissionDeniedError, which
    an app that only reads may answer by opening again with ``read_only=True``. Raises
    ConfigError.
    """
    if settings is not None:
        if home is not None or overrides:
            given = (["home"] if home is not None else []) + sorted(overrides)
            raise ConfigError(
                f"open() got settings and also {', '.join(given)}, which settings already fix",
                hint="pass only settings (change it with settings.replace(...)), or leave "
                "settings out and pass home and the setting keywords",
            )
    else:
        settings = load_settings(home=home, **overrides)
    return BlueprintStore(
        settings,
        validator=validator,
        validator_name=validator_name,
        reconcile=reconcile,
        maintenance=maintenance,
        read_only=read_only,
    )
