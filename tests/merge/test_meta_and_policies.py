"""Meta merging, whole-version merges and the conflict policies."""

from __future__ import annotations

from typing import Any

import pytest

from sync.errors import MergeError
from sync.merge import (
    ConflictCase,
    Resolution,
    Version,
    merge,
    merge_meta,
    resolve,
)

META = {
    "id": "0b7c6a8e-1111-4222-8333-944455556666",
    "name": "Report",
    "description": "nightly",
    "tags": ["ops", "daily", "pdf"],
    "modified": "2025-03-01T10:00:00.000000Z",
}
DOC = "name: report\nsteps:\n  - id: a\n    run: x\n  - id: b\n    run: y\ntimeout: 10\n"


def meta(**changes: Any) -> dict[str, Any]:
    return {**META, **changes}


def test_tags_merge_as_a_three_way_set() -> None:
    local = meta(tags=["ops", "pdf", "urgent"])  # removed daily, added urgent
    remote = meta(tags=["ops", "daily", "pdf", "csv"])  # added csv
    merged, conflicts = merge_meta(META, local, remote)
    assert conflicts == []
    assert merged["tags"] == ["ops", "pdf", "urgent", "csv"]


def test_a_tag_removed_on_both_sides_stays_removed() -> None:
    merged, _ = merge_meta(META, meta(tags=["ops", "daily"]), meta(tags=["daily", "pdf"]))
    assert merged["tags"] == ["daily"]


def test_modified_takes_the_later_time_whatever_the_side() -> None:
    early, late = "2025-03-02T09:00:00Z", "2025-03-02T11:00:00.5+00:00"
    for lv, rv in ((early, late), (late, early)):
        merged, conflicts = merge_meta(META, meta(modified=lv), meta(modified=rv))
        assert merged["modified"] == late and conflicts == []


def test_name_is_a_three_way_scalar() -> None:
    merged, conflicts = merge_meta(META, meta(name="Local"), meta(description="remote"))
    assert (merged["name"], merged["description"], conflicts) == ("Local", "remote", [])
    _, conflicts = merge_meta(META, meta(name="Local"), meta(name="Remote"))
    assert conflicts == ["meta.name"]


def test_unknown_meta_keys_merge_like_values() -> None:
    merged, conflicts = merge_meta(
        META, meta(extra={"a": 1, "b": 1}), {**META, "extra": {"a": 0, "b": 2}}
    )
    assert conflicts == ["meta.extra.a", "meta.extra.b"]  # both added extra, differently
    merged, conflicts = merge_meta(meta(x=1), meta(x=1, y=2), META)
    assert "x" not in merged and merged["y"] == 2 and conflicts == []


def test_whole_version_merge_combines_content_and_meta() -> None:
    base = Version(DOC, META)
    local = Version(DOC.replace("run: x", "run: X"), meta(tags=["ops"]))
    remote = Version(DOC.replace("timeout: 10", "timeout: 20"), meta(name="Renamed"))
    out = merge(base, local, remote)
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == DOC.replace("run: x", "run: X").replace("timeout: 10", "timeout: 20")
    assert out.meta == meta(tags=["ops"], name="Renamed")


def test_meta_conflict_makes_the_whole_merge_a_conflict() -> None:
    out = merge(Version(DOC, META), Version(DOC, meta(name="L")), Version(DOC, meta(name="R")))
    assert (out.status, out.content, out.meta, out.conflicts) == (
        "conflict",
        None,
        None,
        ["meta.name"],
    )


# -- policies ------------------------------------------------------------------------------------

BASE = Version(DOC, META)
LOCAL = Version(DOC.replace("run: x", "run: X"), META)
REMOTE = Version(DOC.replace("timeout: 10", "timeout: 20"), META)
CLASH_L = Version(DOC.replace("timeout: 10", "timeout: 11"), META)
CLASH_R = Version(DOC.replace("timeout: 10", "timeout: 12"), META)


@pytest.mark.parametrize("policy", ["merge", "keep-both", "prefer-local", "prefer-remote"])
def test_step_one_settles_under_every_policy(policy: Any) -> None:
    assert resolve(policy, BASE, LOCAL, BASE) == Resolution.take_local()
    assert resolve(policy, BASE, BASE, REMOTE) == Resolution.take_remote()
    assert resolve(policy, BASE, LOCAL, LOCAL) == Resolution.take_local()


def test_merge_policy_writes_the_merge() -> None:
    res = resolve("merge", BASE, LOCAL, REMOTE)
    assert res.action == "take_merged" and res.step == "line"
    assert res.content == DOC.replace("run: x", "run: X").replace("timeout: 10", "timeout: 20")
    assert res.meta == META


def test_merge_policy_keeps_both_on_a_real_conflict() -> None:
    res = resolve("merge", BASE, CLASH_L, CLASH_R)
    assert res == Resolution.keep_both(["timeout"])


@pytest.mark.parametrize(
    "policy,expected",
    [
        ("keep-both", Resolution.keep_both(["content: both sides changed"])),
        ("prefer-local", Resolution.take_local()),
        ("prefer-remote", Resolution.take_remote()),
    ],
)
def test_other_policies_do_not_merge_lines(policy: Any, expected: Resolution) -> None:
    assert resolve(policy, BASE, LOCAL, REMOTE) == expected


def test_a_callable_policy_sees_the_ladders_conflict() -> None:
    seen: list[ConflictCase] = []

    def take_larger_timeout(case: ConflictCase) -> Resolution:
        seen.append(case)
        return Resolution.take_merged(case.remote.content, case.remote.meta)

    res = resolve(take_larger_timeout, BASE, CLASH_L, CLASH_R)
    assert res == Resolution.take_merged(CLASH_R.content, META)
    (case,) = seen
    assert case.outcome.conflicts == ["timeout"] and case.base == BASE
    seen.clear()
    assert resolve(take_larger_timeout, BASE, LOCAL, REMOTE).action == "take_merged"
    assert seen == []  # a clean ladder never asks the callable


def test_a_meta_only_merge_is_named_for_what_it_equals() -> None:
    later = meta(modified="2026-01-01T00:00:00Z")
    assert resolve("merge", BASE, Version(DOC, later), BASE) == Resolution.take_local()
    res = resolve("merge", BASE, Version(DOC, meta(name="L")), Version(DOC, meta(tags=[])))
    assert res == Resolution.take_merged(DOC, meta(name="L", tags=[]), "identical")


@pytest.mark.parametrize("bad", ["take-local", "", "MERGE"])
def test_unknown_policy_names_raise(bad: Any) -> None:
    with pytest.raises(MergeError):
        resolve(bad, BASE, LOCAL, REMOTE)


@pytest.mark.parametrize("returned", [None, "take_local", Resolution("take_merged")])
def test_a_callable_returning_nonsense_raises(returned: Any) -> None:
    with pytest.raises(MergeError):
        resolve(lambda case: returned, BASE, CLASH_L, CLASH_R)


@pytest.mark.parametrize(
    "tags", [["daily", "ops", "pdf"], ["new", "ops", "daily", "pdf"], ["pdf", "ops", "x"]]
)
def test_tags_changed_on_one_side_only_are_that_sides_tags(tags: list[str]) -> None:
    """merge(base, base, x) is x, meta too: a reordered tag list, or one with a tag put first,
    came back in the base's order, so the engine wrote and pushed a version nobody made."""
    base, side = Version(DOC, META), Version(DOC, meta(tags=tags))
    for local, remote, action in ((base, side, "take_remote"), (side, base, "take_local")):
        out = merge(base, local, remote)
        assert out.meta == side.meta
        assert resolve("merge", base, local, remote).action == action


def test_modified_changed_on_one_side_only_is_that_sides_time() -> None:
    # The side that changed has the earlier clock (a device behind): its version, unchanged.
    base = Version(DOC, META)
    side = Version(DOC.replace("10", "20"), meta(modified="2025-02-28T10:00:00Z"))
    assert merge(base, base, side).meta == side.meta
    assert resolve("merge", base, base, side).action == "take_remote"
    assert resolve("merge", base, side, base).action == "take_local"
