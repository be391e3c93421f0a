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


# What Python's stdout encodes with where it is not UTF-8: Windows when the output is redirected
# (`localstore ls > list.txt`: the ANSI code page), a Latin-1 locale elsewhere.
NOT_UTF8 = {"PYTHONIOENCODING": "cp1252"}
# A name cp1252 cannot encode: CJK, and a character outside the BMP (JSON's \ud83d\ude80 pair).
NAME = "deploy 日本 🚀"
DOC = "steps: [build, deploy]  # 日本 🚀\r\nowner: zoë\r\n"


@pytest.fixture
def named(home: Path, tmp_path: Path) -> Path:
    source = tmp_path / "doc.yaml"
    source.write_bytes(DOC.encode("utf-8"))
    saved = run_cli(home, "save", "team/日本", "-f", str(source), "--name", NAME, "--tag", "🚀")
    assert saved.returncode == 0, saved.stderr
    return home


@pytest.mark.parametrize(
    ("args", "shows"),
    [
        (("ls",), "team/"),
        (("search", "deploy"), "team/"),
        (("history", "team/日本"), "team/"),
        (("show", "team/日本", "--meta"), '"name": "deploy'),
    ],
)
def test_output_to_a_stream_that_is_not_utf8_is_written_not_a_crash(
    named: Path, args: tuple[str, ...], shows: str
) -> None:
    """A name the stdout's encoding cannot encode made every listing of it fail with
    "unexpected UnicodeEncodeError ... report it" (exit 1), half printed. Written escaped."""
    done = run_cli(named, *args, env=NOT_UTF8)
    assert done.returncode == 0, done.stderr
    assert "unexpected" not in done.stderr
    assert shows in done.stdout and "\\u65e5" in done.stdout


@pytest.mark.parametrize(
    "args", [("ls",), ("search", "deploy"), ("show", "team/日本"), ("save", "team/日本")]
)
def test_json_to_a_stream_that_is_not_utf8_is_valid_json_of_the_same_text(
    named: Path, args: tuple[str, ...]
) -> None:
    """--json wrote the text raw (ensure_ascii=False): the same crash, and where a character
    did get through in another encoding, JSON that is not UTF-8. It is escaped ASCII there."""
    done = run_cli(named, "--json", *args, env=NOT_UTF8, stdin=DOC if args[0] == "save" else None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.isascii()
    data = json.loads(done.stdout)
    item = data[0] if isinstance(data, list) else data
    meta = item.get("meta", item)
    assert meta["name"] == NAME and meta["tags"] == ["🚀"]
    if "content" in item:
        assert item["content"] == DOC


def test_a_json_error_to_a_stream_that_is_not_utf8_is_valid_json(named: Path) -> None:
    """Python escapes what stderr cannot encode as \\U0001f680, which is not JSON."""
    done = run_cli(named, "--json", "show", "nowhere/🚀", env=NOT_UTF8)
    assert done.returncode == 4
    assert "nowhere/🚀" in json.loads(done.stderr)["error"]["message"]


def test_show_writes_the_stored_bytes_whatever_the_stdout_encoding(named: Path) -> None:
    """`show` prints the YAML exactly as stored: its bytes, not text the stdout's encoding
    could not hold (nor, on Windows, its newlines translated)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from localstore.cli import main; main()",
            "--home",
            str(named),
            "show",
            "team/日本",
        ],
        capture_output=True,
        env={**os.environ, **NOT_UTF8},
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == DOC.encode("utf-8")


def test_cred_get_writes_the_value_exactly_whatever_the_stdout_encoding(home: Path) -> None:
    """`cred get` prints the value and only the value: on a stdout that is not UTF-8 it failed
    (UnicodeEncodeError), and escaping what that stream cannot encode would silently hand a
    script another secret. Its UTF-8 bytes go out."""
    keychain = {
        # The encrypted-file keychain: a real backend that needs no desktop session.
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1",
        "LOCALSTORE_KEYCHAIN_PASSPHRASE": "file pass phrase",
    }
    secret = "pässwörd 日本 🚀"
    stored = run_cli(home, "cred", "set", "token", env=keychain, stdin=secret)
    assert stored.returncode == 0, stored.stderr
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from localstore.cli import main; main()",
            "--home",
            str(home),
            "cred",
            "get",
            "token",
        ],
        capture_output=True,
        env={**os.environ, **keychain, **NOT_UTF8},
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == secret.encode("utf-8")
