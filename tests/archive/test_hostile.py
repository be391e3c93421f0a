"""Thousands of generated hostile bundles: each is refused with a clear error, quickly, in bounded
memory, writing nothing outside its staging folder and leaving no staging folder behind.

The examples are split over strategies (names, links and devices, duplicates and case collisions,
overlapping entries, sizes and ratio bombs, YAML alias bombs, bad manifests, encrypted garbage);
together they run about 2,000 archives by default and ten times more with LOCALSTORE_STRESS=1.
The time and memory bounds are generous safety limits on the rejection path, not benchmarks.
"""

from __future__ import annotations

import json
import os
import stat
import string
import time
import tracemalloc
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localstore import archive
from localstore.config import load_settings
from localstore.crypto import encrypt_stream
from localstore.errors import (
    BundleError,
    BundleFormatError,
    BundleIntegrityError,
    BundleLimitError,
    DecryptionError,
    UnsafeBundleError,
)
from localstore.store import BlueprintStore

from . import zipcraft as z
from .conftest import FAST_SCRYPT, STRESS

SCALE = 10 if STRESS else 1
# A bound on the work of one rejection (a bomb must be refused before it is expanded), in CPU
# seconds of the importing thread: wall-clock time failed it on a loaded machine (other processes'
# time), which Hypothesis then reported as a flaky test. An expanded bomb takes several seconds.
MAX_CPU_SECONDS = 2.0
MAX_PEAK_BYTES = 64 * 1024 * 1024
SMALL = archive.BundleLimits(
    max_entries=40,
    max_file_bytes=64 * 1024,
    max_total_bytes=256 * 1024,
    max_manifest_bytes=32 * 1024,
    ratio_floor_bytes=32 * 1024,
    max_ratio=50,
    max_directory_bytes=16 * 1024,
)


@dataclass
class Env:
    """One store shared by every example of a module, and where bundles are dropped."""

    root: Path
    store: BlueprintStore
    incoming: Path
    checked: int = 0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("hostile")
    store = BlueprintStore(load_settings(home=root / "home"), maintenance=False)
    store.save("existing/keep", "keep: me\n")
    incoming = root / "incoming"
    incoming.mkdir()
    try:
        yield Env(root, store, incoming)
    finally:
        store.close()


def _snapshot(root: Path) -> dict[str, int]:
    """Every path under root with its size. The index (home/data) is left out: a WAL checkpoint
    may touch it; nothing else may change."""
    out: dict[str, int] = {}
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                out[entry.path] = entry.stat(follow_symlinks=False).st_size
                if entry.is_dir(follow_symlinks=False) and entry.name != "data":
                    stack.append(entry.path)
    return out


def assert_rejected(
    env: Env,
    data: bytes,
    expected: type[Exception] | tuple[type[Exception], ...] = BundleError,
    *,
    limits: archive.BundleLimits | None = None,
    passphrase: str | None = None,
) -> Exception:
    """Import ``data`` and check it is refused cleanly; return the error."""
    bundle = env.incoming / "probe.lsbundle"  # one name: creating fresh names is slow on ext4
    bundle.write_bytes(data)
    before = _snapshot(env.root)
    tracemalloc.start()
    try:
        started = time.thread_time()
        with pytest.raises(expected) as info:
            archive.import_bundle(env.store, bundle, limits=limits, passphrase=passphrase)
        elapsed = time.thread_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < MAX_CPU_SECONDS, f"rejection took {elapsed:.2f} CPU s: {info.value}"
    assert peak < MAX_PEAK_BYTES, f"rejection peaked at {peak} bytes: {info.value}"
    err = info.value
    message = str(err)
    assert message and "Traceback" not in message and len(message) < 600
    assert _snapshot(env.root) == before, "something was written outside staging"
    assert not list(env.store.paths.cache.glob("import-staging-*")), "staging left behind"
    assert env.store.count() == 1
    env.checked += 1
    return err


def run(n: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for one strategy: n examples (times ten under LOCALSTORE_STRESS)."""
    return settings(max_examples=n * SCALE, deadline=None, database=None)


def assert_ran(env: Env, before: int, n: int) -> None:
    # Hypothesis stops early when a strategy runs out of distinct inputs; ours must not.
    assert env.checked - before >= int(n * SCALE * 0.9), (env.checked - before, n * SCALE)


SEG = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=8)
BPS = st.lists(SEG, min_size=1, max_size=3, unique_by=str.lower).map(
    lambda names: [z.Blueprint(f"f/bp-{n}.blueprint.yaml") for n in names]
)


# -- names ------------------------------------------------------------------------------------------

CONTROL = [chr(i) for i in range(1, 32)] + ["\x7f"]
HOSTILE_NAMES = st.one_of(
    st.builds(lambda s: "/" + s, SEG),
    st.builds(lambda d, s: f"{d}:/{s}", st.sampled_from("CDcz"), SEG),
    st.builds(lambda d, s: f"{d}:{s}", st.sampled_from("CDcz"), SEG),
    st.builds(lambda a, b: f"{a}/../{b}", SEG, SEG),
    st.builds(lambda n, s: "../" * n + s, st.integers(1, 6), SEG),
    st.builds(lambda a, b: f"{a}\\{b}", SEG, SEG),
    st.builds(lambda a, b: f"..\\..\\{a}{b}", SEG, SEG),
    st.builds(lambda a, b: f"{a}\x00{b}", SEG, SEG),
    st.builds(lambda a, c, b: f"{a}{c}{b}", SEG, st.sampled_from(CONTROL), SEG),
    st.builds(lambda a, b: f"{a}//{b}", SEG, SEG),
    st.builds(lambda a, b: f"{a}/./{b}", SEG, SEG),
    st.builds(lambda s: "./" + s, SEG),
    st.builds(lambda n: "x" * n, st.integers(archive.BundleLimits().max_path_chars + 1, 3000)),
)


@given(bps=BPS, name=HOSTILE_NAMES, where=st.sampled_from(["extra", "blueprint", "prefixed"]))
@run(420)
def _names(env: Env, bps: list[z.Blueprint], name: str, where: str) -> None:
    entries = z.bundle_entries(bps)
    if where == "extra":
        entries.append(z.RawEntry(name.encode(), b"x"))
    elif where == "prefixed":
        entries.append(z.RawEntry(("blueprints/" + name).encode(), b"x"))
    else:
        entries = z.with_entry(entries, 1, name=name.encode())
    err = assert_rejected(env, z.build(entries), (UnsafeBundleError, BundleLimitError))
    assert "entry" in str(err)


def test_hostile_names(env: Env) -> None:
    before = env.checked
    _names(env)
    assert_ran(env, before, 420)


@given(bps=BPS, junk=st.binary(min_size=1, max_size=20).filter(lambda b: not _utf8(b)))
@run(60)
def _bad_utf8_names(env: Env, bps: list[z.Blueprint], junk: bytes) -> None:
    entries = [*z.bundle_entries(bps), z.RawEntry(b"x" + junk)]
    assert_rejected(env, z.build(entries), BundleFormatError)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_names_that_are_not_utf8(env: Env) -> None:
    before = env.checked
    _bad_utf8_names(env)
    assert_ran(env, before, 60)


# -- links and devices ------------------------------------------------------------------------------

SPECIAL = st.sampled_from(
    [
        stat.S_IFLNK | 511,
        stat.S_IFCHR | 384,
        stat.S_IFBLK | 384,
        stat.S_IFIFO | 384,
        stat.S_IFSOCK | 384,
    ]
)


@given(
    bps=BPS, mode=SPECIAL, index=st.integers(0, 6), target=st.sampled_from(["/etc/passwd", ".."])
)
@run(200)
def _links(env: Env, bps: list[z.Blueprint], mode: int, index: int, target: str) -> None:
    entries = z.bundle_entries(bps)
    if index >= len(entries):
        entries.append(z.RawEntry(f"blueprints/f/link{index}".encode(), target.encode(), mode=mode))
    else:
        entries = z.with_entry(entries, index, mode=mode)
    err = assert_rejected(env, z.build(entries), UnsafeBundleError)
    assert "link" in str(err) or "device" in str(err)


def test_links_and_devices(env: Env) -> None:
    before = env.checked
    _links(env)
    assert_ran(env, before, 200)


# -- duplicates and case collisions -----------------------------------------------------------------


def _variants(name: str) -> list[str]:
    out = [name, name.upper(), name.swapcase(), name.title()]
    return [v for v in out if v == name or v.casefold() == name.casefold()]


@given(bps=BPS, index=st.integers(0, 6), pick=st.integers(0, 3), accent=st.booleans())
@run(200)
def _duplicates(env: Env, bps: list[z.Blueprint], index: int, pick: int, accent: bool) -> None:
    entries = z.bundle_entries(bps)
    if accent:
        # The same name in composed and decomposed Unicode: one file on macOS.
        composed = "blueprints/caf\u00e9-" + str(index)
        entries += [
            z.RawEntry(composed.encode(), b"a"),
            z.RawEntry(unicodedata.normalize("NFD", composed).encode(), b"b"),
        ]
    else:
        src = entries[index % len(entries)]
        variants = _variants(src.name.decode())
        entries.append(replace(src, name=variants[pick % len(variants)].encode()))
    err = assert_rejected(env, z.build(entries), UnsafeBundleError)
    assert "appears" in str(err)


def test_duplicate_and_case_colliding_names(env: Env) -> None:
    before = env.checked
    _duplicates(env)
    assert_ran(env, before, 200)


# -- overlapping entries (CVE-2024-0450) ------------------------------------------------------------


@given(
    bps=BPS,
    data=st.data(),
    kind=st.sampled_from(["same-header", "inside", "longer", "bomb"]),
)
@run(250)
def _overlaps(env: Env, bps: list[z.Blueprint], data: st.DataObject, kind: str) -> None:
    entries = z.bundle_entries(bps)
    i = data.draw(st.integers(0, len(entries) - 2))
    j = data.draw(st.integers(i + 1, len(entries) - 1))
    if kind == "same-header":
        entries = z.with_entry(entries, j, offset_of=i)
    elif kind == "inside":
        entries = z.with_entry(entries, j, offset_of=i, offset_delta=data.draw(st.integers(1, 40)))
    elif kind == "longer":
        extra = data.draw(st.integers(1, 200))
        entries = z.with_entry(
            entries, i, compress_size=len(z._compress(entries[i].data, 8)) + extra
        )
    else:
        # The overlapped-entries zip bomb: many directory records share one compressed body.
        body = z.RawEntry(b"blueprints/bomb", b"\0" * 4096)
        copies = [
            replace(body, name=f"blueprints/bomb{k}".encode(), offset_of=len(entries))
            for k in range(5)
        ]
        entries = [*entries, body, *copies]
    assert_rejected(env, z.build(entries), (UnsafeBundleError, BundleFormatError))


def test_overlapping_entries(env: Env) -> None:
    before = env.checked
    _overlaps(env)
    assert_ran(env, before, 250)


# -- sizes and ratio bombs --------------------------------------------------------------------------


@given(
    bps=BPS,
    data=st.data(),
    kind=st.sampled_from(["ratio", "lying-size", "big", "many", "total", "forged-dir"]),
)
@run(250)
def _sizes(env: Env, bps: list[z.Blueprint], data: st.DataObject, kind: str) -> None:
    limits: archive.BundleLimits | None = SMALL
    if kind == "ratio":
        size = data.draw(st.integers(1100, 2000)) * 1024
        bps[0].yaml = b"a: b\n" + b"#" * size
        limits = None  # the real defaults must catch it
        entries = z.bundle_entries(bps)
        expected: tuple[type[Exception], ...] = (BundleLimitError,)
    elif kind == "lying-size":
        bps[0].yaml = b"a: b\n" + b"#" * data.draw(st.integers(40_000, 60_000))
        entries = z.bundle_entries(bps)
        entries = z.with_entry(entries, 1, file_size=data.draw(st.integers(0, 100)))
        expected = (BundleFormatError, BundleIntegrityError)
    elif kind == "big":
        bps[0].yaml = b"a: " + bytes(range(33, 123)) * data.draw(st.integers(800, 2000)) + b"\n"
        entries = z.bundle_entries(bps)
        expected = (BundleLimitError,)
    elif kind == "many":
        entries = z.bundle_entries(bps)
        entries += [
            z.RawEntry(f"extra/{k}".encode(), b"") for k in range(data.draw(st.integers(41, 80)))
        ]
        expected = (BundleLimitError,)
    elif kind == "total":
        for k, bp in enumerate(bps):
            bp.yaml = b"a: " + str(k).encode() * 60_000 + b"\n"
        bps += [
            z.Blueprint(f"g/t{k}.blueprint.yaml", yaml=b"a: " + b"7" * 60_000 + b"\n")
            for k in range(4)
        ]
        entries = z.bundle_entries(bps)
        expected = (BundleLimitError,)
    else:
        entries = z.bundle_entries(bps)
        raw = z.build(entries, count=data.draw(st.integers(41, 65535)))
        assert_rejected(env, raw, BundleLimitError, limits=limits)
        return
    assert_rejected(env, z.build(entries), expected, limits=limits)


def test_sizes_and_ratio_bombs(env: Env) -> None:
    before = env.checked
    _sizes(env)
    assert_ran(env, before, 250)


# -- YAML alias bombs and deep nesting --------------------------------------------------------------


def _alias_bomb(width: int, depth: int) -> bytes:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for k in range(1, depth + 1):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n").encode()


@given(bps=BPS, width=st.integers(6, 12), depth=st.integers(7, 10), nested=st.integers(0, 3))
@run(200)
def _alias(env: Env, bps: list[z.Blueprint], width: int, depth: int, nested: int) -> None:
    if nested:
        bps[-1].yaml = b"a: " + b"[" * (64 + nested * 20) + b"]" * (64 + nested * 20) + b"\n"
    else:
        bps[-1].yaml = _alias_bomb(width, depth)
    err = assert_rejected(env, z.build(z.bundle_entries(bps)), BundleLimitError)
    assert "alias" in str(err) or "nested" in str(err)


def test_yaml_alias_bombs(env: Env) -> None:
    before = env.checked
    _alias(env)
    assert_ran(env, before, 200)


# -- bad manifests ----------------------------------------------------------------------------------


def _mutations(bps: list[z.Blueprint]) -> list[Callable[[dict], object]]:
    def entry(m: dict) -> dict:
        return m["blueprints"][0]

    def setv(path: list[str], value: object) -> Callable[[dict], object]:
        def apply(m: dict) -> object:
            target = m
            for key in path[:-1]:
                target = entry(m) if key == "#0" else target[key]
            target[path[-1]] = value
            return m

        return apply

    return [
        setv(["format"], "zip"),
        setv(["format"], None),
        setv(["version"], "2.0"),
        setv(["version"], "0.9"),
        setv(["version"], 1),
        setv(["version"], "1"),
        setv(["version"], "1.0.0"),
        setv(["blueprints"], {}),
        setv(["blueprints"], [1, 2]),
        setv(["source_device"], "laptop"),
        setv(["created"], 12),
        setv(["#0", "id"], "not-a-uuid"),
        setv(["#0", "id"], str(uuid.uuid4()).upper()),
        setv(["#0", "id"], str(uuid.uuid4())),
        setv(["#0", "path"], "f/x"),
        setv(["#0", "path"], "../x.blueprint.yaml"),
        setv(["#0", "path"], "/abs.blueprint.yaml"),
        setv(["#0", "path"], 5),
        setv(["#0", "yaml"], "sha"),
        setv(["#0", "yaml", "size"], -1),
        setv(["#0", "yaml", "size"], True),
        setv(["#0", "yaml", "size"], 10**30),
        setv(["#0", "yaml", "sha256"], "0" * 64),
        setv(["#0", "yaml", "sha256"], "XYZ"),
        setv(["#0", "meta", "sha256"], "f" * 64),
        setv(["#0", "meta", "size"], 3),
        setv(["#0", "yaml", "size"], 1),
        lambda m: {**m, "blueprints": m["blueprints"] + m["blueprints"][:1]},
        lambda m: {
            **m,
            "blueprints": [*m["blueprints"][1:], {**entry(m), "path": entry(m)["path"].upper()}],
        },
        lambda m: [m],
        lambda m: "manifest",
        lambda m: {k: v for k, v in m.items() if k != "blueprints"},
        lambda m: {k: v for k, v in m.items() if k != "version"},
    ]


@given(
    bps=BPS,
    data=st.data(),
    kind=st.sampled_from(["mutate", "junk", "deep", "missing", "unlisted", "absent", "meta-id"]),
)
@run(400)
def _manifests(env: Env, bps: list[z.Blueprint], data: st.DataObject, kind: str) -> None:
    entries = z.bundle_entries(bps)
    if kind == "mutate":
        mutate = data.draw(st.sampled_from(_mutations(bps)))
        body = json.dumps(mutate(z.manifest(bps))).encode()
        entries = z.with_entry(entries, 0, data=body)
    elif kind == "junk":
        entries = z.with_entry(entries, 0, data=data.draw(st.binary(max_size=200)))
    elif kind == "deep":
        n = data.draw(st.integers(2000, 200_000))
        entries = z.with_entry(entries, 0, data=b"[" * n + b"]" * n)
    elif kind == "missing":
        entries = entries[1:]
    elif kind == "unlisted":
        entries.append(z.RawEntry(b"blueprints/f/sneaky.blueprint.yaml", b"a: 1\n"))
    elif kind == "absent":
        entries.pop(data.draw(st.integers(1, len(entries) - 1)))
    else:
        wrong = z.Blueprint(bps[0].path, id=str(uuid.uuid4()))
        entries = z.with_entry(entries, 2, data=wrong.meta_bytes())
        man = z.manifest(bps)
        man["blueprints"][0]["meta"] = {  # type: ignore[index]
            "size": len(wrong.meta_bytes()),
            "sha256": __import__("hashlib").sha256(wrong.meta_bytes()).hexdigest(),
        }
        entries = z.with_entry(entries, 0, data=json.dumps(man).encode())
    assert_rejected(env, z.build(entries), limits=SMALL if kind == "deep" else None)


def test_bad_manifests(env: Env) -> None:
    before = env.checked
    _manifests(env)
    assert_ran(env, before, 400)


# -- encrypted garbage ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed_zip() -> bytes:
    import io

    plain = z.build(z.bundle_entries([z.Blueprint("f/a.blueprint.yaml")]))
    out = io.BytesIO()
    out.write(archive.ENCRYPTED_MAGIC)
    encrypt_stream(
        io.BytesIO(plain),
        out,
        "pw",
        aad=archive.ENCRYPTED_MAGIC,
        params=FAST_SCRYPT,
        chunk_size=1024,
    )
    return out.getvalue()


@given(data=st.data(), kind=st.sampled_from(["flip", "truncate", "junk", "wrong-pass"]))
@run(100)
def _encrypted(env: Env, sealed: bytes, data: st.DataObject, kind: str) -> None:
    raw = bytearray(sealed)
    passphrase = "pw"
    if kind == "flip":
        # Not the scrypt cost bytes: a flip there may raise N to 2**15, which is legitimately slow
        # (~0.7 s here) rather than refused; test_roundtrip covers refusing costly parameters.
        cost = range(len(archive.ENCRYPTED_MAGIC) + 5, len(archive.ENCRYPTED_MAGIC) + 8)
        pos = data.draw(
            st.integers(len(archive.ENCRYPTED_MAGIC), len(raw) - 1).filter(lambda p: p not in cost)
        )
        raw[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(len(archive.ENCRYPTED_MAGIC), len(raw) - 1))]
    elif kind == "junk":
        raw = bytearray(archive.ENCRYPTED_MAGIC + data.draw(st.binary(max_size=300)))
    else:
        passphrase = data.draw(st.text(min_size=1, max_size=10).filter(lambda p: p != "pw"))
    assert_rejected(env, bytes(raw), (DecryptionError, BundleLimitError), passphrase=passphrase)


def test_encrypted_garbage(env: Env, sealed_zip: bytes) -> None:
    before = env.checked
    _encrypted(env, sealed_zip)
    assert_ran(env, before, 100)


# -- random corruption of a valid bundle (dry run): refused cleanly or read unchanged ----------------


CORRUPTIBLE = z.build(
    z.bundle_entries(
        [
            z.Blueprint("f/a.blueprint.yaml", id="00000000-0000-4000-8000-000000000001"),
            z.Blueprint("f/b.blueprint.yaml", id="00000000-0000-4000-8000-000000000002"),
        ],
        man=None,
    )
)


@given(data=st.data())
@run(150)
def _corrupt(env: Env, data: st.DataObject) -> None:
    raw = bytearray(CORRUPTIBLE)
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    bundle = env.incoming / "corrupt.lsbundle"
    bundle.write_bytes(bytes(raw))
    try:
        result = archive.import_bundle(env.store, bundle, dry_run=True)
    except BundleError as exc:
        assert str(exc)
    else:
        # Only bytes nobody verifies (timestamps, version-made-by) were hit: content is intact.
        assert sorted(i.path for i in result.items) == ["f/a.blueprint.yaml", "f/b.blueprint.yaml"]
    finally:
        bundle.unlink()
    assert not list(env.store.paths.cache.glob("import-staging-*"))


def test_random_corruption_never_escapes_the_error_tree(env: Env) -> None:
    _corrupt(env)
