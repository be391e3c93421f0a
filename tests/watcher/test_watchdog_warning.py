"""watchdog's "Callback with id ... already exists" warning never reaches an app.

watchdog 7.1 warns (RuntimeWarning, in its own reader thread) when it adds a watch for a folder
it already watches: a folder created with a sub-folder in it races its own recursive walk. Any
save into a new nested folder can do it (found by tests/test_embedding_app.py: a pull into
``ops/deploy``). Under ``-W error`` (the suite's filterwarnings, and many apps' test suites) the
warning raised in that thread and killed it: the watcher restarted its observer and rescanned
the whole folder each time, and pytest failed the app's test on the thread's exception; with
the default filters it printed a traceback line to the app's stderr per occurrence.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable

from localstore.store import BlueprintStore
from localstore.watcher import Watcher

SAVES = 150


def test_saves_into_new_nested_folders_do_not_kill_watchdogs_thread(
    store: BlueprintStore, make_watcher: Callable[[BlueprintStore], Watcher]
) -> None:
    died: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: died.append(args.exc_value)
    try:
        with warnings.catch_warnings():
            # An app run with -W error (as this suite's config; stated here, not assumed): the
            # filters are in place before the watcher starts.
            warnings.simplefilter("error")
            watcher = make_watcher(store)
            watcher.start()
            assert watcher.wait_idle(30)
            for i in range(SAVES):
                store.save(f"team-{i}/ops/deploy/run", "steps: []\n")
            assert watcher.wait_idle(60)
    finally:
        threading.excepthook = previous
    assert died == []
    assert watcher.stats.restarts == 0
    assert store.count() == SAVES
