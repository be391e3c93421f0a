"""A bundle's ``manifest.json``: read under a value budget, parsed and checked field by field.

Every field a reader relies on (ids, canonical paths, sizes, SHA-256 digests, ancestors,
``put_aside_from``) is checked before any blueprint is extracted; a manifest an attacker made
large (JSON values, bytes) is refused before ``json.loads`` builds it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from localstore import files as fs
from localstore._bundle_format import (
    _NOT_A_BUNDLE_HINT,
    ENTRY_PREFIX,
    FORMAT_MAJOR,
    FORMAT_NAME,
    MANIFEST_NAME,
    MAX_ANCESTORS,
    BundleLimits,
)
from localstore._bundle_inflate import _EntryReader, _Stats, _stream_entry
from localstore.blueprint import is_uuid
from localstore.errors import (
    BundleFormatError,
    BundleLimitError,
    UnsafeBundleError,
    UnsafePathError,
)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^(\d{1,6})\.(\d{1,6})$")


def _no_manifest(files: dict[str, zipfile.ZipInfo]) -> BundleFormatError:
    """The error for a zip without ``manifest.json``: a bundle unpacked and zipped again as its
    folder (what Finder's Compress and Explorer's Send to do) holds it one level down, and "is
    it a .lsbundle?" did not say so."""
    inner = sorted(n for n in files if n.count("/") == 1 and n.endswith("/" + MANIFEST_NAME))
    if len(inner) == 1:
        folder = inner[0].split("/", 1)[0]
        return BundleFormatError(
            f"the bundle has no manifest.json at its top, but its folder {folder[:80]!r} holds "
            "one: it was zipped as a folder",
            hint="zip what the folder holds (manifest.json and blueprints/), not the folder, "
            "or export the bundle again",
        )
    # A zip of loose YAML files, most likely: "is it a .lsbundle?" gave no way on.
    return BundleFormatError(
        "the bundle has no manifest.json: it is a zip, not a .lsbundle", hint=_NOT_A_BUNDLE_HINT
    )


# JSON values a manifest may hold per blueprint it can list (an entry is 8 with its two file
# objects: room for fields a later minor version adds), and for its header.
_VALUES_PER_BLUEPRINT = 16
_HEADER_VALUES = 1024
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _too_many_values(raw: bytes, budget: int) -> bool:
    """True if ``raw`` holds more than ``budget`` JSON values (commas outside strings, plus one).

    Checked before parsing: json.loads costs up to ~25 bytes of memory per input byte
    (``[{},{},...]``: 64 MiB of manifest took 1.6 GB) and has no hook for every kind of value.
    Commas are counted at C speed; only when there are too many are those inside strings (a path
    may hold commas) found and taken off, one string at a time so nothing large is built."""
    commas = raw.count(b",")
    if commas < budget:
        return False
    outside = end = 0
    for m in _JSON_STRING.finditer(raw):
        commas -= raw.count(b",", m.start(), m.end())
        outside += raw.count(b",", end, m.start())
        end = m.end()
        if commas < budget:
            return False
        if outside >= budget:  # already too many, whatever the rest holds
            return True
    return True


def _read_manifest(
    reader: _EntryReader, info: zipfile.ZipInfo, limits: BundleLimits, stats: _Stats
) -> Any:
    buf = io.BytesIO()
    _stream_entry(reader, info, buf, limits.max_manifest_bytes, limits, stats)
    raw = buf.getvalue()
    budget = _HEADER_VALUES + _VALUES_PER_BLUEPRINT * (limits.max_entries // 2)
    if _too_many_values(raw, budget):
        raise BundleLimitError(
            f"manifest.json holds more than {budget} values, more than "
            f"{limits.max_entries // 2} blueprints need"
        )
    del buf
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleFormatError(f"manifest.json is not valid JSON: {str(exc)[:200]}") from exc


@dataclass(frozen=True, slots=True)
class _Wanted:
    id: str
    path: str
    yaml_name: str
    meta_name: str
    yaml_size: int
    yaml_sha256: str
    meta_size: int
    meta_sha256: str
    ancestors: tuple[str, ...] = ()
    put_aside_from: str = ""


def _parse_manifest(data: Any, limits: BundleLimits) -> tuple[dict[str, Any], list[_Wanted]]:
    if not isinstance(data, dict):
        raise BundleFormatError("manifest.json must be a JSON object")
    if data.get("format") != FORMAT_NAME:
        raise BundleFormatError(
            f"manifest format is {str(data.get('format'))[:60]!r}, not {FORMAT_NAME!r}",
            hint="is it a .lsbundle?",
        )
    version = _check_version(data.get("version"))
    created = data.get("created", "")
    device = data.get("source_device", {})
    generator = data.get("generator", "")
    if not isinstance(created, str) or not isinstance(generator, str):
        raise BundleFormatError("manifest 'created' and 'generator' must be strings")
    if not isinstance(device, dict) or not all(
        isinstance(device.get(k, ""), str) for k in ("id", "name")
    ):
        raise BundleFormatError("manifest 'source_device' must be an object of strings")
    for what, text in (
        ("created", created),
        ("generator", generator),
        ("source_device.id", device.get("id", "")),
        ("source_device.name", device.get("name", "")),
    ):
        _check_text(what, text)
    raw_entries = data.get("blueprints")
    if not isinstance(raw_entries, list):
        raise BundleFormatError("manifest 'blueprints' must be a list")
    if 2 * len(raw_entries) + 1 > limits.max_entries:
        raise BundleLimitError(f"manifest lists more than {limits.max_entries} files")
    wanted = [_parse_entry(e, i) for i, e in enumerate(raw_entries)]
    _check_unique(wanted)
    total = sum(w.yaml_size + w.meta_size for w in wanted)
    if total > limits.max_total_bytes:
        raise BundleLimitError(f"manifest lists {total} bytes, over {limits.max_total_bytes}")
    header = {
        "format_version": version,
        "created": created,
        "source_device": {"id": str(device.get("id", "")), "name": str(device.get("name", ""))},
        "generator": generator,
    }
    return header, wanted


def _check_text(what: str, text: str) -> None:
    """Refuse a header string holding a lone surrogate (a ``\\uD800`` escape): these strings go
    out with the plan, and no UTF-8 writer takes one (``import --json`` failed with an error to
    report). Paths are refused for it by their own check; ids and hashes are ASCII."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BundleFormatError(
            f"manifest {what!r} holds a lone UTF-16 surrogate escape, which is no character",
            hint="the bundle was not written by localstore, or was modified; export it again",
        ) from exc


def _check_version(version: Any) -> str:
    match = _VERSION_RE.match(version) if isinstance(version, str) else None
    if match is None:
        raise BundleFormatError(f"manifest version {str(version)[:40]!r} is not 'MAJOR.MINOR'")
    major = int(match.group(1))
    if major > FORMAT_MAJOR:
        raise BundleFormatError(
            f"bundle format version {version} is newer than this localstore reads "
            f"({FORMAT_MAJOR}.x)",
            hint="upgrade localstore to import it",
        )
    if major < FORMAT_MAJOR:
        raise BundleFormatError(f"bundle format version {version} is not supported")
    return str(version)


def _parse_file(entry: dict[str, Any], key: str, where: str) -> tuple[int, str]:
    spec = entry.get(key)
    if not isinstance(spec, dict):
        raise BundleFormatError(f"{where}: {key!r} must be an object with size and sha256")
    size, digest = spec.get("size"), spec.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleFormatError(f"{where}: {key}.size must be a non-negative integer")
    if not isinstance(digest, str) or not _SHA256_RE.match(digest):
        raise BundleFormatError(f"{where}: {key}.sha256 must be 64 lowercase hex digits")
    return size, digest


def _parse_entry(entry: Any, index: int) -> _Wanted:
    where = f"manifest blueprint #{index}"
    if not isinstance(entry, dict):
        raise BundleFormatError(f"{where} must be an object")
    bp_id, path = entry.get("id"), entry.get("path")
    if not isinstance(bp_id, str) or not is_uuid(bp_id) or bp_id != bp_id.lower():
        raise BundleFormatError(f"{where}: 'id' must be a lowercase UUID")
    if not isinstance(path, str):
        raise BundleFormatError(f"{where}: 'path' must be a string")
    _check_canonical(path, where, "path")
    yaml_size, yaml_sha = _parse_file(entry, "yaml", where)
    meta_size, meta_sha = _parse_file(entry, "meta", where)
    ancestors = _parse_ancestors(entry.get("ancestors", []), where)
    aside = entry.get("put_aside_from", "")
    if "put_aside_from" in entry:
        # Checked as the entry's own path is: it may decide where a blueprint stays, and an
        # importer compares it with paths here, so a malformed one refuses the bundle.
        if not isinstance(aside, str):
            raise BundleFormatError(f"{where}: 'put_aside_from' must be a string (a path)")
        _check_canonical(aside, where, "put_aside_from")
    return _Wanted(
        id=bp_id,
        path=path,
        yaml_name=ENTRY_PREFIX + path,
        meta_name=ENTRY_PREFIX + fs.meta_path_for(path),
        yaml_size=yaml_size,
        yaml_sha256=yaml_sha,
        meta_size=meta_size,
        meta_sha256=meta_sha,
        ancestors=ancestors,
        put_aside_from=aside,
    )


def _check_canonical(path: str, where: str, key: str) -> None:
    """Refuse a manifest path that is unsafe or not in the canonical form a writer gives it."""
    try:
        canonical = fs.normalize_path(path)
    except UnsafePathError as exc:
        what = "unsafe path" if key == "path" else f"{key!r} is unsafe"
        raise UnsafeBundleError(f"{where}: {what}: {exc.message}") from exc
    if canonical != path:
        what = "path" if key == "path" else f"{key!r} path"
        raise UnsafeBundleError(f"{where}: {what} {path[:80]!r} is not a canonical blueprint path")


def _parse_ancestors(value: Any, where: str) -> tuple[str, ...]:
    """The entry's "ancestors" (format 1.1), checked like the hashes next to them: a malformed list
    refuses the bundle rather than being half-believed, as it decides whether import overwrites."""
    if not isinstance(value, list):
        raise BundleFormatError(f"{where}: 'ancestors' must be a list of content hashes")
    if len(value) > MAX_ANCESTORS:
        raise BundleFormatError(
            f"{where}: 'ancestors' lists {len(value)} hashes, more than {MAX_ANCESTORS}"
        )
    for digest in value:
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise BundleFormatError(f"{where}: 'ancestors' must hold 64 lowercase hex digits each")
    return tuple(value)


def _check_unique(wanted: Sequence[_Wanted]) -> None:
    ids: set[str] = set()
    keys: dict[str, str] = {}
    for w in wanted:
        if w.id in ids:
            raise BundleFormatError(f"manifest lists blueprint {w.id} twice")
        ids.add(w.id)
        key = fs.path_key(w.path)
        if key in keys:
            raise UnsafeBundleError(
                f"manifest paths {keys[key][:80]!r} and {w.path[:80]!r} collide"
            )
        keys[key] = w.path
