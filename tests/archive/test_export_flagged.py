"""A blueprint whose file here does not parse (flagged) is exported as last saved, and export
says so instead of passing it off as what the file holds."""

from __future__ import annotations

import json
from pathlib import Path

from localstore import archive
from tests.archive.conftest import StoreFactory
from tests.archive.test_cli import run


def test_export_names_the_flagged_blueprints_it_took_from_the_index(
    stores: StoreFactory, tmp_path: Path
) -> None:
    store = stores("h")
    bad = store.save("p/bad", "v: good\n").id
    store.save("p/ok", "v: ok\n")
    (store.root / "p/bad.blueprint.yaml").write_text("v: [unclosed\n")
    store.reconcile()  # flags it: the last good version stays indexed
    result = archive.export_bundle(store, tmp_path / "b.lsbundle")
    assert result.count == 2 and result.flagged == (bad,)
    fresh = stores("fresh")
    archive.import_bundle(fresh, tmp_path / "b.lsbundle")
    assert fresh.load(bad).content == "v: good\n"
    store.close()
    code, out, _ = run(tmp_path / "h", "--json", "export", "-o", str(tmp_path / "c.lsbundle"))
    assert code == 0 and json.loads(out)["flagged"] == [bad]
    code, _, err = run(tmp_path / "h", "export", "-o", str(tmp_path / "d.lsbundle"))
    assert code == 0 and f"whose files do not parse were exported as last saved: {bad}" in err
