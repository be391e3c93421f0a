"""Files that hold this user's data are private whatever the process umask (a shared desktop, a
service manager that starts the daemon with umask 000).

Blueprint files are the user's documents and follow the umask; everything else of the home is
checked here. Each test sets umask 000 for its duration (os.umask is process-wide: these tests
restore it before they return).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localstore.config import load_settings
from sync.daemon import LOG_FILE, configure_logging
from sync.embed import daemon_running

_CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _log_once(state: Path, message: str) -> None:
    handlers = configure_logging(state, level="INFO", stderr=False)
    try:
        logging.getLogger("sync.test").info(message)
    finally:
        root = logging.getLogger()
        for h in handlers:
            root.removeHandler(h)
            h.close()


def test_the_daemon_log_is_created_0600_under_umask_000(tmp_path: Path, open_umask: None) -> None:
    state = tmp_path / "state"
    _log_once(state, "saved a/secret-plans")
    assert _mode(state / LOG_FILE) == 0o600
    assert _mode(state) == 0o700


def test_an_existing_log_open_to_others_is_made_private(tmp_path: Path, open_umask: None) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    log = state / LOG_FILE
    log.write_text("old line\n")
    log.chmod(0o644)  # written by an older version, or copied with its mode
    _log_once(state, "saved a/secret-plans")
    assert _mode(log) == 0o600
    assert log.read_text().startswith("old line\n")


def test_the_cache_that_stages_decrypted_bundles_is_not_writable_by_others(
    tmp_path: Path, open_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    # Under umask 000 the home's cache was made 0777: another user could rename the 0700 staging
    # folder (or the export's 0600 plaintext zip) away and put their own in its place, to be
    # filled with the decrypted bundle.
    from localstore import archive
    from localstore.config import load_settings
    from localstore.crypto import ScryptParams
    from localstore.store import BlueprintStore

    store = BlueprintStore(load_settings(home=tmp_path / "home", environ={}), maintenance=False)
    try:
        store.save("a/plans", "secret: plans\n")
        cache = store.paths.cache
        fast = ScryptParams(log2_n=10, r=8, p=1)
        bundle = tmp_path / "out.lsbundle"
        with caplog.at_level(logging.WARNING):
            archive.export_bundle(store, bundle, passphrase="pw", scrypt_params=fast)
        assert _mode(cache) & 0o022 == 0
        assert any(str(cache) in r.getMessage() for r in caplog.records)
        # And on the import side, for a cache opened up again since.
        cache.chmod(0o777)
        archive.import_bundle(store, bundle, passphrase="pw", on_conflict="overwrite")
        assert _mode(cache) & 0o022 == 0
    finally:
        store.close()


def test_a_sticky_shared_cache_is_left_as_it_is(tmp_path: Path, open_umask: None) -> None:
    # Like /tmp: others cannot rename what they do not own there.
    from localstore import archive
    from localstore.config import load_settings
    from localstore.store import BlueprintStore

    store = BlueprintStore(load_settings(home=tmp_path / "home", environ={}), maintenance=False)
    try:
        store.save("a/plans", "v: 1\n")
        store.paths.cache.chmod(0o1777)
        archive.export_bundle(store, tmp_path / "out.lsbundle")
        archive.import_bundle(store, tmp_path / "out.lsbundle", on_conflict="skip")
        assert _mode(store.paths.cache) == 0o1777
    finally:
        store.close()


def test_a_new_index_and_its_wal_are_private_in_a_folder_others_can_read(
    tmp_path: Path, open_umask: None
) -> None:
    """LocalStore makes data/ 0700, but a home whose data/ already existed open to others (made
    by hand, restored from a backup) got an index.db, -wal and -shm of 0666 & ~umask."""
    import localstore

    home = tmp_path / "h"
    (home / "data").mkdir(parents=True, mode=0o755)
    with localstore.open(home=home) as store:
        store.save("a", "steps: []\n")
        for name in ("index.db", "index.db-wal", "index.db-shm"):
            mode = stat.S_IMODE((home / "data" / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))


def test_a_blueprint_made_private_stays_private_after_a_save(
    tmp_path: Path, open_umask: None
) -> None:
    """Blueprint files follow the umask when they are made; after that the owner's chmod is
    kept, as editors keep it: the atomic replace wrote a new file of the default mode, so a
    blueprint made private was readable by everyone again after its next save."""
    import localstore

    with localstore.open(home=tmp_path / "h") as store:
        bp = store.save("private/plan", "steps: []\n")
        yaml_file = store.abspath(bp.path)
        meta_file = yaml_file.with_name(yaml_file.name.replace(".yaml", ".meta.json"))
        assert meta_file.exists()
        yaml_file.chmod(0o600)
        meta_file.chmod(0o640)
        store.save("private/plan", "steps: [a]\n", description="changed")
        assert stat.S_IMODE(yaml_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(meta_file.stat().st_mode) == 0o640
        store.restore(bp.id, 1)
        assert stat.S_IMODE(yaml_file.stat().st_mode) == 0o600
        fresh = store.save("private/other", "steps: []\n")
        assert stat.S_IMODE(store.abspath(fresh.path).stat().st_mode) == 0o644  # the default


@pytest.fixture
def detach(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.CompletedProcess[str]]]:
    """`localstore daemon --detach` under umask 000; every daemon it started is stopped after."""
    homes: list[Path] = []

    def start(home: Path) -> subprocess.CompletedProcess[str]:
        homes.append(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
        return subprocess.run(
            [*_CLI, "--home", str(home), "daemon", "--detach"],
            capture_output=True,
            text=True,
            env=env,
            umask=0,
            timeout=120,
            check=False,
        )

    yield start
    for home in homes:
        subprocess.run([*_CLI, "--home", str(home), "daemon", "--stop"], timeout=60, check=False)
        state = daemon_running(load_settings(home=home, environ={}))
        if state is not None:  # --stop failed: do not leave it running
            os.kill(int(state["pid"]), signal.SIGKILL)


@pytest.mark.parametrize("existing_mode", [None, 0o644])
def test_the_detached_daemons_output_file_is_private(
    tmp_path: Path,
    detach: Callable[[Path], subprocess.CompletedProcess[str]],
    existing_mode: int | None,
) -> None:
    """state/daemon.out (the detached daemon's stdout and stderr: a crash's traceback names
    paths and blueprints) was opened with open(..., "ab"): 0644 under the usual umask, 0666
    under umask 000, while daemon.log beside it is 0600."""
    home = tmp_path / "h"
    out = home / "state" / "daemon.out"
    if existing_mode is not None:  # written by an older version, or copied with its mode
        out.parent.mkdir(parents=True, mode=0o700)
        out.write_text("old line\n")
        out.chmod(existing_mode)
    done = detach(home)
    assert done.returncode == 0, done.stderr
    assert "daemon started" in done.stdout
    assert _mode(out) == 0o600
    if existing_mode is not None:
        assert out.read_text().startswith("old line\n")  # appended to, not truncated


def _folders_from(top: Path) -> list[Path]:
    """``top`` and every folder below it."""
    return [top, *(Path(here, d) for here, dirs, _ in os.walk(top) for d in dirs)]


def test_the_folders_made_for_a_home_and_its_blueprints_are_not_writable_by_others(
    tmp_path: Path, open_umask: None
) -> None:
    """Under umask 000 the home (and the folders above it that did not exist), the blueprints
    folder and every folder a save, a move or an import made were 0777: another local user
    could rename over or unlink any blueprint in them (its file's 0644 does not stop that: the
    folder's write bit does), put a link in the place of a folder between a save's check and
    its write, or put their own data/ or state/ in the home's place."""
    import localstore
    from localstore import archive

    top = tmp_path / "made"  # does not exist: LocalStore makes it as the home's parent
    home = top / "home"
    with localstore.open(home=home) as store:
        store.save("team/deep/plan", "v: 1\n")
        store.move("team/deep/plan", "moved/here/plan")
        bundle = tmp_path / "b.lsbundle"
        archive.export_bundle(store, bundle)
    with localstore.open(home=top / "other") as other:  # its folders made by the import
        archive.import_bundle(other, bundle)
    caches = {top / name / "cache" for name in ("home", "other")}  # (see docs/security.md)
    folders = [p for p in _folders_from(top) if p not in caches]
    assert top / "other" / "blueprints" / "moved" / "here" in folders
    open_to_others = {str(p): oct(_mode(p)) for p in folders if _mode(p) & 0o022}
    assert open_to_others == {}
    assert _mode(home) == 0o755  # readable, as the user's documents are (0644 files)
    assert _mode(home / "blueprints" / "moved" / "here") == 0o755
    for private in ("data", "state", "config"):
        assert _mode(home / private) == 0o700


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="needs root: the other local user's process runs under setpriv as another uid",
)
def test_another_user_cannot_replace_a_blueprint_saved_under_umask_000(
    open_umask: None,
) -> None:
    """The attack the folder modes above allowed, by a process of another uid: put its own
    text in the place of a blueprint the user saved (0644, so it cannot write the file itself),
    and put a link to a folder outside the home in the place of one of the user's folders."""
    import shutil
    import tempfile

    import localstore
    from tests.conftest import bound_by_file_modes

    # Not under tmp_path: pytest's base folder is 0700, which another uid cannot pass through.
    base = Path(tempfile.mkdtemp(prefix="ls-other-user-"))
    try:
        base.chmod(0o755)
        home = base / "home"
        with localstore.open(home=home) as store:
            plan = store.abspath(store.save("team/plan", "v: mine\n").path)
        code = (
            "import json, os, sys\n"
            "plan = sys.argv[1]\n"
            "team = os.path.dirname(plan)\n"
            "done = {}\n"
            "try:\n"
            "    with open(team + '/.x', 'w') as f:\n"
            "        f.write('v: theirs\\n')\n"
            "    os.replace(team + '/.x', plan)\n"
            "    done['replace'] = 'done'\n"
            "except OSError as exc:\n"
            "    done['replace'] = exc.strerror\n"
            "try:\n"
            "    os.rename(team, team + '.old')\n"
            "    os.symlink('/etc', team)\n"
            "    done['link'] = 'done'\n"
            "except OSError as exc:\n"
            "    done['link'] = exc.strerror\n"
            "print(json.dumps(done))\n"
        )
        uid = 4242  # (an id nobody on the machine uses)
        cmd = bound_by_file_modes([sys.executable, "-c", code, str(plan)])
        cmd[1:1] = ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env={}, cwd="/", timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            '{"replace": "Permission denied", "link": "Permission denied"}'
        )
        assert plan.read_text() == "v: mine\n"
        assert not (home / "blueprints" / "team").is_symlink()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_kept_copy_of_an_edit_is_private_in_a_data_folder_others_can_read(
    tmp_path: Path, open_umask: None
) -> None:
    """The index is 0600 even in a data/ folder LocalStore did not make (above); the copies a
    write keeps in data/recovered/ of a person's unparsable edit (the same text) were made in a
    recovered/ folder of the umask's mode with 0644 files: readable by every local user, even the
    edit of a blueprint its owner had made private (chmod 600)."""
    import localstore

    home = tmp_path / "h"
    (home / "data").mkdir(parents=True, mode=0o755)
    with localstore.open(home=home) as store:
        yaml_file = store.abspath(store.save("private/plan", "steps: []\n").path)
        yaml_file.chmod(0o600)
        yaml_file.write_text("steps: [the secret plan\n")  # unparsable: kept before the save
        store.save("private/plan", "steps: [a]\n")
    recovered = home / "data" / "recovered"
    (kept,) = [p for p in recovered.rglob("*") if p.is_file()]
    assert kept.read_text() == "steps: [the secret plan\n"
    assert _mode(recovered) == 0o700


@pytest.mark.parametrize("passphrase", [None, "pw"])
def test_a_new_bundle_is_not_writable_by_others_under_umask_000(
    tmp_path: Path, open_umask: None, passphrase: str | None
) -> None:
    """A new bundle gets 0644 less the umask (docs/security.md), as a blueprint file does: its
    temp was opened with open(), 0666 under umask 000, so another user could write their own
    entries into the bundle the user was about to send (a plain one proves nothing about its
    writer)."""
    import localstore
    from localstore import archive
    from localstore.crypto import ScryptParams

    out = tmp_path / "out.lsbundle"
    with localstore.open(home=tmp_path / "h") as store:
        store.save("a/plan", "v: 1\n")
        fast = ScryptParams(log2_n=10, r=8, p=1)
        archive.export_bundle(store, out, passphrase=passphrase, scrypt_params=fast)
    assert _mode(out) == 0o644
