"""check and check --fix say the same of a new file that cannot be indexed, with the reason and
what to do with the file: check said "unindexed: not in index" of a file that --fix (and the
watcher) refused as invalid, so the user ran --fix, which could not index it either."""

from __future__ import annotations

from typing import Any

import pytest

from localstore.store import BlueprintStore

YAML = "wide.blueprint.yaml"
META = "wide.blueprint.meta.json"

CASES = {
    "utf16": ("steps: [a, b]\n".encode("utf-16"), None, "invalid-yaml", YAML),
    "utf16-no-bom": ("steps: [a, b]\n".encode("utf-16-le"), None, "invalid-yaml", YAML),
    "latin1": ("name: caf\u00e9\n".encode("latin-1"), None, "invalid-yaml", YAML),
    "unparsable": (b"steps: [a, b\n", None, "invalid-yaml", YAML),
    "not-a-mapping": (b"- a\n- b\n", None, "invalid-yaml", YAML),
    "bad-meta": (b"steps: [a]\n", b"{not json", "invalid-meta", META),
}


def _put(store: BlueprintStore, yaml: bytes, meta: bytes | None) -> None:
    store.abspath(YAML).write_bytes(yaml)
    if meta is not None:
        store.abspath(META).write_bytes(meta)


def _about_it(problems: list[dict[str, str]]) -> list[dict[str, str]]:
    return [p for p in problems if p["path"] in (YAML, META)]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_check_and_check_fix_say_the_same_of_a_file_they_cannot_index(
    store: Any, case: str
) -> None:
    yaml, meta, kind, path = CASES[case]
    _put(store, yaml, meta)
    before = store.check()
    fixed = store.check(fix=True)
    after = store.check()
    said = _about_it(before.problems)
    assert [(p["kind"], p["path"]) for p in said] == [(kind, path)], before.problems
    assert _about_it(fixed.problems) == said
    assert _about_it(after.problems) == said
    assert fixed.fixed == [] and store.count() == 0  # nothing recorded, nothing written
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == sorted(
        [YAML] + ([META] if meta is not None else [])
    )


@pytest.mark.parametrize("case", ["utf16", "utf16-no-bom", "latin1"])
def test_an_encoding_problem_says_to_resave_the_file_not_to_pass_a_str(
    store: Any, case: str
) -> None:
    """The API's hint ("or pass the content as a str") is for a caller of save; for a file in
    the folder it says what to do with the file."""
    yaml, meta, _, _ = CASES[case]
    _put(store, yaml, meta)
    for report in (store.check(), store.check(fix=True)):
        (problem,) = _about_it(report.problems)
        assert problem["detail"].endswith(f"(re-save {YAML} as UTF-8 in your editor)"), problem
        assert " str" not in problem["detail"]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_an_indexed_file_that_stops_parsing_is_reported_before_fix_as_fix_reports_it(
    store: Any, case: str
) -> None:
    """check said "changed: content differs" of a recorded file that --fix then refused as
    invalid and flagged, and the flag (check's "flagged" line, the watcher's event) was kept
    without the hint: neither said what to do with the file."""
    store.save(YAML, "steps: [a]\n")
    yaml, meta, kind, path = CASES[case]
    if meta is None:
        store.abspath(YAML).write_bytes(yaml)
    else:
        store.abspath(META).write_bytes(meta)
    before = _about_it(store.check().problems)
    fixed = store.check(fix=True)
    (after,) = _about_it(store.check().problems)
    assert [(p["kind"], p["path"]) for p in before] == [(kind, path)], before
    assert _about_it(fixed.problems) == before and fixed.fixed == []
    detail = before[0]["detail"]
    assert detail.endswith(")"), detail  # (the hint: what to do with the file)
    assert after["kind"] == "flagged" and after["path"] == YAML
    assert after["detail"] == (detail if kind == "invalid-yaml" else f"invalid meta file: {detail}")
    assert store.load(YAML).content == "steps: [a]\n"  # (the last good version stays)


GOOD_ID = "6f1c2b1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
META_REFUSALS = {
    "not-an-object": b"[1, 2]",
    "name-not-a-string": b'{"id": "%s", "name": 3}' % GOOD_ID.encode(),
    "public-not-a-bool": b'{"id": "%s", "public": "yes"}' % GOOD_ID.encode(),
    "tags-not-a-list": b'{"id": "%s", "tags": 7}' % GOOD_ID.encode(),
    "too-large": b'{"id": "%s", "x": "%s"}' % (GOOD_ID.encode(), b"a" * (1 << 20)),
}


@pytest.mark.parametrize("case", META_REFUSALS, ids=list(META_REFUSALS))
def test_every_refusal_of_a_meta_file_says_what_to_do(store: Any, case: str) -> None:
    """These said what is wrong and not what to do (no hint), in check, status and the
    watcher's event alike."""
    _put(store, b"steps: [a]\n", META_REFUSALS[case])
    (problem,) = store.check().problems
    assert (problem["kind"], problem["path"]) == ("invalid-meta", META)
    assert problem["detail"].endswith("delete the meta file so a new one is created)")
