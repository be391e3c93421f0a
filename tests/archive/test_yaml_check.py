"""The import's YAML check gives the store parser's verdict on syntax, size, nesting and aliases.

Import checks every document before anything is written, then the store parses it again when it
saves. The check skips construction and, for documents without aliases, walks only collections;
these properties hold it to the same verdicts as ``parse_yaml`` on the limits it shares.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from localstore._bundle_read import check_yaml_structure
from localstore.blueprint import YamlLimits, parse_yaml
from localstore.errors import InvalidYAMLError, LimitExceededError

SCALARS = st.one_of(st.integers(-5, 5), st.booleans(), st.none(), st.text("ab*&: -#", max_size=6))
TREES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text("kxyz", min_size=1, max_size=3), inner, max_size=4),
    ),
    max_leaves=40,
)
LIMITS = st.builds(YamlLimits, max_depth=st.integers(1, 8), max_nodes=st.integers(1, 80))


def verdict(fn: Any, raw: bytes, limits: YamlLimits) -> str:
    try:
        fn(raw, limits)
    except LimitExceededError:
        return "limit"
    except InvalidYAMLError:
        return "invalid"
    return "ok"


def same_verdict(raw: bytes, limits: YamlLimits) -> None:
    assert verdict(check_yaml_structure, raw, limits) == verdict(parse_yaml, raw, limits), raw


@given(data=TREES, limits=LIMITS, flow=st.sampled_from([None, True, False]))
@settings(max_examples=300, deadline=None)
def test_same_verdict_on_trees(data: Any, limits: YamlLimits, flow: bool | None) -> None:
    raw = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True).encode()
    same_verdict(raw, limits)
    same_verdict(yaml.safe_dump({"top": data}, default_flow_style=flow).encode(), limits)


@given(shared=TREES, width=st.integers(1, 4), limits=LIMITS)
@settings(max_examples=200, deadline=None)
def test_same_verdict_with_aliases(shared: Any, width: int, limits: YamlLimits) -> None:
    # The dumper writes an anchor once and an alias for every further use of the same object.
    box = [shared]
    doc = {f"k{i}": [box, box] for i in range(width)}
    same_verdict(yaml.safe_dump(doc).encode(), limits)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"# only a comment\n",
        b"- a\n- b\n",
        b"just text\n",
        b"!!set {a, b}\n",
        b"a: [1, 2\n",
        b"a: 1\n a: 2\n",
        b"\xff\xfe a: 1\n",
        b"a: *nowhere\n",
        b"a: &x [*x]\n",
        b"a: " + b"[" * 70 + b"]" * 70 + b"\n",
        b"k: v # a * in a comment: the general walk, same verdict\n",
    ],
)
def test_same_verdict_on_edge_cases(raw: bytes) -> None:
    same_verdict(raw, YamlLimits())


def test_size_limit() -> None:
    with pytest.raises(LimitExceededError):
        check_yaml_structure(b"a: 1234567890\n", YamlLimits(max_bytes=8))
