"""Wrong arguments to the public API (``localstore.__all__``, ``sync.__all__`` and the methods of
what they return) are refused with a typed error that names the argument and says how to fix it,
and change nothing: no builtin exception from deep inside, no silent misreading (a str taken as a
list, "no" taken as true, True taken as 1, None taken as "everything").

Table-driven: each case is ``(id, call, word)``; ``call`` gets the fixture objects, ``word`` must
appear in the message. Cases already covered by tests/store/test_argument_checks.py,
test_api_input_edges.py and test_subscribe_checks.py are not repeated here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import localstore as _localstore
import sync as _sync
from localstore import LocalStoreError, SaveRequest, crypto
from localstore import archive as _archive
from localstore._daemon_state import LOCK_FILE
from localstore.credentials import CredentialStore as _CredentialStore
from localstore.credentials import EncryptedFileBackend
from localstore.index import Index
from localstore.kv import KVStore as _KVStore

# The cases pass wrong types on purpose: the API under test, seen as Any by the type checker.
localstore: Any = _localstore
sync: Any = _sync
ar: Any = _archive
CredentialStore: Any = _CredentialStore
KVStore: Any = _KVStore
_request: Any = SaveRequest


@dataclass
class World:
    """Everything a case may call, on real files and a real SQLite index in a tmp dir."""

    home: Path
    tmp: Path
    store: Any  # (a BlueprintStore, a KVStore, a CredentialStore: Any for the wrong arguments)
    kv: Any
    kv_index: Index
    creds: Any
    cred_index: Index
    bundle: Path
    bp_id: str

    def snapshot(self) -> tuple[Any, ...]:
        """What a refused call must leave as it was: the blueprint files, the index's rows and
        history, the app data, the credentials and the home's lock file (start_sync takes it only
        once its arguments passed)."""
        files = sorted(
            (str(p.relative_to(self.home)), p.read_bytes())
            for p in (self.home / "blueprints").rglob("*")
            if p.is_file()
        )
        with self.store.index.read() as cur:
            rows = cur.execute("SELECT id, path, rev, name, tags FROM blueprints").fetchall()
            revs = cur.execute("SELECT count(*) FROM revisions").fetchall()
        return (
            files,
            rows,
            revs,
            [(k, self.kv.load(k)) for k in self.kv.keys("")],
            self.creds.list_names(include_internal=True),
            sorted(p.name for p in self.tmp.iterdir()),
            (self.store.settings.paths.state / LOCK_FILE).exists(),
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    store = localstore.open(home=home)
    bp = store.save("team/deploy", "steps: [1]\n", tags=["ops"])
    store.save("team/deploy", "steps: [2]\n")
    bundle = out / "good.zip"
    ar.export_bundle(store, bundle)
    kv_index = Index(tmp_path / "kv.db")
    kv = KVStore(kv_index)
    kv.save("k", {"v": 1}, tags=["t"])
    cred_index = Index(tmp_path / "cred.db")
    backend = EncryptedFileBackend(
        tmp_path / "cred.bin", "pw", params=crypto.ScryptParams(log2_n=10)
    )
    creds = CredentialStore(cred_index, store.settings, backend=backend)
    creds.set("token", "s3cret")
    try:
        yield World(home, out, store, kv, kv_index, creds, cred_index, bundle, bp.meta.id)
    finally:
        kv.close()
        kv_index.close()
        cred_index.close()
        store.close()


Case = tuple[str, Callable[[Any], Any], str]


def _save(**kw: Any) -> Callable[[World], Any]:
    return lambda w: w.store.save("team/new", "a: 1\n", **kw)


def _engine(w: World, **kw: Any) -> Any:
    return sync.SyncEngine(w.store, sync.MemoryRemote(sync.MemoryServer()), **kw)


STORE_CASES: list[Case] = [
    # meta fields: written as given, a non-str broke every later read of the index row
    ("save.version.int", _save(version=5), "version"),
    ("save.author.int", _save(author=5), "author"),
    ("save.name.int", _save(name=5), "name"),
    ("save.description.list", _save(description=["x"]), "description"),
    ("save.name.nul", _save(name="a\x00b"), "name"),
    ("save.description.nul", _save(description="x\x00"), "description"),
    ("save.tags.int", _save(tags=5), "tags"),
    ("save.tags.list-of-int", _save(tags=[5]), "tags"),
    ("save.tags.dict", _save(tags={"a": 1}), "tags"),
    ("save.tags.nul", _save(tags=["ok", "a\x00"]), "tag"),
    ("save.id.int", _save(id=5), "id"),
    ("save.content.int", lambda w: w.store.save("team/new", 5), "content"),
    ("save.meta.str", _save(meta="name: x"), "meta"),
    ("save.tx_hook.int", _save(tx_hook=5), "tx_hook"),
    ("save.path.int", lambda w: w.store.save(5, "a: 1\n"), "path must be a string"),
    ("save.path.bytes", lambda w: w.store.save(b"team/x", "a: 1\n"), "path must be a string"),
    (
        "save_many.item.fields-list",
        lambda w: w.store.save_many([_request(path="team/x", content="a: 1\n", fields=[1])]),
        "fields",
    ),
    ("delete.tx_hook.int", lambda w: w.store.delete("team/deploy", tx_hook=5), "tx_hook"),
    ("move.tx_hook.int", lambda w: w.store.move("team/deploy", "b/x", tx_hook=5), "tx_hook"),
    ("move.new_path.None", lambda w: w.store.move("team/deploy", None), "path must be a string"),
    ("load.ref.int", lambda w: w.store.load(5), "reference must be a string"),
    ("delete.ref.bytes", lambda w: w.store.delete(b"team/deploy"), "reference must be a string"),
    ("check_yaml.content.int", lambda w: w.store.check_yaml(5), "content"),
    ("abspath.rel.None", lambda w: w.store.abspath(None), "rel"),
    ("row_by_id.int", lambda w: w.store.row_by_id(5), "blueprint_id"),
    ("open.reconcile.str", lambda w: localstore.open(home=w.home, reconcile="no"), "reconcile"),
    (
        "open.maintenance.int",
        lambda w: localstore.open(home=w.home, maintenance=0),
        "maintenance",
    ),
    ("open.settings.dict", lambda w: localstore.open(settings={"home": "x"}), "settings"),
    ("open.home.int", lambda w: localstore.open(home=5), "home"),
    ("open.home.nul", lambda w: localstore.open(home=str(w.tmp) + "/a\x00b"), "home"),
    ("load_settings.environ.list", lambda w: localstore.load_settings(environ=["A=1"]), "environ"),
    (
        "load_settings.environ.int-value",
        lambda w: localstore.load_settings(home=w.home, environ={"LOCALSTORE_MAX_DEPTH": 5}),
        "environ",
    ),
    ("daemon_running.str", lambda w: localstore.daemon_running(str(w.home)), "settings"),
]

KV_CASES: list[Case] = [
    ("kv.save.compress.str", lambda w: w.kv.save("a", 1, compress="no"), "compress"),
    ("kv.save.encrypt.str", lambda w: w.kv.save("a", 1, encrypt="no"), "encrypt"),
    ("kv.save.key.int", lambda w: w.kv.save(5, 1), "key must be a string"),
    ("kv.find_by_tag.None", lambda w: w.kv.find_by_tag(None), "tag"),
    ("kv.keys.prefix.None", lambda w: w.kv.keys(None), "prefix"),
    ("kv.init.index.str", lambda w: KVStore(str(w.tmp / "x.db")), "index"),
    ("kv.init.hot_items.neg", lambda w: KVStore(w.kv_index, hot_items=-1), "hot_items"),
    ("kv.init.hot_items.str", lambda w: KVStore(w.kv_index, hot_items="9"), "hot_items"),
    ("kv.init.hot_bytes.bool", lambda w: KVStore(w.kv_index, hot_bytes=True), "hot_bytes"),
    ("kv.init.hot_ttl.str", lambda w: KVStore(w.kv_index, hot_ttl="x"), "hot_ttl"),
    ("kv.init.hot_ttl.neg", lambda w: KVStore(w.kv_index, hot_ttl=-1), "hot_ttl"),
    ("kv.init.clock.int", lambda w: KVStore(w.kv_index, clock=5), "clock"),
    ("kv.init.credentials.str", lambda w: KVStore(w.kv_index, credentials="x"), "credentials"),
    ("kv.init.settings.dict", lambda w: KVStore(w.kv_index, settings={}), "settings"),
]

CRED_CASES: list[Case] = [
    (
        "cred.list_names.include_internal.str",
        lambda w: w.creds.list_names(include_internal="no"),
        "include_internal",
    ),
    ("cred.set.name.int", lambda w: w.creds.set(5, "v"), "name must be a string"),
    ("cred.set.value.bytes", lambda w: w.creds.set("a", b"v"), "must be a string"),
    (
        "cred.init.index.str",
        lambda w: CredentialStore(str(w.tmp / "c.db"), w.store.settings),
        "index",
    ),
    ("cred.init.settings.dict", lambda w: CredentialStore(w.cred_index, {}), "settings"),
    (
        "cred.init.backend.str",
        lambda w: CredentialStore(w.cred_index, w.store.settings, backend="file"),
        "backend",
    ),
    (
        "cred.init.environ.list",
        lambda w: CredentialStore(w.cred_index, w.store.settings, environ=["A=1"]),
        "environ",
    ),
]

BUNDLE_CASES: list[Case] = [
    # refs as a str was iterated: "team/deploy" exported the blueprints named "t", "e", ...
    ("export.refs.str", lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", refs="x"), "refs"),
    ("export.refs.int", lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", refs=5), "refs"),
    ("export.dest.int", lambda w: ar.export_bundle(w.store, 5), "dest"),
    ("export.dest.None", lambda w: ar.export_bundle(w.store, None), "dest"),
    ("export.dest.nul", lambda w: ar.export_bundle(w.store, str(w.tmp) + "/b\x00.zip"), "dest"),
    (
        "export.passphrase.bytes",
        lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", passphrase=b"pw"),
        "passphrase",
    ),
    (
        "export.passphrase.empty",
        lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", passphrase=""),
        "passphrase",
    ),
    (
        "export.progress.int",
        lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", progress=5),
        "progress",
    ),
    (
        "export.limits.dict",
        lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", limits={}),
        "limits",
    ),
    (
        "export.scrypt_params.dict",
        lambda w: ar.export_bundle(w.store, w.tmp / "b.zip", passphrase="pw", scrypt_params={}),
        "scrypt_params",
    ),
    ("export.store.str", lambda w: ar.export_bundle(str(w.home), w.tmp / "b.zip"), "store"),
    ("export_yaml.dest.int", lambda w: ar.export_yaml(w.store, "team/deploy", 5), "dest"),
    ("import.path.None", lambda w: ar.import_bundle(w.store, None), "path"),
    ("import.path.int", lambda w: ar.import_bundle(w.store, 5), "path"),
    ("import.dry_run.str", lambda w: ar.import_bundle(w.store, w.bundle, dry_run="no"), "dry_run"),
    (
        "import.limits.empty-dict",
        lambda w: ar.import_bundle(w.store, w.bundle, limits={}),
        "limits",
    ),
    ("import.merger.int", lambda w: ar.import_bundle(w.store, w.bundle, merger=5), "merger"),
    ("import.progress.int", lambda w: ar.import_bundle(w.store, w.bundle, progress=5), "progress"),
    (
        "import.passphrase.int",
        lambda w: ar.import_bundle(w.store, w.bundle, passphrase=5),
        "passphrase",
    ),
    ("import.batch_size.0", lambda w: ar.import_bundle(w.store, w.bundle, batch_size=0), "batch"),
    (
        "import.batch_size.bool",
        lambda w: ar.import_bundle(w.store, w.bundle, batch_size=True),
        "batch",
    ),
    (
        "import.batch_size.str",
        lambda w: ar.import_bundle(w.store, w.bundle, batch_size="5"),
        "batch",
    ),
    ("is_encrypted.int", lambda w: ar.is_encrypted(5), "path"),
]

SYNC_CASES: list[Case] = [
    ("list_conflicts.store.str", lambda w: sync.list_conflicts(str(w.home)), "store"),
    (
        "list_conflicts.include_resolved.str",
        lambda w: sync.list_conflicts(w.store, include_resolved="no"),
        "include_resolved",
    ),
    ("list_flagged.store.str", lambda w: sync.list_flagged(str(w.home)), "store"),
    ("list_quarantine.store.None", lambda w: sync.list_quarantine(None), "store"),
    ("local_status.store.None", lambda w: sync.local_status(None), "store"),
    ("local_status.state.unknown", lambda w: sync.local_status(w.store, state="nope"), "state"),
    ("get_conflict.cid.bool", lambda w: sync.get_conflict(w.store, True), "cid"),
    ("get_conflict.cid.str", lambda w: sync.get_conflict(w.store, "1"), "cid"),
    ("get_conflict.cid.float", lambda w: sync.get_conflict(w.store, 1.5), "cid"),
    (
        "resolve_conflict.take.unknown",
        lambda w: sync.resolve_conflict(w.store, 1, take="mine"),
        "take",
    ),
    (
        "resolve_conflict.content.int",
        lambda w: sync.resolve_conflict(w.store, 1, content=5),
        "content",
    ),
    (
        "resolve_conflict.how.int",
        lambda w: sync.resolve_conflict(w.store, 1, take="local", how=5),
        "how",
    ),
    ("conflict_diff.None", lambda w: sync.conflict_diff(None), "record"),
    ("daemon_running.None", lambda w: sync.daemon_running(None), "settings"),
    ("start_sync.store.str", lambda w: sync.start_sync(str(w.home)), "store"),
    ("start_sync.remote.str", lambda w: sync.start_sync(w.store, remote="x"), "remote"),
    (
        "start_sync.watch.str",
        lambda w: sync.start_sync(
            w.store, remote=sync.MemoryRemote(sync.MemoryServer()), watch="no"
        ),
        "watch",
    ),
    (
        "start_sync.unknown-keyword",
        lambda w: sync.start_sync(
            w.store, remote=sync.MemoryRemote(sync.MemoryServer()), watch=False, debounce=1
        ),
        "debounce",
    ),
    # (an unknown keyword opened the home's Supabase session first: AuthError without a login)
    ("store.start_sync.unknown-keyword", lambda w: w.store.start_sync(nope=1), "nope"),
    (
        "start_sync.debounce_s.str",
        lambda w: sync.start_sync(
            w.store, remote=sync.MemoryRemote(sync.MemoryServer()), watch=False, debounce_s="x"
        ),
        "debounce_s",
    ),
    # A wrong engine argument was refused only after the home's lock file was made (and, with
    # no remote given, after the home's Supabase session was opened: NotLoggedInError here).
    (
        "start_sync.batch_size.0",
        lambda w: sync.start_sync(
            w.store, remote=sync.MemoryRemote(sync.MemoryServer()), watch=False, batch_size=0
        ),
        "batch_size",
    ),
    (
        "start_sync.rng.int",
        lambda w: sync.start_sync(
            w.store, remote=sync.MemoryRemote(sync.MemoryServer()), watch=False, rng=5
        ),
        "rng",
    ),
    ("store.start_sync.debounce_s.str", lambda w: w.store.start_sync(debounce_s="x"), "debounce_s"),
    ("start_sync.clock.int", lambda w: sync.start_sync(w.store, clock=5), "clock"),
    ("embedded.stop.timeout.str", lambda w: _embedded(w).stop("x"), "timeout"),
    ("embedded.subscribe_status.int", lambda w: _embedded(w).subscribe_status(5), "callback"),
    (
        "engine.store.str",
        lambda w: sync.SyncEngine("x", sync.MemoryRemote(sync.MemoryServer())),
        "store",
    ),
    ("engine.remote.str", lambda w: sync.SyncEngine(w.store, "x"), "remote"),
    ("engine.debounce_s.nan", lambda w: _engine(w, debounce_s=math.nan), "debounce_s"),
    ("engine.backoff_cap_s.str", lambda w: _engine(w, backoff_cap_s="60"), "backoff_cap_s"),
    ("engine.poll_interval_s.neg", lambda w: _engine(w, poll_interval_s=-1), "poll_interval_s"),
    ("engine.batch_size.0", lambda w: _engine(w, batch_size=0), "batch_size"),
    ("engine.batch_size.neg", lambda w: _engine(w, batch_size=-5), "batch_size"),
    ("engine.batch_bytes.bool", lambda w: _engine(w, batch_bytes=True), "batch_bytes"),
    ("engine.apply_batch.float", lambda w: _engine(w, apply_batch=2.5), "apply_batch"),
    ("engine.pull_limit.0", lambda w: _engine(w, pull_limit=0), "pull_limit"),
    ("engine.clock.int", lambda w: _engine(w, clock=5), "clock"),
    ("engine.now.str", lambda w: _engine(w, now="x"), "now"),
    ("engine.rng.int", lambda w: _engine(w, rng=5), "rng"),
    ("engine.request_sync.str", lambda w: _engine(w).request_sync("x"), "delay"),
    ("engine.request_sync.inf", lambda w: _engine(w).request_sync(math.inf), "delay"),
    ("engine.join.str", lambda w: _engine(w).join("x"), "timeout"),
    ("engine.subscribe_status.int", lambda w: _engine(w).subscribe_status(5), "callback"),
    ("engine.backoff_delay.str", lambda w: _engine(w).backoff_delay("3"), "failures"),
    ("engine.conflict.bool", lambda w: _engine(w).conflict(True), "cid"),
    (
        "engine.conflicts.int",
        lambda w: _engine(w).conflicts(include_resolved=1),
        "include_resolved",
    ),
    ("engine.resolve_conflict.take", lambda w: _engine(w).resolve_conflict(1, take="yes"), "take"),
]


@pytest.fixture(autouse=True)
def _stop_embedded() -> Iterator[None]:
    yield
    while _RUNNING:
        _RUNNING.pop().stop()


_RUNNING: list[Any] = []


def _embedded(w: World) -> Any:
    """A running in-process sync (stopped after the test) to call wrongly."""
    handle = sync.start_sync(w.store, remote=sync.MemoryRemote(sync.MemoryServer()), watch=False)
    _RUNNING.append(handle)
    return handle


ALL_CASES = STORE_CASES + KV_CASES + CRED_CASES + BUNDLE_CASES + SYNC_CASES
assert len({c[0] for c in ALL_CASES}) == len(ALL_CASES), "case ids must be unique"


@pytest.mark.parametrize(
    ("call", "word"), [c[1:] for c in ALL_CASES], ids=[c[0] for c in ALL_CASES]
)
def test_a_wrong_argument_is_refused_typed_and_changes_nothing(
    world: World, call: Callable[[World], Any], word: str
) -> None:
    before = world.snapshot()
    with pytest.raises(LocalStoreError) as info:
        result = call(world)
        for stop in ("stop", "close"):  # (an engine or handle made by mistake: end it)
            if callable(getattr(result, stop, None)):
                getattr(result, stop)()
                break
    assert isinstance(info.value, _localstore.InvalidInputError | _localstore.ConfigError), (
        info.value
    )
    assert word in info.value.message, info.value.message
    assert info.value.hint, f"no hint for: {info.value.message}"
    after = world.snapshot()
    if _RUNNING:  # (the case started an in-process sync to call wrongly: it holds the lock)
        after, before = after[:-1], before[:-1]
    assert after == before


def test_right_arguments_of_the_same_calls_still_work(world: World) -> None:
    """The checks refuse only what is wrong: the forms the API documents still pass."""
    s = world.store
    assert s.save("team/one", "a: 1\n", tags="solo").meta.tags == ("solo",)  # one tag as a str
    assert s.save("team/two", "a: 1\n", tags=(t for t in ["x", "y"])).meta.tags == ("x", "y")
    assert s.save("team/three", "a: 1\n", version="1.0", author="me").meta.version == "1.0"
    s.check_yaml("a: 1\n")  # text as well as bytes
    s.check_yaml(b"a: 1\n")
    assert s.load(world.bp_id).path == "team/deploy.blueprint.yaml"
    assert localstore.daemon_running(s.settings) is None
    result = ar.export_bundle(s, world.tmp / "sel.zip", refs=["team/deploy"])
    assert result.count == 1
    assert ar.import_bundle(s, world.bundle, dry_run=True, batch_size=1).dry_run
    assert sync.local_status(s, state="paused").state == "paused"
    assert sync.list_conflicts(s, include_resolved=True) == []
    world.kv.save("z", 1, compress=True)
    assert world.kv.find_by_tag("t") == ["k"]
    assert "token" in world.creds.list_names(include_internal=False)
    engine = _engine(world, batch_size=3, debounce_s=0, poll_interval_s=0.5)
    engine.request_sync(0)
    assert engine.backoff_delay(2) >= 0
    assert engine.join(0.1)
