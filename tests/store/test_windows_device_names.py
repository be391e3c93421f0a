"""Windows device names: refused for every name new on this device, kept for names already held.

Microsoft's "Naming Files, Paths, and Namespaces" reserves CON, PRN, AUX, NUL, COM1-9, LPT1-9 and
COM/LPT with the superscript digits in every folder and with any extension; "Console Handles"
names CONIN$ and CONOUT$; the Win32 path conversion drops the spaces that end the part before the
first dot (``CON .yaml`` is CON). A blueprint made under such a name on Linux or macOS cannot be
written on a Windows device (the write would go to a console or printer), so a new one is
refused. One an older version already holds (an older client accepted ``CON .x`` and ``CONIN$``)
still opens, lists, checks clean, saves and syncs: refusing it would flag or hide it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import localstore
from localstore import files as fs
from localstore.archive import export_bundle, import_bundle
from localstore.errors import UnsafePathError
from sync.memory_remote import MemoryRemote, MemoryServer
from sync.remote import Change
from tests.sync_engine.conftest import close_device, open_device

RESERVED = [
    "CON .blueprint.yaml",  # spaces before the first dot are dropped: CON
    "nul   .txt",
    "con.x.y",
    "Aux.tar.gz",
    "CONIN$.blueprint.yaml",
    "conout$",
    "CONOUT$ .x",
    "COM¹.blueprint.yaml",
    "lpt³",
    "COM9.txt",
    "LPT1",
    "COM0",  # (refused before as well; kept so)
]
PORTABLE = [
    "CONSOLE.blueprint.yaml",
    "con-1.blueprint.yaml",
    "xcon",
    "CONIN",
    "CONIN$x",
    "com10",
    "lpt",
    "COM.x",
    "COM⁴",  # only ¹ ² ³ are Latin-1 digits Windows reads as digits
    ".con",
    " con",  # a leading space is kept by Windows: not the device
    "nul_file",
]
# Names the rule before this one accepted: what an existing home may hold.
NEWLY_REFUSED = ["CON .blueprint.yaml", "CONIN$.blueprint.yaml", "nul .draft.blueprint.yaml"]


@pytest.mark.parametrize("name", RESERVED)
def test_a_windows_device_name_is_recognised_with_any_extension_and_case(name: str) -> None:
    assert fs.windows_device_name(name)


@pytest.mark.parametrize("name", PORTABLE)
def test_names_that_only_look_like_devices_are_allowed(name: str) -> None:
    assert not fs.windows_device_name(name)


def test_check_new_name_looks_at_folders_too() -> None:
    with pytest.raises(UnsafePathError, match="reserved device name") as info:
        fs.check_new_name("team/CONIN$/deploy.blueprint.yaml")
    assert "CONIN$" in info.value.hint
    fs.check_new_name("team/console/deploy.blueprint.yaml")  # no error


@pytest.mark.parametrize("name", NEWLY_REFUSED)
def test_normalize_path_still_accepts_names_older_versions_accepted(name: str) -> None:
    # Reconcile, load and sync read existing paths through normalize_path: were it stricter,
    # a blueprint already held under this name would be flagged unsupported on the next open.
    assert fs.normalize_path(name) == name


@pytest.mark.parametrize("name", ["CON .draft", "team/CONIN$", "lpt² .d/plan", "Con .x.y"])
def test_saving_a_new_blueprint_under_a_device_name_is_refused_with_a_hint(
    store: localstore.BlueprintStore, name: str
) -> None:
    with pytest.raises(UnsafePathError, match="reserved device name on Windows") as info:
        store.save(name, "v: 1\n")
    assert "rename it" in info.value.hint
    assert store.count() == 0
    assert not list(store.root.rglob("*.blueprint.*"))


def test_moving_a_blueprint_to_a_device_name_is_refused_and_leaves_it_in_place(
    store: localstore.BlueprintStore,
) -> None:
    bp = store.save("plans/deploy", "v: 1\n")
    with pytest.raises(UnsafePathError, match="reserved device name on Windows"):
        store.move(bp.id, "plans/CONOUT$")
    assert [b.path for b in store.list()] == ["plans/deploy.blueprint.yaml"]
    assert store.abspath("plans/deploy.blueprint.yaml").exists()


def _legacy_home(home: Path) -> list[str]:
    """A home holding blueprints under names only the older rule accepted (put there by an older
    version, a git checkout or a sync tool): their YAML files, found by the next open."""
    root = home / "blueprints"
    for name in NEWLY_REFUSED:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"name: {name!r}\n", encoding="utf-8")
    return sorted(NEWLY_REFUSED)


def test_an_existing_blueprint_under_such_a_name_opens_lists_checks_clean_and_saves(
    home: Path,
) -> None:
    with localstore.open(home=home) as s:
        s.save("other", "v: 0\n")  # (the home's folders, made the usual way)
    paths = _legacy_home(home)
    with localstore.open(home=home) as s:
        assert sorted(b.path for b in s.list()) == sorted([*paths, "other.blueprint.yaml"])
        report = s.check()
        assert report.clean, report.problems
        for path in paths:
            loaded = s.load(path)
            assert loaded.valid
            again = s.save(path, "v: 2\n")  # an edit of the blueprint it is: allowed
            assert again.id == loaded.id and again.path == path
        assert s.check().clean
    with localstore.open(home=home) as s:  # and once more from cold
        assert s.load(paths[0]).content == "v: 2\n"


def test_an_import_refuses_a_device_name_new_here_and_imports_the_rest(
    tmp_path: Path, home: Path
) -> None:
    with localstore.open(home=home) as s:
        s.save("other", "v: 0\n")
    _legacy_home(home)
    bundle = tmp_path / "out.lsbundle"
    with localstore.open(home=home) as s:
        export_bundle(s, bundle)
    with localstore.open(home=tmp_path / "fresh") as fresh:
        result = import_bundle(fresh, bundle)
        refused = sorted(i.target_path for i in result.items if i.action == "refused")
        assert refused == sorted(NEWLY_REFUSED)
        assert all("reserved device name" in (i.error or "") for i in result.items if i.error)
        assert [b.path for b in fresh.list()] == ["other.blueprint.yaml"]


def _meta(ident: str) -> dict[str, object]:
    return {"id": ident, "name": "x", "created": "", "modified": ""}


def test_sync_quarantines_a_server_row_that_would_make_a_device_name_here(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    dev = open_device(tmp_path / "devices", "a", server)
    raw = MemoryRemote(server, user="u")  # an older client, whose rule let the name through
    try:
        moved, new = str(uuid.uuid4()), str(uuid.uuid4())
        first = Change(1, moved, None, "in/ok.blueprint.yaml", "v: 1\n", _meta(moved), "0" * 64)
        assert raw.push([first], device="raw")[0].status == "applied"
        dev.sync()
        assert [b.path for b in dev.store.list()] == ["in/ok.blueprint.yaml"]
        rows = [
            Change(2, moved, 1, "in/CON .blueprint.yaml", "v: 2\n", _meta(moved), "0" * 64),
            Change(3, new, None, "CONIN$/x.blueprint.yaml", "v: 3\n", _meta(new), "0" * 64),
        ]
        assert {r.status for r in raw.push(rows, device="raw")} == {"applied"}

        dev.sync()

        parked = {e.id: e for e in dev.engine.quarantined()}
        assert set(parked) == {moved, new}
        # Nothing was written for either: the one held here stays where it was, as it was.
        assert [(b.path, dev.store.load(b.id).content) for b in dev.store.list()] == [
            ("in/ok.blueprint.yaml", "v: 1\n")
        ]
        assert not (dev.store.root / "CONIN$").exists()
        assert (
            not dev.store.abspath("in/ok.blueprint.yaml").with_name("CON .blueprint.yaml").exists()
        )
    finally:
        raw.close()
        close_device(dev)


def test_a_blueprint_already_held_under_such_a_name_keeps_syncing_both_ways(
    tmp_path: Path,
) -> None:
    server = MemoryServer()
    root = tmp_path / "devices"
    dev = open_device(root, "a", server)
    close_device(dev)
    _legacy_home(root / "a")
    dev = open_device(root, "a", server)
    raw = MemoryRemote(server, user="u")
    try:
        dev.sync()
        held = {b.path: b.id for b in dev.store.list()}
        assert sorted(held) == sorted(NEWLY_REFUSED)
        assert sorted(r.path for r in raw.pull(0).changes) == sorted(NEWLY_REFUSED)
        # Another device edits one: the edit comes back here, at the same name.
        path = "CONIN$.blueprint.yaml"
        row = next(r for r in raw.pull(0).changes if r.path == path)
        edit = Change(9, row.id, row.rev, path, "v: 9\n", dict(row.meta), "0" * 64)
        assert raw.push([edit], device="raw")[0].status == "applied"
        dev.sync()
        assert dev.store.load(path).content == "v: 9\n"
        assert not dev.engine.quarantined()
        # And an edit here goes up.
        dev.store.save(path, "v: 10\n")
        dev.sync()
        assert next(r for r in raw.pull(0).changes if r.id == held[path]).content == "v: 10\n"
    finally:
        raw.close()
        close_device(dev)
