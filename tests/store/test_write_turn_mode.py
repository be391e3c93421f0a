"""The write-turn file (``data/index.turn``, localstore/_write_turn.py) has the index file's mode.

It was always made 0600: on a home whose owner made ``index.db`` group-writable (a home shared by
a group), the other users' processes wrote the index but could not open the turn file, and took
no turns. SQLite gives the index's ``-wal`` and ``-shm`` the index's mode; the turn file now
follows it the same way.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import localstore
from localstore._write_turn import turn_path
from tests.conftest import bound_by_file_modes

REPO = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, which narrowed a new file's mode (as it does SQLite's -wal before it
    sets the mode again)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_turn_file_has_the_index_s_mode(tmp_path: Path, umask_022: None) -> None:
    home = tmp_path / "home"
    index = home / "data" / "index.db"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
    assert mode(turn_path(index)) == mode(index) == 0o600  # (the usual home: private)
    index.chmod(0o660)  # made group-shared since: the file made before follows
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 2\n")
    assert mode(turn_path(index)) == 0o660
    turn_path(index).unlink()  # made new: not narrowed by the umask
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 3\n")
    assert mode(turn_path(index)) == 0o660
    index.chmod(0o600)  # private again
    localstore.open(home=home).close()
    assert mode(turn_path(index)) == 0o600


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root: the home is given to another user (chown) and the group member's "
    "process runs under setpriv in that group",
)
def test_a_group_member_s_process_takes_turns(tmp_path: Path, umask_022: None) -> None:
    """A home the owner shares with a group (folders setgid 2770, files 0660): another member's
    process that writes the index maps the turn file the owner's process made (it could not:
    0600, and wrote without turns)."""
    owner, group = 4242, 4243  # (ids nobody on the machine uses: the files are another user's)
    home = tmp_path / "home"
    with localstore.open(home=home) as s:
        s.save("a/x", "v: 1\n")
    for here, dirs, files in os.walk(home):
        for name in dirs:
            Path(here, name).chmod(0o2770)
        for name in files:
            Path(here, name).chmod(0o660)
    home.chmod(0o2770)
    turn_path(home / "data" / "index.db").unlink()
    with localstore.open(home=home) as s:  # (the owner's process: makes the turn file)
        s.save("a/x", "v: 2\n")
    for here, dirs, files in os.walk(home):
        for name in (*dirs, *files):
            os.chown(Path(here, name), owner, group)
    os.chown(home, owner, group)
    code = (
        "import sys, localstore\n"
        "with localstore.open(home=sys.argv[1]) as s:\n"
        "    s.save('a/y', 'v: 1\\n')\n"
        "    print(s.index._turn is not None)\n"
    )
    # Root without the capabilities that override file modes, in the group only: file modes
    # bind it as they bind any member of the group who is not the owner.
    cmd = bound_by_file_modes([sys.executable, "-c", code, str(home)])
    cmd[1:1] = ["--regid", str(group), "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stderr
    assert (home / "blueprints" / "a" / "y.blueprint.yaml").read_text() == "v: 1\n"
