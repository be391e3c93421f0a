"""A file removed while the watcher reads it (a git checkout or rebase removing what it had just
written) is a vanish, not a failure: it was logged as "cannot index ... yet", counted in
``stats.failures`` and made the watcher DEGRADED for a moment on ordinary checkouts."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from localstore._reconcile import Reconciler
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder


def test_a_file_removed_while_it_is_ingested_is_no_failure(
    store: BlueprintStore,
    watcher: Watcher,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real_record = Reconciler._record

    def removed_meanwhile(self: Reconciler, cur: Any, identity: Any, *args: Any) -> None:
        # Fault injection: the tool removes the pair between the watcher's read and its stat.
        rel = args[1]
        for name in (rel, rel.replace(".blueprint.yaml", ".blueprint.meta.json")):
            os.remove(store.root / name)
        real_record(self, cur, identity, *args)

    monkeypatch.setattr(Reconciler, "_record", removed_meanwhile)
    caplog.set_level(logging.WARNING, logger="localstore.watcher")
    (store.root / "gone.blueprint.yaml").write_text("steps: [g]\n")
    assert watcher.wait_idle(10)
    assert watcher.stats.failures == 0
    assert not [r for r in caplog.records if "cannot index" in r.getMessage()]
    assert watcher.problem is None
    assert recorder.take() == []
    assert store.count() == 0
