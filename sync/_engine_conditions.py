"""The failures of this machine that the sync loop expects and retries: a locked or damaged
index, a full disk, a permission lost, the blueprints folder away (CONVENTIONS practice 4).

``_local_condition`` classifies an exception; ``sync._engine_cycle`` records the condition in the
status and ``sync._engine_loop`` warns once and backs off.
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from localstore._reconcile import CONFIRM_EMPTY_NAME
from localstore.errors import (
    DiskFullError,
    FolderAwayError,
    IndexStoreError,
    LocalStoreError,
    NewerIndexError,
    PermissionDeniedError,
)
from localstore.index import index_damaged


@dataclass(frozen=True, slots=True)
class _LocalCondition:
    """A failure of this machine that the loop expects and retries (CONVENTIONS practice 4).

    Not a bug, so no traceback: one short warning, and the status says what it is and what to
    do. ``record``: whether writing it to the index can work (not while another process holds
    the index's write lock: that write would wait out the same timeout again).
    """

    summary: str
    hint: str
    cleared: str
    record: bool
    # Whether the status's ``hint`` says ``hint`` too: nothing changes until a person acts
    # (a full disk or a locked index pass by themselves, the others said in last_error only).
    needs_person: bool = False

    def describe(self, exc: BaseException) -> str:
        """The status line: what, what to do, then the store's own words."""
        detail = exc.message if isinstance(exc, LocalStoreError) else str(exc)
        return f"{self.summary}; {self.hint} ({detail})"


_INDEX_LOCKED = _LocalCondition(
    summary="the index is locked by another process",
    hint="sync retries by itself; if this lasts, close the other program using this home",
    cleared="the index is free again",
    record=False,
)
_DISK_FULL = _LocalCondition(
    summary="disk full: free space on the disk holding this home's files",
    hint="sync retries by itself once there is room",
    cleared="there is disk space again",
    record=True,
)

# Neither is a bug: both were logged as "unexpected failure" with a traceback, and the status
# showed the store's message without saying that sync goes on trying. Not recorded in the index:
# a write to a damaged or unwritable index fails as the cycle did.
_INDEX_DAMAGED = _LocalCondition(
    summary="the index is damaged",
    hint="stop the daemon (or the app using this home) and run `localstore check --fix`, which "
    "rebuilds it from the files; sync retries by itself meanwhile",
    cleared="the index works again",
    record=False,
)
_PERMISSION_DENIED = _LocalCondition(
    summary="permission denied on this home's files",
    hint="give this user back read and write access to the home (its blueprints and data "
    "folders); sync retries by itself",
    cleared="the home's files can be written again",
    record=False,
)

# A pull refused because the blueprints folder is away (localstore._reconcile
# refuse_a_vanished_root): logged as an unexpected failure with its traceback at every retry,
# and the status's hint was None, what to do only inside last_error's text.
_FOLDER_AWAY = _LocalCondition(
    summary="the blueprints folder is away (moved, deleted, or on a drive not mounted), so "
    "nothing is written into it",
    hint="put it back (or mount its drive); if its blueprints were deleted on purpose, create "
    f"an empty file {CONFIRM_EMPTY_NAME} in it (make the folder first): they are then recorded "
    "deleted; sync retries by itself",
    cleared="the blueprints folder is back",
    record=True,
    needs_person=True,
)


def _local_condition(exc: BaseException) -> _LocalCondition | None:
    """The expected local condition ``exc`` is, or None (then it is a bug or not local)."""
    if isinstance(exc, FolderAwayError):
        return _FOLDER_AWAY
    if isinstance(exc, DiskFullError):
        return _DISK_FULL
    if isinstance(exc, PermissionDeniedError):
        return _PERMISSION_DENIED
    if index_damaged(exc):
        return _INDEX_DAMAGED
    if isinstance(exc, IndexStoreError) and isinstance(
        exc.__cause__, apsw.BusyError | apsw.LockedError
    ):
        # The write lock wait of localstore.index ran out (or close() cut it short).
        return _INDEX_LOCKED
    return None


def newer_index_detail(exc: NewerIndexError) -> str:
    """What a process that a newer localstore's upgrade of its index stopped says, with the
    fix: only a process running the newer version can write to the home now."""
    return (
        f"a newer localstore upgraded this home's index while this process ran, so this "
        f"version can no longer write to it ({exc.message}); edits stay in the files until "
        f"the newer version records them: restart this program (or the daemon) with the "
        f"newer localstore"
    )
