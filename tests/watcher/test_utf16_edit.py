"""An editor saving a blueprint as UTF-16 without a byte order mark: the watcher flags it, in
words that name UTF-16 (it said "a control character (NUL, U+0000)")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from localstore.blueprint import check_yaml, parse_yaml
from localstore.errors import InvalidYAMLError
from localstore.store import BlueprintStore
from localstore.watcher import Watcher

from .conftest import Recorder

UTF16 = "looks like UTF-16 (a NUL byte every other byte), not UTF-8"


def test_an_edit_saved_as_utf16_is_flagged_as_utf16(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    bp = store.save("wide", "steps: [a, b]\n")
    assert watcher.wait_idle()
    recorder.take()
    store.abspath(bp.path).write_bytes("steps: [a, b, c]\n".encode("utf-16-le"))
    assert watcher.wait_idle()
    events = recorder.take()
    assert [(e.kind, e.id) for e in events] == [("invalid", bp.id)]
    assert UTF16 in events[0].detail
    assert UTF16 in (store.row(bp.id).flagged or "")
    assert store.load(bp.id).content == "steps: [a, b]\n"  # (the last good version stays)


@pytest.mark.parametrize("check", [parse_yaml, check_yaml])
def test_a_lone_nul_is_still_a_control_character(check: Callable[[bytes], object]) -> None:
    """Only a NUL every other byte is taken for UTF-16, not any NUL (a binary file)."""
    with pytest.raises(InvalidYAMLError, match=r"control character \(NUL, U\+0000\) at line 2"):
        check(b"a: 1\nb: x\x00y\n")


def test_a_new_utf16_file_gets_the_words_check_gives_it(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    """Nothing is recorded for it (there is no good version to keep); the watcher's event says
    what `check` says of the file, with what to do (not the API's "pass the content as a str")."""
    store.abspath("wide.blueprint.yaml").write_bytes("steps: [a]\n".encode("utf-16-le"))
    assert watcher.wait_idle()
    (event,) = recorder.take()
    (problem,) = store.check().problems
    assert (event.kind, event.path, event.rev) == ("invalid", "wide.blueprint.yaml", 0)
    assert event.id == ""  # (no blueprint is recorded: nothing to look up)
    assert (problem["kind"], problem["detail"]) == ("invalid-yaml", event.detail)
    assert event.detail.startswith("YAML " + UTF16)
    assert event.detail.endswith("(re-save wide.blueprint.yaml as UTF-8 in your editor)")
    assert store.count() == 0


def test_a_recorded_file_saved_as_utf16_is_flagged_with_what_to_do(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    """The flag was stored without the hint: the watcher's event and check's flagged line said
    what is wrong, not what to do with the file."""
    bp = store.save("wide", "steps: [a]\n")
    assert watcher.wait_idle()
    recorder.take()
    store.abspath(bp.path).write_bytes("steps: [a, b]\n".encode("utf-16"))
    assert watcher.wait_idle()
    (event,) = recorder.take()
    (problem,) = store.check().problems
    assert (event.kind, event.id, event.rev) == ("invalid", bp.id, bp.rev)
    assert (problem["kind"], problem["detail"]) == ("flagged", event.detail)
    assert event.detail.endswith(f"(re-save {bp.path} as UTF-8 in your editor)")


def test_a_new_pair_that_cannot_be_indexed_is_no_recorded_blueprint_in_its_event(
    store: BlueprintStore, watcher: Watcher, recorder: Recorder
) -> None:
    """The event carried the id of the pair's meta file (or one made up), never recorded: an app
    that looked it up was told "not found". It now has no id, as status lists such a file."""
    meta = b'{"id": "6f1c2b1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "name": "wide"}'
    store.abspath("wide.blueprint.meta.json").write_bytes(meta)
    store.abspath("wide.blueprint.yaml").write_bytes(b"steps: [a\n")
    assert watcher.wait_idle()
    (event,) = recorder.take()
    assert (event.kind, event.id, event.rev) == ("invalid", "", 0)
    assert event.to_dict()["id"] == ""
    assert store.count() == 0
