"""A bundle's zip directory and listing, checked before any entry is read.

The central directory is bounded before ``zipfile`` parses it; every entry's name (absolute,
``..``, backslash, NUL, control characters, length), type (links, devices, zip encryption,
compression method) and byte range (overlaps, CVE-2024-0450) is checked; names are read as the
tools that wrote them meant (UTF-8 without its flag, DOS separators). What a file manager leaves
beside the blueprints (.DS_Store, AppleDouble ``._*`` files, ``__MACOSX/``) is recognised here and
passed by unread.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from typing import IO

from localstore import files as fs
from localstore._bundle_format import ENTRY_PREFIX, MANIFEST_NAME, BundleLimits
from localstore._bundle_inflate import _EntryReader
from localstore._bundle_manifest import _Wanted
from localstore.errors import BundleFormatError, BundleLimitError, UnsafeBundleError

# What file managers leave in the folders they show: Finder's .DS_Store, Windows' Thumbs.db and
# desktop.ini (Desktop.ini too: compared caseless), and the AppleDouble "._<name>" file a Mac
# writes beside each file it copies to a disk that keeps no Mac metadata (FAT, SMB shares). A
# bundle unzipped and zipped again on a desktop holds them under blueprints/, where an unlisted
# file refused the whole bundle. Readers pass them by unread (_match_listing). Also KDE's
# ".directory" (a folder's icon and view settings) and Finder's "Icon\r" (a folder given a custom
# icon: the icon is in its resource fork), the one name with a control character a file manager
# writes (_check_name lets that one through).
_FINDER_ICON = "Icon\r"
_OS_METADATA_NAMES = frozenset(
    {".ds_store", "thumbs.db", "desktop.ini", ".directory", _FINDER_ICON.casefold()}
)
# The first bytes of every AppleDouble file: no YAML or JSON text starts with a NUL, so a ``._``
# entry holding them is a Mac's, whatever its name says (_is_apple_double).
_APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"
# Where macOS's Archive Utility puts the AppleDouble files of what it zips.
_MAC_FORKS_FOLDER = "__MACOSX/"


# As in blueprint paths (files.py): ':' would also name an NTFS alternate stream.
_FORBIDDEN_IN_NAMES = frozenset('<>:"|?*')
_BAD_NAME_CHAR = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


_EOCD = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


def _precheck_directory(fh: IO[bytes], limits: BundleLimits, name: str) -> int:
    """Bound the central directory before zipfile reads it whole; return where it starts.

    zipfile trusts the end record's directory size and reads that many bytes, then builds one
    object per record: a forged size or count must be refused first.
    """
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_len = min(size, _EOCD.size + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + _EOCD.size > len(tail):
        # It starts as a bundle (is_encrypted saw the zip magic) but has no end: almost always a
        # download or copy cut short. zipfile's words for it named no file and no way out.
        raise BundleFormatError(
            f"{name} is damaged or truncated: it starts as a .lsbundle but its end is missing",
            hint="an interrupted download or copy leaves this: copy (or export) it again",
        )
    fields = _EOCD.unpack(tail[pos : pos + _EOCD.size])
    count, cd_size, record_at = fields[4], fields[5], size - tail_len + pos
    locator_at = pos - _EOCD64_LOCATOR.size
    if locator_at >= 0 and tail[locator_at : locator_at + 4] == b"PK\x06\x07":
        # As zipfile does: a zip64 locator right before the end record means zip64 values.
        count, cd_size, record_at = _zip64_directory(fh, tail, pos, size - tail_len)
    if count > limits.max_entries:
        raise BundleLimitError(
            f"bundle lists {count} entries, over the limit of {limits.max_entries}"
        )
    if cd_size > limits.max_directory_bytes:
        raise BundleLimitError(
            f"bundle directory is {cd_size} bytes, over the limit of {limits.max_directory_bytes}"
        )
    cd_start = record_at - cd_size
    if cd_start < 0:
        raise BundleFormatError("zip directory size points before the start of the file")
    _count_directory_records(fh, cd_start, cd_size, limits)
    return cd_start


_CD_RECORD = 46  # a central directory record's fixed part
_CD_LENGTHS = struct.Struct("<3H")  # its name, extra and comment lengths, at offset 28


def _count_directory_records(
    fh: IO[bytes], cd_start: int, cd_size: int, limits: BundleLimits
) -> None:
    """Refuse a directory holding more records than the entry cap, before zipfile parses it.

    zipfile reads records until it has consumed the directory's size, whatever the end record's
    count says: a count forged to 1 over 64 MiB of 47-byte records made it build 1.4 million
    ZipInfo objects (700 MB, 20 s) before the cap on their number could be checked. Walking the
    records' lengths costs a struct read each and stops at the cap.
    """
    fh.seek(cd_start)
    directory = fh.read(cd_size)
    pos = records = 0
    while pos < len(directory):
        records += 1
        if records > limits.max_entries:
            raise BundleLimitError(
                f"bundle directory holds more than {limits.max_entries} entries",
                hint="split the export into several bundles",
            )
        if directory[pos : pos + 4] != b"PK\x01\x02" or pos + _CD_RECORD > len(directory):
            raise BundleFormatError("not a readable zip file: its directory is corrupt")
        name_len, extra_len, comment_len = _CD_LENGTHS.unpack_from(directory, pos + 28)
        pos += _CD_RECORD + name_len + extra_len + comment_len


def _zip64_directory(fh: IO[bytes], tail: bytes, pos: int, tail_at: int) -> tuple[int, int, int]:
    # zipfile locates the zip64 record just before the locator, not at the recorded offset.
    at = tail_at + pos - _EOCD64_LOCATOR.size - _EOCD64.size
    if at < 0:
        raise BundleFormatError("zip64 end record is truncated")
    fh.seek(at)
    raw = fh.read(_EOCD64.size)
    if len(raw) != _EOCD64.size or raw[:4] != b"PK\x06\x06":
        raise BundleFormatError("zip64 end record is corrupt")
    rec = _EOCD64.unpack(raw)
    return int(rec[7]), int(rec[8]), at


def _open_zipfile(fh: IO[bytes], name: str) -> zipfile.ZipFile:
    fh.seek(0)
    damaged = "it may be damaged: copy (or export) it again"
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, struct.error) as exc:
        raise BundleFormatError(f"{name} is not a readable zip file: {exc}", hint=damaged) from exc
    except (ValueError, OverflowError, NotImplementedError) as exc:
        # zipfile raises these for malformed names (bad UTF-8) and impossible field values.
        raise BundleFormatError(
            f"{name} is not a readable zip file: {type(exc).__name__}: {exc}", hint=damaged
        ) from exc


def _check_name(name: str, limits: BundleLimits) -> str:
    """Return the entry's name without a trailing '/', or raise for an unsafe or over-long name."""
    shown = repr(name[:80])
    if "\x00" in name:
        raise UnsafeBundleError(f"entry name {shown} contains a NUL byte")
    if "\\" in name:
        raise UnsafeBundleError(f"entry name {shown} contains a backslash")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeBundleError(f"entry name {shown} is an absolute path")
    if len(name) > limits.max_path_chars and not _may_be_mac_metadata(name):
        raise _too_long(limits)
    bare = name[:-1] if name.endswith("/") else name
    parts = bare.split("/")
    if any(seg in ("", ".", "..") for seg in parts):
        raise UnsafeBundleError(f"entry name {shown} has an empty, '.' or '..' part")
    # One scan of the name, not a generator per character; Finder's "Icon\r" (or its AppleDouble
    # "._Icon\r") is scanned without its final '\r'.
    bad = _BAD_NAME_CHAR.search(bare[:-1] if _is_finder_icon(bare) else bare)
    if bad is not None:
        if bad.group() in _FORBIDDEN_IN_NAMES:
            raise UnsafeBundleError(
                f"entry name {shown} contains a character not allowed on every OS"
            )
        raise UnsafeBundleError(f"entry name {shown} contains a control character")
    return bare


def _too_long(limits: BundleLimits) -> BundleLimitError:
    return BundleLimitError(f"entry name is longer than {limits.max_path_chars} characters")


def _may_be_mac_metadata(name: str) -> bool:
    """Whether an over-long name may be a Mac's AppleDouble file, to be proven once the entries
    can be read (_check_long_names). Such a file's name is its file's and 2 characters more
    (``._``), 11 under ``__MACOSX/``: a blueprint path near the limit fits, its AppleDouble
    files did not, and the whole bundle was refused for what is passed by unread."""
    return name.startswith(_MAC_FORKS_FOLDER) or (
        name.startswith(ENTRY_PREFIX) and name.rsplit("/", 1)[-1].startswith("._")
    )


def _check_long_names(
    long: Sequence[zipfile.ZipInfo], reader: _EntryReader, limits: BundleLimits
) -> None:
    """Refuse an over-long name unless it is a Mac's: any under ``__MACOSX/`` (never read, as
    there at any length), a ``._`` file beside the blueprints only if it starts with AppleDouble's
    magic (its 4 first bytes; a name alone could hide a blueprint's file)."""
    for info in long:
        name = info.orig_filename
        if name.startswith(_MAC_FORKS_FOLDER):
            continue
        if _is_folder(info) or not _is_apple_double(info, reader):
            raise _too_long(limits)


def _is_finder_icon(bare: str) -> bool:
    """Whether the entry's base name is Finder's custom-icon file or its AppleDouble file."""
    return bare.endswith(_FINDER_ICON) and bare.rsplit("/", 1)[-1] in (
        _FINDER_ICON,
        "._" + _FINDER_ICON,
    )


_METHOD_NAMES = {9: "Deflate64", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "XZ", 98: "PPMd"}
_UTF8_FLAG = 0x800  # general purpose bit 11: the name is UTF-8
_MS_DOS = 0  # "version made by" system: MS-DOS and FAT, what Windows zip tools write


def _decode_name(raw: bytes, flags: int) -> str:
    """An entry name from its bytes: UTF-8 when flagged so, and also when not flagged but valid
    UTF-8, else CP437 (the zip default); composed (NFC), as the manifest's paths are.

    Info-ZIP's ``zip`` on Unix and macOS's Archive Utility write UTF-8 names without the flag, and
    macOS writes them decomposed: zipfile read ``café`` from such a zip as ``caf├⌐`` and an NFD
    name as another string than the manifest's, so a bundle unpacked and zipped again was
    refused as lacking a file it held. Bytes that are valid UTF-8 are almost never meant as
    CP437 (as CP437 they read as a box-drawing, Greek or math sign followed by accented
    letters), so other readers take them as UTF-8 too. Composing cannot merge two entries unnoticed: names
    equal once composed already collide in the duplicate check (files.path_key)."""
    if flags & _UTF8_FLAG:
        name = raw.decode("utf-8")
    else:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = raw.decode("cp437")
    return unicodedata.normalize("NFC", name)


def _dos_separators(name: str, system: int) -> str:
    """A name made on MS-DOS/FAT with '\\' read as '/' between folders, as Info-ZIP's unzip and
    libarchive read it: PowerShell's Compress-Archive (Windows PowerShell 5.1) writes
    ``blueprints\\team\\x.blueprint.yaml``, and such a bundle was refused for its backslashes.
    Only there: on Unix a backslash is a character of a file name, refused as before. The name
    is then checked as any other ('..', absolute, ...)."""
    return name.replace("\\", "/") if system == _MS_DOS else name


def _read_name_as_written(info: zipfile.ZipInfo) -> None:
    """Give ``info`` the name :func:`_decode_name` reads (its local header is checked against the
    same reading), in place of zipfile's, with a DOS name's separators as '/'."""
    if info.flag_bits & _UTF8_FLAG:
        raw = info.orig_filename.encode("utf-8")
    else:
        raw = info.orig_filename.encode("cp437")  # (zipfile decoded it so: a bijection)
    try:
        name = _decode_name(raw, info.flag_bits)
    except UnicodeDecodeError:  # (zipfile decoded it; the same bytes decode the same way)
        name = info.orig_filename
    name = _dos_separators(name, info.create_system)
    if name != info.orig_filename:
        info.orig_filename = info.filename = name


def _check_type(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    shown = repr(info.orig_filename[:80])
    if kind == stat.S_IFLNK:
        raise UnsafeBundleError(f"entry {shown} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeBundleError(f"entry {shown} is a device, pipe or socket")
    if info.flag_bits & 0x1:
        raise BundleFormatError(f"entry {shown} uses zip encryption, which bundles never do")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # A bundle zipped again by a tool set to another method: "uses compression method 12"
        # named neither the method nor the way out.
        method = _METHOD_NAMES.get(info.compress_type, "an unknown method")
        raise BundleFormatError(
            f"entry {shown} is compressed with {method} (zip method {info.compress_type}); "
            "bundles hold stored or deflated entries only",
            hint="zip the files again with the Deflate method (7-Zip: -mm=Deflate), or "
            "export the bundle again",
        )


def _check_listing(
    zf: zipfile.ZipFile, fh: IO[bytes], cd_start: int, limits: BundleLimits
) -> tuple[dict[str, zipfile.ZipInfo], _EntryReader]:
    """Check every entry's name, type and byte range; return the file entries by name and a
    reader of their contents."""
    listing = zf.infolist()
    if len(listing) > limits.max_entries:
        raise BundleLimitError(f"bundle has more than {limits.max_entries} entries")
    files: dict[str, zipfile.ZipInfo] = {}
    seen: dict[str, tuple[str, bool]] = {}  # by path key: the first name, and if a folder's
    long = []  # over-long names that may be a Mac's, checked once the entries can be read
    for info in listing:
        _read_name_as_written(info)
        bare = _check_name(info.orig_filename, limits)
        if len(info.orig_filename) > limits.max_path_chars:
            long.append(info)
        _check_type(info)
        is_dir = _is_folder(info)
        _check_unique_name(seen, bare, is_dir)
        if is_dir:
            if info.file_size or info.compress_size > 2:
                raise UnsafeBundleError(f"folder entry {bare[:80]!r} has content")
            continue
        files[bare] = info
    reader = _EntryReader(fh, _check_ranges(listing, fh, cd_start))
    _check_long_names(long, reader, limits)
    return files, reader


# The MS-DOS attributes' folder bit, in the low byte of an entry's external attributes.
_DOS_FOLDER = 0x10


def _is_folder(info: zipfile.ZipInfo) -> bool:
    """Whether the entry is a folder: a name ending in '/', a unix folder mode, or, for an entry
    with no unix mode, the MS-DOS folder attribute. Some Windows tools write a folder so, with no
    '/' (zipfile's ``is_dir`` looks at the name alone): it was read as an unlisted file and the
    bundle refused. A unix mode, when there is one, decides (the DOS byte of a file is no folder's).
    """
    mode = info.external_attr >> 16
    if info.orig_filename.endswith("/") or stat.S_ISDIR(mode):
        return True
    return stat.S_IFMT(mode) == 0 and bool(info.external_attr & _DOS_FOLDER)


def _check_unique_name(seen: dict[str, tuple[str, bool]], bare: str, is_dir: bool) -> None:
    """Refuse an entry whose name another one has (also caseless, as macOS and Windows compare).

    Two folder entries pass: no folder entry ever becomes a folder here, so two naming one folder
    say nothing a reader uses, and ``zip -r`` of a Linux tree holding ``Team/`` and an empty
    ``team/`` writes two (the whole bundle was refused for them). A file stays refused beside
    anything of its name: which one would be read is the question a collision leaves open."""
    key = fs.path_key(bare)
    earlier = seen.get(key)
    if earlier is None:
        seen[key] = (bare, is_dir)
        return
    if is_dir and earlier[1]:
        return
    name = earlier[0]
    what = "twice" if name == bare else f"as {name!r} too (names differ by case)"
    raise UnsafeBundleError(f"entry {bare[:80]!r} appears {what}")


def _check_ranges(
    listing: Sequence[zipfile.ZipInfo], fh: IO[bytes], cd_start: int
) -> dict[str, int]:
    """Refuse entries whose bytes overlap each other or the directory (CVE-2024-0450), or whose
    local header does not match the directory; return where each entry's data starts."""
    prev_end, prev_name = 0, ""
    data_at: dict[str, int] = {}
    for info in sorted(listing, key=lambda i: i.header_offset):
        shown = repr(info.orig_filename[:80])
        start = info.header_offset
        if start < 0:
            raise BundleFormatError(f"entry {shown} starts before the file")
        if start < prev_end:
            raise UnsafeBundleError(
                f"entries {prev_name[:80]!r} and {shown} overlap (a zip bomb or a forged archive)"
            )
        fh.seek(start)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
            raise BundleFormatError(f"entry {shown} has no local header")
        header = _LOCAL_HEADER.unpack(raw)
        _check_local_name(info, fh.read(header[10]), header[3])
        data_at[info.orig_filename] = start + _LOCAL_HEADER.size + header[10] + header[11]
        end = data_at[info.orig_filename] + info.compress_size
        if end > cd_start:
            raise UnsafeBundleError(f"entry {shown} overlaps the zip directory or the file end")
        prev_end, prev_name = end, info.orig_filename
    return data_at


def _check_local_name(info: zipfile.ZipInfo, raw: bytes, flags: int) -> None:
    # As zipfile does: the name is judged from the directory, so the local copy must agree
    # (read by the same rule, so a tool leaving the UTF-8 flag off in both agrees).
    try:
        name = _dos_separators(_decode_name(raw, flags), info.create_system)
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"entry {info.orig_filename[:80]!r} is corrupt: {exc}") from exc
    if name != info.orig_filename:
        raise BundleFormatError(
            f"entry {info.orig_filename[:80]!r} has another name in its local header"
        )


def _is_os_metadata(name: str, info: zipfile.ZipInfo, reader: _EntryReader) -> bool:
    """True for an entry a file manager leaves in a folder (_OS_METADATA_NAMES, ``._*``).

    ``._plan.blueprint.yaml`` is a Mac's AppleDouble file and the YAML of a blueprint named
    ``._plan`` alike: a name with a blueprint file's suffix is passed by only when its content
    starts as an AppleDouble file's, which no blueprint file does. (Refused on its name alone,
    a bundle zipped on a Mac from a FAT stick or an SMB share, which has one for every file,
    could not be imported at all.)"""
    base = name.rsplit("/", 1)[-1]
    folded = base.casefold()
    if not folded.endswith((fs.YAML_SUFFIX, fs.META_SUFFIX)):
        return folded in _OS_METADATA_NAMES or base.startswith("._")
    return base.startswith("._") and _is_apple_double(info, reader)


def _is_apple_double(info: zipfile.ZipInfo, reader: _EntryReader) -> bool:
    """Whether the entry's first bytes are AppleDouble's magic (a corrupt entry is not)."""
    try:
        return reader.head(info, len(_APPLE_DOUBLE_MAGIC)) == _APPLE_DOUBLE_MAGIC
    except zlib.error:
        return False


def _match_listing(
    files: dict[str, zipfile.ZipInfo], wanted: Sequence[_Wanted], reader: _EntryReader
) -> tuple[str, ...]:
    """Check that the listing and the manifest agree; return the unlisted entries passed by as a
    file manager's, under blueprints/ and in a Mac zip's __MACOSX/ folder (sorted)."""
    names = {MANIFEST_NAME}
    for w in wanted:
        for name in (w.yaml_name, w.meta_name):
            if name not in files:
                raise BundleFormatError(f"the bundle lacks {name[:100]!r}, listed in its manifest")
            names.add(name)
    ignored = []
    for name in files:
        # Files outside blueprints/ are ignored (room for later minor versions; a Mac zip's
        # __MACOSX/ folder); inside, every file must be accounted for, so nothing slips past the
        # hash checks: listed, or a file manager's, which is never read and holds no blueprint.
        if name.startswith(ENTRY_PREFIX) and name not in names:
            if not _is_os_metadata(name, files[name], reader):
                raise BundleFormatError(f"entry {name[:100]!r} is not listed in the manifest")
            ignored.append(name)
        elif name.startswith(_MAC_FORKS_FOLDER):
            ignored.append(name)  # (never read either; named, as the ones beside the files are)
    return tuple(sorted(ignored))
