"""Hypothesis on real-world-shaped workflow files: the never-lose promise under realistic edits.

``tests/merge/corpus/`` holds a GitHub Actions workflow, a GitLab CI pipeline, an Argo
Workflow, a Tekton Pipeline, an Ansible playbook (under a key: a blueprint is a mapping) and a
docker-compose file, written as people write them: comments, anchors and merge keys where the
format uses them, flow lists, ``|`` shell scripts, YAML 1.1 spellings (``on:``, ``yes``,
``0644``). Each side edits the base text as an editor would, at places found in the composed
document: change a step's command (a line of a script, or a one-line command), add a step,
delete a step, set or add an env var, add a comment line, rename a job (or a named item).

The promise: the merge is a conflict, or a clean text in which every leaf that one side changed
has that side's value, every leaf no side changed has the base's (lists of mappings with unique
names matched by name, other lists compared whole), under PyYAML's YAML 1.1 reading and under a
YAML 1.2 reading (``tests/merge/yaml12.py``: what GitHub Actions sees). A comment a side added
is in the text when the line step settled the merge; the structural step may drop comments
(docs/merge.md says when), which is counted, not failed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import merge3
import pytest
import yaml
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from localstore.blueprint import parse_yaml
from localstore.errors import LocalStoreError
from sync.merge import merge3_text
from tests.merge.yaml12 import load12

PROFILE = settings.get_profile("localstore-merge")
CORPUS = {
    p.stem: p.read_text(encoding="utf-8")
    for p in sorted(Path(__file__).parent.glob("corpus/*.yaml"))
}

CMD_KEYS = {"run", "script", "command", "args", "source", "ansible.builtin.shell"}
ENV_KEYS = {"env", "environment", "variables", "vars"}
JOB_KEYS = {"jobs", "services"}
OPS = ("command", "add_step", "delete_step", "env", "comment", "rename")

Edit = Callable[[str, str, int], str | None]  # (text, tag, choice) -> edited text or None
Where = tuple[yaml.Node, yaml.Node | None, str | None]  # a node, its key node, its parent key


def _walk(text: str) -> Iterator[Where]:
    """Every node of the text (each once) with the key node it is the value of and the key
    of the mapping it is in (the parent's key)."""
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    seen: set[int] = set()
    stack: list[Where] = [] if root is None else [(root, None, None)]
    while stack:
        node, key, parent = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node, key, parent
        here = key.value if isinstance(key, yaml.ScalarNode) else parent
        if isinstance(node, yaml.MappingNode):
            stack.extend((v, k, here) for k, v in reversed(node.value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, None, here) for v in reversed(node.value))


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _end_line(node: yaml.Node) -> int:
    """The first line after the node (a collection's end mark is where the next token is)."""
    while (
        isinstance(node, yaml.MappingNode | yaml.SequenceNode)
        and node.value
        and not node.flow_style
    ):
        node = node.value[-1][1] if isinstance(node, yaml.MappingNode) else node.value[-1]
    return node.end_mark.line if node.end_mark.column == 0 else node.end_mark.line + 1


def _block_seqs(
    text: str, items: type[yaml.Node] | None = None
) -> list[tuple[yaml.SequenceNode, str | None]]:
    """The block lists of the text (of ``items`` only, when given) with their keys."""
    out: list[tuple[yaml.SequenceNode, str | None]] = []
    for node, key, _ in _walk(text):
        if not isinstance(node, yaml.SequenceNode) or node.flow_style or not node.value:
            continue
        if items is None or all(isinstance(i, items) for i in node.value):
            out.append((node, key.value if isinstance(key, yaml.ScalarNode) else None))
    return out


def edit_command(text: str, tag: str, choice: int) -> str | None:
    """Change a step's command: a line of a ``|`` script, or a one-line command."""
    sites = [
        n
        for n, k, p in _walk(text)
        if isinstance(n, yaml.ScalarNode)
        and ((k is not None and k.value in CMD_KEYS) or (k is None and p in CMD_KEYS))
    ]
    if not sites:
        return None
    node = sites[choice % len(sites)]
    if node.style in ("|", ">"):
        lines = _lines(text)
        body = [i for i in range(node.start_mark.line + 1, _end_line(node)) if lines[i].strip()]
        i = body[(choice // len(sites)) % len(body)]
        lines[i] = lines[i].rstrip("\n") + f" && echo {tag}\n"
        return "".join(lines)
    if node.start_mark.line != node.end_mark.line:
        return None
    return text[: node.start_mark.index] + f"echo {tag}" + text[node.end_mark.index :]


def add_step(text: str, tag: str, choice: int) -> str | None:
    """Insert a step (a named mapping, or a command line of a list of commands) before one."""
    seqs = [
        (s, k)
        for s, k in _block_seqs(text)
        if k in CMD_KEYS or all(isinstance(i, yaml.MappingNode) for i in s.value)
    ]
    if not seqs:
        return None
    seq, _ = seqs[choice % len(seqs)]
    at = seq.value[(choice // len(seqs)) % len(seq.value)]
    lines = _lines(text)
    line = lines[at.start_mark.line]
    dash = line.index("-") if line.lstrip().startswith("-") else at.start_mark.column - 2
    pad = " " * dash
    if isinstance(at, yaml.MappingNode):
        new = f"{pad}- name: step {tag}\n{pad}  run: echo {tag}\n"
    else:
        new = f"{pad}- echo {tag}\n"
    lines.insert(at.start_mark.line, new)
    return "".join(lines)


def delete_step(text: str, tag: str, choice: int) -> str | None:
    """Delete one item of a list of two or more (its lines, up to the next item's)."""
    seqs = [s for s, _ in _block_seqs(text) if len(s.value) >= 2]
    if not seqs:
        return None
    seq = seqs[choice % len(seqs)]
    i = (choice // len(seqs)) % len(seq.value)
    item = seq.value[i]
    lines = _lines(text)
    start = item.start_mark.line
    if not lines[start].lstrip().startswith("-"):
        return None
    end = min(
        _end_line(item), seq.value[i + 1].start_mark.line if i + 1 < len(seq.value) else len(lines)
    )
    del lines[start:end]
    return "".join(lines)


def edit_env(text: str, tag: str, choice: int) -> str | None:
    """Set an env var's value, or add one."""
    maps = [
        n
        for n, k, _ in _walk(text)
        if isinstance(n, yaml.MappingNode)
        and not n.flow_style
        and n.value
        and k is not None
        and k.value in ENV_KEYS
    ]
    if not maps:
        return None
    node = maps[choice % len(maps)]
    pick = (choice // len(maps)) % (len(node.value) + 1)
    if pick == len(node.value):
        last_key, last = node.value[-1]
        lines = _lines(text)
        lines.insert(
            _end_line(last), " " * last_key.start_mark.column + f'VAR_{tag.upper()}: "{tag}"\n'
        )
        return "".join(lines)
    _, value = node.value[pick]
    if not isinstance(value, yaml.ScalarNode) or value.start_mark.line != value.end_mark.line:
        return None
    return text[: value.start_mark.index] + f'"{tag}"' + text[value.end_mark.index :]


def add_comment(text: str, tag: str, choice: int) -> str | None:
    """A comment line above a key (at its indent, or its item's dash)."""
    lines = _lines(text)
    sites = []
    for n, _, _ in _walk(text):
        if isinstance(n, yaml.MappingNode) and not n.flow_style:
            for k, _ in n.value:
                before = lines[k.start_mark.line][: k.start_mark.column]
                if before.strip() in ("", "-"):
                    sites.append((k.start_mark.line, len(before) - len(before.lstrip())))
    if not sites:
        return None
    line, indent = sorted(set(sites))[choice % len(set(sites))]
    lines.insert(line, " " * indent + f"# note {tag}\n")
    return "".join(lines)


def rename(text: str, tag: str, choice: int) -> str | None:
    """Rename a job or service (a key under jobs/services, a GitLab job), or a named item."""
    sites = []
    for n, k, p in _walk(text):
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                is_job = (k is not None and k.value in JOB_KEYS) or (
                    k is None
                    and p is None
                    and isinstance(value, yaml.MappingNode)
                    and any(x.value in ("script", "<<") for x, _ in value.value)
                )
                named_item = (
                    k is None
                    and p is not None
                    and key.value == "name"
                    and isinstance(value, yaml.ScalarNode)
                )
                if is_job and key.style is None:
                    sites.append(key)
                elif named_item and value.start_mark.line == value.end_mark.line:
                    sites.append(value)
    if not sites:
        return None
    node = sites[choice % len(sites)]
    return text[: node.start_mark.index] + f"{node.value}-{tag}" + text[node.end_mark.index :]


EDITS: dict[str, Edit] = {
    "command": edit_command,
    "add_step": add_step,
    "delete_step": delete_step,
    "env": edit_env,
    "comment": add_comment,
    "rename": rename,
}


def apply(text: str, script: list[tuple[str, int]], side: str) -> tuple[str, list[str]]:
    """The text with the script's edits made one after the other; the comments it added."""
    comments = []
    for n, (op, choice) in enumerate(script):
        tag = f"{side}{n}"
        edited = EDITS[op](text, tag, choice)
        if edited is None:
            continue
        try:
            parse_yaml(edited)
        except LocalStoreError:
            continue  # an edit a person would not save (it broke the file): not made
        text = edited
        if op == "comment":
            comments.append(f"# note {tag}")
    return text, [c for c in comments if c in text]  # a later edit may have deleted it


# ---------------------------------------------------------------------------------------------------
# The check


def _canon(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    if isinstance(v, list):
        return ("seq", tuple(_canon(x) for x in v))
    if isinstance(v, dict):
        return ("map", tuple((_canon(k), _canon(x)) for k, x in v.items()))
    return (type(v).__name__, v)


def _named(items: list[Any]) -> bool:
    names = [i.get("name") if isinstance(i, dict) else None for i in items]
    return all(isinstance(n, str | int) and not isinstance(n, bool) for n in names) and len(
        set(names)
    ) == len(names)


MISSING: Any = object()


def flatten(
    docs: list[Any], path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], list[Any]]]:
    """(leaf path, each document's value there or MISSING), the documents walked together:
    mappings by key, lists of uniquely named mappings by name (when they are on every document
    that has one there), other values as leaves."""
    present = [d for d in docs if d is not MISSING]
    if any(present) and all(isinstance(d, dict) for d in present):
        keys = list(dict.fromkeys(_canon(k) for d in present for k in d))
        for key in keys:
            values = [
                MISSING
                if d is MISSING
                else next((v for k, v in d.items() if _canon(k) == key), MISSING)
                for d in docs
            ]
            yield from flatten(values, (*path, key))
    elif any(present) and all(isinstance(d, list) and _named(d) for d in present):
        names = list(dict.fromkeys(i["name"] for d in present for i in d))
        for name in names:
            values = [
                MISSING if d is MISSING else next((i for i in d if i["name"] == name), MISSING)
                for d in docs
            ]
            yield from flatten(values, (*path, ("name=", name)))
    else:
        yield path, docs


def _diff3(base: Any, local: Any, remote: Any) -> Any:
    """diff3 of a string's lines (what the ladder does where both sides changed one ``|``
    script), MISSING when it conflicts."""
    b = base.splitlines(True) if isinstance(base, str) else []
    out: list[str] = []
    for group in merge3.Merge3(b, local.splitlines(True), remote.splitlines(True)).merge_groups():
        if group[0] == "conflict":
            return MISSING
        out.extend(group[1])
    return "".join(out)


def _both_lists_in(base: Any, local: list[Any], remote: list[Any], got: Any) -> bool:
    """A list without names both sides changed (diff3 merged its lines): each item as often as
    the 3-way merge of its counts says (order is diff3's)."""
    if not isinstance(got, list):
        return False
    counts = [Counter(repr(_canon(x)) for x in side) for side in (base or [], local, remote, got)]
    items = set().union(*counts)

    def want(b: int, lo: int, r: int) -> int:  # a count merged 3-way (both deleting it: once)
        return r if lo == b else lo if r == b or lo == r else lo + r - b

    return all(counts[3][x] == want(counts[0][x], counts[1][x], counts[2][x]) for x in items)


def _list_or_missing(value: Any) -> bool:
    return value is MISSING or isinstance(value, list)


def check(base: Any, local: Any, remote: Any, result: Any) -> None:
    """Every leaf one side changed has its value, every other leaf the base's; a leaf both
    sides changed differently only as diff3 merges its lines (or items)."""
    for p, (b, lo, r, got) in flatten([base, local, remote, result]):
        cb, cl, cr, cg = (_canon(v) if v is not MISSING else MISSING for v in (b, lo, r, got))
        if cl != cb and cr != cb and cl != cr:
            if isinstance(lo, list) and isinstance(r, list) and _list_or_missing(b):
                assert _both_lists_in(b if b is not MISSING else [], lo, r, got), (
                    f"{p}: {got!r} has not both sides' items (base {b!r}, local {lo!r}, remote {r!r})"
                )
                continue
            assert isinstance(lo, str) and isinstance(r, str), (
                f"{p}: changed differently on both sides, yet clean"
            )
            merged = _diff3(b, lo, r)
            assert merged is not MISSING, f"{p}: changed differently on both sides, yet clean"
            assert cg == _canon(merged), f"{p}: {got!r}, not the diff3 merge {merged!r}"
            continue
        want = cl if cl != cb else cr
        assert cg == want, (
            f"{p}: {got!r}, expected {want!r} (base {b!r}, local {lo!r}, remote {r!r})"
        )


scripts = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10**6)), min_size=1, max_size=3)


@pytest.mark.parametrize("name", sorted(CORPUS))
@settings(PROFILE)
@given(data=st.data())
def test_realistic_edits_of_real_workflows_are_merged_or_conflict(
    name: str, data: st.DataObject
) -> None:
    base = CORPUS[name]
    local, local_comments = apply(base, data.draw(scripts, "local"), "l")
    remote, remote_comments = apply(base, data.draw(scripts, "remote"), "r")
    assume(local != base and remote != base)
    for lo, ro, comments in (
        (local, remote, local_comments + remote_comments),
        (remote, local, remote_comments + local_comments),
    ):
        out = merge3_text(base, lo, ro)
        event(f"{out.status} {out.step}")
        if out.status == "conflict":
            continue
        assert out.content is not None
        check(parse_yaml(base), parse_yaml(lo), parse_yaml(ro), parse_yaml(out.content))
        check(load12(base), load12(lo), load12(ro), load12(out.content))
        lost = [c for c in comments if c not in out.content]
        if out.step == "line":
            assert not lost, f"the line step dropped {lost}"
        elif lost:
            event(f"structural step dropped a comment ({name})")
