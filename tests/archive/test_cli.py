"""``localstore export`` and ``localstore import`` through the real click entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from localstore.cli import cli

from . import zipcraft as z


def run(
    home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args], env=env or {}, input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def src(tmp_path: Path) -> Path:
    home = tmp_path / "src"
    for i, folder in enumerate(["a", "a", "b"]):
        doc = f"# n {i}\nname: bp-{i}\n"
        code, _, err = run(
            home, "save", f"{folder}/bp-{i}", "-f", "-", "--tag", f"t{i % 2}", stdin=doc
        )
        assert code == 0, err
    return home


def _files(home: Path) -> dict[str, bytes]:
    root = home / "blueprints"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_export_import_round_trip_with_json(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.lsbundle"
    code, stdout, _ = run(src, "--json", "export", "-o", str(out))
    assert code == 0 and json.loads(stdout)["count"] == 3
    dst = tmp_path / "dst"
    code, stdout, _ = run(dst, "--json", "import", str(out), "--dry-run")
    plan = json.loads(stdout)
    assert code == 0 and plan["dry_run"] and plan["counts"] == {"create": 3}
    # (A fresh store's folder holds only its mark, .localstore-folder.)
    assert not (dst / "blueprints").exists() or set(_files(dst)) <= {".localstore-folder"}
    code, stdout, _ = run(dst, "--json", "import", str(out))
    assert code == 0 and json.loads(stdout)["changed"] == 3
    assert _files(dst) == _files(src)
    code, stdout, _ = run(dst, "--json", "import", str(out))
    assert code == 0 and json.loads(stdout)["counts"] == {"unchanged": 3}


def test_selection_and_human_output(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.lsbundle"
    code, _, err = run(src, "export", "--folder", "a", "--tag", "t0", "-o", str(out))
    assert code == 0 and "exported 1 blueprint" in err
    code, stdout, err = run(tmp_path / "dst", "import", str(out))
    assert code == 0 and "create" in stdout and "a/bp-0.blueprint.yaml" in stdout
    assert "did: 1 create" in err


def test_skipped_conflicts_exit_3(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.lsbundle"
    run(src, "export", "-o", str(out))
    dst = tmp_path / "dst"
    run(dst, "import", str(out))
    assert run(dst, "save", "a/bp-0", "-f", "-", stdin="mine: 1\n")[0] == 0
    assert run(src, "save", "a/bp-0", "-f", "-", stdin="theirs: 1\n")[0] == 0
    code, _, _ = run(dst, "import", str(out), "--on-conflict", "skip")
    assert code == 0  # the bundle holds the version dst already had: nothing to decide
    run(src, "export", "-o", str(out))
    code, stdout, _ = run(dst, "import", str(out))
    assert code == 3 and "skip" in stdout
    code, _, _ = run(dst, "import", str(out), "--on-conflict", "keep-both")
    assert code == 0


def test_a_skipped_path_conflict_is_not_called_a_change_on_both_sides(
    src: Path, tmp_path: Path
) -> None:
    """The closing note said every skipped conflict had "changed both here and in the bundle",
    also when another blueprint simply held the path here (nothing was changed on both sides)."""
    out = tmp_path / "b.lsbundle"
    assert run(src, "export", "-o", str(out))[0] == 0
    dst = tmp_path / "dst"
    assert run(dst, "save", "a/bp-0", "-f", "-", stdin="another: 1\n")[0] == 0
    code, stdout, err = run(dst, "import", str(out))
    assert code == 3 and "path taken by" in stdout
    assert "at a path another blueprint holds here" in err


def test_encrypted_bundle_passphrase_from_env_only(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.lsbundle"
    code, _, err = run(src, "export", "--encrypt", "-o", str(out))
    assert code == 2 and "LOCALSTORE_PASSPHRASE" in err and not out.exists()
    code, _, _ = run(src, "export", "--encrypt", "--passphrase", "x", "-o", str(out))
    assert code == 2  # there is no way to pass it on the command line
    code, _, err = run(
        src, "export", "--encrypt", "-o", str(out), env={"LOCALSTORE_PASSPHRASE": "s3"}
    )
    assert code == 0 and "(encrypted)" in err
    dst = tmp_path / "dst"
    code, _, err = run(dst, "import", str(out), env={"LOCALSTORE_PASSPHRASE": "wrong"})
    assert code == 1 and err.startswith("error: decryption failed")
    code, _, _ = run(dst, "import", str(out), env={"LOCALSTORE_PASSPHRASE": "s3"})
    assert code == 0 and _files(dst) == _files(src)


def test_a_plain_bundle_in_place_of_an_encrypted_one_is_said_or_refused(
    src: Path, tmp_path: Path
) -> None:
    """Whoever can replace a bundle file can put a plain one, with any content, in place of an
    encrypted one; a script that sets the passphrase imported it without a word (a plain bundle
    needs no passphrase, so none was asked for). It is now said, and --require-encrypted
    refuses it before anything is written."""
    plain = tmp_path / "p.lsbundle"
    code, _, err = run(src, "export", "-o", str(plain))
    assert code == 0, err
    dst = tmp_path / "dst"
    code, _, _ = run(dst, "init")
    assert code == 0
    env = {"LOCALSTORE_PASSPHRASE": "s3"}
    code, _, err = run(dst, "import", "--require-encrypted", str(plain), env=env)
    assert code == 1 and "is not encrypted, and an encrypted bundle was required" in err
    empty = _files(dst)
    assert not [name for name in empty if name.endswith(".yaml")]
    code, _, err = run(dst, "--json", "import", "--require-encrypted", str(plain))
    assert code == 1 and "not encrypted" in json.loads(err)["error"]["message"]
    code, _, err = run(dst, "import", str(plain), env=env)
    assert code == 0 and "is not encrypted, so LOCALSTORE_PASSPHRASE was not used" in err
    assert _files(dst) == {**empty, **_files(src)}
    code, _, err = run(dst, "import", str(plain))  # no passphrase set: nothing to say
    assert code == 0 and "not encrypted" not in err
    sealed = tmp_path / "e.lsbundle"
    code, _, _ = run(src, "export", "--encrypt", "-o", str(sealed), env=env)
    assert code == 0
    code, _, err = run(tmp_path / "dst2", "import", "--require-encrypted", str(sealed), env=env)
    assert code == 0, err
    assert _files(tmp_path / "dst2") == {**empty, **_files(src)}


def test_yaml_export(src: Path, tmp_path: Path) -> None:
    code, stdout, _ = run(src, "export", "a/bp-0", "--yaml", "-o", "-")
    assert code == 0 and stdout == (src / "blueprints/a/bp-0.blueprint.yaml").read_text()
    target = tmp_path / "one.yaml"
    code, _, _ = run(src, "export", "b/bp-2", "--yaml", "-o", str(target))
    assert (
        code == 0 and target.read_bytes() == (src / "blueprints/b/bp-2.blueprint.yaml").read_bytes()
    )
    code, _, err = run(src, "export", "a/bp-0", "a/bp-1", "--yaml", "-o", "-")
    assert code == 2 and "exactly one" in err


def test_errors_are_one_line_with_the_documented_codes(src: Path, tmp_path: Path) -> None:
    code, _, err = run(src, "export", "nope/missing", "-o", str(tmp_path / "x.lsbundle"))
    assert code == 4 and err.startswith("error: ")
    hostile = tmp_path / "evil.lsbundle"
    entries = [*z.bundle_entries([z.Blueprint("f/a.blueprint.yaml")]), z.RawEntry(b"../evil", b"x")]
    hostile.write_bytes(z.build(entries))
    code, _, err = run(tmp_path / "dst", "import", str(hostile))
    assert code == 1 and err.count("\n") == 1 and "'..'" in err
    (tmp_path / "junk.lsbundle").write_bytes(b"hello")
    code, _, err = run(tmp_path / "dst", "import", str(tmp_path / "junk.lsbundle"))
    assert code == 1 and "not a .lsbundle" in err


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["out.lsbundle"], "'localstore export -o out.lsbundle'"),
        (["a/bp-0", "out.lsbundle"], "'localstore export a/bp-0 -o out.lsbundle'"),
        ([], "'localstore export -o blueprints.lsbundle'"),
        (["--yaml", "a/bp-0"], "'-o -' writes the YAML to stdout"),
    ],
)
def test_an_export_without_o_says_where_the_name_goes(
    src: Path, tmp_path: Path, args: list[str], hint: str
) -> None:
    before = sorted(os.listdir(tmp_path))
    code, stdout, err = run(src, "export", *args)
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith("error: export needs an output file (-o / --output)") and hint in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written anywhere


def test_import_of_a_missing_file_or_a_fifo_is_one_line(tmp_path: Path) -> None:
    code, out, err = run(tmp_path / "dst", "import", str(tmp_path / "missing.lsbundle"))
    # Exit 2 (bad usage), as for every input file named on the command line (docs/cli.md).
    assert code == 2 and out == "" and err.startswith("error: no such bundle")
    assert "Traceback" not in err and err.count("\n") <= 2
    fifo = tmp_path / "pipe.lsbundle"
    os.mkfifo(fifo)  # nobody writes to it: opening it blocking would hang the import
    code, _, err = run(tmp_path / "dst", "import", str(fifo))
    assert code == 1 and "not a regular file" in err
    folder = tmp_path / "folder.lsbundle"
    folder.mkdir()
    code, _, err = run(tmp_path / "dst", "import", str(folder))
    assert code != 0 and "Traceback" not in err


@pytest.mark.parametrize("encrypt", [False, True])
def test_export_to_an_unwritable_place_is_one_line(
    src: Path, tmp_path: Path, encrypt: bool
) -> None:
    """The temp file beside the destination cannot be created: one error line, no traceback (the
    cleanup of that never-created temp file raised a second one), nothing left in the cache."""
    (tmp_path / "afile").write_text("x")
    # (-o below a file is a mistyped path, bad usage (exit 2); a folder the OS refuses a file
    # in is a failure (exit 1))
    places = [(tmp_path / "afile" / "out.lsbundle", 2)]
    if Path("/proc/self").is_dir():
        places.append((Path("/proc/out.lsbundle"), 1))  # a folder no file can be created in
    env = {"LOCALSTORE_PASSPHRASE": "s3"} if encrypt else {}
    for dest, expected in places:
        args = ["export", *(["--encrypt"] if encrypt else []), "-o", str(dest)]
        code, _, err = run(src, *args, env=env)
        assert code == expected and err.startswith(f"error: cannot write {dest}: "), err
        assert err.count("\n") == 1, err
    assert not [p for p in (src / "cache").rglob("*") if p.is_file()]


@pytest.mark.parametrize("yaml", [False, True])
def test_export_into_a_missing_folder_is_refused(src: Path, tmp_path: Path, yaml: bool) -> None:
    """A mistyped -o folder is refused, not silently created."""
    dest = tmp_path / "no" / "such" / ("x.yaml" if yaml else "x.lsbundle")
    code, _, err = run(src, "export", *(["a/bp-0", "--yaml"] if yaml else []), "-o", str(dest))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err, err  # (bad usage)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("field", ["created", "generator", "source_device"])
def test_a_manifest_string_that_is_no_text_is_refused(tmp_path: Path, field: str) -> None:
    # The manifest's header goes out with the plan (--json): a lone surrogate escape in it made
    # the import end in "unexpected UnicodeEncodeError ... report it", exit 1, once the plan was
    # printed, that is after the blueprints were imported: a failure that had changed the store.
    bp = z.Blueprint("f/a.blueprint.yaml")
    value: object = {"id": "x", "name": "lap\ud800top"} if field == "source_device" else "\udfff"
    man = z.manifest([bp], **{field: value})
    bundle = tmp_path / "odd.lsbundle"
    bundle.write_bytes(z.build(z.bundle_entries([bp], man)))
    for args in (["--dry-run"], []):
        code, out, err = run(tmp_path / "dst", "--json", "import", str(bundle), *args)
        assert code == 1, (out, err)
        assert out == "" and "lone UTF-16 surrogate" in json.loads(err)["error"]["message"]
    assert not (tmp_path / "dst" / "blueprints" / "f").exists()
