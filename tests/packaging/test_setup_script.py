"""scripts/setup, run for real on a stand-in checkout: the script itself (copied), a project whose
build backend is in the tree (no package index needed: the test runs offline), a path with a
space. The Debian-package part runs as it is (scripts/test ran it before the suite)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PYPROJECT = """\
[build-system]
requires = []
build-backend = "tinybackend"
backend-path = ["."]

[project]
name = "tinyproj"
version = "0"

[project.optional-dependencies]
test = []
"""

# A PEP 517/660 backend of the standard library only: an empty wheel.
BACKEND = """\
import base64, hashlib, zipfile
from pathlib import Path

_DI = "tinyproj-0.dist-info"
_FILES = {
    f"{_DI}/METADATA": "Metadata-Version: 2.1\\nName: tinyproj\\nVersion: 0\\nProvides-Extra: test\\n",
    f"{_DI}/WHEEL": "Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}


def _wheel(directory):
    name = "tinyproj-0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(Path(directory) / name, "w") as zf:
        for arc, text in _FILES.items():
            data = text.encode()
            zf.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        zf.writestr(f"{_DI}/RECORD", "\\n".join([*record, f"{_DI}/RECORD,,"]) + "\\n")
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory)
"""


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "my checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "setup", root / "scripts" / "setup")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "tinybackend.py").write_text(BACKEND)
    return root


def _setup(root: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The base interpreter (not this venv's), as python3 on a fresh machine; no index: offline.
    env = {
        **os.environ,
        "PYTHON": getattr(sys, "_base_executable", sys.executable),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        ["bash", str(root / "scripts" / "setup")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _installed(root: Path) -> bool:
    out = subprocess.run(
        [str(root / ".venv" / "bin" / "python"), "-m", "pip", "show", "tinyproj"],
        capture_output=True,
        text=True,
    )
    return out.returncode == 0


def test_setup_remakes_a_venv_that_an_earlier_failed_creation_left_without_pip(
    tmp_path: Path,
) -> None:
    root = _checkout(tmp_path)
    # What `python3 -m venv .venv` leaves when ensurepip is missing (Debian without python3-venv)
    # or the run is interrupted: bin/python, and no pip.
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)
    first = _setup(root, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _installed(root)
    # Run again: nothing left to do, and it still succeeds.
    again = _setup(root, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "making it again" not in again.stderr
    assert _installed(root)
