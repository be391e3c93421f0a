"""The file layer on odd disks and after kills: links that loop, a move cut between its renames,
kernels whose syncfs does not report write errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore
from localstore.errors import UnsafePathError

DOC = "steps: [a]\n"


def _open(home: Path) -> localstore.BlueprintStore:
    return localstore.open(home=home, maintenance=False)


def test_a_symlink_loop_in_a_path_is_a_typed_error(home: Path) -> None:
    # pathlib raises RuntimeError("Symlink loop") for a loop: it escaped the store as an untyped
    # error from save(), with no hint.
    with _open(home) as s:
        root = home / "blueprints"
        (root / "loop").symlink_to("loop")
        (root / "l1").symlink_to("l2")
        (root / "l2").symlink_to("l1")
        for path in ("loop/x", "l1/deeper/x"):
            with pytest.raises(UnsafePathError, match="loop") as caught:
                s.save(path, DOC)
            assert caught.value.hint and "link" in caught.value.hint
        assert s.count() == 0
        assert s.check(fix=True).clean
