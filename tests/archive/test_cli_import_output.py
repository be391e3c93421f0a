"""What ``localstore import`` tells a person about a bundle with mixed results: one line per
blueprint it acts on or leaves, a summary, and closing notes whose advice fits why each one was
left (another --on-conflict policy helps a conflict, and nothing else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import localstore
from localstore import archive
from localstore.archive import ImportItem
from localstore.cli import cli
from localstore.store import BlueprintStore

BROKEN = "steps: [unclosed, my edit in progress\n"
POLICY_ADVICE = "import with --on-conflict"


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


def _notes(stderr: str) -> list[str]:
    return [line.removeprefix("note: ") for line in stderr.splitlines() if line.startswith("note:")]


def _line(stdout: str, path: str) -> str:
    [line] = [ln for ln in stdout.splitlines() if ln.split()[1:2] == [path]]
    return line


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, Path]:
    """A home (dst) and a bundle of seven blueprints that import into it as: a create, an
    update, one unchanged, a conflict (changed on both sides), a blueprint whose file here does
    not parse, a rename onto a path another blueprint holds here, and a path this home's
    .localstoreignore refuses."""
    with (
        localstore.open(home=tmp_path / "src") as src,
        localstore.open(home=tmp_path / "dst") as dst,
    ):
        for name in ("upd", "conf", "flag", "ren", "same"):
            src.save(f"t/{name}", f"v: {name}\n")
        archive.export_bundle(src, tmp_path / "v1.lsbundle")
        archive.import_bundle(dst, tmp_path / "v1.lsbundle")
        for name in ("upd", "conf", "flag"):
            src.save(f"t/{name}", f"v: {name} at the source\n")
        src.save("t/new", "v: new\n")
        src.save("skipme/x", "v: ignored here\n")
        src.move("t/ren", "t/held")
        dst.save("t/conf", "v: conf here\n")
        dst.save("t/held", "v: another one here\n")
        (dst.root / ".localstoreignore").write_text("skipme\n")
        bundle = tmp_path / "v2.lsbundle"
        archive.export_bundle(src, bundle)
        (dst.root / "t" / "flag.blueprint.yaml").write_text(BROKEN)
        dst.reconcile()
        assert dst.row("t/flag").flagged
    return tmp_path / "dst", bundle


def test_a_file_here_that_does_not_parse_is_not_sent_to_another_policy(
    mixed: tuple[Path, Path],
) -> None:
    """The closing note counted it among conflicts and advised --on-conflict overwrite, under
    which it is skipped all the same (no policy writes over it)."""
    dst, bundle = mixed
    for policy in ("skip", "overwrite"):
        code, _, stderr = run(dst, "import", str(bundle), "--on-conflict", policy, "--dry-run")
        assert code == 1  # (the refused one)
        [note] = [n for n in _notes(stderr) if "does not parse" in n]
        assert note.startswith("1 blueprint(s) whose file here does not parse would be left")
        assert "fix or delete each file" in note and "then import again" in note
        assert POLICY_ADVICE not in note
    code, stdout, _ = run(dst, "--json", "import", str(bundle), "--on-conflict", "overwrite")
    out = json.loads(stdout)
    [flagged] = [it for it in out["items"] if it["path"] == "t/flag.blueprint.yaml"]
    assert flagged["action"] == "skip" and flagged["skip_cause"] == "unparsable"
    assert not any(POLICY_ADVICE in n for n in out["notes"])  # no conflict left: overwrite took it
    assert any("does not parse were left" in n for n in out["notes"])
    assert (dst / "blueprints" / "t" / "flag.blueprint.yaml").read_text() == BROKEN


def test_each_kind_of_skip_gets_its_own_count_and_advice(mixed: tuple[Path, Path]) -> None:
    """All skips were "N blueprint(s) in conflict", each advised another --on-conflict policy."""
    dst, bundle = mixed
    code, _, stderr = run(dst, "import", str(bundle), "--dry-run")
    notes = _notes(stderr)
    assert code == 1 and len(notes) == 4, stderr
    conflict, unparsable, held, refused = notes
    assert conflict.startswith("1 blueprint(s) in conflict") and POLICY_ADVICE in conflict
    assert unparsable.startswith("1 blueprint(s) whose file here does not parse")
    assert held.startswith("1 blueprint(s) renamed in the bundle to a path another blueprint")
    assert "'localstore mv'" in held and POLICY_ADVICE not in held
    assert refused.startswith("1 blueprint(s) this home cannot save") and "would be" in refused
    code, stdout, _ = run(dst, "--json", "import", str(bundle), "--dry-run")
    out = json.loads(stdout)
    causes = sorted(it["skip_cause"] for it in out["items"] if it["action"] == "skip")
    assert causes == ["conflict", "path-held", "unparsable"] and out["notes"] == notes

    # keep-both took the conflict: no policy advice is left to give.
    code, stdout, stderr = run(dst, "--json", "import", str(bundle), "--on-conflict", "keep-both")
    out = json.loads(stdout)
    causes = sorted(it["skip_cause"] for it in out["items"] if it["action"] == "skip")
    assert code == 1 and causes == ["path-held", "unparsable"]
    assert len(out["notes"]) == 3 and not any(POLICY_ADVICE in n for n in out["notes"])
    assert all(it["skip_cause"] == "" for it in out["items"] if it["action"] != "skip")


def test_the_lines_of_a_mixed_import_say_what_happens(mixed: tuple[Path, Path]) -> None:
    dst, bundle = mixed
    code, stdout, stderr = run(dst, "import", str(bundle), "--on-conflict", "keep-both")
    assert code == 1
    assert _line(stdout, "t/new.blueprint.yaml").startswith("create ")
    assert _line(stdout, "t/upd.blueprint.yaml").startswith("update ")
    keep = _line(stdout, "t/conf.blueprint.yaml")
    assert keep.startswith("keep-both ") and " -> t/conf (import " in keep
    # A skip stays where it is: it showed "t/held -> t/ren", a move the import does not make.
    held = _line(stdout, "t/held.blueprint.yaml")
    assert held.startswith("skip ") and "->" not in held
    assert "(stays at t/ren.blueprint.yaml here; renamed to t/held.blueprint.yaml" in held
    # Refused by the plan, never attempted: it read "refused ... FAILED: ...", and "1 failed".
    refused = _line(stdout, "skipme/x.blueprint.yaml")
    assert refused.startswith("refused ") and "FAILED" not in refused
    assert "matches the ignore pattern 'skipme'" in refused
    assert "t/same.blueprint.yaml" not in stdout  # unchanged: counted, not listed
    summary = [ln for ln in stderr.splitlines() if ln.startswith("did: ")]
    assert summary == ["did: 1 create, 1 keep-both, 1 refused, 2 skip, 1 unchanged, 1 update"]


def test_a_save_that_fails_is_marked_failed_and_noted(
    mixed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure at save time (here: another writer changed the blueprint between plan and
    apply) is still FAILED and counted failed, and the closing note says the import retries it."""
    dst, bundle = mixed
    orig = archive._check_yaml

    def other_writer_first(items: list[ImportItem], store: BlueprintStore) -> None:
        orig(items, store)
        with localstore.open(home=dst) as other:
            other.save("t/upd", "v: edited here meanwhile\n")

    monkeypatch.setattr(archive, "_check_yaml", other_writer_first)
    code, stdout, stderr = run(dst, "import", str(bundle), "--on-conflict", "keep-both")
    assert code == 1
    upd = _line(stdout, "t/upd.blueprint.yaml")
    assert upd.startswith("update ") and "FAILED: " in upd and "import again" in upd
    assert "1 failed" in stderr and "1 refused" in stderr
    [note] = [n for n in _notes(stderr) if "could not be saved" in n]
    assert note.startswith("1 blueprint(s) could not be saved") and "retries them" in note
