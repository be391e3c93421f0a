"""`check`, `status` and `doctor` give one reason for one file that cannot be taken: a recorded
file flagged (its YAML, its meta file) and a new one never indexed (its YAML, its meta file),
before the reconcile of an open flags the recorded ones and after (session 25 moved status and
the flags onto check's words, each with what to do; this keeps them there)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import localstore
from localstore import files as fs
from localstore._reconcile import reason_of
from localstore.cli import cli

UTF16 = "steps: [a, b]\n".encode("utf-16-le")


def _home_with_refused_files(home: Path) -> None:
    """Two recorded blueprints whose files were broken while nothing ran, and two new pairs."""
    with localstore.open(home=home) as store:
        for name in ("rec/yaml", "rec/meta"):
            store.save(name, "steps: [a]\n")
        store.abspath("rec/yaml.blueprint.yaml").write_bytes(UTF16)
        store.abspath("rec/meta.blueprint.meta.json").write_bytes(b"{not json")
        store.abspath("new").mkdir()
        store.abspath("new/yaml.blueprint.yaml").write_bytes(b"steps: [a\n")
        store.abspath("new/meta.blueprint.yaml").write_bytes(b"steps: [a]\n")
        store.abspath("new/meta.blueprint.meta.json").write_bytes(b'{"id": "nope"}')


def _json(home: Path, *args: str) -> dict:
    done = CliRunner().invoke(cli, ["--home", str(home), "--json", *args])
    assert done.exit_code == 3, (done.output, done.stderr)  # (attention: files to fix)
    return dict(json.loads(done.stdout))


def _check_reasons(home: Path) -> dict[str, str]:
    """check's reason for each file, by the YAML's path, worded as a flag (as status lists it)."""
    said = {}
    for problem in _json(home, "check")["problems"]:
        rel = problem["path"]
        yaml_rel = fs.yaml_path_for(rel) if rel.endswith(fs.META_SUFFIX) else rel
        assert yaml_rel not in said, f"two reasons for {yaml_rel}"
        said[yaml_rel] = reason_of(problem)
    return said


def test_check_status_and_doctor_give_one_reason_for_each_file(home: Path) -> None:
    _home_with_refused_files(home)
    before = _check_reasons(home)  # (check opens without reconcile: nothing flagged yet)
    listed = _json(home, "status")["flagged_files"]  # (its open flags the recorded two)
    after = _check_reasons(home)
    shown = {f["path"]: f["reason"] for f in listed}
    assert len(shown) == 4
    assert before == shown == after
    assert all(reason.endswith(")") for reason in shown.values())  # (each says what to do)
    kinds = {p["kind"] for p in _json(home, "check")["problems"]}
    assert kinds == {"flagged", "invalid-yaml", "invalid-meta"}
    (index,) = [c for c in _json(home, "doctor")["checks"] if c["check"] == "index"]
    # doctor gives no reason of its own: the kinds check reports, and to do as check says.
    assert index["detail"].endswith(f"({', '.join(sorted(kinds))})")
    assert "as `localstore check` says of it" in index["fix"]
    assert not any(reason in json.dumps(index) for reason in shown.values())
