"""An edit recorded by a process without the app's validator (the daemon's watcher, the CLI) is
not pushed as valid: it waits until the app's validator judges it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localstore.config import load_settings
from localstore.store import BlueprintStore
from sync.engine import SyncEngine, SyncReport
from sync.memory_remote import MemoryRemote, MemoryServer


def _no_debug(doc: Mapping[str, Any]) -> list[str]:
    return ["debug must be off"] if doc.get("debug") else []


def _open(home: Path, **kwargs: Any) -> BlueprintStore:
    return BlueprintStore(load_settings(home=home), maintenance=False, **kwargs)


def test_the_daemon_holds_what_the_app_would_refuse_until_the_app_judges_it(
    tmp_path: Path, server: MemoryServer
) -> None:
    home = tmp_path / "h"
    app = _open(home, validator=_no_debug)  # the app registered its rules for this home
    app.save("a/bad", "debug: false\n")
    app.save("a/good", "x: 1\n")
    app.close()
    daemon = _open(home)  # no validator: what its watcher or sync records is judged by none
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(daemon, remote)
    try:
        assert engine.sync_once().pushed == 2
        # Edits made in an editor while the app is closed, recorded by the daemon.
        (daemon.root / "a" / "bad.blueprint.yaml").write_text("debug: true\n")
        (daemon.root / "a" / "good.blueprint.yaml").write_text("x: 2\n")
        daemon.check(fix=True)
        report = engine.sync_once()
        # Before: both went up as valid, the debug one breaking the app's rules on every device.
        assert report.pushed == 0 and report.held == 2
        assert engine.status().held == 2
        pushed = {r.row.path: r.row.content for r in server.rows.values()}
        assert pushed["a/bad.blueprint.yaml"] == "debug: false\n"
        # The app opens: it judges both; the daemon's next pass pushes the valid one only.
        app = _open(home, validator=_no_debug)
        assert not app.resolve("a/bad").valid and app.resolve("a/good").valid
        app.close()
        report = engine.sync_once()
        assert report.pushed == 1 and report.held == 1
        pushed = {r.row.path: r.row.content for r in server.rows.values()}
        assert pushed == {
            "a/bad.blueprint.yaml": "debug: false\n",
            "a/good.blueprint.yaml": "x: 2\n",
        }
    finally:
        remote.close()
        daemon.close()


def test_the_apps_own_sync_judges_what_another_process_recorded(
    tmp_path: Path, server: MemoryServer
) -> None:
    """An app syncing in-process (sync.embed) judges, before pushing, what the daemon's
    watcher or the CLI recorded while it was open."""
    home = tmp_path / "h"
    app = _open(home, validator=_no_debug)
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(app, remote)
    cli = _open(home)
    try:
        cli.save("a/bad", "debug: true\n")
        cli.save("a/good", "x: 1\n")
        report = engine.sync_once()
        assert report.pushed == 1 and report.held == 1
        assert {r.row.path for r in server.rows.values()} == {"a/good.blueprint.yaml"}
        assert app.load("a/bad").problems == ("debug must be off",)
    finally:
        cli.close()
        remote.close()
        app.close()


def test_an_unjudged_edit_behind_the_horizon_does_not_overwrite_a_re_created_row(
    tmp_path: Path, server: MemoryServer
) -> None:
    """As test_engine's test of the horizon check, with a's edit recorded by a process without
    the app's validator (the CLI beside the app): held until the push pass judges it, it was not
    counted when the cycle asked whether it had anything to push, so the cycle skipped its
    check of the cursor, pushed the edit (base rev 1) over c's re-creation (rev 1 again) and
    c's edit was lost."""
    ids: dict[str, str] = {}
    apps = {n: _open(tmp_path / n, validator=_no_debug) for n in ("a", "b", "c")}
    remotes = {n: MemoryRemote(server, user="u") for n in apps}
    engines = {n: SyncEngine(apps[n], remotes[n]) for n in apps}
    try:
        ids["x"] = apps["a"].save("r/x", "base: 1\n").id
        for _ in range(2):
            for n in ("a", "b", "c"):
                engines[n].sync_once()
        apps["b"].delete(ids["x"])
        engines["b"].sync_once()
        assert server.purge_tombstones("u") == 1
        apps["c"].save("r/x", "base: 1\nfrom_c: 1\n")  # c edited x without seeing the delete
        assert engines["c"].sync_once().reset  # edit beats delete: a create again
        assert server.rows[ids["x"]].row.rev == server.horizons["u"] + 1
        cli = _open(tmp_path / "a")  # no validator: its save waits for the app's judgement
        try:
            cli.save("r/x", "base: 1\nfrom_a: 1\n")
        finally:
            cli.close()
        engines["a"].sync_once()
        for _ in range(2):
            for n in ("a", "b", "c"):
                engines[n].sync_once()
        text = apps["a"].load(ids["x"]).content
        assert "from_c: 1" in text and "from_a: 1" in text
        assert server.rows[ids["x"]].row.content == text
    finally:
        for n in apps:
            engines[n].stop()
            engines[n].join(10)
            remotes[n].close()
            apps[n].close()


def test_the_daemons_verdict_does_not_replace_the_apps_that_took_the_home_over_meanwhile(
    tmp_path: Path, server: MemoryServer
) -> None:
    """The daemon judges an unjudged edit with the rules its config names, the home's when its
    sync pass looked, outside the write lock. Meanwhile the app opens with newer rules: they
    become the home's and the app judges the edit valid. The daemon's verdict, written after,
    made the edit "judged by another" again: held on this device until the app's next open."""
    home = tmp_path / "h"
    entered, release = threading.Event(), threading.Event()

    def old_rules(doc: Mapping[str, Any]) -> list[str]:
        if doc.get("slow"):
            entered.set()
            assert release.wait(30), "the test never released the validator"
        return []

    daemon = _open(
        home, validator=old_rules, validator_name="rules-1", replace_home_validator=False
    )
    remote = MemoryRemote(server, user="u")
    engine = SyncEngine(daemon, remote)
    out: list[object] = []

    def sync() -> None:
        try:
            out.append(engine.sync_once())
        except BaseException as exc:  # handed to the test thread
            out.append(exc)

    worker = threading.Thread(target=sync)
    try:
        assert daemon.home_validator() == "rules-1"
        cli = _open(home)
        try:
            cli.save("a/edit", "slow: true\n")  # judged by none: the daemon's sync judges it
        finally:
            cli.close()
        worker.start()
        assert entered.wait(30)  # the daemon's validator runs on it, outside the lock
        app = _open(home, validator=_no_debug, validator_name="rules-2")
        try:
            assert app.resolve("a/edit").valid  # the app's rules are the home's now
        finally:
            app.close()
        release.set()
        worker.join(30)
        report = out[0]
        assert isinstance(report, SyncReport), report
        assert daemon.home_validator() == "rules-2"
        # Judged by the home's validator, it goes up (before: held, as judged by "rules-1").
        assert (report.pushed, report.held) == (1, 0)
        assert {r.row.path for r in server.rows.values()} == {"a/edit.blueprint.yaml"}
    finally:
        release.set()
        if worker.is_alive():
            worker.join(30)
        remote.close()
        daemon.close()
