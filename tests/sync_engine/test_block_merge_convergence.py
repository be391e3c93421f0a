"""Two devices converge after concurrent edits the structural step merges as key blocks.

The block merge's text keeps both sides' comments, so it is neither side's text even when its
data is one side's: the engine takes it as ``take_merged`` (write it, push it). The other device
then sees a one-sided change and takes it verbatim; nothing may send it back again (a push loop
between two devices whose texts differ only in comments, blank lines or line endings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from sync.memory_remote import MemoryServer
from sync.merge import merge3_text
from tests.sync_engine.conftest import Device, converge, server_snapshot

BASE = """\
# Deploy workflow

# what the UI shows
name: deploy
# seconds before the step is killed
timeout: 30
env:
  # where it goes
  TARGET: staging
  LEVEL: info   # or debug
owner: "ops"  # quoted on purpose
"""

CASES = {
    # Touching keys changed on both sides, a comment edited on each.
    "touching values": (
        BASE.replace("name: deploy\n", "name: deploy-eu  # renamed\n"),
        BASE.replace(
            "# seconds before the step is killed\ntimeout: 30\n", "# CI is slow\ntimeout: 90\n"
        ),
    ),
    # The data is local's; remote changed a comment touching local's edit: the text is neither.
    "comment only on one side": (
        BASE.replace("name: deploy\n", "name: deploy-eu\n"),
        BASE.replace("# seconds before the step is killed\n", "# seconds (hard limit)\n"),
    ),
    # One device saves CRLF: the style it changed to is put back on the merged text.
    "crlf on one side": (
        BASE.replace("name: deploy\n", "name: deploy-eu\n").replace("\n", "\r\n"),
        BASE.replace(
            "# seconds before the step is killed\ntimeout: 30\n", "# CI is slow\ntimeout: 90\n"
        ),
    ),
    # Nested keys touching inside one mapping, and no final newline on one side.
    "nested, no final newline": (
        BASE.replace("TARGET: staging\n", "TARGET: prod\n"),
        BASE.replace(
            "  LEVEL: info   # or debug\n", "  # verbose for now\n  LEVEL: debug\n"
        ).rstrip("\n"),
    ),
    # Both append a key after a trailing comment.
    "both append": (
        BASE + "retries: 3\n",
        BASE + "region: eu\n",
    ),
}


def assert_same_bytes(server: MemoryServer, *devices: Device) -> None:
    """Every device's files hold the server's rows byte for byte (CRLF included: the fixture's
    snapshot reads text with universal newlines, which would hide a line-ending difference)."""
    expected = {i: (p, c.encode("utf-8")) for i, (p, c) in server_snapshot(server).items()}
    for dev in devices:
        files = {i.id: (i.path, dev.store.abspath(i.path).read_bytes()) for i in dev.store.list()}
        assert files == expected, dev.name
        assert dev.engine.status().pending == 0, dev.name


@pytest.mark.parametrize("case", list(CASES))
def test_devices_converge_on_a_block_merged_text(
    case: str, make_device: Callable[..., Device], server: MemoryServer
) -> None:
    edit_a, edit_b = CASES[case]
    outcome = merge3_text(BASE, edit_b, edit_a)
    assert outcome.step == "structural", outcome  # the case is what it claims to test
    assert outcome.content not in (edit_a, edit_b)
    a, b = make_device("a"), make_device("b")
    ident = a.store.save("wf/deploy", BASE).id
    converge(a, b)
    a.store.save("wf/deploy", edit_a)
    b.store.save("wf/deploy", edit_b)
    a.sync()  # a's edit reaches the server first
    report = b.sync()  # b merges: a text neither device wrote, pushed
    assert report.merged == 1 and report.conflicts == 0
    assert b.text(ident) == outcome.content
    a.sync()  # a takes it as it is: a one-sided change
    assert a.text(ident) == outcome.content
    # Bounded: one more round moves nothing, on either device.
    for dev in (a, b):
        again = dev.sync()
        assert (again.pushed, again.merged, again.conflicts) == (0, 0, 0), dev.name
    assert_same_bytes(server, a, b)
    assert server_snapshot(server)[ident][1] == outcome.content


@pytest.mark.parametrize("case", list(CASES))
def test_devices_that_both_edit_before_either_syncs_converge(
    case: str, make_device: Callable[..., Device], server: MemoryServer
) -> None:
    """Three devices, each edits, syncs in turn: every merge is pushed once and taken once."""
    edit_a, edit_b = CASES[case]
    a, b, c = make_device("a"), make_device("b"), make_device("c")
    ident = a.store.save("wf/deploy", BASE).id
    converge(a, b, c)
    a.store.save("wf/deploy", edit_a)
    b.store.save("wf/deploy", edit_b)
    c.store.save("wf/deploy", BASE.replace('owner: "ops"', 'owner: "sre"'))
    converge(a, b, c, rounds=4)
    assert_same_bytes(server, a, b, c)
    final = flat(yaml.safe_load(a.text(ident)))
    assert final["owner"] == "sre"  # c's edit, merged with a's and b's
    before = flat(yaml.safe_load(BASE))
    for edit in (edit_a, edit_b):
        changed = {k: v for k, v in flat(yaml.safe_load(edit)).items() if before.get(k) != v}
        assert {k: final.get(k) for k in changed} == changed


def flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """path -> scalar of a nested mapping."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        out.update(flat(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out
