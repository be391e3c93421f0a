"""`localstore doctor`: each finding with a fix, exit 3 on any problem, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers import inotify_c

from localstore import watcher as watcher_mod
from localstore.store import BlueprintStore
from localstore.watcher import Watcher, inotify_usage
from sync.cli_daemon import WATCH_MARGIN, check_daemon, check_watch_limits

from .conftest import home_settings, log_in, new_email

LOCALSTORE = str(Path(sys.executable).with_name("localstore"))


def doctor(
    home: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    full.update(env or {})
    return subprocess.run(
        [LOCALSTORE, "--home", str(home), *extra, "doctor"],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
        check=False,
    )


def by_check(out: str) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in json.loads(out)["checks"]}


def test_a_healthy_offline_home_has_no_problems(tmp_path: Path) -> None:
    home = tmp_path / "h"
    subprocess.run([LOCALSTORE, "--home", str(home), "init"], check=True, capture_output=True)
    done = doctor(home, "--json")
    checks = by_check(done.stdout)
    assert done.returncode == 0, done.stdout
    assert set(checks) == {
        "keychain",
        "index",
        "old-index",
        "disk",
        "watcher",
        "cloud",
        "daemon",
        "validator",
    }
    assert checks["old-index"]["status"] == "ok"
    assert checks["validator"]["status"] == "ok"
    assert checks["keychain"]["status"] == "ok"
    assert checks["index"]["status"] == "ok"
    assert checks["cloud"]["status"] == "info" and "localstore login" in checks["cloud"]["fix"]
    assert checks["daemon"]["status"] == "info" and "not running" in checks["daemon"]["detail"]
    human = doctor(home)
    assert human.returncode == 0 and "no problems found" in human.stdout


def test_problems_exit_3_and_say_how_to_fix(tmp_path: Path) -> None:
    home = tmp_path / "h"
    done = doctor(home, "--json")  # never initialised
    assert done.returncode == 3
    assert by_check(done.stdout)["index"]["fix"] == "run `localstore init`"
    subprocess.run([LOCALSTORE, "--home", str(home), "init"], check=True, capture_output=True)
    subprocess.run(
        [LOCALSTORE, "--home", str(home), "save", "a/b", "-f", "-"],
        input=b"k: 1\n",
        check=True,
        capture_output=True,
    )
    (home / "blueprints/a/b.blueprint.yaml").unlink()  # behind the index's back
    done = doctor(home, "--json")
    index = by_check(done.stdout)["index"]
    assert done.returncode == 3 and index["status"] == "problem"
    assert index["fix"] == "run `localstore check --fix`"
    # Without a usable keychain the finding names the fix.
    no_keychain = doctor(home, env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    assert no_keychain.returncode == 3
    assert "[FAIL] keychain" in no_keychain.stdout and "fix:" in no_keychain.stdout


def test_watch_limit_check_reads_the_kernel_limit(tmp_path: Path) -> None:
    settings = home_settings(tmp_path / "w")
    for i in range(3):
        (settings.paths.blueprints / f"f{i}").mkdir(parents=True)
    finding = check_watch_limits(settings)
    limit = int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    assert f"4 folder(s); max_user_watches {limit}" in finding.detail or finding.status == "problem"


@pytest.fixture
def hold_inotify() -> Iterator[Callable[[int, Path | None], None]]:
    """Hold inotify instances (and watches on files under a folder), as another program of the
    user does; closed after the test."""
    fds: list[int] = []

    def hold(watch_files: int, under: Path | None = None) -> None:
        fd = inotify_c.inotify_init()
        assert fd >= 0
        fds.append(fd)
        if under is not None:
            under.mkdir(parents=True, exist_ok=True)
        for i in range(watch_files):
            assert under is not None
            path = under / f"w{i}"
            path.touch()
            assert inotify_c.inotify_add_watch(fd, os.fsencode(path), 0x100) >= 0

    yield hold
    for fd in fds:
        os.close(fd)


def test_watch_limit_check_counts_watches_other_programs_hold(
    tmp_path: Path, hold_inotify, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check compared the limit with the home's folders alone: an IDE holding nearly every
    watch passed as ok, and the watcher then could not watch the folder."""
    settings = home_settings(tmp_path / "w")
    for i in range(3):
        (settings.paths.blueprints / f"f{i}").mkdir(parents=True)
    hold_inotify(1100, tmp_path / "ide")
    # The limit a little above 2 x folders + 1000, all of it held by the "IDE" (a global
    # setting, so injected; the watches above are real).
    monkeypatch.setattr(watcher_mod, "inotify_limits", lambda: (1100, 100_000))
    finding = check_watch_limits(settings)
    assert finding.status == "problem", finding
    assert "other programs hold" in finding.detail and "4 folder(s)" in finding.detail
    assert "max_user_watches=524288" in finding.fix


def test_watch_limit_check_has_an_instance_check(
    tmp_path: Path, hold_inotify, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = home_settings(tmp_path / "w")
    settings.paths.blueprints.mkdir(parents=True)
    hold_inotify(0)
    hold_inotify(0)
    monkeypatch.setattr(watcher_mod, "inotify_limits", lambda: (10_000_000, 2))
    finding = check_watch_limits(settings)
    assert finding.status == "problem", finding
    assert "max_user_instances" in finding.detail
    assert "max_user_instances=512" in finding.fix


def test_watch_limit_check_leaves_the_homes_own_watches_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon already watching the home holds its folders' watches: they are not 'taken'."""
    settings = home_settings(tmp_path / "w")
    folders = 1000
    for i in range(folders):
        (settings.paths.blueprints / f"f{i:04}").mkdir(parents=True)
    store = BlueprintStore(settings)
    watcher = Watcher(store)
    try:
        watcher.start()
        assert watcher.wait_idle(30)
        usage = inotify_usage(settings.paths.blueprints)
        assert usage is not None and usage.folder_watches >= folders
        # Room for the home beside everything else (half its folders of slack for the other
        # processes of this user, which come and go meanwhile).
        limit = usage.watches + WATCH_MARGIN + folders // 2
        monkeypatch.setattr(watcher_mod, "inotify_limits", lambda: (limit, 100_000))
        finding = check_watch_limits(settings)
        assert finding.status == "ok", finding
    finally:
        watcher.stop()
        watcher.join(10)
        store.close()


def test_cloud_and_daemon_checks_with_a_logged_in_running_daemon(
    cloud, spawn_daemon, tmp_path: Path
) -> None:
    home = tmp_path / "cd"
    settings = home_settings(home)
    log_in(settings, cloud, new_email())
    d = spawn_daemon(home)
    state = d.wait_ready()
    done = doctor(home, "--json")
    checks = by_check(done.stdout)
    assert done.returncode == 0, done.stdout
    assert checks["cloud"]["status"] == "ok" and cloud.url in checks["cloud"]["detail"]
    assert checks["daemon"] == {
        "check": "daemon",
        "status": "ok",
        "detail": f"pid {state['pid']}, sync {checks['daemon']['detail'].split('sync ')[1]}",
        "fix": "",
    }
    d.proc.kill()
    d.proc.wait(10)
    stale = check_daemon(settings)
    assert stale.status == "info" and "stale daemon.json" in stale.detail


def test_without_a_keychain_a_home_never_logged_in_is_not_a_cloud_problem(
    tmp_path: Path,
) -> None:
    """docs/daemon.md: the cloud check is a problem when logged in and the server does not
    answer; not logged in is info. Without a usable keychain, a home that never logged in got
    a second FAIL (the keychain check's text again: two problems for one cause)."""
    home = tmp_path / "h"
    subprocess.run([LOCALSTORE, "--home", str(home), "init"], check=True, capture_output=True)
    done = doctor(home, "--json", env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    checks = by_check(done.stdout)
    assert done.returncode == 3 and checks["keychain"]["status"] == "problem"
    assert checks["cloud"]["status"] == "info", checks["cloud"]
    assert "not logged in" in checks["cloud"]["detail"]
    assert "localstore login" in checks["cloud"]["fix"]


def test_without_a_keychain_a_logged_in_home_is_a_cloud_problem(cloud, tmp_path: Path) -> None:
    """The other side of the one above: a home that logged in cannot sync without its keychain."""
    home = tmp_path / "li"
    log_in(home_settings(home), cloud, new_email())
    done = doctor(home, "--json", env={"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    checks = by_check(done.stdout)
    assert done.returncode == 3 and checks["cloud"]["status"] == "problem", checks["cloud"]
    assert "keychain" in checks["cloud"]["detail"]


@pytest.mark.parametrize("keychain", ["usable", "none"])
def test_doctor_leaves_a_home_that_was_never_made_as_it_found_it(
    tmp_path: Path, keychain: str
) -> None:
    """A doctor run is a look, not a set-up. The cloud check opened the credential store, which
    made the home's folders and an empty index: `localstore --home TYPO doctor` left a home at
    the typo, and the next run answered "index: ok" where the first said "run localstore init"."""
    home = tmp_path / "never-made"
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"} if keychain == "none" else {}
    for _ in range(2):
        done = doctor(home, "--json", env=env)
        assert not home.exists(), sorted(str(p) for p in home.rglob("*"))
        checks = by_check(done.stdout)
        assert done.returncode == 3, done.stdout
        assert checks["index"]["status"] == "problem" and "no index" in checks["index"]["detail"]
        assert checks["cloud"]["status"] == "info", checks["cloud"]
        assert "localstore init" in checks["cloud"]["fix"]


def test_doctor_sends_a_kept_edit_to_its_copy_not_only_to_check_fix(tmp_path: Path) -> None:
    """A save over a file that did not parse keeps it in data/recovered/ (``edit-kept`` in
    check); doctor said only "run `localstore check --fix`", which cannot clear it."""
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        store.save("team/deploy", "steps: [build]\n")
        (store.root / "team" / "deploy.blueprint.yaml").write_text("steps: [build\n")
        store.save("team/deploy", "steps: [ship]\n")
    fix = by_check(doctor(home, "--json").stdout)["index"]["fix"]
    assert "data/recovered/" in fix and "check --fix" not in fix, fix

    # Beside a problem check --fix repairs, both steps.
    (home / "blueprints" / "team" / "deploy.blueprint.meta.json").unlink()
    fix = by_check(doctor(home, "--json").stdout)["index"]["fix"]
    assert fix.startswith("run `localstore check --fix`; then look at") and "recovered" in fix


def test_doctor_sends_an_interrupted_saves_kept_version_to_its_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open's reconcile moved a killed save's temp (a version nothing else held) to
    data/recovered/ and told only that open's report: doctor, later, said all was well."""
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        store.save("team/deploy", "steps: [build]\n")
    temp = home / "blueprints" / "team" / ".deploy.blueprint.yaml.0badf00d.lstmp"
    temp.write_text("steps: [ship]\n")  # (a save killed before its rename)
    later = time.time_ns() + 3600 * 10**9  # (a change time cannot be set back)
    monkeypatch.setattr("localstore._reconcile_leftovers.time.time_ns", lambda: later)
    BlueprintStore(home_settings(home)).close()  # (its open keeps the temp)
    assert not temp.exists()
    found = by_check(doctor(home, "--json").stdout)["index"]
    # Said, not a problem: that save never returned (check stays clean after a crash).
    assert found["status"] == "info" and "recovered/" in found["detail"], found
    assert "interrupted saves" in found["detail"] and "delete" in found["fix"], found


def test_doctor_names_a_damaged_index_set_aside_as_information(tmp_path: Path) -> None:
    """A damaged index set aside (``data/index.db.damaged-<time>``, by `check --fix` or an
    open's quick check) holds the history the rebuilt index lacks. Only the store object that
    rebuilt it said so (``index-rebuilt``); every later `check` and `doctor` was silent, so the
    file was either never looked at or deleted without knowing what it held. Not a problem:
    nothing is to be fixed, and the exit codes stay 0."""
    home = tmp_path / "h"
    cli = [LOCALSTORE, "--home", str(home)]
    subprocess.run([*cli, "init"], check=True, capture_output=True)
    for n in range(2):
        subprocess.run(
            [*cli, "save", "team/deploy", "-f", "-"],
            input=f"steps: [{n}]\n".encode(),
            check=True,
            capture_output=True,
        )
    data = home / "data"
    (data / "index.db").write_bytes(b"not a database, " * 512)
    for side in ("-wal", "-shm"):
        (data / f"index.db{side}").unlink(missing_ok=True)
    fixed = subprocess.run([*cli, "check", "--fix"], capture_output=True, text=True, check=False)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    (aside,) = [p for p in data.glob("index.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]

    done = doctor(home, "--json")
    assert done.returncode == 0, done.stdout
    found = by_check(done.stdout)["old-index"]
    assert found["status"] == "info", found
    assert str(aside) in found["detail"]
    assert "8 kB" in found["detail"]  # (its size: the 8,192 bytes set aside)
    assert "history (revisions, deletions)" in found["detail"]
    assert "delete it" in found["fix"] and "synced since the rebuild" in found["fix"]
    assert subprocess.run([*cli, "check"], capture_output=True, check=False).returncode == 0

    # Its age, from the time in its name (set aside long ago), and a second one beside it.
    old = aside.with_name("index.db.damaged-20200102T030405Z")
    aside.rename(old)
    (data / "index.db.damaged-20200102T030405Z-wal").write_bytes(b"w" * 2000)
    newer = data / "index.db.damaged-20250101T000000Z-2"
    newer.write_bytes(b"x" * 3_000_000)
    human = doctor(home)
    assert human.returncode == 0 and "no problems found" in human.stdout, human.stdout
    line = next(x for x in human.stdout.splitlines() if "old-index" in x)
    assert line.startswith("[info] old-index: 2 damaged indexes set aside"), line
    assert f"{old} (set aside " in line and " days ago, 10 kB)" in line, line
    assert f"{newer} (set aside " in line and "3.0 MB)" in line, line
    assert "-wal" not in line  # (a side file is counted with its index, not named)


def test_doctor_names_the_step_for_a_file_that_does_not_parse(tmp_path: Path) -> None:
    """doctor said "run `localstore check --fix`" of a file that does not parse, which --fix
    cannot repair (it flags it again): the person's step is to fix the file."""
    home = tmp_path / "h"
    with BlueprintStore(home_settings(home)) as store:
        store.save("team/deploy", "steps: [build]\n")
        (store.root / "team" / "deploy.blueprint.yaml").write_text("steps: [build\n")
        store.check(fix=True)
    fix = by_check(doctor(home, "--json").stdout)["index"]["fix"]
    assert fix == (
        "fix each file as `localstore check` says of it (its last good version is kept meanwhile)"
    )
