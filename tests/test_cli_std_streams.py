"""The CLI with unusual standard streams: closed (`<&-`, a service manager's bare process).

Real `localstore` processes: the stream is really closed (os.close in the child before exec).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli


def _run_with_fd_closed(
    home: Path, fd: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`localstore --home HOME ARGS` with file descriptor ``fd`` closed, as `<&-` leaves it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    environ.update(env or {})
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from localstore.cli import main; main()",
            "--home",
            str(home),
            *args,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environ,
        cwd=REPO,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.close(fd),
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert run_cli(h, "init").returncode == 0
    return h


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        # As with an empty stdin (</dev/null): the document is empty.
        (("save", "a/x"), {}, 1, "empty"),
        (("cred", "set", "token"), {}, 2, "empty"),
        (("export", "-o", "out.lsbundle", "--encrypt"), {}, 2, "no terminal"),
        (("import", "sealed.lsbundle"), {}, 2, "no terminal"),
        (
            (
                "login",
                "--url",
                "http://127.0.0.1:9",
                "--anon-key",
                "k",
                "--email",
                "a@b.c",
                "--password-stdin",
            ),
            {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"},
            1,
            "keychain",
        ),
    ],
)
def test_a_closed_stdin_is_read_as_empty_not_a_crash(
    home: Path, tmp_path: Path, args: tuple[str, ...], env: dict[str, str], code: int, says: str
) -> None:
    """With stdin closed Python sets sys.stdin to None: `save`, `cred set`, `export --encrypt`,
    `import` of a sealed bundle and `login --password-stdin` failed with "unexpected
    AttributeError: 'NoneType' object has no attribute 'isatty' ... report it" (exit 1), naming
    no fix. Now a closed stdin reads as an empty one, whose refusals say what to do."""
    sealed = run_cli(
        home,
        "export",
        "-o",
        str(tmp_path / "sealed.lsbundle"),
        "--encrypt",
        env={"LOCALSTORE_PASSPHRASE": "pass phrase"},
    )
    assert sealed.returncode == 0, sealed.stderr
    args = tuple(str(tmp_path / a) if a.endswith(".lsbundle") else a for a in args)
    done = _run_with_fd_closed(home, 0, *args, env=env)
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    with_json = _run_with_fd_closed(home, 0, "--json", *args, env=env)
    assert json.loads(with_json.stderr)["error"]["exit_code"] == code
