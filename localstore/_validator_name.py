"""The name a validator's verdicts are recorded under when the app passes no ``validator_name``.

Each index row records the validator that judged it (``judged_by``), and the home records the
app's: a store opened with a validator of another name judges the blueprints again, and sync
holds what the home's validator has not judged. So two rule sets must never share a name (the
one would take the other's verdicts, and nothing would be judged again when an app switches),
and one rule set must keep its name from run to run and between the app and the daemon (which
imports it by the dotted name in config.yaml), or every open would judge everything again.

A function defined at a module's top level (or in a class there) keeps the name it had since
core v10, its module and qualified name: homes in the field record those names. Everything else
was once named the same way too, so every ``functools.partial`` was
``functools.partial``, every lambda of a module ``module.<lambda>``, every instance of a
callable class that class. Now a callable made of code and values (a partial, a function made
inside another, a method of an instance, an instance with ``__call__``) is named after its code
and its values, written out when each has a repr that is the same in every process (None,
numbers, text, enum members, functions and classes by name, containers and instances of those);
when one has not (a lock, a connection: its repr is its address), or the code has no name of its
own (a lambda), it cannot be named and the app passes ``validator_name``. Rejected: naming by
``id()`` or a hash of the code object (a new name each run, so every open judged everything
again) and leaving those names shared (the bug).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import re
import types
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from localstore.config import MAX_VALIDATOR_NAME
from localstore.errors import InvalidInputError

__all__ = ["validator_name_of"]

# Values nested deeper than this (a partial of a partial of ..., a list of lists ...) are refused.
_MAX_DEPTH = 12
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
# A class's own heap-type flag: set for classes made by a class statement (and for some
# extension types); the C types of the standard library without it keep state a name cannot see.
_HEAPTYPE = 1 << 9
_LRU_WRAPPER: Any = type(functools.cache(lambda: None))


class _Unnamed(Exception):
    """Why a callable or value has no stable name of its own (its text is shown to the user)."""


def validator_name_of(validator: Callable[..., Any] | None) -> str:
    """The name ``validator``'s verdicts are recorded under by default ('' for none).

    Raises InvalidInputError when no name can be derived that no other rules could share and
    that stays the same in every process (a lambda, a callable holding a value whose repr is
    its address): the hint says to pass ``validator_name``."""
    if validator is None:
        return ""
    try:
        name = _callable_name(validator, 0, frozenset())
    except _Unnamed as exc:
        raise InvalidInputError(
            f"cannot name the validator {_short_repr(validator)}: {exc}, so other rules could "
            "be recorded under its name, or it would get a new name in every run",
            hint="pass validator_name='myapp-rules-1' with it, a name you change whenever the "
            "rules change",
        ) from None
    if len(name) > MAX_VALIDATOR_NAME and "(" in name:  # (a plain function's name has none)
        # Recorded in every row it judges: a long one (a partial of a long list) is cut, and
        # ends in a hash of the whole, so it stays distinct.
        digest = hashlib.sha256(name.encode("utf-8", "backslashreplace")).hexdigest()[:16]
        name = f"{name[: MAX_VALIDATOR_NAME - 26]}...sha256:{digest}"
    return name


def _callable_name(obj: Any, depth: int, seen: frozenset[int]) -> str:
    if depth > _MAX_DEPTH:
        raise _Unnamed("it nests too deep")
    seen = seen | {id(obj)}
    if isinstance(obj, functools.partial):
        base = _callable_name(obj.func, depth + 1, seen)
        values = [_value(a, depth + 1, seen) for a in obj.args]
        values += [f"{k}={_value(v, depth + 1, seen)}" for k, v in sorted(obj.keywords.items())]
        return _with_values(base, values)
    if isinstance(obj, types.MethodType):
        owner, method = obj.__self__, obj.__func__.__name__
        if isinstance(owner, type):  # a classmethod: by the class it is bound to (a subclass's)
            return f"{_class_name(owner)}.{method}"
        return f"{_instance_name(owner, depth + 1, seen)}.{method}"
    if isinstance(obj, types.FunctionType):
        return _function_name(obj, depth, seen)
    if isinstance(obj, type):
        return _class_name(obj)
    if isinstance(obj, types.BuiltinFunctionType):
        if obj.__self__ is None or isinstance(obj.__self__, types.ModuleType):
            return f"{obj.__module__}.{obj.__qualname__}"  # (a C function: as before)
        raise _Unnamed(f"it is a method of {_short_repr(obj.__self__)}")
    if isinstance(obj, _LRU_WRAPPER):  # functools.lru_cache/cache: the function's name, as before
        return _callable_name(obj.__wrapped__, depth + 1, seen)
    return _instance_name(obj, depth, seen)


def _function_name(fn: types.FunctionType, depth: int, seen: frozenset[int]) -> str:
    qualname = fn.__qualname__
    if "<lambda>" in qualname:
        raise _Unnamed("a lambda has no name of its own (every lambda of a module had the same)")
    base = f"{fn.__module__}.{qualname}"
    if "<locals>" not in qualname:
        return base  # defined at a module's top level: the name homes recorded since core v10
    # Made inside another function: the same code at each call; what it closes over and its
    # defaults (evaluated at each call) are what may differ between two of them.
    code = fn.__code__
    values = []
    for var, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
        try:
            content = cell.cell_contents
        except ValueError:  # (a variable of the enclosing function not yet assigned)
            values.append(f"{var}=<unassigned>")
            continue
        if var == "__class__" or id(content) in seen:
            continue  # super()'s cell (the class, named already); itself, or its caller
        values.append(f"{var}={_value(content, depth + 1, seen)}")
    positional = code.co_varnames[: code.co_argcount]
    defaults = fn.__defaults__ or ()
    for var, value in zip(positional[len(positional) - len(defaults) :], defaults, strict=True):
        values.append(f"{var}={_value(value, depth + 1, seen)}")
    for var, value in sorted((fn.__kwdefaults__ or {}).items()):
        values.append(f"{var}={_value(value, depth + 1, seen)}")
    return _with_values(base, values)


def _class_name(cls: type) -> str:
    if "<locals>" in cls.__qualname__:
        # Its methods may close over the enclosing function's variables, which a name of the
        # class cannot show.
        raise _Unnamed(f"class {cls.__qualname__} is defined inside a function")
    return f"{cls.__module__}.{cls.__qualname__}"


def _instance_name(obj: Any, depth: int, seen: frozenset[int]) -> str:
    """An instance by its class and its attributes: ``module.Class(a=1, b='x')``, or the class's
    name alone for one that keeps none (every such instance behaves alike)."""
    cls = type(obj)
    seen = seen | {id(obj)}
    for klass in cls.__mro__[:-1]:
        if not klass.__flags__ & _HEAPTYPE:
            # A C type (list, a lock, an extension's object) keeps state its attributes do not
            # show: two instances with one name could hold different rules.
            raise _Unnamed(f"{_short_repr(obj)} keeps state that has no stable repr")
    state: dict[str, Any] = dict(getattr(obj, "__dict__", {}))
    slots: list[str] = []
    for klass in cls.__mro__[:-1]:
        declared = klass.__dict__.get("__slots__", ())
        slots += [declared] if isinstance(declared, str) else list(declared)
    if not hasattr(obj, "__dict__") and any(
        "__slots__" not in k.__dict__ for k in cls.__mro__[:-1]
    ):
        # (Neither a dict nor slots: an extension type's object, which keeps its state in C.)
        raise _Unnamed(f"{_short_repr(obj)} keeps state that has no stable repr")
    for slot in slots:
        if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
            state[slot] = getattr(obj, slot)
    values = [
        f"{k}={_value(v, depth + 1, seen)}"
        for k, v in sorted(state.items())
        if id(v) not in seen  # (a back reference: it is being named)
    ]
    return _with_values(_class_name(cls), values)


def _value(value: Any, depth: int, seen: frozenset[int]) -> str:
    """A repr of ``value`` that is the same in every process, or _Unnamed."""
    if depth > _MAX_DEPTH:
        raise _Unnamed("it nests too deep")
    if isinstance(value, enum.Enum):  # (before the scalars: an IntEnum is an int)
        return f"{_class_name(type(value))}.{value.name}"
    if type(value) in _SCALARS:
        try:
            return repr(value)
        except ValueError as exc:  # an int past sys.get_int_max_str_digits()
            raise _Unnamed(f"one of its values cannot be written out ({exc})") from None
    if isinstance(value, re.Pattern):
        return f"re.compile({value.pattern!r}, {int(value.flags)})"
    if isinstance(value, PurePath):
        return repr(value)
    if isinstance(value, types.ModuleType):  # (imported inside the enclosing function)
        return f"<module {value.__name__}>"
    inner = seen | {id(value)}
    if type(value) in (tuple, list):
        items = [_value(v, depth + 1, inner) for v in value]
        if type(value) is list:
            return f"[{', '.join(items)}]"
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if type(value) is dict:
        # Sorted: two equal dicts built in another order are the same rules (and a set's
        # order changes with each process's string hashing).
        pairs = sorted(
            f"{_value(k, depth + 1, inner)}: {_value(v, depth + 1, inner)}"
            for k, v in value.items()
        )
        return f"{{{', '.join(pairs)}}}"
    if type(value) in (set, frozenset):
        items = sorted(_value(v, depth + 1, inner) for v in value)
        text = f"{{{', '.join(items)}}}" if items else ""
        return text or "set()" if type(value) is set else f"frozenset({text})"
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):  # a named tuple
        named: Any = value
        fields = [
            f"{k}={_value(v, depth + 1, inner)}" for k, v in zip(named._fields, named, strict=True)
        ]
        return _with_values(_class_name(type(value)), fields)
    if callable(value):
        return _callable_name(value, depth, seen)
    return _instance_name(value, depth, seen)


def _with_values(base: str, values: list[str]) -> str:
    return f"{base}({', '.join(values)})" if values else base


def _short_repr(obj: Any) -> str:
    """A short repr of ``obj`` for a message (never raises)."""
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - the app's __repr__ may raise anything; the type will do
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."
