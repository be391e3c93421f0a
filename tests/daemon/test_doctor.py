"""`localstore doctor`: each finding with a fix, exit 3 on any problem, --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sync.cli_daemon import check_daemon, check_watch_limits

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
    assert set(checks) == {"keychain", "index", "disk", "watcher", "cloud", "daemon"}
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
