"""What a person (or a script) sees when a command cannot do its work.

Each failure is one typed line on stderr with a hint and the documented exit code (a JSON object
with --json), never a Python traceback unless --debug asks for it; Ctrl-C exits 130. Permission
errors are real: as root (the CI container) the CLI runs under ``setpriv`` without
CAP_DAC_OVERRIDE, so file modes bind it as they bind a user.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localstore.cli import EXIT_INTERRUPTED, cli
from localstore.store import BlueprintStore
from tests.conftest import bound_by_file_modes
from tests.store.lockholder import LockHolder, holders

REPO = Path(__file__).resolve().parents[1]
holder_factory = pytest.fixture(holders)


def run(
    home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Result:
    return CliRunner(env=env).invoke(
        cli, ["--home", str(home), *args], input=stdin, catch_exceptions=False
    )


def unprivileged(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess that file permissions bind, even when the tests run as root."""
    argv = bound_by_file_modes(
        [sys.executable, "-c", "from localstore.cli import main; main()", "--home", str(home)]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    assert run(h, "init").exit_code == 0
    assert run(h, "save", "a/x", "-f", "-", stdin="v: 1\n").exit_code == 0
    return h


@pytest.fixture
def read_only_index(home: Path) -> Iterator[Path]:
    index = home / "data" / "index.db"
    for side in ("-wal", "-shm"):
        index.with_name(index.name + side).unlink(missing_ok=True)
    index.chmod(0o444)
    yield index
    index.chmod(0o644)


def assert_one_error_line(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


# -- permissions ------------------------------------------------------------------------------------


def test_status_on_an_index_this_user_cannot_write_is_a_typed_error(
    home: Path, read_only_index: Path
) -> None:
    """The sync tables were created with a raw apsw.ReadOnlyError traceback from status."""
    done = unprivileged(home, "status")
    assert done.returncode == 1, done.stderr
    assert_one_error_line(done.stderr, str(read_only_index), "cannot write the index", "index.db")


def test_reading_commands_do_not_wait_for_another_process_holding_the_write_lock(
    home: Path, holder_factory: Callable[[Path], LockHolder]
) -> None:
    """Opening the store and `status` took the write lock (to see that the schema was up to
    date): with another process writing for a long time they waited busy_timeout_ms, then
    failed with "the index stayed locked by another process"."""
    assert run(home, "status").exit_code == 0  # the sync tables exist
    (home / "config" / "config.yaml").write_text("busy_timeout_ms: 3000\n", encoding="utf-8")
    holder_factory(home / "data" / "index.db")
    for args in (("--json", "status"), ("ls",), ("show", "a/x")):
        started = time.monotonic()
        result = run(home, *args)
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 2.5, args
    assert json.loads(run(home, "--json", "status").stdout)["pending"] == 1


def test_check_does_not_call_an_index_it_cannot_write_damaged(
    home: Path, read_only_index: Path
) -> None:
    """FTS5's integrity check is an INSERT: refused on a read-only index, it was reported as
    'index-integrity' problems with `check --fix` as the cure (exit 3)."""
    done = unprivileged(home, "check")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "index-integrity" not in done.stdout
    assert_one_error_line(done.stderr, "cannot write the index", "may write index.db")


def test_an_unreadable_home_is_permission_denied_not_bad_usage(home: Path) -> None:
    """click's readable check made it exit 2 with the usage text and no hint."""
    home.chmod(0o000)
    try:
        done = unprivileged(home, "ls")
    finally:
        home.chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert "Usage:" not in done.stderr
    assert_one_error_line(done.stderr, str(home), "Permission denied", "check that this user")


# -- Ctrl-C -----------------------------------------------------------------------------------------


def _interrupt(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


def test_ctrl_c_exits_130_without_a_traceback(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """click reported it as 'Aborted!' with exit 1, which a script cannot tell from a failure."""
    monkeypatch.setattr(BlueprintStore, "list", _interrupt)
    result = run(home, "ls")
    assert result.exit_code == EXIT_INTERRUPTED == 130
    assert "Aborted" not in result.output
    assert result.stderr.strip() == "error: interrupted"


def interrupt_while_reading_stdin(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the CLI, send it SIGINT once it waits on its stdin (a pipe); its exit code and stderr."""
    argv = [sys.executable, "-c", "from localstore.cli import main; main()", "--home", str(home)]
    proc = subprocess.Popen(
        [*argv, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 30
        # Blocked in read(2) on the pipe: the kernel's wait channel names it.
        while "pipe" not in Path(f"/proc/{proc.pid}/wchan").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def test_sigint_to_a_running_command_exits_130(home: Path) -> None:
    """A real SIGINT while `save` waits for its stdin: click said 'Aborted!' and exited 1."""
    code, err = interrupt_while_reading_stdin(home, "save", "b/y")
    assert code == 130, err
    assert "Traceback" not in err and "Aborted" not in err
    assert err.strip() == "error: interrupted"


def test_sigint_at_a_prompt_exits_130(home: Path) -> None:
    """At a prompt click turns Ctrl-C into Abort ('Aborted!', exit 1), as it does end of input."""
    # `login` checks for a keychain before it prompts: the opt-in file backend is one whether
    # or not this test runs in a keyring session.
    fallback = {"LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "1", "LOCALSTORE_KEYCHAIN_PASSPHRASE": "pw"}
    code, err = interrupt_while_reading_stdin(
        home,
        *("login", "--url", "http://127.0.0.1:9", "--anon-key", "k", "--email", "e@x.test"),
        env=fallback,
    )
    assert code == 130, err
    assert "Aborted" not in err and err.rstrip().endswith("error: interrupted")


# -- unexpected errors, --debug ---------------------------------------------------------------------


def _boom(*_: object, **__: object) -> None:
    raise RuntimeError("boom")


def test_an_unexpected_error_is_one_line_unless_debug(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BlueprintStore, "list", _boom)
    result = run(home, "ls")
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "unexpected RuntimeError: boom", "--debug")
    with pytest.raises(RuntimeError, match="boom"):
        run(home, "--debug", "ls")
    with pytest.raises(RuntimeError, match="boom"):
        run(home, "ls", env={"LOCALSTORE_DEBUG": "1"})


# -- --json -----------------------------------------------------------------------------------------


def test_errors_are_json_with_json(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script that asked for JSON got a text line to scrape."""
    result = run(home, "--json", "show", "nope")
    assert result.exit_code == 4
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["exit_code"] == 4
    assert "nope" in error["message"]
    monkeypatch.setattr(BlueprintStore, "list", _interrupt)
    interrupted = run(home, "--json", "ls")
    assert interrupted.exit_code == 130
    assert json.loads(interrupted.stderr) == {
        "error": {"message": "interrupted", "hint": "", "exit_code": 130}
    }


def test_doctor_gives_the_fix_of_a_damaged_index_not_report_a_bug(home: Path) -> None:
    """A check that met a known error (the cloud check opens the index) said "the check failed"
    with "report a bug" as the fix."""
    from localstore.config import load_settings
    from sync.cli_daemon import run_checks

    (home / "data" / "index.db").write_bytes(b"not a database, " * 512)
    for side in ("-wal", "-shm"):
        (home / "data" / f"index.db{side}").unlink(missing_ok=True)
    findings = run_checks(load_settings(home=home, environ={}))
    assert [f for f in findings if f.fix == "report a bug"] == []
    index = [f for f in findings if "the index is damaged" in f.detail]
    assert index and all("localstore check --fix" in f.fix for f in index), findings


# -- a REF written as a path the store never holds ----------------------------------------------


@pytest.mark.parametrize(
    ("ref", "said"),
    [
        ("./a/x", "'.' or '..' part"),
        ("a/x/", "has no file name"),
        ("a\\x", "backslash"),
        ("a//x", "'.' or '..' part"),
        ("{root}/a/x.blueprint.yaml", "give 'a/x.blueprint.yaml'"),
        ("/etc/passwd", "is absolute"),
    ],
)
@pytest.mark.parametrize("command", ["show", "history", "rm"])
def test_a_ref_in_a_form_no_path_has_says_why_nothing_matched(
    home: Path, command: str, ref: str, said: str
) -> None:
    """`show ./a/x` said only "no blueprint matches './a/x'" while `a/x` exists: tab completion
    in the blueprints folder, a pasted full path or a Windows backslash looked like a missing
    blueprint. The error names the rule the form breaks and how to write it."""
    ref = ref.format(root=home / "blueprints")
    done = run(home, command, ref)
    assert done.exit_code == 4, done.output
    assert_one_error_line(done.stderr, "no blueprint matches", said)
    assert [r["rev"] for r in json.loads(run(home, "--json", "history", "a/x").stdout)] == [1]
