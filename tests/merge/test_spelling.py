"""The structural step's dump keeps how keys and scalars were written.

When the sides' texts cannot be merged block by block and the result is neither side's data,
the merged data is dumped. PyYAML reads YAML 1.1, where ``on``, ``yes`` and ``no`` are booleans
and ``0755`` is octal: the dump wrote ``true:`` for GitHub Actions' ``on:``, ``493`` for
``0755`` and ``false`` for ``no``. PyYAML loads that to the same data, but a YAML 1.2 parser
(GitHub Actions, most tools written since) read a different file: a workflow without its
trigger, a file mode of 493. The dump now writes each key and scalar as a side wrote it.
"""

from __future__ import annotations

import yaml

from sync._spelling import dump_spelled
from sync.merge import _same, merge3_text
from tests.merge.yaml12 import load12

BASE = """\
# CI for the app
name: CI
on: {push: {branches: [main]}, pull_request: {branches: [main]}}
env:
  MODE: 0755
  SCALE: 1e3
  QUOTED: '1e3'
  DEBUG: no
  CACHE: ~
jobs:
  build:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        python: ['3.11', '3.12']
    steps:
      - uses: actions/checkout@v4
      - name: test
        run: |
          make test
"""
# The `on:` line is one flow mapping edited on both sides: diff3 conflicts on it, and the block
# merge cannot take either side's line, so the whole document is dumped.
LOCAL = BASE.replace("push: {branches: [main]}", "push: {branches: [main, release]}")
REMOTE = BASE.replace(
    "pull_request: {branches: [main]}", "pull_request: {branches: [main, dev]}"
).replace("make test\n", "make test\n          make lint\n")
BOTH = LOCAL.replace(
    "pull_request: {branches: [main]}", "pull_request: {branches: [main, dev]}"
).replace("make test\n", "make test\n          make lint\n")


def test_a_dumped_workflow_keeps_on_and_every_scalar_as_written() -> None:
    for local, remote in ((LOCAL, REMOTE), (REMOTE, LOCAL)):
        out = merge3_text(BASE, local, remote)
        assert out.status == "clean" and out.step == "structural", out
        text = out.content
        assert text is not None
        # Both sides' edits, as data, under both YAML versions.
        assert yaml.safe_load(text) == yaml.safe_load(BOTH)
        assert load12(text) == load12(BOTH)
        assert load12(text)["on"]["push"]["branches"] == ["main", "release"]
        # And as the users wrote them.
        assert "\non: " in text and "true:" not in text
        assert "branches: [main, release]" in text and "branches: [main, dev]" in text
        assert "MODE: 0755\n" in text and "DEBUG: no\n" in text and "CACHE: ~\n" in text
        assert "SCALE: 1e3\n" in text and "QUOTED: '1e3'\n" in text
        assert "python: ['3.11', '3.12']" in text
        assert "run: |\n" in text


def test_a_string_no_side_spelled_is_quoted_where_yaml_12_reads_it_otherwise() -> None:
    """PyYAML writes the string 1e3 plain (a string in YAML 1.1, a float in 1.2)."""
    data = {"a": "1e3", "b": "0o17", "c": "09", "d": "yes", "e": "on", "f": "plain", "g": 7}
    text = dump_spelled(data, [None, None, None], same=_same)
    assert yaml.safe_load(text) == data
    assert load12(text) == data
    assert "f: plain\n" in text and "g: 7\n" in text


def test_the_dump_indents_lists_as_the_sides_do() -> None:
    """Only the dumped document is rewritten; how a side wrote its lists under keys is kept."""
    for indent in ("", "  "):
        base = f"on: {{push: {{}}, pull: {{}}}}\nsteps:\n{indent}- a\n{indent}- b\n"
        local = base.replace("push: {}", "push: {x: 1}")
        remote = base.replace("pull: {}", "pull: {y: 2}")
        out = merge3_text(base, local, remote)
        assert out.step == "structural"
        expected = f"on: {{push: {{x: 1}}, pull: {{y: 2}}}}\nsteps:\n{indent}- a\n{indent}- b\n"
        assert out.content == expected
