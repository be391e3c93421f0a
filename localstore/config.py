"""Settings: where things live and how the engine behaves.

Precedence for every setting is one rule, applied by :func:`resolve`: an explicit argument (a CLI flag or
a keyword to :func:`load_settings`) beats the environment (``LOCALSTORE_<NAME>``), which beats
``config.yaml`` in the config directory, which beats the ``DEFAULT_*`` constant.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import ipaddress
import logging
import math
import os
import reprlib
import socket
import stat
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs
import yaml

from localstore import files as fs
from localstore.blueprint import YamlLimits, _measure
from localstore.errors import (
    ConfigError,
    LimitExceededError,
    PermissionDeniedError,
    StorageError,
    wrong_type,
)

log = logging.getLogger(__name__)

APP_NAME = "LocalStore"
ENV_PREFIX = "LOCALSTORE_"
HOME_ENV = ENV_PREFIX + "HOME"
CONFIG_FILE_NAME = "config.yaml"
# config.yaml holds a few flat settings. Read with the blueprint loader's bounds (size read, then
# the composed graph measured before anything is built): a 400-byte alias or merge-key bomb in a
# setting expanded to millions of entries when the error quoted it.
CONFIG_LIMITS = YamlLimits(max_bytes=1024 * 1024, max_depth=16, max_nodes=10_000)
# The largest whole number a setting takes: busy_timeout_ms goes to SQLite as a C int (3e9 was an
# OverflowError at open), max_depth into a regex repeat count.
MAX_WHOLE = 2**31 - 1
# The longest period in seconds: waits past threading.TIMEOUT_MAX (about 49 days on Windows)
# raise OverflowError inside the worker thread. 31 days.
MAX_SECONDS = 31 * 24 * 3600.0
# The longest daemon_validator_name: it is recorded in every index row it judges.
MAX_VALIDATOR_NAME = 200

DEFAULT_PROFILE = "default"
DEFAULT_MAX_YAML_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_NODES = 200_000
DEFAULT_BUSY_TIMEOUT_MS = 30_000
DEFAULT_SETTLE_MS = 40
DEFAULT_DELETE_GRACE_MS = 400
DEFAULT_RESCAN_INTERVAL_S = 600.0
# A blueprints folder on a network or FUSE file system: inotify sees only this machine's edits,
# so the watcher rescans this often (localstore.watcher.filesystem_type decides, remote_fs
# overrides).
DEFAULT_REMOTE_FS = "auto"
REMOTE_FS_CHOICES = ("auto", "remote", "local")
DEFAULT_REMOTE_RESCAN_INTERVAL_S = 30.0
DEFAULT_CONFLICT_POLICY = "merge"
DEFAULT_POLL_INTERVAL_S = 30.0
DEFAULT_SYNC_BATCH = 200
DEFAULT_KV_HOT_ITEMS = 1024
DEFAULT_KV_HOT_BYTES = 16 * 1024 * 1024
# The sync engine's conflict policies (sync.merge.POLICIES; localstore must not import sync, a
# test keeps the two equal). Checked at load, so a typo in config.yaml names its file.
SYNC_CONFLICT_POLICIES = ("merge", "keep-both", "prefer-local", "prefer-remote")


@dataclass(frozen=True, slots=True)
class Paths:
    """The five directories a home is made of."""

    blueprints: Path
    data: Path
    config: Path
    cache: Path
    state: Path

    @property
    def index_db(self) -> Path:
        """Path of the SQLite index."""
        return self.data / "index.db"

    def ensure(self) -> None:
        """Create every directory but the blueprints folder (private to the user where it holds state).

        The blueprints folder is the store's to create, on its first open: made empty here (by
        ``localstore cred``, a login) while its disk is unmounted, it would be taken for a folder
        whose blueprints were all deleted.

        Only folders made here get mode 0700: ``--home ~/projects`` chmodded the user's own
        ``~/projects/data`` and ``config``. An existing state folder that others may enter or read
        is the exception (it holds the daemon's token): it loses its group and other bits, with
        a warning.

        Raises StorageError when a folder cannot be made (a file in its way, a read-only disk).
        """
        for p in (self.data, self.config, self.cache, self.state):
            try:
                # Durably (each new folder flushed in its parent): the index, the sync state
                # and the daemon's pause are written in them, and a power cut that took a new
                # data/ away took the index with every revision saved since.
                missing = fs.missing_dirs(p)
                fs.make_parents(missing)  # (the home among them: not 0777 under umask 000)
                p.mkdir()
                for created in reversed(missing):
                    fs.flush_dir(created.parent)
            except FileExistsError as exc:
                if not p.is_dir():
                    raise _mkdir_error(p, exc) from exc
                if p == self.state:
                    _close_state_folder(p)
                continue
            except OSError as exc:
                raise _mkdir_error(p, exc) from exc
            if p is not self.cache:
                try:
                    p.chmod(0o700)
                except OSError:  # pragma: no cover - made, so ours; a filesystem without modes
                    pass


def _close_state_folder(folder: Path) -> None:
    """Take group and other permissions off an existing state folder, saying so."""
    if os.name == "nt":  # pragma: no cover - no POSIX modes (every folder reads as 0777)
        return
    try:
        mode = folder.stat().st_mode & 0o777
    except OSError:  # pragma: no cover - gone or unreadable since mkdir; its users will say
        return
    if not mode & 0o077:
        return
    try:
        folder.chmod(mode & 0o700)
    except OSError as exc:
        log.warning(
            "state folder %s has mode %o (others can reach the daemon's token) and cannot be "
            "made private: %s; chmod go-rwx it",
            folder,
            mode,
            exc.strerror or exc,
        )
        return
    log.warning(
        "state folder %s had mode %o (others could reach the daemon's token); made it %o",
        folder,
        mode,
        mode & 0o700,
    )


def _mkdir_error(folder: Path, exc: OSError) -> StorageError:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return StorageError(
            f"cannot create folder {folder}: a file is in the way ({exc.strerror})",
            hint="move that file away, or choose another --home or LOCALSTORE_HOME",
        )
    # A PermissionDeniedError where the folder may not be written (a read-only disk, another
    # user's home): the CLI's reading commands then open the home read-only instead.
    kind = (
        PermissionDeniedError
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        else StorageError
    )
    return kind(
        f"cannot create folder {folder}: {exc.strerror or exc}",
        hint="make it writable, or choose another --home or LOCALSTORE_HOME",
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed settings of one home; build with :func:`load_settings`."""

    paths: Paths
    home: Path | None = None
    profile: str = DEFAULT_PROFILE
    device_name: str = field(default_factory=socket.gethostname)
    max_yaml_bytes: int = DEFAULT_MAX_YAML_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    max_nodes: int = DEFAULT_MAX_NODES
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    settle_ms: int = DEFAULT_SETTLE_MS
    delete_grace_ms: int = DEFAULT_DELETE_GRACE_MS
    rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S
    remote_fs: str = DEFAULT_REMOTE_FS
    remote_rescan_interval_s: float = DEFAULT_REMOTE_RESCAN_INTERVAL_S
    conflict_policy: str = DEFAULT_CONFLICT_POLICY
    merge_tool: str = ""
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    sync_batch: int = DEFAULT_SYNC_BATCH
    kv_hot_items: int = DEFAULT_KV_HOT_ITEMS
    kv_hot_bytes: int = DEFAULT_KV_HOT_BYTES
    keychain_file_fallback: bool = False
    cloud_url: str = ""
    cloud_anon_key: str = ""
    # The app's validator for the daemon to judge with (docs/daemon.md, "The app's validator in
    # the daemon"): `module:function`, and the name the app records it under.
    daemon_validator: str = ""
    daemon_validator_name: str = ""

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some settings changed, each checked as in config.yaml.

        dataclasses.replace alone took ``keychain_file_fallback=2`` (an opt-in to the file
        credential store nobody wrote), ``max_depth=0`` or a misspelt ``conflict_policy`` that
        failed first when sync started.

        Raises ConfigError for an unknown setting, a value of the wrong type or out of range, and
        for ``home`` or ``paths`` (load_settings(home=...) builds the two together).
        """
        where = "settings.replace"
        if "home" in changes or "paths" in changes:
            raise ConfigError(
                f"{where} cannot change home or paths",
                hint="load the other home's settings with load_settings(home=...)",
            )
        unknown = sorted(set(changes) - set(_TUNABLES))
        if unknown:
            raise ConfigError(
                f"{where}: unknown setting(s) {', '.join(unknown)}", hint=_known_hint(unknown)
            )
        for name, value in changes.items():
            if value is None:
                kind = type(getattr(_DEFAULTS, name))
                raise ConfigError(
                    f"{where}: setting {name!r} must be {_KIND_NAMES[kind]}, got None",
                    hint="see docs/configuration.md",
                )
        checked = {name: _typed(name, value, where) for name, value in changes.items()}
        out = dataclasses.replace(self, **checked)
        _check_validator_pair(out, where)
        return out


_TUNABLES = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("paths", "home")}


def home_name(settings: Settings) -> str:
    """The home as it is named to a person (messages, logs, daemon.json's and status'
    ``home_name``).

    A home folder (``--home``, ``LOCALSTORE_HOME``) is its path. The platform folders' home has
    no folder of its own: it is named by its blueprints folder, with where its data and state
    are. The parent of one of its folders, used before, named an unrelated folder
    (``~/.local/state`` for the daemon, ``~/.local/share`` for a read-only home).
    """
    if settings.home is not None:
        return str(settings.home)
    p = settings.paths
    return f"{p.blueprints} (the default home: data in {p.data}, state in {p.state})"


def resolve(flag: Any, env: Any, file_value: Any, default: Any) -> Any:
    """Return the first of flag, environment, config file and default that is set."""
    for value in (flag, env, file_value):
        if value is not None and value != "":
            return value
    return default


def _paths_for(home: Path | None) -> Paths:
    if home is not None:
        home = home.expanduser().resolve()
        return Paths(
            blueprints=home / "blueprints",
            data=home / "data",
            config=home / "config",
            cache=home / "cache",
            state=home / "state",
        )
    try:
        return Paths(
            blueprints=Path(platformdirs.user_documents_dir()) / APP_NAME / "Blueprints",
            data=Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)),
            config=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            cache=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            state=Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)),
        )
    except RuntimeError as exc:
        # platformdirs raises it when HOME is unset or relative and the user has no passwd
        # entry (a container run with an arbitrary uid); left alone it was an "unexpected" bug.
        raise ConfigError(
            f"cannot find this user's platform folders: {exc}",
            hint="set LOCALSTORE_HOME (or --home) to a folder, or set HOME to an absolute path",
        ) from exc


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses a setting given twice: PyYAML keeps the last one silently, so an
    edit of the first was ignored with nothing said."""


def _unique_mapping(loader: _ConfigLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"setting {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node)


_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_config_file(path: Path) -> dict[str, Any]:
    raw = _config_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start})", hint="save the file as UTF-8"
        ) from exc
    loader = _ConfigLoader(text)  # a SafeLoader subclass
    try:
        node = loader.get_single_node()
        if node is not None:
            _measure(node, CONFIG_LIMITS)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not valid YAML: {_yaml_problem(exc)}", hint="fix or delete the file"
        ) from exc
    except LimitExceededError as exc:
        raise ConfigError(
            f"{path}: {exc.message}", hint="a config.yaml holds a few settings: fix it"
        ) from exc
    finally:
        loader.dispose()
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping of settings", hint="see docs/configuration.md"
        )
    # Keys YAML reads as numbers or booleans (`1:`, `yes:`) are no setting; repr them, since
    # sorting mixed types would raise TypeError.
    unknown = sorted(str(k) if isinstance(k, str) else repr(k) for k in data if k not in _TUNABLES)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {_shown(', '.join(unknown))[1:-1]}",
            hint=_known_hint(unknown),
        )
    return data


def _config_bytes(path: Path) -> bytes:
    """The bytes of config.yaml, read up to its limit; empty when there is none.

    Raises ConfigError for a file that cannot be read, that is no regular file (a folder, a
    FIFO that would block), a link to nothing, or one over the size limit.
    """
    try:
        # O_NONBLOCK: opening a FIFO put there would wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        if path.is_symlink():
            # Read as absent, every setting of the file it was meant to point to was dropped.
            raise ConfigError(
                f"{path} is a link to {os.readlink(path)}, which does not exist",
                hint="point the link at your config file, or remove it",
            ) from None
        return b""
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(
                f"{path} is not a file", hint="remove it, or replace it with a config.yaml file"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(CONFIG_LIMITS.max_bytes + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    finally:
        os.close(fd)
    if len(raw) > CONFIG_LIMITS.max_bytes:
        raise ConfigError(
            f"{path} is over the limit of {CONFIG_LIMITS.max_bytes} bytes",
            hint="a config.yaml holds a few settings: fix it (see docs/configuration.md)",
        )
    return raw


def _unreadable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot read {path}: {exc.strerror or exc}",
        hint="check that this user may read it and the folders above it",
    )


# Values quoted in errors are cut: one from a config.yaml could be megabytes, or an alias graph
# whose full repr is exponentially long. reprlib walks only what it shows.
_SHOW = reprlib.Repr()
_SHOW.maxstring = 60
_SHOW.maxother = 60
_SHOW.maxlevel = 2


def _shown(value: Any) -> str:
    return _SHOW.repr(value)


def _known_hint(unknown: list[str]) -> str:
    """A hint for unknown setting names: the closest known one, or the list."""
    for name in unknown:
        close = difflib.get_close_matches(name, _TUNABLES, n=1)
        if close:
            return f"did you mean {close[0]!r}? known settings: {', '.join(sorted(_TUNABLES))}"
    return f"known settings: {', '.join(sorted(_TUNABLES))}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error: its problem and where (str(exc) spans lines with a caret)."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


# Integer settings that must be at least 1 (a limit or batch of 0 would refuse everything);
# the other integers must be at least 0, and every float a finite number above 0.
_AT_LEAST_ONE = frozenset({"max_yaml_bytes", "max_depth", "max_nodes", "sync_batch"})
# Text settings with a fixed set of values.
_CHOICES: dict[str, tuple[str, ...]] = {
    "conflict_policy": SYNC_CONFLICT_POLICIES,
    "remote_fs": REMOTE_FS_CHOICES,
}
_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _typed(name: str, value: Any, where: str) -> Any:
    """Check a value from config.yaml or an argument: only its own type, in range (None passes).

    Converting instead (``int(1.9)``, ``bool(2)``, ``str([...])``) would run with a value nobody wrote;
    ``keychain_file_fallback: 2`` would opt in to the file credential store.

    Raises ConfigError naming the setting and ``where`` it came from.
    """
    if value is None:
        return None
    kind = type(getattr(_DEFAULTS, name))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise ConfigError(
            f"{where}: setting {name!r} must be {_KIND_NAMES[kind]}, got {_shown(value)}",
            hint="see docs/configuration.md",
        )
    return _in_range(name, value, where)


def _in_range(name: str, value: Any, where: str) -> Any:
    """Check a value of the setting's own type against the setting's rules; return it.

    Raises ConfigError naming the setting and ``where`` it came from.
    """
    _check_choice(name, value, where)
    _check_text(name, value, where)
    if isinstance(value, bool | str):
        return value
    _check_number(name, value, where)
    return value


def _check_choice(name: str, value: Any, where: str) -> None:
    """Refuse a value that is not one of its setting's choices (when it has a fixed set)."""
    choices = _CHOICES.get(name)
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        raise ConfigError(
            f"{where}: setting {name!r} must be one of {', '.join(choices)}, got {_shown(value)}",
            hint=(f"did you mean {close[0]!r}? " if close else "") + "see docs/configuration.md",
        )


def _check_text(name: str, value: Any, where: str) -> None:
    """Refuse text no setting may hold (a NUL), and what a text setting's own rules refuse."""
    if isinstance(value, str) and "\x00" in value:
        # (device_name went to the server and into conflict copies' names; a command template
        # with one cannot be run at all.)
        raise ConfigError(
            f"{where}: setting {name!r} contains a NUL character",
            hint="remove it; see docs/configuration.md",
        )
    if name == "device_name" and any(unicodedata.category(c) == "Cc" for c in value):
        # It is written into conflict copies' names, bundle manifests and the server's rows,
        # and shown by status: a newline or a terminal escape there is no name.
        raise ConfigError(
            f"{where}: setting 'device_name' contains a control character ({_shown(value)})",
            hint="use letters, digits, spaces and punctuation only",
        )
    if name == "cloud_url" and value:
        check_cloud_url(value, where)
    if name == "daemon_validator" and value:
        _check_validator_spec(value, where)
    if name == "daemon_validator_name":
        _check_validator_name(value, where)


def _check_validator_name(value: str, where: str) -> None:
    """Refuse a ``daemon_validator_name`` that is too long or holds a control character."""
    if len(value) > MAX_VALIDATOR_NAME:
        # Recorded in every row it judges (judged_by) and compared on every push.
        raise ConfigError(
            f"{where}: setting 'daemon_validator_name' is over {MAX_VALIDATOR_NAME} characters",
            hint="give the rules a short name, the one the app passes as validator_name",
        )
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ConfigError(
            f"{where}: setting 'daemon_validator_name' contains a control character "
            f"({_shown(value)})",
            hint="give the name the app passes as validator_name, e.g. 'myapp-rules-3'",
        )


def _check_number(name: str, value: float, where: str) -> None:
    """Refuse a number out of its setting's range: a float must be finite, above 0 and at most
    MAX_SECONDS; a whole number at least 0 (1 for _AT_LEAST_ONE) and at most MAX_WHOLE."""
    low = 1 if name in _AT_LEAST_ONE else 0
    if isinstance(value, float) and not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{where}: setting {name!r} must be a number above 0, got {_shown(value)}",
            hint="see docs/configuration.md",
        )
    if isinstance(value, float) and value > MAX_SECONDS:
        raise ConfigError(
            f"{where}: setting {name!r} must be at most {MAX_SECONDS:.0f} (31 days), "
            f"got {_shown(value)}",
            hint="see docs/configuration.md",
        )
    if isinstance(value, int) and value < low:
        raise ConfigError(
            f"{where}: setting {name!r} must be at least {low}, got {_shown(value)}",
            hint="see docs/configuration.md",
        )
    if isinstance(value, int) and value > MAX_WHOLE:
        raise ConfigError(
            f"{where}: setting {name!r} must be at most {MAX_WHOLE}, got {_shown(value)}",
            hint="see docs/configuration.md",
        )


def _check_validator_spec(spec: str, where: str) -> None:
    """Refuse a ``daemon_validator`` that is no ``module:function`` (checked at load, not
    first when the daemon starts and imports it)."""
    module, colon, attr = spec.partition(":")
    parts = [*module.split("."), *attr.split(".")]
    if colon and all(p.isidentifier() for p in parts):
        return
    raise ConfigError(
        f"{where}: setting 'daemon_validator' must name a function as module:function, "
        f"got {_shown(spec)}",
        hint='e.g. daemon_validator: "myapp.rules:validate" (dotted module path, a colon, the '
        "function's name); see docs/configuration.md",
    )


def _check_validator_pair(settings: Settings, where: str) -> None:
    """Refuse a ``daemon_validator_name`` without the ``daemon_validator`` it names."""
    if settings.daemon_validator_name and not settings.daemon_validator:
        raise ConfigError(
            f"{where}: setting 'daemon_validator_name' "
            f"({_shown(settings.daemon_validator_name)}) is given without 'daemon_validator'",
            hint='add daemon_validator: "module:function" (the app\'s validator), or remove '
            "daemon_validator_name; see docs/configuration.md",
        )


def check_cloud_url(url: str, where: str, *, name: str = "cloud_url") -> None:
    """Refuse a project URL sync could not use: only an absolute http(s) URL with a host.

    ``ftp://x`` or ``not a url`` loaded fine and failed first when sync started, with an error
    about the request. Credentials in the URL are refused (and not quoted): the URL is logged
    and shown by ``status`` and ``doctor``. A query or fragment would be sent with every request.

    Raises ConfigError naming the setting and ``where`` it came from (a file, a variable, a flag).
    """
    problem = _cloud_url_problem(url)
    if problem is None:
        return
    shown = "" if problem.startswith("holds a user name") else f" ({_shown(url)})"
    subject = f"setting {name!r}" if name == "cloud_url" else "the project URL"
    raise ConfigError(
        f"{where}: {subject} {problem}{shown}",
        hint="give the project URL as https://<host>[:<port>], e.g. "
        "https://abcdefgh.supabase.co; see docs/configuration.md",
    )


def _cloud_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is no number or out of range
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    del port
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "must be an absolute http:// or https:// URL"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return "must be a URL without spaces or control characters"
    if parts.username is not None or parts.password is not None:
        return (
            "holds a user name or password (user:pass@host), which would be written to logs; "
            "the project URL takes none (you sign in with `localstore login`)"
        )
    if not parts.hostname:
        return "has no host name"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "must have no query (?...) or fragment (#...)"
    return None


def cleartext_url_warning(url: str) -> str | None:
    """A warning for a project URL that is plain http to another machine, else None.

    Over it the anon key, the password at login and every session token cross the network
    unencrypted. Self-hosted Supabase on a LAN over http is a real setup, so this is said, not
    refused. Loopback (localhost, 127.0.0.0/8, ::1; the ``localstore cloud`` stack) never leaves
    this machine.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme != "http" or not parts.hostname or is_loopback_host(parts.hostname):
        return None
    return (
        f"{url} is plain http to {parts.hostname}, not this machine: the anon key, your "
        "password at login and the session tokens cross the network unencrypted, readable "
        "and replayable by anyone on the way; use https (put the server behind TLS, e.g. a "
        "reverse proxy with a certificate)"
    )


def is_loopback_host(host: str) -> bool:
    """True for a name or address of this machine: ``localhost`` or a loopback address."""
    host = host.rstrip(".").lower()
    return host == "localhost" or is_loopback_address(host)


def is_loopback_address(text: str) -> bool:
    """True for a loopback IP address (127.0.0.0/8, ``::1``, IPv4 loopback written as IPv6, with
    or without a zone); a name is not an address. The daemon's control server checks its socket
    peers with it."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _parse(name: str, text: str | None, where: str) -> Any:
    """Parse a setting given as text (an environment variable); None or empty is unset.

    Raises ConfigError naming the setting and ``where`` it came from.
    """
    if text is None or text == "":
        return None
    kind = type(getattr(_DEFAULTS, name))
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        value = kind(text.strip()) if kind is not str else text
    except ValueError as exc:
        raise ConfigError(
            f"{where}: setting {name!r} must be {_KIND_NAMES[kind]}, got {_shown(text)}",
            hint=f"set {where} to a valid value",
        ) from exc
    return _in_range(name, value, where)


_DEFAULTS = Settings(paths=_paths_for(Path("/nonexistent")), device_name="")


# LOCALSTORE_* variables read outside the settings table: the CLI, bundles, the keychain file
# fallback, the local cloud, scripts, and the test and benchmark knobs. They must be known names,
# or their every use would be warned about (a test keeps this set equal to what the repo reads).
OTHER_ENV_VARS = frozenset(
    ENV_PREFIX + name
    for name in (
        "DEBUG",  # cli: show tracebacks
        "PASSPHRASE",  # bundles
        "KEYCHAIN_PASSPHRASE",  # credentials: the encrypted-file fallback
        "PG_BINDIR",  # sync.localcloud: where PostgreSQL is
        "PG_TEMPLATE_DIR",
        "STRESS",  # tests and benchmarks
        "SLOW",
        "TEST_WORKERS",
        "REQUIRE_KEYCHAIN",
        "SOAK_S",
        "EMBED_SEED",  # tests/test_embedding_app.py
        "SOAK_OUT",
        "SOAK_CYCLES",
        "KV_SOAK_S",  # tests/credentials/test_kv_soak.py
        "CRASH_SEED",
        "CRASH_KILLS",
        "FUZZ_EXAMPLES",
        "CONCURRENCY_SECONDS",
        "NEED_SYSTEMD",
        "DEMO_INNER",  # scripts
        "KEYRING_DIR",
        "KEYRING_PASSWORD",
        "BENCH_PLAIN_TMP",  # bench/_homes.py
    )
)


def known_env_vars() -> frozenset[str]:
    """Every ``LOCALSTORE_*`` environment variable LocalStore or its tests read."""
    settings = {ENV_PREFIX + name.upper() for name in _TUNABLES}
    return frozenset(settings | {HOME_ENV} | OTHER_ENV_VARS)


# Names already warned about in this process: a long-running app loads settings again and again.
_warned_env: set[str] = set()
_warned_lock = threading.Lock()


def take_env_warnings(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(message, hint) for each unknown ``LOCALSTORE_*`` variable not yet warned about.

    A misspelt variable (``SETLE_MS`` for ``SETTLE_MS``) was ignored with nothing said. Each name is
    returned once per process, so the CLI can print these itself and :func:`load_settings`
    (which logs them) does not say them again.
    """
    env = os.environ if environ is None else environ
    known = known_env_vars()
    out: list[tuple[str, str]] = []
    with _warned_lock:
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX) or name in known or name in _warned_env:
                continue
            _warned_env.add(name)
            close = difflib.get_close_matches(name, known, n=1)
            out.append(
                (
                    f"{name} is not a LocalStore variable and is ignored",
                    (f"did you mean {close[0]}? " if close else "") + "see docs/configuration.md",
                )
            )
    return out


def load_settings(
    *,
    home: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings for a home from arguments, environment, config file and defaults.

    ``home`` (a ``--home`` flag) may be relative: it is made absolute here, once, so the store,
    the daemon's files and a service see one path. ``LOCALSTORE_HOME`` must be absolute (or
    start with ``~``); ``load_settings`` reads it itself, so a caller passes only the flag.

    Raises ConfigError for unknown or ill-typed settings, for an empty ``home`` and for a
    relative ``LOCALSTORE_HOME``.
    """
    _check_load_args(home, environ)
    env = os.environ if environ is None else environ
    for message, hint in take_env_warnings(env):
        log.warning("%s (%s)", message, hint)
    home_path = _home_path(home, env)
    paths = _paths_for(home_path)
    config_file = paths.config / CONFIG_FILE_NAME
    file_values = _read_config_file(config_file)
    values = _setting_values(overrides, env, file_values, config_file)
    settings = Settings(paths=paths, home=home_path, **values)
    _check_validator_pair(
        settings, _source_of("daemon_validator_name", overrides, env, file_values, config_file)
    )
    return settings


def _check_load_args(home: Any, environ: Any) -> None:
    """Refuse a ``home`` or an ``environ`` of the wrong type, and a home with a NUL in it."""
    if environ is not None and not (
        isinstance(environ, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in environ.items())
    ):
        # (A list or a dict with int values failed deep inside with an AttributeError.)
        raise ConfigError(
            "environ must be a mapping of str to str (like os.environ)",
            hint="pass environ={'LOCALSTORE_HOME': '/path', ...} with text values, or leave "
            "it out to read os.environ",
        )
    if home is not None and not isinstance(home, str | os.PathLike):
        raise ConfigError(
            f"home must be a path (str or os.PathLike), not {type(home).__name__}",
            hint="pass the home folder as a str or pathlib.Path",
        )
    if home is not None and "\x00" in os.fspath(home):
        raise ConfigError(
            "home contains a NUL character, which no folder name can hold",
            hint="pass the home folder's real path",
        )


def _home_path(home: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The home folder, absolute: ``home``, else ``LOCALSTORE_HOME``; None when neither is set.

    Raises ConfigError for an empty ``home``, a relative ``LOCALSTORE_HOME``, and a file.
    """
    if home is not None and os.fspath(home) == "":
        # resolve() reads "" as unset: `--home "$DIR"` with DIR unset opened (and `rm` edited)
        # the user's own store in the platform folders. An empty LOCALSTORE_HOME stays unset.
        raise ConfigError(
            "the home folder given is empty",
            hint="pass a folder, or leave out --home (home=None) to use LOCALSTORE_HOME "
            "or the platform folders",
        )
    env_home = env.get(HOME_ENV)
    if home is None and env_home and not Path(env_home).expanduser().is_absolute():
        # Resolved against the working directory, a relative variable (set once in a shell
        # profile) named another store in every directory a command ran from: `ls` found "no
        # LocalStore home" while `save` made a second one, and a service started elsewhere used a
        # third. An explicit --home / home= is resolved once, where it was given.
        raise ConfigError(
            f"{HOME_ENV} is a relative path ({env_home!r}), which would name another folder "
            "in each directory you run from",
            hint=f'set {HOME_ENV} to an absolute path (e.g. "$PWD/{env_home}" or '
            f"~/{env_home}), or pass --home",
        )
    home_value = resolve(home, env_home, None, None)
    home_path = Path(home_value).expanduser().resolve() if home_value is not None else None
    if home_path is not None and home_path.exists() and not home_path.is_dir():
        # Read as a folder, it failed at the config file with "Not a directory (check that this
        # user may read it...)": a permissions hunt for a home set to the wrong path. Said as
        # the CLI says it for --home (click refuses that one first, as bad usage).
        source = f"{HOME_ENV} ({home_path})" if home is None else f"the home {home_path}"
        raise ConfigError(
            f"{source} is a file, not a folder",
            hint=f"set {HOME_ENV} to a folder, or pass --home"
            if home is None
            else "pass a folder (a new one is created)",
        )
    return home_path


def _setting_values(
    overrides: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    config_file: Path,
) -> dict[str, Any]:
    """Each setting's value: argument, else environment, else config file, else default.

    Raises ConfigError for an unknown argument and for an ill-typed value (naming where from).
    """
    unknown = sorted(set(overrides) - set(_TUNABLES))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}", hint=_known_hint(unknown))
    values: dict[str, Any] = {}
    for name in _TUNABLES:
        default = getattr(_DEFAULTS, name) if name != "device_name" else socket.gethostname()
        flag = overrides.get(name)
        env_name = ENV_PREFIX + name.upper()
        values[name] = resolve(
            _parse(name, flag, "argument")
            if isinstance(flag, str)
            else _typed(name, flag, "argument"),
            _parse(name, env.get(env_name), env_name),
            _typed(name, file_values.get(name), str(config_file)),
            default,
        )
    return values


def _source_of(
    name: str,
    overrides: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    config_file: Path,
) -> str:
    """Where a setting's value came from, as errors name it (see :func:`resolve`)."""
    if overrides.get(name) not in (None, ""):
        return "argument"
    if env.get(ENV_PREFIX + name.upper()):
        return ENV_PREFIX + name.upper()
    return str(config_file)


def settings_arg(settings: Any, hint: str = "") -> None:
    """A Settings argument of the public API (a dict or a path failed later, deep inside)."""
    if not isinstance(settings, Settings):
        raise wrong_type(
            "settings",
            settings,
            "a Settings",
            hint=hint or "pass localstore.load_settings(...) or an open store's store.settings",
        )
