"""A move that cannot put its YAML back leaves no half pair at its destination.

A move renames the YAML, then the meta file, each with a no-replace rename. If the meta's new
name was taken meanwhile (another program saving a pair there), the YAML goes back. If its old
name was taken too (an editor's "save as" onto the name the move just freed), the YAML stayed at
the new name beside the other program's meta, and NameTakenError said the pair was back: the
save ran again, recorded this blueprint's YAML as a new blueprint under that meta's id, and
refused the move as if the name were that blueprint's.

Real home and files; the other programs are real processes. The only fault injected is their
timing: they write just before the move's meta rename.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore import files as fs
from localstore.blueprint import BlueprintMeta, encode_meta, new_id, utc_now
from localstore.errors import StorageError
from tests.editor_race import revision_contents

MINE = "steps: [a]\n"
EDITOR = "steps: [typed in an editor]\n"


def _creates(path: Path, data: bytes) -> None:
    """Another program creates ``path`` (fails if it exists, as a "save as" of a new name)."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'xb').write(sys.argv[2].encode())",
            str(path),
            data.decode(),
        ],
        check=True,
    )


def test_a_move_whose_yaml_cannot_go_back_records_nothing_under_another_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    now = utc_now()
    theirs = BlueprintMeta(id=new_id(), name="theirs", created=now, modified=now)
    with localstore.open(home=home) as store:
        bp = store.save("a.blueprint.yaml", MINE)
        old_yaml = store.abspath("a.blueprint.yaml")
        new_meta = store.abspath("b.blueprint.meta.json")
        real = fs.rename_new
        raced: list[int] = []

        def others_first(src: Any, dst: Any) -> bool:
            if str(dst) == str(new_meta) and not raced:
                raced.append(1)
                _creates(new_meta, encode_meta(theirs))  # a tool saving a pair at b
                _creates(old_yaml, EDITOR.encode())  # an editor's "save as" onto a
            return real(src, dst)

        monkeypatch.setattr(fs, "rename_new", others_first)
        with pytest.raises(StorageError) as err:
            store.move("a.blueprint.yaml", "b.blueprint.yaml")
        monkeypatch.undo()
        assert raced
        assert not isinstance(err.value, fs.NameTakenError)  # (not "the pair is back")
        assert "a.blueprint.yaml" in err.value.message

        # The other programs' files are theirs; nothing of this blueprint is at b.
        assert not store.abspath("b.blueprint.yaml").exists()
        assert new_meta.read_bytes() == encode_meta(theirs)
        assert store.row_by_id(theirs.id) is None
        assert [b.id for b in store.list()] == [bp.id]
        assert store.resolve(bp.id).path == "a.blueprint.yaml"

    with localstore.open(home=home) as store:
        # The editor's file at a is the blueprint's edit; its moved YAML was a version the
        # store has (removed once stale: set aside, not lost).
        assert revision_contents(store, bp.id) == [MINE, EDITOR]
        assert store.row_by_id(theirs.id) is None
        kinds = {p["kind"] for p in store.check().problems}
        assert kinds == {"orphan-meta"}  # (b's meta, until its tool writes the YAML)
