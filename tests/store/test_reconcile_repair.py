"""Reconcile on odd disks: one bad file is reported and skipped, never the end of every open()."""

from __future__ import annotations

from pathlib import Path

import localstore

DOC = "steps: [a]\n"


def _open(home: Path) -> localstore.BlueprintStore:
    return localstore.open(home=home, maintenance=False)


def _kinds(report: localstore.CheckReport) -> list[tuple[str, str]]:
    return [(p["kind"], p["path"]) for p in report.problems]


def test_two_names_differing_only_by_case_are_reported_not_fatal(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("notes/Plan", DOC)
    root = home / "blueprints"
    (root / "notes/plan.blueprint.yaml").write_text("steps: [other]\n")  # a git checkout on Linux
    (root / "Twin.blueprint.yaml").write_text(DOC)  # two new files, neither indexed yet
    (root / "twin.blueprint.yaml").write_text(DOC)
    for _ in range(2):  # every open works, not only the first
        with _open(home) as s:
            assert s.resolve("notes/Plan").id == bp.id
            assert s.load(bp.id).content == DOC
            assert sorted(i.path for i in s.list()) == [
                "Twin.blueprint.yaml",
                "notes/Plan.blueprint.yaml",
            ]
            expected = [
                ("case-collision", "notes/plan.blueprint.yaml"),
                ("case-collision", "twin.blueprint.yaml"),
            ]
            assert sorted(_kinds(s.check())) == expected
            assert sorted(_kinds(s.check(fix=True))) == expected
    # The skipped files got no meta of their own (an id would make them look adopted).
    assert not (root / "notes/plan.blueprint.meta.json").exists()
    assert not (root / "twin.blueprint.meta.json").exists()


def test_case_collision_found_by_check_fix_on_an_open_store(home: Path) -> None:
    with _open(home) as s:
        s.save("Plan", DOC)
        (home / "blueprints/plan.blueprint.yaml").write_text("steps: [b]\n")
        report = s.check(fix=True)
        assert _kinds(report) == [("case-collision", "plan.blueprint.yaml")]
        assert s.count() == 1
