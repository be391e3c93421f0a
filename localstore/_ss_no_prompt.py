"""Secret Service writes and deletes that never start an unlock prompt (docs/daemon.md, "A locked
keychain").

keyring's Secret Service backend stores a value through secretstorage's ``Collection.create_item``,
which checks the collection's lock and then calls ``CreateItem``. A collection locked between the
two (the screen locking at that moment) is answered, as the Secret Service specification allows,
with a prompt object, and secretstorage executes it: a GUI unlock dialog, with no timeout, from a
background thread nobody watches (the daemon's refresh timer storing a rotated session). Here
that prompt is dismissed, never executed, and the write is refused as locked. gnome-keyring
answers an ``org.freedesktop.Secret.Error.IsLocked`` error instead, which :func:`locked_error`
recognizes (it read as an unknown keychain error, not as "the keychain is locked").

A delete has the same window: secretstorage's ``Item.delete`` checks the item's lock, then calls
``Delete``, and runs a prompt it is answered with. :func:`without_prompts` gives a collection
whose writes and whose found items' deletes dismiss such a prompt instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import keyring.errors

log = logging.getLogger(__name__)

__all__ = [
    "create_item_without_prompt",
    "delete_item_without_prompt",
    "locked_error",
    "without_prompts",
]

_SS_PREFIX = "org.freedesktop.Secret."
_IS_LOCKED = _SS_PREFIX + "Error.IsLocked"
# What a refused background write says (as _cred_secret_service._NOT_PROMPTING, for the same refusal).
_LOCKED_MID_WRITE = (
    "the collection locked before the write, and this process does not ask to unlock it"
)
_LOCKED_MID_DELETE = "the item locked before the delete, and this process does not ask to unlock it"


def locked_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the Secret Service (or secretstorage) saying an object is locked."""
    try:  # secretstorage exists only where the Secret Service backend can run (Linux, BSD)
        from jeepney import DBusErrorResponse
        from secretstorage.exceptions import LockedException
    except ImportError:
        return False
    return isinstance(exc, LockedException) or (
        isinstance(exc, DBusErrorResponse) and exc.name == _IS_LOCKED
    )


def create_item_without_prompt(
    collection: Any,
    label: str,
    attributes: dict[str, str],
    secret: bytes | str,
    replace: bool = False,
    content_type: str = "text/plain",
) -> Any:
    """secretstorage's ``Collection.create_item`` (3.5.0, which keyring 25 calls), except that a
    prompt in the answer is dismissed and KeyringLocked raised instead of the prompt being run.

    A copy of its few lines, not a patch of secretstorage's module-level ``exec_prompt``: that
    would change it for every thread of the process, the foreground ones that may prompt too.
    """
    from secretstorage.item import Item
    from secretstorage.util import format_secret, open_session

    if collection.session is None:
        collection.session = open_session(collection.connection)
    properties = {
        _SS_PREFIX + "Item.Label": ("s", label),
        _SS_PREFIX + "Item.Attributes": ("a{ss}", attributes),
    }
    sealed = format_secret(collection.session, secret, content_type)  # type: ignore[arg-type]
    item_path, prompt = collection._collection.call(
        "CreateItem", "a{sv}(oayays)b", properties, sealed, replace
    )
    if len(item_path) > 1:  # ("/" when a prompt has to make it)
        return Item(collection.connection, item_path, collection.session)
    _dismiss(collection.connection, prompt)
    raise keyring.errors.KeyringLocked(_LOCKED_MID_WRITE)


def delete_item_without_prompt(item: Any) -> None:
    """secretstorage's ``Item.delete`` (3.5.0), except that a prompt in the answer is dismissed
    and KeyringLocked raised instead of the prompt being run (see create_item_without_prompt)."""
    item.ensure_not_locked()
    (prompt,) = item._item.call("Delete", "")
    if prompt != "/":  # ("/" when deleted; else a prompt has to unlock the item first)
        _dismiss(item.connection, prompt)
        raise keyring.errors.KeyringLocked(_LOCKED_MID_DELETE)


def without_prompts(collection: Any) -> Any:
    """Make ``collection``'s writes, and the deletes of the items its searches find, refuse
    with KeyringLocked where the Secret Service answers with an unlock prompt; return it.

    keyring deletes through ``search_items``, then ``Item.delete``: patching the found items
    (this collection's alone) keeps the rest of keyring's own code, as for the write."""
    collection.create_item = functools.partial(create_item_without_prompt, collection)
    search = collection.search_items

    def search_items(attributes: dict[str, str]) -> Iterator[Any]:
        for item in search(attributes):
            item.delete = functools.partial(delete_item_without_prompt, item)
            yield item

    collection.search_items = search_items
    return collection


def _dismiss(connection: Any, prompt: str) -> None:
    """Dismiss the prompt object ``prompt`` (best effort: not running it is what matters; the
    service drops an unused prompt when this connection closes)."""
    from secretstorage.util import DBusAddressWrapper

    with contextlib.suppress(Exception):
        DBusAddressWrapper(prompt, _SS_PREFIX + "Prompt", connection).call("Dismiss", "")
        return
    log.debug("could not dismiss the keychain's prompt %s", prompt)
