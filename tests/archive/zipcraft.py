"""Build zip files byte by byte, including ones zipfile refuses to write (hostile test input).

``RawEntry`` fields left as None are computed honestly; set them to forge a header: a central size
that lies, an offset pointing into another entry (overlap), a symlink mode, a name with NUL bytes.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import uuid
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from localstore.blueprint import BlueprintMeta, encode_meta

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_EOCD = struct.Struct("<4s4H2LH")
_DESCRIPTOR = struct.Struct("<4s3L")


@dataclass(frozen=True)
class RawEntry:
    """One zip entry as it will be written."""

    name: bytes
    data: bytes = b""
    method: int = 8
    mode: int = stat.S_IFREG | 0o644
    flags: int = 0x800
    file_size: int | None = None
    compress_size: int | None = None
    crc: int | None = None
    offset_of: int | None = None  # central record points at the local header of entry #offset_of
    offset_delta: int = 0
    # Sizes and CRC after the data, zero in the local header (general purpose bit 3), as a tool
    # writing to a stream does (macOS's Archive Utility, ``zip -`` to a pipe).
    descriptor: bool = False
    # The "version made by" system: 3 Unix, 0 MS-DOS/FAT (Windows tools).
    system: int = 3
    # The MS-DOS attributes, in the low byte of the external attributes (0x10: a folder).
    dos_attr: int = 0


def _compress(data: bytes, method: int) -> bytes:
    if method == 8:
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        return co.compress(data) + co.flush()
    return data


def build(
    entries: list[RawEntry], *, count: int | None = None, cd_size: int | None = None
) -> bytes:
    """Serialise entries: local headers and data, central directory, end record."""
    out = bytearray()
    offsets: list[int] = []
    packed: list[bytes] = []
    for e in entries:
        body = _compress(e.data, e.method)
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        offsets.append(len(out))
        sizes = (0, 0, 0) if e.descriptor else (crc, len(body), len(e.data))
        out += _LOCAL.pack(
            b"PK\x03\x04",
            20,
            0,
            e.flags | (0x8 if e.descriptor else 0),
            e.method,
            0,
            0x21,
            *sizes,
            len(e.name),
            0,
        )
        out += e.name + body
        if e.descriptor:
            out += _DESCRIPTOR.pack(b"PK\x07\x08", crc, len(body), len(e.data))
        packed.append(body)
    cd_start = len(out)
    for i, e in enumerate(entries):
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        csize = len(packed[i]) if e.compress_size is None else e.compress_size
        fsize = len(e.data) if e.file_size is None else e.file_size
        off = offsets[i if e.offset_of is None else e.offset_of] + e.offset_delta
        out += _CENTRAL.pack(
            b"PK\x01\x02",
            20,
            e.system,
            20,
            0,
            e.flags | (0x8 if e.descriptor else 0),
            e.method,
            0,
            0x21,
            crc,
            csize,
            fsize,
            len(e.name),
            0,
            0,
            0,
            0,
            ((e.mode << 16) | e.dos_attr) & 0xFFFFFFFF,
            off,
        )
        out += e.name
    size = len(out) - cd_start
    n = len(entries) if count is None else count
    out += _EOCD.pack(
        b"PK\x05\x06",
        0,
        0,
        n & 0xFFFF,
        n & 0xFFFF,
        size if cd_size is None else cd_size,
        cd_start,
        0,
    )
    return bytes(out)


YAML = "name: demo\nsteps:\n  - run: echo hi\n"


@dataclass
class Blueprint:
    """A blueprint for a crafted bundle."""

    path: str
    yaml: bytes = YAML.encode()
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def meta_bytes(self) -> bytes:
        return encode_meta(
            BlueprintMeta(
                id=self.id,
                name=self.path.rsplit("/", 1)[-1].split(".")[0],
                created="2024-01-01T00:00:00.000000Z",
                modified="2024-01-01T00:00:00.000000Z",
            )
        )


def manifest(bps: list[Blueprint], **overrides: object) -> dict[str, object]:
    """A correct manifest for these blueprints (fields overridable)."""
    entries = []
    for bp in bps:
        meta = bp.meta_bytes()
        entries.append(
            {
                "id": bp.id,
                "path": bp.path,
                "yaml": {"size": len(bp.yaml), "sha256": hashlib.sha256(bp.yaml).hexdigest()},
                "meta": {"size": len(meta), "sha256": hashlib.sha256(meta).hexdigest()},
            }
        )
    doc: dict[str, object] = {
        "format": "localstore-bundle",
        "version": "1.0",
        "created": "2024-01-01T00:00:00Z",
        "source_device": {"id": str(uuid.uuid4()), "name": "crafted"},
        "generator": "zipcraft",
        "blueprints": entries,
    }
    doc.update(overrides)
    return doc


def bundle_entries(bps: list[Blueprint], man: object | None = None) -> list[RawEntry]:
    """Entries of a valid bundle (manifest first), ready to be mutated."""
    body = json.dumps(manifest(bps) if man is None else man).encode()
    out = [RawEntry(b"manifest.json", body)]
    for bp in bps:
        stem = "blueprints/" + bp.path[: -len(".blueprint.yaml")]
        out.append(RawEntry((stem + ".blueprint.yaml").encode(), bp.yaml))
        out.append(RawEntry((stem + ".blueprint.meta.json").encode(), bp.meta_bytes()))
    return out


def with_entry(entries: list[RawEntry], index: int, **changes: object) -> list[RawEntry]:
    """A copy with one entry changed."""
    out = list(entries)
    out[index] = replace(out[index], **changes)  # type: ignore[arg-type]
    return out


def rewrite_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a plain bundle with its manifest changed (the listed files are left as they are)."""
    with zipfile.ZipFile(bundle) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    manifest = json.loads(files["manifest.json"])
    change(manifest)
    files["manifest.json"] = json.dumps(manifest).encode("utf-8")
    with zipfile.ZipFile(bundle, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
