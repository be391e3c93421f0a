"""How the line step treats a file's own format: line endings, a BOM, keys that load as one.

Two devices rarely write a file the same way: a Windows editor saves CRLF and may add a BOM,
another device writes LF. A difference of line endings is a difference on every line, so the
line step conflicted everywhere and the structural step settled it: the merge kept both edits
but dropped every comment of both sides (and an edit that was only a comment).
"""

from __future__ import annotations

import pytest
import yaml

from sync.merge import merge3_text

BASE = """\
# Nightly report workflow
name: nightly-report   # shown in the UI
steps:
  - id: fetch
    run: curl -s https://example.org/data   # keep quiet
    timeout: 30
  - id: build
    run: make report
notify:
  email: ops@example.org
"""
LOCAL = BASE.replace("timeout: 30", "timeout: 45")
REMOTE = BASE.replace("ops@", "team@")
BOTH = LOCAL.replace("ops@", "team@")


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def test_a_crlf_file_merges_line_by_line_with_an_lf_edit() -> None:
    # The base and the local edit are CRLF (a Windows device); the remote device wrote LF.
    out = merge3_text(crlf(BASE), crlf(LOCAL), REMOTE)
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == BOTH  # the remote side changed the line endings: its LF is kept


def test_line_endings_changed_on_one_side_keep_the_other_sides_comments() -> None:
    out = merge3_text(BASE, crlf(LOCAL), REMOTE)
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == crlf(BOTH)
    out = merge3_text(BASE, REMOTE, crlf(LOCAL))
    assert (out.status, out.step, out.content) == ("clean", "line", crlf(BOTH))


def test_only_line_endings_changed_on_one_side_and_an_edit_on_the_other() -> None:
    out = merge3_text(BASE, crlf(BASE), REMOTE)
    assert (out.status, out.step, out.content) == ("clean", "line", crlf(REMOTE))


def test_a_bom_added_on_one_side_and_a_comment_edit_on_the_other() -> None:
    remote = BASE.replace("# Nightly report workflow", "# Nightly report workflow (v2)")
    out = merge3_text(BASE, "\ufeff" + LOCAL, remote)
    assert (out.status, out.step) == ("clean", "line")
    assert out.content == "\ufeff" + LOCAL.replace("workflow\n", "workflow (v2)\n")


def test_a_bom_and_crlf_kept_when_both_sides_have_them() -> None:
    def win(text: str) -> str:
        return "\ufeff" + crlf(text)

    out = merge3_text(win(BASE), win(LOCAL), win(REMOTE))
    assert (out.status, out.step, out.content) == ("clean", "line", win(BOTH))


def test_mixed_line_endings_are_merged_as_they_are() -> None:
    # Some lines CRLF, some LF: no single style to put back, so nothing is normalised.
    mixed = BASE.replace("steps:\n", "steps:\r\n")
    out = merge3_text(mixed, mixed.replace("timeout: 30", "timeout: 45"), REMOTE)
    assert out.status == "clean"
    assert yaml.safe_load(out.content or "") == yaml.safe_load(BOTH)


@pytest.mark.parametrize(
    "left,right",
    [
        ("1: one", "true: yes"),
        ("on: push", "yes: pull"),
        ("1: one", "0x1: hex"),
        ("2: a", "2.0: b"),
    ],
)
def test_two_keys_that_load_as_one_are_not_a_clean_line_merge(left: str, right: str) -> None:
    """Each side adds a key; the texts differ, the loaded keys are equal (1 == True == 0x1).

    diff3 is clean and the key check compared the keys' text, so the loader silently kept one
    side's value (`on:` is GitHub Actions' trigger key and loads as True, like `yes:`).
    """
    base = "a: 1\nb: 2\nc: 3\nd: 4\n"
    local = base.replace("b: 2\n", f"{left}\nb: 2\n")
    remote = base.replace("d: 4\n", f"{right}\nd: 4\n")
    for lo, re_ in ((local, remote), (remote, local)):
        out = merge3_text(base, lo, re_)
        assert out.status == "conflict", out.content
