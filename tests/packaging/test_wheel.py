"""LocalStore as a packager or a user gets it: an sdist and a wheel built from a clean copy of the
tree, the wheel installed into a fresh virtual environment, and everything checked from outside
the source tree (the console script, imports, the data files found through the installed package,
a home made with the installed CLI, the systemd unit `service install` writes for it).

The build backend comes from the configured package index (pip, as any frontend gets it); the
installed wheel's dependencies are the shared venv's, through a path-only ``.pth`` line (no ``.pth``
file of that directory runs, so the editable install of the checkout is not picked up).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import localstore

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUTS = ["--retries", "1", "--timeout", "20", "--disable-pip-version-check"]


@dataclass(frozen=True)
class Built:
    """What the fixture made: the clean copy, the artifacts, the fresh venv and its outputs."""

    src: Path
    sdist: Path
    wheel: Path  # built from the unpacked sdist, as pip does when it installs an sdist
    tree_wheel: Path  # built from the clean copy of the tree
    build_log: str
    venv: Path
    outside: Path  # a working directory outside the source tree

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def localstore(self) -> Path:
        return self.venv / "bin" / "localstore"


def _run(
    args: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (
        f"{shlex.join(done.args)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOCALSTORE_", "PYTHON")) and k != "VIRTUAL_ENV"
    }
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # no keychain: runs offline
    env.update(extra)
    return env


def _clean_copy(dest: Path) -> Path:
    """The files git tracks or would track (what a fresh clone has, plus new unignored files)."""
    listed = _ok(_run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"]))
    for rel in filter(None, listed.stdout.split("\0")):
        source = REPO / rel
        if source.is_file():  # (a tracked file deleted in the work tree is not copied)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)
    return dest


def _build(src: Path, out: Path, backend_python: Path, *hooks: str) -> str:
    """Call the PEP 517 hooks of pyproject's backend in ``src``; returns their stderr."""
    backend = tomllib.loads((src / "pyproject.toml").read_text())["build-system"]["build-backend"]
    code = f"import importlib, sys\nb = importlib.import_module({backend!r})\n" + "".join(
        f"print(b.{hook}({str(out)!r}))\n" for hook in hooks
    )
    done = _ok(_run([backend_python, "-W", "always", "-c", code], cwd=src, env=_clean_env()))
    return done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("pkg")
    src = _clean_copy(root / "src")
    pyproject = tomllib.loads((src / "pyproject.toml").read_text())
    pip = [sys.executable, "-m", "pip"]
    # The build backend in a venv of its own, as an isolated build gets it.
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", root / "build-env"]))
    build_python = root / "build-env" / "bin" / "python"
    requires = pyproject["build-system"]["requires"]
    _ok(_run([*pip, "--python", build_python, "install", "-q", *PIP_TIMEOUTS, *requires]))
    log = _build(src, root / "dist", build_python, "build_sdist")
    (sdist,) = (root / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    log += _build(unpacked, root / "dist", build_python, "build_wheel")
    (wheel,) = (root / "dist").glob("*.whl")
    log += _build(src, root / "tree-dist", build_python, "build_wheel")
    (tree_wheel,) = (root / "tree-dist").glob("*.whl")

    venv = root / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv]))
    _ok(_run([*pip, "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel]))
    # Dependencies: the shared venv's site-packages as a plain path (its .pth files, among them
    # the editable install of the checkout, are not run for a path added this way).
    site = Path(
        _ok(
            _run(
                [
                    venv / "bin" / "python",
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('purelib'))",
                ]
            )
        ).stdout.strip()
    )
    (site / "_shared_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    outside = root / "elsewhere"
    outside.mkdir()
    yield Built(src, sdist, wheel, tree_wheel, log, venv, outside)


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_the_build_is_free_of_deprecation_warnings(built: Built) -> None:
    """`license = { text = "MIT" }` made setuptools warn that the table form is refused from
    2027-02-18: after that date the project would not build at all."""
    warnings = [ln for ln in built.build_log.splitlines() if re.search(r"\w*Warning\b", ln)]
    assert warnings == [], built.build_log[-3000:]


def test_sdist_has_what_a_packager_builds_from_and_no_partial_test_suite(built: Built) -> None:
    with tarfile.open(built.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "packaging/localstore.service",
        "packaging/dev.localstore.daemon.plist",
        "packaging/localstore-task.xml",
        "sync/localcloud/bootstrap.sql",
        "localstore/py.typed",
        "sync/py.typed",
        "docs/cli.md",
    ):
        assert needed in names, needed
    # setuptools added tests/test_*.py by default, without the conftest files and packages they
    # import: a test suite that cannot run. The benchmarks are not for installing either.
    assert [n for n in names if n.startswith(("tests/", "bench/"))] == []
    assert [n for n in names if n.endswith(".pyc") or "__pycache__" in n] == []


def test_wheel_contents(built: Built) -> None:
    names = _names(built.wheel)
    # The sdist is complete: the wheel built from it is the one built from the tree.
    assert sorted(names) == sorted(_names(built.tree_wheel))
    assert {n.split("/")[0] for n in names} == {
        "localstore",
        "sync",
        f"localstore-{localstore.__version__}.dist-info",
    }
    assert "localstore/py.typed" in names and "sync/py.typed" in names
    # MIT asks that the notice travel with every copy.
    dist_info = f"localstore-{localstore.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    source_sql = sorted(
        p.relative_to(built.src).as_posix() for p in (built.src / "sync").rglob("*.sql")
    )
    assert source_sql and sorted(n for n in names if n.endswith(".sql")) == source_sql
    # Every module of the tree's packages is in the wheel.
    source_py = sorted(
        p.relative_to(built.src).as_posix()
        for pkg in ("localstore", "sync")
        for p in (built.src / pkg).rglob("*.py")
    )
    assert sorted(n for n in names if n.endswith(".py")) == source_py


def test_versions_agree(built: Built) -> None:
    version = tomllib.loads((built.src / "pyproject.toml").read_text())["project"]["version"]
    assert localstore.__version__ == version
    assert built.wheel.name.startswith(f"localstore-{version}-")
    with zipfile.ZipFile(built.wheel) as z:
        metadata = z.read(f"localstore-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    assert "\nLicense-Expression: MIT\n" in metadata
    # The changelog's released versions are this one or older (the top section is Unreleased).
    changelog = (built.src / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.M)
    assert headings[:1] == ["Unreleased"]
    released = [tuple(int(x) for x in h.split(".")) for h in headings[1:]]
    assert all(r <= tuple(int(x) for x in version.split(".")) for r in released)
    done = _ok(_run([built.localstore, "--version"], cwd=built.outside, env=_clean_env()))
    assert done.stdout.strip() == f"localstore {version}"


def test_installed_package_is_the_wheel_and_finds_its_data(built: Built) -> None:
    code = """
import importlib, importlib.resources, json, pkgutil, sys
import localstore, sync
from sync.localcloud import schema
mods = []
for pkg in (localstore, sync):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name.endswith(".__main__"):  # (runs a command line when imported)
            continue
        importlib.import_module(m.name)
        mods.append(m.name)
print(json.dumps({
    "localstore": localstore.__file__,
    "sync": sync.__file__,
    "bootstrap": str(schema.BOOTSTRAP_PATH),
    "bootstrap_ok": schema.BOOTSTRAP_PATH.is_file(),
    "migrations": [str(p) for p in schema.migration_files()],
    "resource": importlib.resources.files("sync").joinpath("localcloud/bootstrap.sql").is_file(),
    "typed": [importlib.resources.files(p).joinpath("py.typed").is_file() for p in ("localstore", "sync")],
    "modules": len(mods),
    "path": sys.path,
}))
"""
    done = _ok(_run([built.python, "-c", code], cwd=built.outside, env=_clean_env()))
    info = json.loads(done.stdout)
    venv = str(built.venv)
    for key in ("localstore", "sync", "bootstrap"):
        assert info[key].startswith(venv), (key, info[key])
    assert info["bootstrap_ok"] and info["resource"] and info["typed"] == [True, True]
    expected = sorted(
        p.name for p in (built.src / "sync" / "supabase" / "migrations").glob("*.sql")
    )
    assert [Path(p).name for p in info["migrations"]] == expected
    assert all(p.startswith(venv) for p in info["migrations"])
    assert info["modules"] > 40
    # Neither the checkout nor its copy is importable there: what ran is the installed wheel.
    # The one path under the checkout allowed is the shared venv's site-packages (the
    # dependencies; a clean clone keeps its .venv inside the checkout), added as a bare path
    # whose own .pth files (the editable install's finder) are not processed: the modules
    # came from the venv (checked above).
    deps = sysconfig.get_path("purelib")
    inside = [p for p in info["path"] if p.startswith((str(REPO), str(built.src))) and p != deps]
    assert not inside


def test_installed_cli_runs_init_save_ls_outside_the_tree(built: Built) -> None:
    env = _clean_env()
    help_ = _ok(_run([built.localstore, "--help"], cwd=built.outside, env=env))
    assert "daemon" in help_.stdout and "service" in help_.stdout
    home = built.outside / "home"
    _ok(_run([built.localstore, "--home", home, "init"], cwd=built.outside, env=env))
    saved = subprocess.run(
        [str(built.localstore), "--home", str(home), "save", "team/hello", "-f", "-"],
        input="steps: [a, b]\n",
        capture_output=True,
        text=True,
        cwd=built.outside,
        env=env,
        timeout=60,
        check=False,
    )
    assert saved.returncode == 0, saved.stderr
    listed = _ok(
        _run([built.localstore, "--home", home, "--json", "ls"], cwd=built.outside, env=env)
    )
    assert [b["path"] for b in json.loads(listed.stdout)] == ["team/hello.blueprint.yaml"]
    daemon_help = _ok(_run([built.localstore, "daemon", "--help"], cwd=built.outside, env=env))
    assert "--detach" in daemon_help.stdout


def test_installed_service_unit_verifies_and_its_command_runs_the_daemon(built: Built) -> None:
    """`service install` from the installed package: the unit's ExecStart is the venv's console
    script, `systemd-analyze verify` accepts it, and that command line starts a daemon that
    answers and stops cleanly on SIGTERM (what systemd sends)."""
    home = built.outside / "svc home"
    config = built.outside / "config"
    env = _clean_env(XDG_CONFIG_HOME=str(config))
    done = _ok(
        _run(
            [built.localstore, "--home", home, "--json", "service", "install", "--no-enable"],
            cwd=built.outside,
            env=env,
        )
    )
    unit = Path(json.loads(done.stdout)["path"])
    text = unit.read_text()
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    args = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(exec_start[10:])]
    assert args[0] == str(built.localstore) and os.access(args[0], os.X_OK)
    assert args[1:] == ["--home", str(home), "daemon"]
    assert shutil.which("systemd-analyze"), "scripts/setup installs systemd (systemd-analyze)"
    runtime = built.outside / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    for user in ([], ["--user"]):
        verify = _run(
            ["systemd-analyze", *user, "verify", unit],
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        )
        assert verify.returncode == 0, verify.stderr
    proc = subprocess.Popen(
        args, cwd=built.outside, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    state = home / "state" / "daemon.json"
    try:
        deadline = time.monotonic() + 60
        while not state.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the installed daemon did not start"
            time.sleep(0.1)
        assert json.loads(state.read_text())["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def _bare_python(built: Built, name: str) -> tuple[Path, str]:
    """An interpreter whose folder holds no localstore (the system's python3, say), with the
    shared venv's packages as its dependencies; and its site-packages path for a prefix."""
    venv = built.outside / name
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv]))
    python = venv / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_ok(_run([python, "-c", code])).stdout.strip())
    (site / "_shared_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python, str(site.relative_to(venv))


def test_service_runs_the_console_script_of_an_install_outside_the_interpreters_folder(
    built: Built,
) -> None:
    """`pip install --user` puts the command in ~/.local/bin (not on PATH until the next login,
    pip warns), the package in the user site, and the interpreter is /usr/bin/python3: the
    unit `python3 -m localstore service install` wrote ran /usr/bin/localstore, which does not
    exist, and it said nothing. Here the same layout with a `--prefix` install (a user install
    is one with the prefix ~/.local), used by an interpreter whose folder has no localstore."""
    python, site = _bare_python(built, "bare-venv")
    prefix = built.outside / "user base"
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    _ok(_run([*pip, "install", "-q", "--no-deps", "--prefix", prefix, built.wheel]))
    env = _clean_env(
        PYTHONPATH=str(prefix / site),
        PATH="/usr/bin:/bin",
        XDG_CONFIG_HOME=str(built.outside / "user-config"),
    )
    install: list[str | Path] = [python, "-m", "localstore", "--home", built.outside / "user home"]
    install.append("--json")
    done = _ok(_run([*install, "service", "install", "--no-enable"], cwd=built.outside, env=env))
    text = Path(json.loads(done.stdout)["path"]).read_text()
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    args = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(exec_start[10:])]
    assert args[0] == str(prefix / "bin" / "localstore"), args
    version = _ok(_run([args[0], "--version"], cwd=built.outside, env=env))
    assert version.stdout.startswith("localstore ")


def test_service_install_refuses_a_command_it_cannot_find(built: Built) -> None:
    """No console script anywhere (a checkout on PYTHONPATH, nothing on PATH): the unit named a
    command that does not exist, was reported written, `enable` took it, and it failed at every
    login. Now nothing is written, and the error says what to do."""
    python, _ = _bare_python(built, "bare-venv-2")
    config = built.outside / "refused-config"
    env = _clean_env(PYTHONPATH=str(built.src), PATH="/usr/bin:/bin", XDG_CONFIG_HOME=str(config))
    home = built.outside / "h2"
    done = _run(
        [python, "-m", "localstore", "--home", home, "service", "install", "--no-enable"],
        cwd=built.outside,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot find the localstore command" in done.stderr
    assert not (config / "systemd").exists()


def test_the_windows_task_of_the_installed_package_runs_its_windowless_script(
    built: Built,
) -> None:
    """pip installs the `localstorew` GUI script beside `localstore` (on Windows a launcher
    without a console: the task's console window closed the daemon with it), and the task the
    installed package plans runs it, with the daemon's arguments."""
    gui = built.localstore.with_name("localstorew")
    version = _ok(_run([gui, "--version"], cwd=built.outside, env=_clean_env()))
    assert version.stdout.startswith("localstore ")
    code = (
        "import sys; from localstore.config import load_settings; "
        "from sync.cli_daemon import service_plan; home = sys.argv[1]; "
        "print(service_plan(load_settings(home=home, environ={}), home, 'win32').text)"
    )
    home = built.outside / "task home"
    env = _clean_env(XDG_CONFIG_HOME=str(built.outside / "task-config"))
    text = _ok(_run([built.python, "-c", code, home], cwd=built.outside, env=env)).stdout
    assert f"<Command>{gui}</Command>" in text
    assert f'<Arguments>--home "{home}" daemon --no-stderr</Arguments>' in text
