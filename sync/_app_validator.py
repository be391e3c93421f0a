"""The app's validator in the daemon: imported from the ``module:function`` its config names.

An app registers its validator when it opens the store (``localstore.open(validator=...)``); the
home records its name, and sync holds back every edit that validator has not judged. The daemon
runs without the app, so with nothing here an edit made in an editor while the app was closed
waited until the app ran. ``daemon_validator`` (and ``daemon_validator_name``, the name the app
records it under) in config.yaml name it for the daemon, which imports it when it starts.

Nothing here stops the daemon: a validator that cannot be imported leaves it judging with none
(its watcher's edits are held, as before), and says why in its log, ``status`` and ``doctor``.
"""

from __future__ import annotations

import importlib
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from localstore.blueprint import Validator
from localstore.config import CONFIG_FILE_NAME, ENV_PREFIX, Settings
from localstore.errors import InvalidInputError
from localstore.store import validator_name_of

__all__ = ["AppValidator", "ValidatorState", "load_app_validator", "not_the_homes"]

log = logging.getLogger("sync.daemon")

ValidatorState = Literal["none", "not_loaded", "judging", "not_the_homes"]
# States in which the daemon's edits are held for a reason a person can fix.
PROBLEM_STATES: frozenset[str] = frozenset({"not_loaded", "not_the_homes"})

_RESTART = "then restart the daemon (`localstore daemon --stop`, then start it again)"
_HELD = "until then edits made while the app is closed are held on this device, not lost"


@dataclass(frozen=True, slots=True)
class AppValidator:
    """What the daemon judges with: the validator its config names, or why it has none."""

    spec: str = ""  # daemon_validator as configured ('' none)
    name: str = ""  # the name its verdicts are recorded under
    function: Validator | None = None
    error: str = ""  # why it could not be loaded
    hint: str = ""

    def status(self, home: str | None) -> dict[str, Any]:
        """A JSON-friendly account of it against ``home``, the home's recorded validator."""
        state, detail, hint = self._judge(home)
        return {
            "state": state,
            "configured": self.spec,
            "name": self.name,
            "home": home,
            "detail": detail,
            "hint": hint,
            "problem": state in PROBLEM_STATES,
        }

    def _judge(self, home: str | None) -> tuple[ValidatorState, str, str]:
        if not self.spec:
            if home is None:
                return "none", "", ""
            return (
                "none",
                f"the daemon has no validator, and the app's ({home!r}) judges what it "
                "records: edits made while the app is closed are held until the app opens",
                f'name it in config.yaml: daemon_validator: "module:function" and '
                f'daemon_validator_name: "{home}"; {_RESTART}',
            )
        if self.function is None:
            return "not_loaded", self.error, self.hint
        if home is not None and home != self.name:
            return ("not_the_homes", *not_the_homes(self.spec, self.name, home))
        return "judging", f"judging with {self.spec} as {self.name!r}", ""


def not_the_homes(spec: str, name: str, home: str) -> tuple[str, str]:
    """What to say (detail, hint) when the daemon's validator is recorded under ``name`` but
    the home's is ``home``: the daemon's edits are held as not judged by the home's."""
    return (
        f"the daemon judges with {spec} as {name!r}, but the home's validator is {home!r} "
        "(the app's current rules): edits made while the app is closed are held until the "
        "app opens",
        f'if {spec} implements those rules, set daemon_validator_name: "{home}" in '
        "config.yaml; if not, point daemon_validator at the app's current validator; "
        f"{_RESTART}",
    )


class _NotLoaded(Exception):
    """Why the configured validator is not used (``error``) and what to do (``hint``)."""

    def __init__(self, error: str, hint: str) -> None:
        super().__init__(error)
        self.error = error
        self.hint = hint


def load_app_validator(settings: Settings) -> AppValidator:
    """Import the validator ``settings.daemon_validator`` names; an AppValidator saying why
    not when it cannot be (never raises: the daemon runs on without it)."""
    spec = settings.daemon_validator
    if not spec:
        return AppValidator()
    try:
        _check_config_safe(settings)
        found = _import_function(spec)
        if settings.daemon_validator_name:
            return AppValidator(spec=spec, name=settings.daemon_validator_name, function=found)
        name = _own_name(spec, found)
    except _NotLoaded as exc:
        return _failed(spec, settings, exc.error, exc.hint)
    return AppValidator(spec=spec, name=name, function=found)


def _check_config_safe(settings: Settings) -> None:
    """Raise _NotLoaded when others may write the config file naming the validator (unless
    the environment names it)."""
    if not os.environ.get(ENV_PREFIX + "DAEMON_VALIDATOR"):
        unsafe = _writable_by_others(settings.paths.config / CONFIG_FILE_NAME)
        if unsafe:
            # The daemon imports and runs what the file names: a file (or folder) someone else
            # may write would let them choose code this user's daemon runs.
            raise _NotLoaded(
                f"daemon_validator is not used: {unsafe}, so another user could choose the code "
                "the daemon runs",
                f"make it yours and writable only by you (chmod go-w), {_RESTART}; {_HELD}",
            )


def _import_function(spec: str) -> Any:
    """The callable ``spec`` ("module:attr.attr") names; raise _NotLoaded saying why not."""
    module_name, _, attr = spec.partition(":")
    found = _import_module(spec, module_name)
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise _NotLoaded(
                f"{module_name!r} has no {attr!r} (daemon_validator {spec!r})",
                f"name the app's validator function in daemon_validator in config.yaml; "
                f"{_RESTART}; {_HELD}",
            ) from None
    if not callable(found):
        raise _NotLoaded(
            f"daemon_validator {spec!r} is a {type(found).__name__}, not a function",
            "name a function from a blueprint's mapping to a list of problems; "
            f"{_RESTART}; {_HELD}",
        )
    return found


def _import_module(spec: str, module_name: str) -> Any:
    """Import the validator's module; raise _NotLoaded saying why it cannot be."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _NotLoaded(
            f"cannot import {module_name!r} (daemon_validator {spec!r}): {exc}",
            f"install the app's package into the Python the daemon runs ({sys.executable}), "
            "or add its folder to PYTHONPATH in the daemon's environment, or fix "
            f"daemon_validator in config.yaml; {_RESTART}; {_HELD}",
        ) from None
    except (Exception, SystemExit) as exc:
        # The app's module may raise anything at import (a process boundary): the daemon goes
        # on without it, the traceback in its log. SystemExit too: it would end the daemon.
        log.error("importing %r for daemon_validator raised", module_name, exc_info=True)
        raise _NotLoaded(
            f"importing {module_name!r} (daemon_validator {spec!r}) raised "
            f"{type(exc).__name__}: {exc}",
            f"fix the module (the daemon's log has the traceback); {_RESTART}; {_HELD}",
        ) from None


def _own_name(spec: str, found: Any) -> str:
    """The validator name ``found`` records its verdicts under; raise _NotLoaded if none."""
    try:
        return validator_name_of(found)
    except InvalidInputError as exc:
        # (A lambda, a partial holding a lock: the app had to pass validator_name for it too.)
        raise _NotLoaded(
            f"daemon_validator {spec!r} has no name of its own: {exc.message}",
            "set daemon_validator_name in config.yaml to the validator_name the app passes "
            f"with it; {_RESTART}; {_HELD}",
        ) from None


def _writable_by_others(config_file: Path) -> str:
    """Why ``config_file`` (the one naming daemon_validator) is not this user's alone to write,
    or '' (POSIX owners and modes; '' on Windows, whose ACLs this does not read)."""
    if sys.platform == "win32":  # pragma: no cover - no POSIX modes
        return ""
    for path in (config_file, config_file.parent):
        try:
            st = path.stat()
        except OSError:
            continue  # (no file: the value came from elsewhere)
        if st.st_uid != os.geteuid():
            return f"{path} belongs to another user (uid {st.st_uid})"
        if st.st_mode & 0o022:
            return f"{path} may be written by others (mode {stat.S_IMODE(st.st_mode):o})"
    return ""


def _failed(spec: str, settings: Settings, error: str, hint: str) -> AppValidator:
    return AppValidator(
        spec=spec, name=settings.daemon_validator_name, function=None, error=error, hint=hint
    )
