"""The ``.lsbundle`` format's names and numbers, the reader's limits, and the argument checks
the export and import API share (see docs/bundle-format.md).

:func:`is_encrypted` tells an encrypted bundle (``ENCRYPTED_MAGIC`` then a crypto stream) from a
plain one (a zip) by its first bytes; :func:`scrypt_within_limits` is the one cost rule export
and import both apply to an encrypted bundle's key derivation.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from localstore import files as fs
from localstore.errors import (
    BundleFormatError,
    InvalidInputError,
    NotFoundError,
    StorageError,
    wrong_type,
)

if TYPE_CHECKING:
    from localstore.store import BlueprintStore

FORMAT_NAME = "localstore-bundle"
FORMAT_MAJOR = 1
# 1.1 added each blueprint's optional "ancestors", 1.2 its optional "put_aside_from"
# (docs/bundle-format.md, section 2).
FORMAT_MINOR = 2
FORMAT_VERSION = f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
MANIFEST_NAME = "manifest.json"
ENTRY_PREFIX = "blueprints/"


# Encrypted container: this magic (name + container version) then a crypto stream whose associated
# data is the magic, so the container header cannot be swapped without failing authentication.
ENCRYPTED_MAGIC = b"LSBUNDLE\x01"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


MAX_META_BYTES = 1024 * 1024
MAX_ENTRY_NAME_CHARS = (
    len(ENTRY_PREFIX) + fs.MAX_PATH_CHARS + len(fs.META_SUFFIX) - len(fs.YAML_SUFFIX)
)


# Earlier content hashes a writer lists per blueprint ("ancestors"), and the most a reader takes.
# The manifest's value budget (_too_many_values counts commas) is 16 per blueprint in every reader
# since 1.0; an entry's own fields take 6 and each hash one more, so 10 is what keeps a bundle of
# the most blueprints readable by a 1.0 reader, and the writer stays 2 under it. (An entry's
# "put_aside_from", 1.2, takes one of those 2: 15 values, still within every reader's budget.)
ANCESTORS_WRITTEN = 8
MAX_ANCESTORS = 10


ProgressCallback = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases: export, encrypt, decrypt, verify, import."""


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """Caps applied while reading a bundle; every one is checked on counted bytes, not headers."""

    max_bundle_bytes: int = 8 * 1024**3
    max_entries: int = 100_001
    max_directory_bytes: int = 64 * 1024 * 1024
    max_manifest_bytes: int = 64 * 1024 * 1024
    max_file_bytes: int = 8 * 1024 * 1024
    max_total_bytes: int = 4 * 1024**3
    max_ratio: int = 200
    ratio_floor_bytes: int = 1024 * 1024
    # The longest entry name a store path can give (its meta file under ``blueprints/``), so every
    # bundle an export can write is readable; the store has no depth limit, and neither has this
    # (the name length bounds the parts, and no entry name ever becomes a file or folder here).
    max_path_chars: int = MAX_ENTRY_NAME_CHARS
    max_scrypt_bytes: int = 256 * 1024 * 1024

    @classmethod
    def for_store(cls, store: BlueprintStore, **changes: Any) -> BundleLimits:
        """Limits matching a store's YAML size limit."""
        return cls(**{"max_file_bytes": store.limits.max_bytes, **changes})


class _CountingReader:
    """Wrap a file to report how many bytes were read (progress while encrypting/decrypting)."""

    def __init__(self, fh: IO[bytes], total: int, phase: str, progress: ProgressCallback) -> None:
        self._fh = fh
        self._total = total
        self._done = 0
        self._phase = phase
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        """Read like the wrapped file and report the running total."""
        data = self._fh.read(n)
        self._done += len(data)
        self._progress(self._phase, self._done, self._total)
        return data


def path_arg(name: str, value: Any) -> Path:
    """A file path argument of the bundle API: str or os.PathLike, no NUL (an int or None
    failed inside pathlib with a raw TypeError, a NUL with a raw ValueError)."""
    if not isinstance(value, str | os.PathLike):
        raise wrong_type(
            f"{name}",
            value,
            "a file path (str or os.PathLike)",
            hint=f"pass {name} as a str or pathlib.Path",
        )
    path = Path(value)
    if "\x00" in str(path) or not str(value):
        raise InvalidInputError(
            f"{name} {str(value)!r} is not a usable file path (empty, or holds a NUL)",
            hint=f"pass the bundle file's real path as {name}",
        )
    return path


def callable_arg(name: str, value: Any) -> None:
    """An optional callback (progress, merger): None or callable (else a raw TypeError came
    from deep inside, mid-export or mid-import)."""
    if value is not None and not callable(value):
        raise wrong_type(
            f"{name}", value, "callable", hint=f"pass a function as {name}, or leave it out"
        )


def options_arg(passphrase: Any, limits: Any) -> None:
    """The passphrase and limits of an export or import."""
    if passphrase is not None and not isinstance(passphrase, str):
        raise wrong_type(
            "passphrase",
            passphrase,
            "a string",
            hint="pass the passphrase as text, or leave it out for an unencrypted bundle",
        )
    if limits is not None and not isinstance(limits, BundleLimits):
        raise wrong_type(
            "limits",
            limits,
            "a BundleLimits",
            hint="pass localstore.archive.BundleLimits(...), or leave it out for the defaults",
        )


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    """True if the file is an encrypted bundle.

    Raises NotFoundError (no such file), BundleFormatError (no bundle, or not a regular file),
    StorageError (unreadable), InvalidInputError (not a path).
    """
    src = path_arg("path", path)
    try:
        # Non-blocking, and the type checked on the open file: opening a FIFO for reading would
        # otherwise wait for a writer forever, and a stat before the open could be raced.
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such bundle: {src}", hint="check the file name") from exc
    except OSError as exc:
        raise StorageError(f"cannot read {src}: {exc.strerror or exc}") from exc
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleFormatError(f"{src} is not a regular file", hint="give a .lsbundle file")
        head = fh.read(len(ENCRYPTED_MAGIC))
    if head == ENCRYPTED_MAGIC:
        return True
    if head[:4] in _ZIP_MAGICS:
        return False
    if not head:
        # (A download cut short, or `> x.lsbundle` by mistake: "not a .lsbundle" sent people
        # looking for what else the file might be.)
        raise BundleFormatError(
            f"{os.fspath(path)} is empty (0 bytes)",
            hint="export the bundle again, or copy it again if the copy was cut short",
        )
    raise BundleFormatError(f"{os.fspath(path)} is not a .lsbundle", hint=_NOT_A_BUNDLE_HINT)


# A person with a plain YAML file (or a zip of them) tries import first: point at save.
_NOT_A_BUNDLE_HINT = (
    "export one with 'localstore export'; a YAML file is added with "
    "'localstore save PATH -f FILE' (store.save() from Python)"
)


def scrypt_within_limits(log2n: int, r: int, p: int, limits: BundleLimits) -> bool:
    """Whether an import under ``limits`` derives a key with these scrypt parameters.

    Counted as 128 * r * N * p bytes: scrypt's memory is 128 * r * N, and p multiplies its work,
    so counting it bounds both. Export checks the same, so it never writes a bundle import refuses.
    """
    return log2n <= 40 and 128 * r * (2**log2n) * max(p, 1) <= limits.max_scrypt_bytes
