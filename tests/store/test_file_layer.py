"""The file layer on odd disks and after kills: links that loop, a move cut between its renames,
kernels whose syncfs does not report write errors."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.errors import AlreadyExistsError, StorageError, UnsafePathError
from localstore.store import SaveRequest

from .swap_leftover import sweep_replaced_version

DOC = "steps: [a]\n"


def _open(home: Path) -> localstore.BlueprintStore:
    return localstore.open(home=home, maintenance=False)


def test_a_symlink_loop_in_a_path_is_a_typed_error(home: Path) -> None:
    # pathlib raises RuntimeError("Symlink loop") for a loop: it escaped the store as an untyped
    # error from save(), with no hint.
    with _open(home) as s:
        root = home / "blueprints"
        (root / "loop").symlink_to("loop")
        (root / "l1").symlink_to("l2")
        (root / "l2").symlink_to("l1")
        for path in ("loop/x", "l1/deeper/x"):
            with pytest.raises(UnsafePathError, match="loop") as caught:
                s.save(path, DOC)
            assert caught.value.hint and "link" in caught.value.hint
        assert s.count() == 0
        assert s.check(fix=True).clean


_KILLED_MOVE = """
import os, sys
import localstore
from localstore import files as fs
store = localstore.open(home=sys.argv[1], maintenance=False)
# (A recorded file is replaced by a swap where there is one: files.replace_recorded.)
from localstore import files as _fs
real_replace = _fs._EXCHANGE or os.replace
def replace(src, dst):
    real_replace(src, dst)
    os._exit(9)  # power cut right after the first rename of the new files (the YAML's)
if _fs._EXCHANGE is None:
    os.replace = replace
else:
    _fs._EXCHANGE = replace
store.save("b", "v: 2\\n", id=sys.argv[2], tags=["new"], description="new desc")
"""


def test_move_with_new_content_killed_between_its_renames_gets_its_new_meta(home: Path) -> None:
    # A save that moves a blueprint and changes it renames the old pair to the new path, then
    # renames the new YAML and meta over it. Killed after the YAML, the new path held the new
    # YAML beside the old meta: reconcile recorded that mix (a revision nobody saved) and swept
    # the new meta's flushed temp away a minute later, so the save's tags were lost.
    with _open(home) as s:
        bp = s.save("a", "v: 1\n", tags=["old"], description="old desc")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_MOVE, str(home), bp.id], env=env, check=False
    )
    assert child.returncode == 9
    root = home / "blueprints"
    assert len(list(root.glob(".b.blueprint.meta.json.*.lstmp"))) == 1  # the flushed new meta
    with _open(home) as s:
        got = s.load(bp.id)
        assert (got.path, got.content, got.meta.tags, got.meta.description) == (
            "b.blueprint.yaml",
            "v: 2\n",
            ("new",),
            "new desc",
        )
        assert [r.rev for r in s.history(bp.id)] == [2, 1]
        assert s.check().clean
    sweep_replaced_version(home, ".b.blueprint.yaml.*.lstmp", "v: 1\n")
    assert not list(root.glob(".*.lstmp"))


_REAL_UNAME = os.uname() if hasattr(os, "uname") else None


def _uname(release: str) -> os.uname_result:
    real = _REAL_UNAME
    assert real is not None
    return os.uname_result((real.sysname, real.nodename, release, real.version, real.machine))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux only")
def test_syncfs_is_not_trusted_on_kernels_before_5_8(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before 5.8 syncfs() returned 0 even when the write-back of a file failed, so a large batch
    # (one syncfs instead of an fsync per file) could rename and acknowledge temps whose data
    # never reached the disk. Such kernels must get an fsync per file. (The kernel version is
    # the one thing faked here: an old kernel cannot be booted for a test.)
    monkeypatch.setattr(os, "uname", lambda: _uname("5.4.0-150-generic"))
    assert fs._load_syncfs() is None
    monkeypatch.setattr(os, "uname", lambda: _uname("5.8.0"))
    assert fs._load_syncfs() is not None
    monkeypatch.setattr(os, "uname", lambda: _uname("6.18.44-fc"))
    assert fs._load_syncfs() is not None


@pytest.mark.skipif(fs._SYNCFS is None, reason="this kernel has no trusted syncfs")
@pytest.mark.parametrize("refusal", [errno.ENOSYS, errno.EPERM])
def test_a_sandbox_refusing_syncfs_falls_back_to_an_fsync_per_file(
    home: Path, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    # A seccomp filter (Flatpak/Snap profiles, gVisor, some containers) answers a call it does
    # not allow with ENOSYS or EPERM. Every batch of 16 or more files relies on one syncfs, so
    # every such batch failed ("cannot flush") and a first download could never be applied.
    # Only the refusal is injected: the files, the fsyncs and the index are real.
    calls: list[int] = []

    def refused(fd: int) -> int:
        calls.append(fd)
        ctypes.set_errno(refusal)
        return -1

    monkeypatch.setattr(fs, "_SYNCFS", refused)
    with _open(home) as s:
        first = s.save_many([SaveRequest(f"f{i % 3}/a{i}", DOC) for i in range(20)])
        assert len(calls) == 1 and fs._SYNCFS is None  # noticed once, then file by file
        second = s.save_many([SaveRequest(f"g/b{i}", DOC) for i in range(20)])
        assert len(calls) == 1
    with _open(home) as s:
        assert s.count() == 40
        for bp in [*first, *second]:
            assert isinstance(bp, localstore.Blueprint), bp  # no item of the batches failed
            assert s.load(bp.id).content == DOC
    assert not list((home / "blueprints").rglob("*" + fs.TEMP_SUFFIX))


def test_an_io_error_from_syncfs_still_fails_the_batch(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EIO is the disk's answer, not a sandbox's: nothing may be acknowledged, and syncfs stays.
    def failing(fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(fs, "_SYNCFS", failing)
    with _open(home) as s:
        with pytest.raises(StorageError):
            s.save_many([SaveRequest(f"f/a{i}", DOC) for i in range(20)])
        assert fs._SYNCFS is failing
        assert s.count() == 0


def test_a_yaml_replaced_by_a_folder_is_kept_explained_and_served(home: Path) -> None:
    # The blueprint is kept (its content is in history; a folder is no edit to record), but
    # check said its files were "under a hidden or ignored name", which was not so.
    with _open(home) as s:
        bp = s.save("x", DOC)
    yaml = home / "blueprints/x.blueprint.yaml"
    yaml.unlink()
    yaml.mkdir()
    with _open(home) as s:
        problems = {p["path"]: p for p in s.check(fix=True).problems}
        assert problems["x.blueprint.yaml"]["kind"] == "not-a-file"
        assert "folder" in problems["x.blueprint.yaml"]["detail"]
        assert s.resolve(bp.id).path == "x.blueprint.yaml"  # still live, not recorded deleted
        # load() read the folder and raised StorageError "Is a directory (check the disk...)"
        assert s.load(bp.id).content == DOC and s.load("x").content == DOC
    yaml.rmdir()
    yaml.write_text(DOC)
    with _open(home) as s:
        assert s.check().clean and s.load(bp.id).rev == 1


def test_a_link_in_place_of_a_yaml_is_never_read_through(home: Path, tmp_path: Path) -> None:
    # A link is no blueprint file (the watcher and reconcile never follow one): load() and a
    # meta-only save read through it, so a link checked out by git to a file elsewhere
    # (~/.ssh/id_rsa, say) became the blueprint's content, saved in history and synced.
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("secret: do not copy\n", encoding="utf-8")
    with _open(home) as s:
        bp = s.save("x", DOC)
    yaml = home / "blueprints/x.blueprint.yaml"
    yaml.unlink()
    yaml.symlink_to(secret)
    with _open(home) as s:
        assert s.load(bp.id).content == DOC
        with pytest.raises(AlreadyExistsError, match="symbolic link"):
            s.save("x", description="meta only")  # (nor replaces the link: see below)
        assert s.load(bp.id).content == DOC
        for r in s.history(bp.id):
            assert "secret" not in s.load_revision(bp.id, r.rev).content
    assert secret.read_text(encoding="utf-8") == "secret: do not copy\n"


def _meta_of_another_blueprint(home: Path, tmp_path: Path) -> Path:
    """A valid meta file outside the store (another store's, a copy kept elsewhere)."""
    other = tmp_path / "other-home"
    with _open(other) as s:
        s.save("z", DOC, tags=["secret-tag"], description="secret description")
    target = tmp_path / "elsewhere.blueprint.meta.json"
    target.write_bytes((other / "blueprints/z.blueprint.meta.json").read_bytes())
    return target


def test_a_link_in_place_of_a_new_pairs_meta_is_never_read_through(
    home: Path, tmp_path: Path
) -> None:
    # The scan never follows a link, but ingest read the meta with open(): a link (checked out
    # by git) to a JSON file elsewhere became the new blueprint's meta, its id, tags and
    # description, kept in history and synced; check called the pair "missing-meta".
    target = _meta_of_another_blueprint(home, tmp_path)
    before = target.read_bytes()
    root = home / "blueprints"
    with _open(home) as s:
        s.save("a", DOC)
    (root / "x.blueprint.yaml").write_text(DOC)
    meta = root / "x.blueprint.meta.json"
    meta.symlink_to(target)
    with _open(home) as s:
        problems = {p["path"]: p for p in s.check().problems}
        assert problems["x.blueprint.meta.json"]["kind"] == "not-a-file"
        assert "symbolic link" in problems["x.blueprint.meta.json"]["detail"]
        fixed = s.check(fix=True)
        assert [p["kind"] for p in fixed.problems] == ["not-a-file"]
        with pytest.raises(localstore.NotFoundError):
            s.resolve("x")
        assert s.count() == 1
        with pytest.raises(AlreadyExistsError, match="symbolic link") as caught:
            s.save("x", "v: 2\n")
        assert caught.value.hint and "move" in caught.value.hint
    assert meta.is_symlink() and target.read_bytes() == before
    meta.unlink()  # moved away: the pair is taken as one without meta
    with _open(home) as s:
        bp = s.load("x")
        assert (bp.meta.tags, bp.meta.description) == ((), "")
        assert s.check().clean


def test_a_link_in_place_of_an_indexed_meta_is_never_read_through(
    home: Path, tmp_path: Path
) -> None:
    target = _meta_of_another_blueprint(home, tmp_path)
    before = target.read_bytes()
    with _open(home) as s:
        bp = s.save("x", DOC, tags=["mine"])
    meta = home / "blueprints/x.blueprint.meta.json"
    meta.unlink()
    meta.symlink_to(target)
    with _open(home) as s:
        got = s.load(bp.id)
        assert (got.id, got.meta.tags, got.meta.description) == (bp.id, ("mine",), "")
        assert [r.rev for r in s.history(bp.id)] == [1]
        problems = {p["path"]: p for p in s.check(fix=True).problems}
        assert problems["x.blueprint.meta.json"]["kind"] == "not-a-file"
        with pytest.raises(AlreadyExistsError, match="symbolic link"):
            s.save("x", description="meta only")
        with pytest.raises(AlreadyExistsError, match="symbolic link"):
            s.move(bp.id, "y")
        assert s.load(bp.id).meta.tags == ("mine",) and [r.rev for r in s.history(bp.id)] == [1]
    assert meta.is_symlink() and target.read_bytes() == before
    meta.unlink()
    with _open(home) as s:
        got = s.load(bp.id)
        assert (got.meta.tags, got.rev) == (("mine",), 1)
        assert s.check().clean


def _take_name(path: Path, how: str, tmp_path: Path) -> None:
    if how == "folder":
        path.mkdir()
    else:
        elsewhere = tmp_path / f"elsewhere-{path.name}"
        elsewhere.write_text("secret: do not copy\n", encoding="utf-8")
        path.symlink_to(elsewhere)


@pytest.mark.parametrize("how", ["folder", "link"])
@pytest.mark.parametrize("which", ["yaml", "meta"])
def test_saving_over_an_indexed_pair_whose_file_name_is_taken_is_refused(
    home: Path, tmp_path: Path, which: str, how: str
) -> None:
    # A folder in a file's place failed the save with StorageError "Is a directory (check the
    # disk and try again)" after the other file was written; a link was silently replaced.
    root = home / "blueprints"
    with _open(home) as s:
        bp = s.save("x", DOC)
    name = "x.blueprint.yaml" if which == "yaml" else "x.blueprint.meta.json"
    (root / name).unlink()
    _take_name(root / name, how, tmp_path)
    kept = sorted(p.name for p in root.iterdir())
    what = "folder" if how == "folder" else "symbolic link"
    with _open(home) as s:
        for save in (
            lambda: s.save("x", "v: 2\n"),
            lambda: s.save("x", description="meta only"),
            lambda: s.move(bp.id, "y"),
        ):
            with pytest.raises(AlreadyExistsError, match=f"{name} is taken by a {what}") as c:
                save()
            assert c.value.hint and "move the" in c.value.hint and "another path" in c.value.hint
            assert sorted(p.name for p in root.iterdir()) == kept  # nothing written or moved
        assert s.load(bp.id).rev == 1 and s.load(bp.id).content == DOC
    assert (root / name).is_dir() if how == "folder" else (root / name).is_symlink()


@pytest.mark.parametrize("how", ["folder", "link", "dangling link"])
def test_saving_a_new_blueprint_where_a_folder_or_link_has_its_yaml_name_is_refused(
    home: Path, tmp_path: Path, how: str
) -> None:
    # A folder got "not a valid blueprint"; a link to nothing was silently replaced.
    root = home / "blueprints"
    yaml = root / "x.blueprint.yaml"
    with _open(home) as s:
        s.save("a", DOC)
        if how == "dangling link":
            yaml.symlink_to(tmp_path / "nothing-here")
        else:
            _take_name(yaml, how, tmp_path)
        kept = sorted(p.name for p in root.iterdir())
        what = "folder" if how == "folder" else "symbolic link"
        with pytest.raises(AlreadyExistsError, match=f"taken by a {what}"):
            s.save("x", "v: 2\n")
        assert sorted(p.name for p in root.iterdir()) == kept
        assert s.count() == 1


def test_a_new_blueprint_whose_meta_name_is_a_folder_fails_cleanly(home: Path) -> None:
    # (Found by one stat per save, which every save would pay: the write finds it.) The YAML
    # was put in place and removed again, but the undo then failed on the folder and logged
    # that it could not clean up, and the error said "check the disk".
    root = home / "blueprints"
    with _open(home) as s:
        (root / "x.blueprint.meta.json").mkdir()
        kept = sorted(p.name for p in root.iterdir())
        with pytest.raises(StorageError, match="a folder has that name") as caught:
            s.save("x", DOC)
        assert caught.value.hint and "move that folder away" in caught.value.hint
        assert sorted(p.name for p in root.iterdir()) == kept
        assert s.count() == 0


@pytest.mark.parametrize("loop", ["itself", "two links"])
def test_a_blueprints_folder_that_is_a_link_loop_is_a_typed_error(home: Path, loop: str) -> None:
    # pathlib raised RuntimeError("Symlink loop") out of open().
    root = home / "blueprints"
    if loop == "itself":
        root.symlink_to(root)
    else:
        root.symlink_to(home / "b2")
        (home / "b2").symlink_to(root)
    with pytest.raises(StorageError, match="loops") as caught:
        _open(home)
    assert caught.value.hint and "link" in caught.value.hint


def test_a_move_across_disks_says_so(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A disk mounted inside the blueprints folder: rename() fails with EXDEV, which said only
    # "check the disk and try again"; and the undo, moving back a pair that never moved, logged
    # that it could not (Linux answers EXDEV before it looks for the file). (The EXDEV is
    # injected as Linux answers it: mounting needs root.)
    with _open(home) as s:
        bp = s.save("a/x", DOC)
        (home / "blueprints/m").mkdir()
        # (A move renames with files.rename_new: the platform's rename that refuses a taken
        # name, or os.rename where there is none.)
        owner, name = (os, "rename") if fs._RENAME_NEW is None else (fs, "_RENAME_NEW")
        real_rename = getattr(owner, name)

        def rename(src: str | Path, dst: str | Path) -> None:
            if ("/m/" in os.fspath(dst)) != ("/m/" in os.fspath(src)):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fspath(src))
            real_rename(src, dst)

        monkeypatch.setattr(owner, name, rename)
        with pytest.raises(StorageError, match="different disks") as caught:
            s.move(bp.id, "m/x")
        assert caught.value.hint and "same disk" in caught.value.hint
        assert "check the disk" not in caught.value.hint
        assert "could not move" not in caplog.text
        monkeypatch.undo()
        assert s.load(bp.id).path == "a/x.blueprint.yaml"
        assert s.check().clean


def test_removed_empty_folders_are_flushed_once_per_pass(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Removing emptied folders did not flush their parent: after a power cut an empty folder
    # could come back. The flushes are real; only their folders are recorded.
    flushed: list[str] = []
    real_fsync_dir = fs.fsync_dir

    def fsync_dir(directory: Path | str) -> None:
        flushed.append(os.fspath(directory))
        real_fsync_dir(directory)

    root = home / "blueprints"
    with _open(home) as s:
        bp = s.save("a/b/c/x", DOC)
        other = s.save("keep/y", DOC)
        monkeypatch.setattr(fs, "fsync_dir", fsync_dir)
        s.delete(bp.id)
        assert not (root / "a").exists()
        assert flushed.count(str(root)) == 1  # the folder left standing, once
        flushed.clear()
        third = s.save("keep/z", DOC)  # a plain save removes no folder: no flush for that
        assert flushed == [str(root / "keep")]
        s.save("elsewhere/w", DOC)
        s.move(other.id, "elsewhere/y")  # "keep" is not empty yet
        assert (root / "keep").is_dir()
        flushed.clear()
        s.move(third.id, "elsewhere/z")
        assert not (root / "keep").exists() and flushed.count(str(root)) == 1
