"""Bundle names the hostile-bundle suite (tests/archive/test_hostile.py) does not generate:
Windows-reserved device names and names a Windows or macOS disk would alter (trailing dot or
space). A consistent bundle (manifest and entries agree) carrying one is refused whole, with
the name in the error, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore import archive
from localstore.config import load_settings
from localstore.errors import BundleError
from localstore.store import BlueprintStore
from tests.archive import zipcraft as z

NAMES = [
    "f/CON.blueprint.yaml",
    "f/nul.txt.blueprint.yaml",
    "f/Com1.blueprint.yaml",
    "aux/x.blueprint.yaml",
    "LPT9/x.blueprint.yaml",
    "dot./x.blueprint.yaml",
    "space /x.blueprint.yaml",
    "f/a:b.blueprint.yaml",
    "f/a*b.blueprint.yaml",
]


@pytest.mark.parametrize("name", NAMES)
def test_reserved_and_altered_names_are_refused(tmp_path: Path, name: str) -> None:
    store = BlueprintStore(load_settings(home=tmp_path / "home", environ={}), maintenance=False)
    try:
        bps = [z.Blueprint("ok/fine.blueprint.yaml"), z.Blueprint(name)]
        bundle = tmp_path / "in.lsbundle"
        bundle.write_bytes(z.build(z.bundle_entries(bps)))
        before = sorted(p.name for p in store.paths.blueprints.rglob("*"))
        with pytest.raises(BundleError) as info:
            archive.import_bundle(store, bundle)
        assert name.split("/")[0] in str(info.value) or "entry" in str(info.value)
        assert sorted(p.name for p in store.paths.blueprints.rglob("*")) == before
        assert store.count() == 0
        assert not list(store.paths.cache.glob("import-staging-*"))
    finally:
        store.close()
