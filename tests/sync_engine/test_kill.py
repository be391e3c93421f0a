"""Crash safety of sync: SIGKILL sync processes at random points; a clean run then loses nothing.

Two devices (homes) take turns: a child process edits its own blueprints and runs sync_once in a
loop against a file-backed server (``file_remote.py``) until the parent kills it at a random
moment, landing in local saves, pushes (before or after the server committed), pulls and applies.
After all kills, both devices sync cleanly; then every replica equals the server and every
acknowledged change is there (an operation in flight at a kill may or may not have happened).

24 kills by default, 300 with LOCALSTORE_STRESS=1; LOCALSTORE_CRASH_KILLS=N runs N (a bounded stress
run), LOCALSTORE_CRASH_SEED picks the kill schedule.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine
from sync.errors import TransientError
from sync.memory_remote import MemoryServer

from .conftest import STRESS, Device, assert_converged, converge, server_snapshot
from .file_remote import FileRemote, load_server

KILLS = int(os.environ.get("LOCALSTORE_CRASH_KILLS") or (300 if STRESS else 24))
# The bound grows with the kill count, not the suite-wide 300 s (sized for the default 24 kills): each
# kill costs a child's start-up (about 1.8 s on a 2-core machine under load 10) plus its random run,
# so the 300-kill stress run always hit the flat bound near kill 170. 300 s stay for the final syncs.
SECONDS_PER_KILL = 4
pytestmark = pytest.mark.timeout(300 + KILLS * SECONDS_PER_KILL)
DEVICES = ("a", "b")
CHILD = Path(__file__).with_name("kill_child.py")
ROOT = Path(__file__).parents[2]

State = tuple[str, str] | None  # (path, content), None = absent


class UnexplainedBlueprint(Exception):
    """A device's log names a blueprint it never created: sync made it (a copy, a new id)."""

    def __init__(self, ident: str, path: str) -> None:
        super().__init__(ident, path)
        self.ident, self.path = ident, path


@dataclass
class Model:
    """Possible final states per id, from one device's intent/ack log."""

    states: dict[str, set[State]] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)  # path -> content of unacked creates
    phases: Counter[str] = field(default_factory=Counter)

    def feed(self, records: list[dict]) -> None:
        intent: dict | None = None
        phase = "start"
        for rec in records:
            if "phase" in rec:
                phase = rec["phase"]
            elif "killed" in rec:
                self.phases[phase] += 1
                if intent is not None:
                    self._in_flight(intent)
                intent, phase = None, "start"
            elif "intent" in rec:
                intent = rec
            else:
                self._ack(rec)
                intent = None

    def _ack(self, rec: dict) -> None:
        ident = rec["id"]
        if rec["ack"] == "save":
            self.states[ident] = {(rec["path"], rec["content"])}
        elif rec["ack"] == "delete":
            self.states[ident] = {None}
        else:
            before = self._known(ident, rec["from"])
            self.states[ident] = {(rec["path"], s[1]) for s in before if s is not None}

    def _known(self, ident: str, path: str) -> set[State]:
        """The states of ``ident``; an id never acknowledged came from an unacknowledged create."""
        if ident not in self.states:
            if path not in self.created:
                # Not a bookkeeping slip: the device worked on a blueprint it never created (a
                # KeyError here once hid what the sync had made). Say which, for the history.
                raise UnexplainedBlueprint(ident, path)
            self.states[ident] = {(path, self.created[path])}
        return self.states[ident]

    def _in_flight(self, intent: dict) -> None:
        ident = intent["id"]
        if ident is None:
            self.created[intent["path"]] = intent["content"]
            return
        states = self._known(ident, intent["from"])
        for s in list(states):
            if intent["intent"] == "save":
                states.add((intent["path"], intent["content"]))
            elif intent["intent"] == "move" and s is not None:
                states.add((intent["path"], s[1]))
            elif intent["intent"] == "delete":
                states.add(None)


def _run_child(tmp: Path, device: str, seed: int, rng: random.Random) -> None:
    log = tmp / f"{device}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            str(tmp / device),
            str(tmp / "server.db"),
            device,
            str(log),
            str(seed),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.4))  # the kill schedule itself: a random moment
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"killed": seed}) + "\n")


def _records(log: Path) -> list[dict]:
    text = log.read_text(encoding="utf-8")
    complete, _, _ = text.rpartition("\n")  # a kill can cut the last line short
    out = []
    for line in complete.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            # A cut line followed by the parent's "killed" marker on the same line.
            tail = line[line.rfind('{"killed"') :]
            out.append(json.loads(tail))
    return out


def test_sigkill_during_sync_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("LOCALSTORE_CRASH_SEED", "6062026")))
    for k in range(KILLS):
        _run_child(tmp_path, DEVICES[k % 2], k, rng)

    stores = {d: BlueprintStore(load_settings(home=tmp_path / d, device_name=d)) for d in DEVICES}
    engines = {d: SyncEngine(s, FileRemote(tmp_path / "server.db")) for d, s in stores.items()}
    try:
        for _ in range(3):
            for engine in engines.values():
                engine.sync_once()
        server = load_server(tmp_path / "server.db")
        expected = {
            rid: (o.row.path, o.row.content) for rid, o in server.rows.items() if not o.row.deleted
        }
        for device, store in stores.items():
            actual = {i.id: (i.path, store.load(i.id).content) for i in store.list()}
            assert actual == expected, f"{device} differs from the server"
            assert engines[device].status().pending == 0
            assert engines[device].verify().clean
        phases: Counter[str] = Counter()
        for device in DEVICES:
            model = Model()
            try:
                model.feed(_records(tmp_path / f"{device}.log"))
            except UnexplainedBlueprint as exc:
                history = [
                    (r.rev, r.origin, r.device == stores[device].device_id, r.path, r.deleted)
                    for r in stores[device].history(exc.ident)
                ]
                raise AssertionError(
                    f"{device} edited {exc.ident} at {exc.path}, which it never created; its "
                    f"history (rev, origin, this device, path, deleted): {history}"
                ) from exc
            phases += model.phases
            _check_device(device, model, expected)
        # The kills must have hit the sync cycle itself, not only local saves.
        assert phases["pushing"] + phases["pulling"] + phases["connecting"] > 0, phases
    finally:
        for store in stores.values():
            store.close()


def test_a_delete_after_a_lost_edit_response_is_kept(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The same with a base on record: the push of an edit was lost, then the blueprint deleted.
    The delete met the server's row as "an edit beats a delete", but that edit was this device's
    own, made before the delete, and the blueprint came back."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("k/one", "v: 1\n").id
    converge(a, b)
    a.store.save("k/one", "v: 2\n")
    a.remote.drop_response_next()
    with pytest.raises(TransientError):
        a.sync()
    a.store.delete(ident)
    converge(a, b)
    assert server_snapshot(server) == {} and server.rows[ident].row.deleted
    assert a.engine.conflicts() == []
    assert_converged(server, a, b)


def test_the_model_names_a_blueprint_the_device_never_created() -> None:
    """An in-flight edit of an id that no create of this device explains raised a bare KeyError
    from the model's own dict, which read as a bug of the harness rather than of sync."""
    path = "a/item (conflict b 20260101T000000Z).blueprint.yaml"
    intent = {"intent": "save", "id": "x-1", "path": path, "from": path, "content": "v: 1\n"}
    with pytest.raises(UnexplainedBlueprint) as caught:
        Model().feed([intent, {"killed": 0}])
    assert (caught.value.ident, caught.value.path) == ("x-1", path)


def _check_device(device: str, model: Model, final: dict[str, tuple[str, str]]) -> None:
    for ident, states in model.states.items():
        got = final.get(ident)
        assert got in states, f"{device}: {ident} is {got and got[0]}, expected one of {states}"
    mine = {i for i, (path, _) in final.items() if path.startswith(f"{device}/")}
    for ident in mine - model.states.keys():
        # Only an unacknowledged create (killed mid-save) may have left a blueprint we never saw.
        assert final[ident][1] == model.created.get(final[ident][0]), f"{device}: stray {ident}"


# -- what the harness found, as deterministic cases: a kill (here a dropped response) after the
# server committed a create, then a local change before the next push. The engine had no base for
# the blueprint, so it took the server's row for the newer one.


def _created_then_response_lost(dev: Device, path: str) -> str:
    ident = dev.store.save(path, "v: 1\n").id
    dev.remote.drop_response_next()
    with pytest.raises(TransientError):
        dev.sync()
    return ident


def test_a_move_after_a_lost_push_response_is_kept(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The merge took the newest local revision with the server's content hash as the base; a
    pure move keeps the hash, so the base was the move itself: the path looked unchanged locally
    and the server's (older) path won. The acknowledged move was undone on every device."""
    a, b = make_device("a"), make_device("b")
    ident = _created_then_response_lost(a, "k/one")
    a.store.move(ident, "k/two")
    converge(a, b)
    assert server_snapshot(server) == {ident: ("k/two.blueprint.yaml", "v: 1\n")}
    assert_converged(server, a, b)


def test_a_move_after_a_lost_move_response_is_kept(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The same with a base on record: the lost push was itself a move."""
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("k/one", "v: 1\n").id
    converge(a, b)
    a.store.move(ident, "k/two")
    a.remote.drop_response_next()
    with pytest.raises(TransientError):
        a.sync()
    a.store.move(ident, "k/three")
    converge(a, b)
    assert server_snapshot(server) == {ident: ("k/three.blueprint.yaml", "v: 1\n")}
    assert_converged(server, a, b)


def test_a_delete_after_a_lost_push_response_is_kept(
    make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """The delete of a blueprint without a base is settled locally (never on the server, as far
    as the engine knew), so the server's row came back in the pull and revived it."""
    a, b = make_device("a"), make_device("b")
    ident = _created_then_response_lost(a, "k/one")
    a.store.delete(ident)
    converge(a, b)
    assert server_snapshot(server) == {} and server.rows[ident].row.deleted
    assert_converged(server, a, b)
