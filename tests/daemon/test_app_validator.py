"""The daemon judges with the app's validator named in config.yaml (daemon_validator), so an edit
made in an editor while the app is closed is judged and pushed (or held) by the daemon alone.

Real daemon processes with a validator module written into a temporary folder on their
PYTHONPATH; the app is this test process, opening the store with the same module's function.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest

from localstore.blueprint import Validator
from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync._app_validator import load_app_validator
from sync.supabase_remote import remote_from_settings
from tests.conftest import run_cli

from .conftest import eventually, home_settings, log_in, new_email, write_external

RULES = """
def check(doc):
    if doc.get("boom"):
        raise ValueError("the rules cannot read this")
    return ["debug must be off"] if doc.get("debug") else []
"""


def _rules_module(folder: Path, name: str) -> Validator:
    """Write the app's rules as module ``name`` in ``folder``; its ``check`` for this process."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(RULES, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check: Validator = module.check
    return check


def _pythonpath(folder: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def _configure(home: Path, spec: str, name: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.yaml").write_text(
        f'daemon_validator: "{spec}"\ndaemon_validator_name: "{name}"\n', encoding="utf-8"
    )


def _app_registers(home: Path, check: Validator, name: str) -> None:
    """The app opens the home with its validator once (and closes: it is not running)."""
    with BlueprintStore(home_settings(home), validator=check, validator_name=name):
        pass


def _verdict(home: Path, path: str) -> tuple[bool, str | None, list[str]] | None:
    """(valid, judged_by, problems) of the live row at ``path``, read from the index."""
    with (
        BlueprintStore(home_settings(home), reconcile=False, maintenance=False) as store,
        store.index.read() as cur,
    ):
        row = cur.execute(
            "SELECT valid, judged_by, problems FROM blueprints WHERE path = ? AND deleted = 0",
            (path,),
        ).fetchone()
    return None if row is None else (bool(row[0]), row[1], json.loads(row[2] or "[]"))


def _status(home: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    done = run_cli(home, "--json", "status", env=env)
    return done.returncode, json.loads(done.stdout)


def _server_contents(cloud: Any, home: Path, email: str) -> dict[str, str]:
    """The live rows in ``email``'s account, read through a fresh home of that user."""
    settings = home_settings(home)
    log_in(settings, cloud, email)
    remote = remote_from_settings(settings)
    try:
        return {r.path: r.content for r in remote.pull(0, limit=1000).changes if not r.deleted}
    finally:
        remote.close()


def test_the_daemon_judges_an_editor_edit_with_the_apps_validator_and_pushes_or_holds_it(
    cloud: Any, spawn_daemon: Any, tmp_path: Path
) -> None:
    """Before, every edit the daemon's watcher recorded was judged by none and held until the
    app opened: with the app closed nothing synced, which is the daemon's purpose."""
    home, modules, email = tmp_path / "h", tmp_path / "mods", new_email()
    check = _rules_module(modules, "app_rules_sync")
    log_in(home_settings(home), cloud, email)
    _app_registers(home, check, "rules-1")
    _configure(home, "app_rules_sync:check", "rules-1")
    d = spawn_daemon(home, env=_pythonpath(modules))
    d.wait_ready()
    c = d.client()
    blueprints = home / "blueprints"
    write_external(blueprints, "a/good.blueprint.yaml", "debug: false\n")
    write_external(blueprints, "a/bad.blueprint.yaml", "debug: true\n")
    write_external(blueprints, "a/boom.blueprint.yaml", "boom: true\n")
    paths = [f"a/{n}.blueprint.yaml" for n in ("good", "bad", "boom")]
    assert eventually(lambda: all(_verdict(home, p) for p in paths), 30), d.output()

    def synced(held: int) -> bool:
        """A cycle ran after the watcher recorded the edits, and only ``held`` are left."""
        c.sync()
        sync = c.status()["sync"]
        return sync["pending"] == held and sync["held"] == held

    assert eventually(lambda: synced(2), 60), c.status()
    assert _verdict(home, "a/good.blueprint.yaml") == (True, "rules-1", [])
    assert _verdict(home, "a/bad.blueprint.yaml") == (False, "rules-1", ["debug must be off"])
    boom = _verdict(home, "a/boom.blueprint.yaml")
    assert boom is not None and boom[:2] == (False, "rules-1")
    assert "validator raised ValueError: the rules cannot read this" in boom[2][0]
    assert d.proc.poll() is None  # a validator that raises stops nothing
    assert _server_contents(cloud, tmp_path / "reader", email) == {
        "a/good.blueprint.yaml": "debug: false\n"
    }
    # The held ones go up once fixed, still with the app closed.
    write_external(blueprints, "a/bad.blueprint.yaml", "debug: false\n")
    assert eventually(lambda: synced(1), 60), c.status()
    assert _server_contents(cloud, tmp_path / "reader2", email)["a/bad.blueprint.yaml"] == (
        "debug: false\n"
    )
    assert c.status()["validator"]["state"] == "judging"
    assert d.stop() == 0


def test_a_validator_that_cannot_be_imported_is_said_and_loses_nothing(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    home, modules = tmp_path / "h", tmp_path / "mods"
    check = _rules_module(tmp_path / "app", "app_rules_missing")  # the app's, not on the path
    _app_registers(home, check, "rules-1")
    _configure(home, "app_rules_missing:check", "rules-1")
    d = spawn_daemon(home, env=_pythonpath(modules))
    d.wait_ready()  # it runs: the watcher keeps recording edits
    write_external(home / "blueprints", "a/bad.blueprint.yaml", "debug: true\n")
    assert eventually(lambda: _verdict(home, "a/bad.blueprint.yaml") is not None, 30)
    assert _verdict(home, "a/bad.blueprint.yaml") == (True, "", [])  # judged by none: held

    code, data = _status(home)
    assert code == 3 and data["held"] == 1
    validator = data["validator"]
    assert validator["state"] == "not_loaded" and validator["problem"] is True
    assert "cannot import 'app_rules_missing'" in validator["detail"]
    assert "PYTHONPATH" in validator["hint"] and "restart the daemon" in validator["hint"]
    human = run_cli(home, "status")
    assert f"validator: {validator['detail']}" in human.stdout
    assert f"  fix: {validator['hint']}" in human.stdout
    doctor = json.loads(run_cli(home, "--json", "doctor").stdout)
    finding = next(c for c in doctor["checks"] if c["check"] == "validator")
    assert finding["status"] == "problem" and finding["detail"] == validator["detail"]
    assert "cannot import" in (home / "state" / "daemon.log").read_text()
    assert d.stop() == 0

    # Fixed (the module where the daemon finds it), the next daemon judges what was recorded.
    _rules_module(modules, "app_rules_missing")
    d = spawn_daemon(home, env=_pythonpath(modules))
    d.wait_ready()
    assert _verdict(home, "a/bad.blueprint.yaml") == (False, "rules-1", ["debug must be off"])
    code, data = _status(home)
    assert data["validator"]["state"] == "judging" and data["held"] == 1
    assert d.stop() == 0


def test_a_validator_name_that_is_not_the_homes_keeps_holding_and_says_so(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """The app registered newer rules (rules-2) than the config names: the daemon must not make
    its own the home's again, and its edits wait for the app."""
    home, modules = tmp_path / "h", tmp_path / "mods"
    check = _rules_module(modules, "app_rules_old")
    _app_registers(home, check, "rules-2")
    _configure(home, "app_rules_old:check", "rules-1")
    d = spawn_daemon(home, env=_pythonpath(modules))
    d.wait_ready()
    write_external(home / "blueprints", "a/one.blueprint.yaml", "debug: false\n")
    assert eventually(lambda: _verdict(home, "a/one.blueprint.yaml") is not None, 30)
    code, data = _status(home)
    assert code == 3 and data["held"] == 1
    validator = data["validator"]
    assert validator["state"] == "not_the_homes" and validator["home"] == "rules-2"
    assert 'daemon_validator_name: "rules-2"' in validator["hint"]
    doctor = json.loads(run_cli(home, "--json", "doctor").stdout)
    finding = next(c for c in doctor["checks"] if c["check"] == "validator")
    assert finding["status"] == "problem" and "rules-2" in finding["fix"]
    assert d.stop() == 0
    with BlueprintStore(home_settings(home), reconcile=False, maintenance=False) as store:
        assert store.home_validator() == "rules-2"  # still the app's
    # Without a daemon, doctor reads the mismatch from the settings.
    doctor = json.loads(run_cli(home, "--json", "doctor").stdout)
    finding = next(c for c in doctor["checks"] if c["check"] == "validator")
    assert finding["status"] == "problem" and "rules-2" in finding["fix"]


def test_a_daemon_validator_named_by_a_config_file_others_may_write_is_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon imports and runs the function config.yaml names: a config file (or its
    folder) another user may write would let them choose the code this user's daemon runs."""
    monkeypatch.delenv("LOCALSTORE_DAEMON_VALIDATOR", raising=False)
    mods = tmp_path / "mods"
    mods.mkdir()
    marker = tmp_path / "imported"
    module = f"lsval_perm_{os.getpid()}"
    (mods / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef validate(doc):\n    return []\n"
    )
    monkeypatch.syspath_prepend(str(mods))
    home = tmp_path / "home"
    config = home / "config"
    config.mkdir(parents=True, mode=0o700)
    config_file = config / "config.yaml"
    config_file.write_text(f'daemon_validator: "{module}:validate"\n')
    config_file.chmod(0o666)
    refused = load_app_validator(load_settings(home=home))
    assert refused.function is None
    assert "may be written by others" in refused.error and str(config_file) in refused.error
    assert "chmod go-w" in refused.hint
    assert not marker.exists()  # never imported
    config_file.chmod(0o600)
    config.chmod(0o777)
    assert "may be written by others" in load_app_validator(load_settings(home=home)).error
    config.chmod(0o700)
    loaded = load_app_validator(load_settings(home=home))
    assert loaded.function is not None and loaded.error == ""
    assert marker.exists()


RULES_BUILT = """
import functools

def check(doc, strict=False):
    return ["debug must be off"] if strict and doc.get("debug") else []

STRICT = functools.partial(check, strict=True)
LENIENT = functools.partial(check, strict=False)
ANONYMOUS = lambda doc: []  # noqa: E731
"""


def _built_rules_module(folder: Path, name: str) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(RULES_BUILT, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_daemon_validator_built_with_a_partial_is_named_as_the_app_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every partial was named 'functools.partial', so a daemon configured with the lenient
    rules judged as the home's validator after the app registered the strict ones."""
    monkeypatch.delenv("LOCALSTORE_DAEMON_VALIDATOR", raising=False)
    module = f"lsval_built_{os.getpid()}"
    _built_rules_module(tmp_path / "mods", module)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True, mode=0o700)
    config_file = home / "config" / "config.yaml"

    config_file.write_text(f'daemon_validator: "{module}:STRICT"\n')
    strict = load_app_validator(load_settings(home=home))
    config_file.write_text(f'daemon_validator: "{module}:LENIENT"\n')
    lenient = load_app_validator(load_settings(home=home))
    assert strict.function is not None and lenient.function is not None
    assert strict.name == f"{module}.check(strict=True)" != lenient.name

    # A lambda has no name of its own: said, with the setting that gives it one.
    config_file.write_text(f'daemon_validator: "{module}:ANONYMOUS"\n')
    refused = load_app_validator(load_settings(home=home))
    assert refused.function is None and "a lambda has no name of its own" in refused.error
    assert "daemon_validator_name" in refused.hint and "restart the daemon" in refused.hint
    config_file.write_text(
        f'daemon_validator: "{module}:ANONYMOUS"\ndaemon_validator_name: "rules-1"\n'
    )
    named = load_app_validator(load_settings(home=home))
    assert named.function is not None and named.name == "rules-1"


def test_a_daemon_judges_with_a_partial_under_the_name_the_app_recorded(
    spawn_daemon: Any, tmp_path: Path
) -> None:
    """The daemon_validator path end to end with a derived name (no daemon_validator_name): the
    app registers the module's partial, the daemon imports the same one and judges as the home's
    validator."""
    home, modules = tmp_path / "h", tmp_path / "mods"
    module = _built_rules_module(modules, "app_rules_built")
    with BlueprintStore(home_settings(home), validator=module.STRICT) as app:
        name = app.validator_name
    assert name == "app_rules_built.check(strict=True)"
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.yaml").write_text('daemon_validator: "app_rules_built:STRICT"\n')
    d = spawn_daemon(home, env=_pythonpath(modules))
    d.wait_ready()
    write_external(home / "blueprints", "a/bad.blueprint.yaml", "debug: true\n")
    assert eventually(lambda: _verdict(home, "a/bad.blueprint.yaml") is not None, 30), d.output()
    assert _verdict(home, "a/bad.blueprint.yaml") == (False, name, ["debug must be off"])
    _, data = _status(home)
    assert data["validator"]["state"] == "judging" and data["validator"]["name"] == name
    assert d.stop() == 0
