"""The sync CLI end to end on the local Supabase stack: login, sync, conflicts, verify, logout.

Needs PostgreSQL binaries and the OS keychain (run under scripts/_in_keyring_session, as
scripts/test does).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from click.testing import CliRunner, Result

import localstore
from localstore.cli import cli
from localstore.credentials import unusable_reason
from sync.localcloud.cluster import PostgresNotFoundError, find_bindir
from sync.localcloud.stack import LocalCloud

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalCloud]:
    try:
        find_bindir()
    except PostgresNotFoundError as exc:
        pytest.fail(f"the CLI cloud tests need PostgreSQL: {exc}")
    reason = unusable_reason(keyring.get_keyring())
    if reason:
        pytest.fail(f"the CLI cloud tests need the OS keychain ({reason}); see scripts/test")
    with LocalCloud() as lc:
        yield lc


def run(home: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], input=stdin, catch_exceptions=False
    )


def login(cloud: LocalCloud, home: Path, email: str) -> None:
    result = run(
        home,
        "--json",
        "login",
        "--url",
        cloud.url,
        "--anon-key",
        cloud.anon_key,
        "--email",
        email,
        "--password-stdin",
        "--signup",
        stdin=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["email"] == email


def save(home: Path, path: str, text: str) -> str:
    with localstore.open(home=home) as store:
        return store.save(path, text).id


def sync(home: Path, *extra: str) -> tuple[int, dict]:
    result = run(home, "--json", "sync", *extra)
    assert result.exit_code in (0, 3), result.output
    return result.exit_code, json.loads(result.stdout)


def test_cli_sync_round_trip_with_conflict_and_verify(cloud: LocalCloud, tmp_path: Path) -> None:
    email = f"cli-{uuid.uuid4().hex[:10]}@example.test"
    a, b = tmp_path / "a", tmp_path / "b"
    login(cloud, a, email)
    login(cloud, b, email)

    ident = save(a, "team/flow", "name: flow\n# keep\nsteps: 3\n")
    code, data = sync(a)
    assert code == 0 and data["report"]["pushed"] == 1
    code, data = sync(b)
    assert code == 0 and data["report"]["pulled"] == 1

    save(a, "team/flow", "name: flow\n# keep\nsteps: 4\n")
    save(b, "team/flow", "name: flow\n# keep\nsteps: 5\n")
    assert sync(a)[0] == 0
    code, data = sync(b)
    assert code == 3 and data["status"]["conflicts"] == 1  # keep-both: needs attention
    listed = json.loads(run(b, "--json", "conflicts").stdout)
    assert listed[0]["id"] == ident
    assert run(b, "conflicts", "resolve", str(listed[0]["cid"]), "--take", "local").exit_code == 0
    assert sync(b)[0] == 0
    assert sync(a)[0] == 0

    for home in (a, b):
        verify = run(home, "--json", "sync", "--verify")
        assert verify.exit_code == 0, verify.output
        assert json.loads(verify.stdout)["clean"]
        with localstore.open(home=home) as store:
            assert store.load(ident).content == "name: flow\n# keep\nsteps: 5\n"
            assert store.count() == 1
    status = json.loads(run(a, "--json", "status").stdout)
    assert status["pending"] == 0 and status["last_synced_at"]

    assert run(a, "logout").exit_code == 0
    after = run(a, "sync")
    assert after.exit_code == 1 and "login" in after.output


def test_cli_verify_reports_an_edit_that_cannot_sync(cloud: LocalCloud, tmp_path: Path) -> None:
    """A YAML typo keeps the last good revision in the index, which matches the server: verify
    said "in sync" while the file on disk was not. It lists the flagged file now (exit 3)."""
    home = tmp_path / "a"
    login(cloud, home, f"cli-{uuid.uuid4().hex[:10]}@example.test")
    ident = save(home, "s/broken", "name: small\nv: 1\n")
    assert sync(home)[0] == 0
    (home / "blueprints/s/broken.blueprint.yaml").write_text("name: small\nv: [2\n")
    code, data = sync(home)
    assert code == 3 and data["report"]["pushed"] == 0 and data["status"]["flagged"] == 1
    verify = run(home, "--json", "sync", "--verify")
    assert verify.exit_code == 3, verify.output
    (diff,) = json.loads(verify.stdout)["differences"]
    assert (diff["kind"], diff["id"], diff["path"]) == ("flagged", ident, "s/broken.blueprint.yaml")
    human = run(home, "sync", "--verify")
    assert human.exit_code == 3
    assert "flagged: s/broken.blueprint.yaml: YAML does not parse" in human.output
    assert "in sync" not in human.output
