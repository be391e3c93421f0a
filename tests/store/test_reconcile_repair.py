"""Reconcile on odd disks: one bad file is reported and skipped, never the end of every open()."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.blueprint import encode_meta
from localstore.errors import StorageError, UnsafePathError

from .swap_leftover import sweep_replaced_version

DOC = "steps: [a]\n"


def _open(home: Path, *, reconcile: bool = True) -> localstore.BlueprintStore:
    return localstore.open(home=home, maintenance=False, reconcile=reconcile)


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


def test_unreadable_file_is_reported_and_the_rest_reconciled(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(home) as s:
        good = s.save("good", DOC)
    root = home / "blueprints"
    (root / "locked.blueprint.yaml").write_text(DOC)
    (root / "good.blueprint.yaml").write_text("steps: [edited]\n")
    real_read = fs.read_regular

    def read_regular(path: Path | str, limit: int | None = None) -> bytes:
        # Running as root, mode 000 is no obstacle: inject the EACCES another user would get.
        if Path(path).name == "locked.blueprint.yaml":
            exc = PermissionError(errno.EACCES, "Permission denied")
            raise fs.map_os_error(exc, "cannot read", path) from exc
        return real_read(path, limit)

    monkeypatch.setattr(fs, "read_regular", read_regular)
    for _ in range(2):
        with _open(home) as s:
            assert s.load(good.id).content == "steps: [edited]\n"  # the pass went on
            assert [i.path for i in s.list()] == ["good.blueprint.yaml"]
            assert ("skipped", "locked.blueprint.yaml") in _kinds(s.reconcile())
    assert not (root / "locked.blueprint.meta.json").exists()
    monkeypatch.setattr(fs, "read_regular", real_read)
    with _open(home) as s:  # readable again: picked up like any new file
        assert sorted(i.path for i in s.list()) == ["good.blueprint.yaml", "locked.blueprint.yaml"]


def test_unreadable_folder_is_reported_and_its_blueprints_kept(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the walk cannot list (a sudo-made folder, another user's share) made every open
    fail; its blueprints are unknown, so they are neither deleted nor re-read."""
    with _open(home) as s:
        hidden_away = s.save("locked/x", DOC)
        other = s.save("open/y", DOC)
    root = home / "blueprints"
    (root / "open/y.blueprint.yaml").write_text("steps: [edited]\n")
    real_scandir = os.scandir

    def scandir(path):
        # Running as root, mode 000 is no obstacle: inject the EACCES another user would get.
        if Path(path) == root / "locked":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    for _ in range(2):
        with _open(home) as s:
            assert s.load(other.id).content == "steps: [edited]\n"  # the pass went on
            assert s.load(hidden_away.id).path == "locked/x.blueprint.yaml"  # not deleted
            kinds = _kinds(s.check(fix=True))
            assert ("unreadable-folder", "locked/") in kinds
    monkeypatch.setattr(os, "scandir", real_scandir)
    with _open(home) as s:
        assert s.check().clean
        assert [h.origin for h in s.history(hidden_away.id)] == ["local"]


def test_name_whose_meta_and_temp_names_would_not_fit_is_refused(home: Path) -> None:
    longest = "n" * (fs.MAX_SEGMENT_BYTES - len(fs.YAML_SUFFIX))
    with _open(home) as s:
        assert s.save(longest, DOC).path == longest + fs.YAML_SUFFIX  # its temps fit in 255
        with pytest.raises(UnsafePathError, match="longer than") as err:
            s.save(longest + "n", DOC)
        assert "255" in err.value.hint


def test_external_file_with_a_too_long_name_does_not_break_open(home: Path) -> None:
    _open(home).close()
    # 240 + 15 = 255 bytes: the disk takes it, but its meta's name (260 bytes) could never exist.
    (home / "blueprints" / ("n" * 240 + fs.YAML_SUFFIX)).write_text(DOC)
    for _ in range(2):
        with _open(home) as s:
            assert s.count() == 0


def test_file_name_that_is_not_utf8_is_reported_not_fatal(home: Path) -> None:
    with _open(home) as s:
        s.save("a", DOC)
    root = os.fsencode(home / "blueprints")
    os.mkdir(os.path.join(root, b"imports"))
    latin1 = os.path.join(root, b"imports", b"caf\xe9.blueprint.yaml")  # 'café' from an old zip
    with open(latin1, "wb") as fh:
        fh.write(DOC.encode())
    with open(os.path.join(root, b"meeting: notes.blueprint.yaml"), "wb") as fh:
        fh.write(DOC.encode())  # Linux allows ':'; Windows and macOS's Finder do not
    for _ in range(2):
        with _open(home) as s:
            assert [i.path for i in s.list()] == ["a.blueprint.yaml"]
            problems = {p["path"]: p for p in s.check().problems}
    assert sorted(problems) == ["imports/caf\\xe9.blueprint.yaml", "meeting: notes.blueprint.yaml"]
    assert all(p["kind"] == "unsupported-name" for p in problems.values())
    assert "not valid UTF-8" in problems["imports/caf\\xe9.blueprint.yaml"]["detail"]
    assert "':'" in problems["meeting: notes.blueprint.yaml"]["detail"]
    assert sorted(os.listdir(os.path.join(root, b"imports"))) == [b"caf\xe9.blueprint.yaml"]


def test_path_rules_refuse_a_name_that_is_not_utf8() -> None:
    with pytest.raises(UnsafePathError, match="not valid UTF-8") as err:
        fs.normalize_path(os.fsdecode(b"imports/caf\xe9.blueprint.yaml"))
    assert "caf\\xe9" in str(err.value) and err.value.hint


def test_blueprint_in_a_folder_the_scan_skips_is_kept_not_deleted(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("drafts/plan", DOC)
        s.save("keep/other", DOC)
    (home / "blueprints" / fs.IGNORE_FILE_NAME).write_text("drafts\n")  # ignored after the save
    for _ in range(2):
        with _open(home) as s:
            row = s.row(bp.id, include_deleted=True)
            assert not row.deleted and row.rev == 1
            assert [r.rev for r in s.history(bp.id)] == [1]  # no delete revision for sync to push
            expected = ("not-scanned", "drafts/plan.blueprint.yaml")
            assert expected in _kinds(s.check())
            assert expected in _kinds(s.check(fix=True))
            assert s.count() == 2


def test_missing_blueprints_folder_is_refused_not_recorded_as_deleting_everything(
    home: Path,
) -> None:
    with _open(home) as s:
        bp = s.save("a", DOC)
        s.save("f/b", DOC)
    root = home / "blueprints"
    # An unmounted disk, a folder moved away (moved, not removed: a removed folder's inode may
    # be reused by the mkdir below, and a folder the user removed is a delete anyway).
    shutil.move(root, home / "elsewhere")
    for _ in range(2):
        with pytest.raises(StorageError, match="missing") as err:
            localstore.open(home=home)  # (maintenance on: a failed open must not leak its thread)
        assert ".localstore-confirm-empty" in err.value.hint
        assert not root.exists()  # so the next open refuses too
    with pytest.raises(StorageError, match="missing"):
        _open(home, reconcile=False)  # as 'localstore check --fix' opens: it would delete all
    root.mkdir()  # an empty folder alone is no answer: any program may have made it
    with pytest.raises(StorageError, match="holds no blueprints"):
        _open(home)
    (root / ".localstore-confirm-empty").touch()  # the user says: yes, they are gone
    with _open(home) as s:
        assert s.count() == 0
        assert s.history(bp.id)[0].deleted
    assert not (root / ".localstore-confirm-empty").exists()  # an answer, not a setting


def test_a_blueprints_folder_made_empty_by_other_code_is_refused(home: Path) -> None:
    """``localstore cred``, a login and the daemon's re-login poll call Paths.ensure(); while the
    drive is unmounted, the empty folder it made turned the next open into a delete of everything."""
    with _open(home) as s:
        s.save("a", DOC)
        s.save("f/b", DOC)
    root = home / "blueprints"
    shutil.move(root, home / "unmounted")
    settings = localstore.load_settings(home=home)
    settings.paths.ensure()
    assert not root.exists()  # ensure() leaves the blueprints folder to the store
    root.mkdir()  # any other code, or the empty mount point of the unmounted drive
    for reconcile in (True, False):
        with pytest.raises(StorageError, match="holds no blueprints"):
            _open(home, reconcile=reconcile)
    shutil.rmtree(root)
    shutil.move(home / "unmounted", root)  # the drive is back
    with _open(home) as s:
        assert s.count() == 2 and not s.check().problems


def test_another_folder_with_blueprints_is_adopted_and_emptying_the_folder_deletes(
    home: Path,
) -> None:
    """A restored copy of the folder (another identity, with blueprints) opens; deleting every
    blueprint file of the folder the index knows is an ordinary delete, with no question."""
    with _open(home) as s:
        s.save("a", DOC)
        s.save("f/b", DOC)
    root = home / "blueprints"
    shutil.copytree(root, home / "backup")
    shutil.rmtree(root)
    shutil.move(home / "backup", root)
    with _open(home) as s:
        assert s.count() == 2 and not s.check().problems
    for p in root.rglob("*.blueprint.*"):
        p.unlink()
    with _open(home) as s:
        assert s.count() == 0


_KILLED_BETWEEN_RENAMES = """
import os, sys
import localstore
store = localstore.open(home=sys.argv[1], maintenance=False)
# (A recorded file is replaced by a swap where there is one: files.replace_recorded.)
from localstore import files as _fs
real_replace = _fs._EXCHANGE or os.replace
def replace(src, dst):
    real_replace(src, dst)
    os._exit(9)  # power cut right after the first rename of the save (its YAML)
if _fs._EXCHANGE is None:
    os.replace = replace
else:
    _fs._EXCHANGE = replace
store.save("a", "v: 2\\n", tags=["new"], description="new desc")
"""


def test_update_killed_between_its_renames_gets_its_new_meta(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("a", "v: 1\n", tags=["old"], description="old desc")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(home)], env=env, check=False
    )
    assert child.returncode == 9
    root = home / "blueprints"
    assert len(list(root.glob(".a.blueprint.meta.json.*.lstmp"))) == 1  # the flushed new meta
    with _open(home) as s:
        got = s.load(bp.id)
        assert (got.content, got.meta.tags, got.meta.description) == (
            "v: 2\n",
            ("new",),
            "new desc",
        )
        assert s.history(bp.id)[0].rev == 2
        assert s.check().clean
    sweep_replaced_version(home, ".a.blueprint.yaml.*.lstmp", "v: 1\n")
    assert not list(root.glob("*.lstmp")) and not list(root.glob(".*.lstmp"))


def test_update_killed_between_its_renames_gets_its_new_meta_despite_a_future_mtime(
    home: Path,
) -> None:
    """A meta file whose mtime lies ahead (synced from a device whose clock runs fast, restored
    from a backup, touched) does not make the killed update's own meta temp look older."""
    with _open(home) as s:
        bp = s.save("a", "v: 1\n", tags=["old"], description="old desc")
    meta = home / "blueprints" / f"a{fs.META_SUFFIX}"
    ahead = time.time_ns() + 86_400 * 10**9  # a day ahead of this clock
    os.utime(meta, ns=(ahead, ahead))
    with _open(home) as s:
        assert s.check().clean  # (same bytes: only the recorded times move)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(home)], env=env, check=False
    )
    assert child.returncode == 9
    with _open(home) as s:
        got = s.load(bp.id)
        assert (got.content, got.meta.tags, got.meta.description) == (
            "v: 2\n",
            ("new",),
            "new desc",
        )
        assert s.check().clean
    assert not list((home / "blueprints").glob(".a.blueprint.meta.json.*.lstmp"))


def test_older_meta_temp_is_not_taken_for_an_edit(home: Path) -> None:
    with _open(home) as s:
        bp = s.save("a", "v: 1\n", tags=["kept"])
        leftover = s.load(bp.id).meta.replace(tags=("stale",))
    root = home / "blueprints"
    temp = root / ".a.blueprint.meta.json.0badf00d.lstmp"  # an old crash's, not this edit's
    temp.write_bytes(encode_meta(leftover))
    os.utime(temp, ns=(1, 1))
    (root / "a.blueprint.yaml").write_text("v: 2\n")  # the user's edit, later than the temp
    with _open(home) as s:
        got = s.load(bp.id)
        assert (got.content, got.meta.tags) == ("v: 2\n", ("kept",))


def _rename_pair(root: Path, old: str, new: str) -> None:
    for suffix in (fs.YAML_SUFFIX, fs.META_SUFFIX):
        os.rename(root / f"{old}{suffix}", root / f"{new}{suffix}")


@pytest.mark.parametrize(
    "renamed",
    [unicodedata.normalize("NFD", "dossier/café"), "dossier/meeting: café"],
    ids=["nfd-from-macos", "colon"],
)
def test_pair_renamed_to_an_unsupported_name_is_kept_and_reported(home: Path, renamed: str) -> None:
    with _open(home) as s:
        bp = s.save("dossier/café", DOC)
    root = home / "blueprints"
    _rename_pair(root, "dossier/café", renamed)
    for _ in range(2):
        with _open(home) as s:
            assert not s.row(bp.id).deleted
            problems = _kinds(s.check(fix=True))
            assert ("unsupported-name", renamed + fs.YAML_SUFFIX) in problems
            assert ("unsupported-name", "dossier/café.blueprint.yaml") in problems  # the kept row
            assert not any(kind in ("orphan-meta", "missing") for kind, _ in problems)
            assert [r.rev for r in s.history(bp.id)] == [1]
    if not unicodedata.is_normalized("NFC", renamed):
        # (A one-path ingest, as load() and the watcher make, looks for the NFD form only.)
        with _open(home) as s:
            assert s.load(bp.id).content == DOC  # from history: the file is not at its path
            assert not s.row(bp.id).deleted
    _rename_pair(root, renamed, "dossier/café")  # renamed back: as if nothing happened
    with _open(home) as s:
        assert s.check().clean and [r.rev for r in s.history(bp.id)] == [1]


def test_invalid_for_a_while_then_back_to_the_same_content_is_no_new_revision(
    home: Path,
) -> None:
    with _open(home) as s:
        bp = s.save("doc", DOC)
        op_id = s.row(bp.id).op_id
    yaml_file = home / "blueprints/doc.blueprint.yaml"
    yaml_file.write_text("")  # truncated by a writer that then writes the same text back
    with _open(home) as s:
        assert s.row(bp.id).flagged
        assert ("flagged", "doc.blueprint.yaml") in _kinds(s.check())
    yaml_file.write_text(DOC)
    with _open(home) as s:
        row = s.row(bp.id)
        assert row.flagged is None and row.rev == 1 and row.op_id == op_id  # nothing to push
        assert [r.rev for r in s.history(bp.id)] == [1]
        assert s.check().clean
        assert s.reconcile().fixed == []  # the stat cache was refreshed too


@pytest.mark.parametrize(
    "path", ["d.blueprint.yaml/e", "a/D.Blueprint.Meta.JSON/e", "x.blueprint.yaml/y/z"]
)
def test_folder_named_like_a_blueprint_file_is_refused(home: Path, path: str) -> None:
    with pytest.raises(UnsafePathError, match="folder named like a blueprint file"):
        fs.normalize_path(path)
    with _open(home) as s:
        s.save("d", DOC)  # 'd.blueprint.yaml' as a file and as a folder would wedge sync
        with pytest.raises(UnsafePathError):
            s.save(path, DOC)
        assert s.count() == 1
    assert fs.normalize_path("d.blueprint/e") == "d.blueprint/e.blueprint.yaml"  # only the suffix


def _swap_pairs(root: Path, one: str, other: str) -> None:
    _rename_pair(root, one, "swap-tmp")
    _rename_pair(root, other, one)
    _rename_pair(root, "swap-tmp", other)


def test_two_pairs_that_swapped_names_keep_their_identities(home: Path) -> None:
    with _open(home) as s:
        c = s.save("h/c", "v: c\n")
        d = s.save("h/d", "v: d\n")
    _swap_pairs(home / "blueprints", "h/c", "h/d")
    with _open(home) as s:
        assert s.resolve("h/c").id == d.id and s.resolve("h/d").id == c.id
        assert s.load(c.id).content == "v: c\n" and s.load(d.id).content == "v: d\n"
        for bp, new in ((c, "h/d.blueprint.yaml"), (d, "h/c.blueprint.yaml")):
            # One move each: no delete revision (pushed by sync) and no re-creation.
            assert [(r.rev, r.path, r.deleted) for r in s.history(bp.id)] == [
                (2, new, False),
                (1, bp.path, False),
            ]
        assert s.check().clean


def test_swap_whose_second_half_cannot_be_read_records_a_delete_then_heals(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _open(home) as s:
        c = s.save("h/c", "v: c\n")
        d = s.save("h/d", "v: d\n")
    _swap_pairs(home / "blueprints", "h/c", "h/d")
    real_read = fs.read_regular

    def read_regular(path: Path | str, limit: int | None = None) -> bytes:
        if Path(path).name == "d.blueprint.yaml":
            raise fs.map_os_error(PermissionError(errno.EACCES, "denied"), "cannot read", path)
        return real_read(path, limit)

    monkeypatch.setattr(fs, "read_regular", read_regular)
    with _open(home) as s:
        assert s.resolve("h/c").id == d.id
        assert s.row(c.id, include_deleted=True).deleted  # its new file could not be read
        assert s.count() == 1  # the index's unique live-path rule held throughout
    monkeypatch.setattr(fs, "read_regular", real_read)
    with _open(home) as s:
        assert s.resolve("h/d").id == c.id and s.load(c.id).content == "v: c\n"
        assert s.check().clean


def test_meta_pasted_over_another_pair_keeps_both_identities(home: Path) -> None:
    with _open(home) as s:
        a = s.save("a", "v: a\n", tags=["a"])
        b = s.save("b", "v: b\n", tags=["b"])
    root = home / "blueprints"
    shutil.copy(root / "a.blueprint.meta.json", root / "b.blueprint.meta.json")
    with _open(home) as s:
        assert s.resolve("a").id == a.id and s.resolve("b").id == b.id
        assert s.load(b.id).meta.tags == ("b",)
        assert [r.deleted for r in s.history(b.id)] == [False]
    assert json.loads((root / "b.blueprint.meta.json").read_text())["id"] == b.id


def test_a_blueprints_folder_that_is_a_file_is_refused_on_a_fresh_home(home: Path) -> None:
    """`init` said Ready on such a home, and every save then failed with 'Not a directory'."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "blueprints").write_text("not a folder\n")
    with pytest.raises(StorageError, match="is a file, not a folder") as err:
        _open(home)
    assert "move that file away" in err.value.hint
    assert (home / "blueprints").read_text() == "not a folder\n"  # left as it was


def test_a_pair_from_elsewhere_copied_over_an_indexed_one_is_adopted_with_its_meta(
    home: Path, tmp_path: Path
) -> None:
    # Both files of a blueprint from another home were copied over this home's pair at the same
    # path while nothing ran: the blueprint that lived there is recorded as deleted (its history
    # keeps it), the copied one is adopted under its own id, and its meta file stays on disk.
    with localstore.open(home=tmp_path / "other", maintenance=False) as other:
        foreign = other.save("p", "v: foreign\n", tags=["theirs"])
    with _open(home) as s:
        mine = s.save("p", "v: mine\n")
    root, src = home / "blueprints", tmp_path / "other" / "blueprints"
    for name in ("p.blueprint.yaml", "p.blueprint.meta.json"):
        shutil.copy(src / name, root / name)
    with _open(home) as s:
        assert s.resolve("p").id == foreign.id and s.load("p").content == "v: foreign\n"
        assert s.row(mine.id, include_deleted=True).deleted
        assert s.load_revision(mine.id, 1).content == "v: mine\n"
        assert s.check().clean
    assert json.loads((root / "p.blueprint.meta.json").read_text())["id"] == foreign.id
