"""What a save killed between its swap and its unlink leaves (files.replace_recorded)."""

from __future__ import annotations

from pathlib import Path

import localstore
from localstore import files as fs
from localstore._reconcile import Reconciler


def sweep_replaced_version(home: Path, yaml_glob: str, old: str) -> None:
    """A save that replaces a recorded file swaps its temp in, then unlinks the file the swap
    brought out. Killed in between, the replaced version is left at the YAML temp's name
    (``yaml_glob``): it must hold ``old``, a version the store has, which the stale-temp sweep
    removes (nothing kept in <data>/recovered/). Where there is no swap, nothing is left."""
    root = home / "blueprints"
    left = sorted(root.glob(yaml_glob))
    if fs._EXCHANGE is None:
        assert not left
        return
    assert [p.read_text(encoding="utf-8") for p in left] == [old]
    with localstore.open(home=home, maintenance=False) as store:
        report = localstore.CheckReport()
        Reconciler(store).clear_stale_temp(left[0].relative_to(root).as_posix(), report)
        assert [f["kind"] for f in report.fixed] == ["temp-file"]
        assert not (store.paths.data / "recovered").exists()
        assert store.check().clean
    assert not list(root.glob(".*.lstmp"))
