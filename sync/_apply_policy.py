"""An app's conflict policy, contained: a policy that fails, or returns a merge the store cannot
save, keeps both versions instead of failing every cycle."""

from __future__ import annotations

import logging
from collections.abc import Callable

from localstore.blueprint import BlueprintMeta, parse_yaml
from sync.errors import MergeError
from sync.merge import ConflictCase, Resolution, _checked

log = logging.getLogger("sync.engine")


def contained(policy: Callable[[ConflictCase], Resolution]) -> Callable[[ConflictCase], Resolution]:
    """An app's conflict policy whose failure keeps both versions instead of failing the cycle.

    A callable that raised (or returned no usable Resolution) on one blueprint failed every cycle
    at that row: nothing else was pulled again while the home kept that conflict. Keep-both is
    the default policy's own fallback and loses nothing; the error goes into the conflict
    record's reason (what ``localstore conflicts`` and the API show) and the log.
    """

    def call(case: ConflictCase) -> Resolution:
        try:
            return _saveable(case, _checked(policy(case)))
        except Exception as exc:  # the app's code: contained here, reported below
            log.error(
                "sync: the conflict policy %r failed on blueprint %s; kept both versions "
                "(see `localstore conflicts`); fix the policy",
                policy,
                case.remote.meta.get("id", "?"),
                exc_info=True,
            )
            why = f"the conflict policy failed ({type(exc).__name__}: {exc})"
            return Resolution.keep_both([why, *case.outcome.conflicts])

    return call


def _saveable(case: ConflictCase, resolution: Resolution) -> Resolution:
    """``resolution``, when a merge it carries is one the store can save under the case's id.

    Raises InvalidInputError (the YAML does not parse or is not a mapping, the meta is not
    valid) or MergeError (the meta names another blueprint). The save refused such a merge
    inside the pass, and the engine took that for the server's row being invalid: the row was
    parked as ``invalid_remote``, no conflict recorded, and the same merge refused every cycle.
    """
    if resolution.action != "take_merged":
        return resolution
    assert resolution.content is not None and resolution.meta is not None  # (_checked)
    parse_yaml(resolution.content)
    ident = str(case.remote.meta.get("id", ""))
    own = resolution.meta.get("id", ident)
    if not isinstance(own, str) or own.lower() != ident.lower():
        raise MergeError(f"the conflict policy returned the meta of blueprint {own}, not {ident}")
    BlueprintMeta.from_dict({**resolution.meta, "id": ident}, source="the merged meta")
    return resolution
