"""Edge values an app passes to the public store API get a typed error with a hint (or a
sensible answer), never a builtin exception from deep inside."""

from __future__ import annotations

from typing import Any

import pytest

from localstore.errors import InvalidInputError, InvalidMetaError


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"content": "steps: [caf\udce9]\n"}, InvalidInputError),
        ({"content": {"steps": ["caf\udce9"]}}, InvalidInputError),
        ({"name": "caf\udce9"}, InvalidMetaError),
        ({"description": "\ud800"}, InvalidMetaError),
        ({"tags": ["ok", "caf\udce9"]}, InvalidMetaError),
    ],
)
def test_text_with_lone_surrogates_is_refused_typed(
    store, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Lone surrogates (a file name or argument decoded with surrogateescape) cannot be written as
    UTF-8: the save raised a raw UnicodeEncodeError."""
    kwargs = {"content": "steps: []\n", **kwargs}
    with pytest.raises(error, match="not valid Unicode") as info:
        store.save("a/text", kwargs.pop("content"), **kwargs)
    assert info.value.hint
    assert store.count() == 0
