"""systemd's readiness protocol (sd_notify(3)) for `localstore daemon` run by a ``Type=notify`` unit.

A message is one datagram to the AF_UNIX socket that ``$NOTIFY_SOCKET`` names: a path, or an
abstract socket written with a leading ``@``. Done here in a few lines rather than with the
``systemd`` Python bindings: a C extension that is not on every Linux, and a dependency for one
``sendto``. Without the variable (macOS, Windows, a shell) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

NOTIFY_SOCKET = "NOTIFY_SOCKET"

log = logging.getLogger("sync.daemon")


def take_notify_socket(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Remove ``NOTIFY_SOCKET`` from ``environ`` (default: this process's) and return its value.

    Removed as sd_notify's ``unset_environment`` does: a process the daemon starts (a detached
    daemon, a tool) would otherwise inherit it and could tell systemd the service is ready.
    """
    env = os.environ if environ is None else environ
    return env.pop(NOTIFY_SOCKET, None) or None


def notify(address: str | None, message: str) -> bool:
    """Send ``message`` (``READY=1``...) to the socket at ``address``; False when none is given
    or it could not be sent (logged: systemd then reports the start as timed out, not us)."""
    if not address:
        return False
    family = getattr(socket, "AF_UNIX", None)  # (none on Windows, where systemd is not either)
    if family is None or not address.startswith(("/", "@")):
        log.warning("ignoring NOTIFY_SOCKET=%r: not a path or an abstract socket name", address)
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), target)
    except OSError as exc:
        log.warning("could not tell systemd %s through %s: %s", message, address, exc)
        return False
    return True
