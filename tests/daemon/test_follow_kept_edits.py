"""Another process's write over a file that did not parse keeps its bytes in <data>/recovered/, and
its store's own event says where (localstore._kept_edits). An app hearing that change through its
in-process sync (``process="other"``) was told only ``modified`` or ``deleted``: nothing said the
person's half-done edit had been moved, nor where to find it.

The follower's thread is parked and its ticks are the test's calls (as in
test_follow_event_model.py); ``other`` is a second store object on the same home, which the
follower treats as another process, and one case is a real second process.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localstore.events import Event
from localstore.store import BlueprintStore

from ._stores import StoreOpener, stores_fixture  # noqa: F401  (the fixture "stores")
from .test_embed_foreign_events import _other_process
from .test_follow_event_model import _app, tick
from .test_follow_event_model import parked as parked  # (the fixture)

YAML = "team/deploy.blueprint.yaml"
BAD = b"steps: [build,\n  test: [half-typed\n"


def _break(home: Path) -> None:
    """Leave the blueprint's file unparsable, as an editor saving half an edit would."""
    path = home / "blueprints" / YAML
    path.write_bytes(BAD)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _kept(home: Path) -> Path:
    (kept,) = (home / "data" / "recovered").glob(f"*/{YAML}")
    assert kept.read_bytes() == BAD
    return kept


@pytest.mark.usefixtures("parked")
@pytest.mark.parametrize("write", ["save", "delete"])
def test_an_app_hears_where_another_process_kept_an_unparsable_edit(
    stores: StoreOpener, tmp_path: Path, write: str
) -> None:
    home = tmp_path / "home"
    app, handle = _app(stores, home)
    other: BlueprintStore = stores(home=home)
    other.save("team/deploy", "steps: [build]\n")
    tick(handle)
    heard: list[Event] = []
    app.subscribe(heard.append)
    own: list[Event] = []
    other.subscribe(own.append)

    _break(home)
    if write == "save":
        other.save("team/deploy", "steps: [build, ship]\n")
    else:
        other.delete("team/deploy")
    kept = _kept(home)
    # (The writing store found the unrecorded edit first: "invalid", then its write's event.)
    done = own[-1]
    assert done.kind == ("modified" if write == "save" else "deleted")
    assert str(kept) in done.detail  # (what the writing store says)
    tick(handle)

    assert [(e.kind, e.process) for e in heard] == [(done.kind, "other")]
    assert heard[0].detail == done.detail


@pytest.mark.usefixtures("parked")
def test_an_app_hears_where_a_real_second_process_kept_an_unparsable_edit(
    stores: StoreOpener, tmp_path: Path
) -> None:
    """The same through another process's own connection (its store's events are its own),
    and only once: the next change of that blueprint keeps nothing and says nothing of it."""
    home = tmp_path / "home"
    app, handle = _app(stores, home)
    app.save("team/deploy", "steps: [build]\n")
    heard: list[Event] = []
    app.subscribe(heard.append)

    _break(home)
    _other_process(home, "s.save('team/deploy', 'steps: [build, ship]\\n')\nprint('{}')")
    kept = _kept(home)
    tick(handle)
    _other_process(home, "s.save('team/deploy', 'steps: [ship]\\n')\nprint('{}')")
    tick(handle)

    assert [(e.kind, e.rev) for e in heard] == [("modified", 2), ("modified", 3)]
    assert str(kept) in heard[0].detail and "did not parse" in heard[0].detail
    assert heard[1].detail == ""
