"""A Secret Service connection whose collection and item property reads go through ``GetAll``.

gnome-keyring (42.1 and upstream still) answers a property ``Get`` on a collection or item from
``secret_objects_lookup_gck_object_for_path``, which needs the caller's client record (made for
each incoming message, dropped when the caller's name leaves the bus). With no record it returns
NULL without a GError, and GLib (2.74 ``invoke_get_property_in_idle_cb``) then asserts
``error != NULL`` and aborts the whole daemon: the user's keychain, mid-session. ``GetAll`` goes
through the same getter, but GLib passes it no error to fill and leaves a failed property out of
the answer, so the daemon lives. See docs/credentials.md, "The keychain daemon must survive us".

secretstorage reads properties with ``Get`` everywhere (``Label`` when it makes a Collection or an
Item, ``Locked`` in ``is_locked`` and before each secret read or delete). Rewriting the message at
the connection, not patching secretstorage's classes, covers all of them with no copy of its code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GetAllConnection"]

_PROPERTIES = "org.freedesktop.DBus.Properties"
# The interfaces whose getter can fail without an error (the Service's own is GLib's, and safe).
_RISKY = ("org.freedesktop.Secret.Collection", "org.freedesktop.Secret.Item")
# What gnome-keyring answers a Get of a collection or item it cannot find (secretstorage reads it
# as ItemNotFoundException); GetAll says the same by leaving the property out.
_NO_SUCH_OBJECT = "org.freedesktop.Secret.Error.NoSuchObject"


class GetAllConnection:
    """A jeepney blocking connection that sends a collection's or item's property ``Get`` as
    ``GetAll`` and answers it as the ``Get`` would have been; everything else is the connection's."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def send_and_get_reply(self, msg: Any, **kwargs: Any) -> Any:
        """Send ``msg`` and return its reply (a risky ``Get`` is asked as ``GetAll``)."""
        if not _is_risky_get(msg):
            return self._connection.send_and_get_reply(msg, **kwargs)
        from jeepney import MessageType, new_error, new_method_return

        interface, name = msg.body
        reply = self._connection.send_and_get_reply(_get_all_for(msg, interface), **kwargs)
        if reply.header.message_type != MessageType.method_return:
            return reply
        (properties,) = reply.body
        if name not in properties:  # (the getter failed: the object is gone)
            return new_error(msg, _NO_SUCH_OBJECT, "s", (f"no {name} on {_path(msg)}",))
        return new_method_return(msg, "v", (properties[name],))


def _is_risky_get(msg: Any) -> bool:
    from jeepney import HeaderFields

    fields = msg.header.fields
    return (
        fields.get(HeaderFields.interface) == _PROPERTIES
        and fields.get(HeaderFields.member) == "Get"
        and msg.body[0] in _RISKY
    )


def _path(msg: Any) -> str:
    from jeepney import HeaderFields

    return str(msg.header.fields[HeaderFields.path])


def _get_all_for(msg: Any, interface: str) -> Any:
    from jeepney import DBusAddress, HeaderFields, Properties

    fields = msg.header.fields
    address = DBusAddress(_path(msg), fields[HeaderFields.destination], interface)
    return Properties(address).get_all()
