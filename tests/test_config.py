"""Settings: one precedence rule (flag > env > config.yaml > default), typed, with clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from localstore.config import DEFAULT_SETTLE_MS, load_settings, resolve
from localstore.errors import ConfigError, StorageError


def test_resolve_order() -> None:
    assert resolve("flag", "env", "file", "default") == "flag"
    assert resolve(None, "env", "file", "default") == "env"
    assert resolve(None, None, "file", "default") == "file"
    assert resolve(None, "", None, "default") == "default"


def test_home_layout(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path, environ={})
    assert s.paths.blueprints == tmp_path.resolve() / "blueprints"
    assert s.paths.index_db == tmp_path.resolve() / "data/index.db"
    assert s.home == tmp_path.resolve()


def test_env_home(tmp_path: Path) -> None:
    s = load_settings(environ={"LOCALSTORE_HOME": str(tmp_path)})
    assert s.paths.state == tmp_path.resolve() / "state"


def test_platform_dirs_without_home() -> None:
    s = load_settings(environ={})
    assert s.home is None
    assert s.paths.blueprints.name == "Blueprints"


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text("settle_ms: 70\ndelete_grace_ms: 900\n")
    env = {"LOCALSTORE_DELETE_GRACE_MS": "800", "LOCALSTORE_KEYCHAIN_FILE_FALLBACK": "yes"}
    s = load_settings(home=tmp_path, environ=env, conflict_policy="keep-both")
    assert s.settle_ms == 70  # file
    assert s.delete_grace_ms == 800  # env beats file
    assert s.conflict_policy == "keep-both"  # flag
    assert s.keychain_file_fallback is True
    assert load_settings(home=tmp_path / "x", environ={}).settle_ms == DEFAULT_SETTLE_MS


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("settle_ms: [1]\n", "settle_ms"),
        ("nonsense: 1\n", "unknown setting"),
        ("- a list\n", "mapping"),
        ("a: [\n", "not valid YAML"),
        ("1: 2\n", "unknown setting"),
        ("max_depth: 64\n2: x\n", "unknown setting"),
        ("yes: 1\n", "unknown setting"),
        ("max_depth: 5\nsettle_ms: 1\nmax_depth: 6\n", "'max_depth' is given twice at line 3"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(content)
    with pytest.raises(ConfigError, match=match) as info:
        load_settings(home=tmp_path, environ={})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"\xff\xfe: 1\n", b"device_name: caf\xe9\n"])
def test_config_file_not_utf8(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_settings(home=tmp_path, environ={})
    assert "config.yaml" in info.value.message


def test_invalid_yaml_error_is_one_line_with_position(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text("max_depth: 1\nsettle_ms: [\n")
    with pytest.raises(ConfigError, match=r"line 3, column 1") as info:
        load_settings(home=tmp_path, environ={})
    assert "\n" not in str(info.value) and "^" not in str(info.value)


def test_bad_env_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LOCALSTORE_SETTLE_MS"):
        load_settings(home=tmp_path, environ={"LOCALSTORE_SETTLE_MS": "soon"})
    with pytest.raises(ConfigError, match="unknown"):
        load_settings(home=tmp_path, environ={}, not_a_setting=1)


@pytest.mark.parametrize(
    ("content", "name"),
    [
        ("max_depth: 1.9\n", "max_depth"),
        ("max_depth: true\n", "max_depth"),
        ("rescan_interval_s: false\n", "rescan_interval_s"),
        ("device_name: [laptop, desk]\n", "device_name"),
        ("profile: {work: 1}\n", "profile"),
        ("keychain_file_fallback: 2\n", "keychain_file_fallback"),
        ("keychain_file_fallback: [no]\n", "keychain_file_fallback"),
        ("max_yaml_bytes: -1\n", "max_yaml_bytes"),
        ("max_depth: 0\n", "max_depth"),
        ("settle_ms: -5\n", "settle_ms"),
        ("poll_interval_s: .nan\n", "poll_interval_s"),
        ("poll_interval_s: .inf\n", "poll_interval_s"),
        ("rescan_interval_s: 0\n", "rescan_interval_s"),
    ],
)
def test_config_file_wrong_type_or_range_names_the_setting(
    tmp_path: Path, content: str, name: str
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(content)
    with pytest.raises(ConfigError, match=f"'{name}'") as info:
        load_settings(home=tmp_path, environ={})
    assert "config.yaml" in info.value.message


def test_config_file_right_types_are_kept(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(
        "poll_interval_s: 5\nrescan_interval_s: 0.5\nkeychain_file_fallback: true\n"
        "device_name: desk\nsettle_ms: 0\n"
    )
    s = load_settings(home=tmp_path, environ={})
    assert s.poll_interval_s == 5.0 and isinstance(s.poll_interval_s, float)
    assert s.rescan_interval_s == 0.5 and s.keychain_file_fallback is True
    assert s.device_name == "desk" and s.settle_ms == 0


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("LOCALSTORE_MAX_DEPTH", "1.9"),
        ("LOCALSTORE_MAX_YAML_BYTES", "-1"),
        ("LOCALSTORE_POLL_INTERVAL_S", "nan"),
        ("LOCALSTORE_KEYCHAIN_FILE_FALLBACK", "2"),
    ],
)
def test_bad_env_value_names_the_variable(tmp_path: Path, var: str, text: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings(home=tmp_path, environ={var: text})


def test_env_values_are_parsed(tmp_path: Path) -> None:
    env = {"LOCALSTORE_MAX_DEPTH": " 12 ", "LOCALSTORE_POLL_INTERVAL_S": "2.5"}
    s = load_settings(home=tmp_path, environ=env)
    assert s.max_depth == 12 and s.poll_interval_s == 2.5


@pytest.mark.parametrize("in_the_way", ["h/data", "h"])
def test_ensure_with_a_file_in_the_way_is_a_storage_error(tmp_path: Path, in_the_way: str) -> None:
    paths = load_settings(home=tmp_path / "h", environ={}).paths
    (tmp_path / "h").mkdir()
    if in_the_way == "h":
        (tmp_path / "h").rmdir()  # the home itself is a file
    (tmp_path / in_the_way).write_text("keep me")
    with pytest.raises(StorageError, match="a file is in the way") as info:
        paths.ensure()
    assert "LOCALSTORE_HOME" in info.value.hint
    assert (tmp_path / in_the_way).read_text() == "keep me"


@pytest.mark.parametrize("source", ["file", "env", "argument"])
def test_a_bad_conflict_policy_is_refused_at_load_naming_its_source(
    tmp_path: Path, source: str
) -> None:
    env: dict[str, str] = {}
    kwargs: dict[str, str] = {}
    if source == "file":
        (tmp_path / "config").mkdir()
        (tmp_path / "config/config.yaml").write_text("conflict_policy: keep_both\n")
        where = str(tmp_path.resolve() / "config/config.yaml")
    elif source == "env":
        env["LOCALSTORE_CONFLICT_POLICY"] = "keep_both"
        where = "LOCALSTORE_CONFLICT_POLICY"
    else:
        kwargs["conflict_policy"] = "keep_both"
        where = "argument"
    with pytest.raises(ConfigError, match="conflict_policy") as info:
        load_settings(home=tmp_path, environ=env, **kwargs)
    assert info.value.message.startswith(where)
    assert "'keep-both'" in info.value.hint  # the near miss is named


def test_the_conflict_policies_are_the_sync_engines() -> None:
    from localstore.config import SYNC_CONFLICT_POLICIES
    from sync.merge import POLICIES

    assert SYNC_CONFLICT_POLICIES == POLICIES
    for policy in POLICIES:
        assert load_settings(home="/nonexistent", environ={}, conflict_policy=policy)


def test_an_unknown_setting_argument_has_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_dept") as info:
        load_settings(home=tmp_path, environ={}, max_dept=5)
    assert "'max_depth'" in info.value.hint


def test_open_refuses_settings_together_with_home_or_settings_keywords(tmp_path: Path) -> None:
    import localstore

    settings = load_settings(home=tmp_path / "b", environ={})
    with pytest.raises(ConfigError, match="home") as info:
        localstore.open(home=tmp_path / "a", settings=settings)
    assert "settings.replace" in info.value.hint
    with pytest.raises(ConfigError, match="max_depth"):
        localstore.open(settings=settings, max_depth=3)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing opened
    with localstore.open(settings=settings.replace(max_depth=3)) as store:
        assert store.settings.max_depth == 3


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"keychain_file_fallback": 2}, "keychain_file_fallback"),
        ({"max_depth": 0}, "max_depth"),
        ({"max_depth": "5"}, "max_depth"),
        ({"conflict_policy": "keep_both"}, "conflict_policy"),
        ({"poll_interval_s": float("nan")}, "poll_interval_s"),
        ({"device_name": None}, "device_name"),
        ({"max_dept": 3}, "max_dept"),
        ({"home": "/elsewhere"}, "home"),
    ],
)
def test_settings_replace_checks_like_load_settings(
    tmp_path: Path, changes: dict[str, object], match: str
) -> None:
    settings = load_settings(home=tmp_path, environ={})
    with pytest.raises(ConfigError, match=match) as info:
        settings.replace(**changes)
    assert info.value.message.startswith("settings.replace")
    if "max_dept" in changes:
        assert "'max_depth'" in info.value.hint


def test_settings_replace_keeps_right_values(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, environ={})
    changed = settings.replace(max_depth=3, poll_interval_s=2, merge_tool="")
    assert changed.max_depth == 3 and changed.merge_tool == ""
    assert changed.poll_interval_s == 2.0 and isinstance(changed.poll_interval_s, float)
    assert changed.paths == settings.paths and settings.max_depth != 3


def test_an_empty_home_argument_is_refused_not_the_platform_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty") as info:
        load_settings(home="", environ={"LOCALSTORE_HOME": str(tmp_path)})
    assert "--home" in info.value.hint
    # An empty variable is unset, as for every other setting.
    assert load_settings(environ={"LOCALSTORE_HOME": ""}).home is None


def test_no_home_directory_at_all_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A uid with no passwd entry and HOME unset (a container run as an arbitrary user):
    # platformdirs raises RuntimeError, which reached the CLI as an "unexpected" bug.
    import pwd

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # the fault: no passwd entry
    monkeypatch.setenv("HOME", "relative")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="platform folders") as info:
        load_settings(environ={})
    assert "LOCALSTORE_HOME" in info.value.hint


def test_config_file_merge_keys_are_no_duplicates(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text("<<: {settle_ms: 5, max_depth: 9}\nmax_depth: 7\n")
    s = load_settings(home=tmp_path, environ={})
    assert s.settle_ms == 5 and s.max_depth == 7


DOC = "steps:\n  - name: build\n"


def test_a_relative_home_variable_is_refused_a_relative_home_argument_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative LOCALSTORE_HOME named another store in every directory a command ran from.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="LOCALSTORE_HOME") as info:
        load_settings(environ={"LOCALSTORE_HOME": "rel/home"})
    assert "absolute" in info.value.hint
    # An explicit argument is resolved once, against the directory it was given in.
    s = load_settings(home="rel/home", environ={"LOCALSTORE_HOME": "ignored"})
    assert s.home == tmp_path.resolve() / "rel/home"
    assert s.paths.state == tmp_path.resolve() / "rel/home/state"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings(environ={"LOCALSTORE_HOME": "~/h"}).home == tmp_path.resolve() / "h"


def test_cli_refuses_a_relative_home_variable_and_resolves_a_relative_home_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from localstore.cli import cli

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["save", "a"], input=DOC, env={"LOCALSTORE_HOME": "h"})
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("error: ") and "LOCALSTORE_HOME" in r.stderr
    assert not (tmp_path / "h").exists()  # no second store made under this directory
    r = runner.invoke(cli, ["--home", "h", "save", "a"], input=DOC, env={"LOCALSTORE_HOME": None})
    assert r.exit_code == 0, r.output
    assert (tmp_path / "h/blueprints/a.blueprint.yaml").is_file()
    # The service of a home given by the variable is that home's own, with its absolute path.
    home = str(tmp_path / "h")
    r = runner.invoke(cli, ["--json", "service", "status"], env={"LOCALSTORE_HOME": home})
    assert r.exit_code == 0, r.output
    flagged = runner.invoke(cli, ["--home", "h", "--json", "service", "status"])
    assert json.loads(r.output)["path"] == json.loads(flagged.output)["path"]
    assert json.loads(r.output)["path"].endswith(
        "-" + hashlib.sha256(str(tmp_path.resolve() / "h").encode()).hexdigest()[:8] + ".service"
    )


# Built from parts, so the scan of the repository below does not read them as names in use.
_SETLE = "LOCALSTORE_" + "SETLE_MS"
_PROFLE = "LOCALSTORE_" + "PROFLE"
_STRES = "LOCALSTORE_" + "STRES"


def test_a_misspelt_variable_is_warned_about_once_naming_the_closest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {_SETLE: "5", "LOCALSTORE_STRESS": "1", "LOCALSTORE_TEST_WORKERS": "2"}
    with caplog.at_level("WARNING", logger="localstore.config"):
        s = load_settings(home=tmp_path, environ=env)
        load_settings(home=tmp_path, environ=env)
    assert s.settle_ms == DEFAULT_SETTLE_MS
    warned = [r.getMessage() for r in caplog.records if r.name == "localstore.config"]
    assert len(warned) == 1, warned  # once, and nothing for the test knobs
    assert _SETLE in warned[0] and "LOCALSTORE_SETTLE_MS" in warned[0]


def test_every_localstore_variable_the_repository_reads_is_a_known_name() -> None:
    import re

    from localstore.config import known_env_vars

    root = Path(__file__).resolve().parents[1]
    files = [p for p in root.glob("*") if p.is_file()]
    for folder in ("localstore", "sync", "tests", "scripts", "bench", "docs"):
        files += [p for p in (root / folder).rglob("*") if p.is_file()]
    used: set[str] = set()
    for path in files:
        if path.suffix in {".pyc", ".db", ".gz", ".png", ".lsbundle"}:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        used |= {m for m in re.findall(r"\bLOCALSTORE_[A-Z0-9_]+", text) if not m.endswith("_")}
    assert {"LOCALSTORE_STRESS", "LOCALSTORE_HOME", "LOCALSTORE_SETTLE_MS"} <= used
    assert used - known_env_vars() == set()


def test_cli_warns_once_on_stderr_about_a_misspelt_variable(home: Path) -> None:
    from click.testing import CliRunner

    from localstore.cli import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["--home", str(home), "init"], env={_PROFLE: "work", _STRES: "1"})
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 2, lines
    assert _PROFLE in lines[0]
    assert "LOCALSTORE_PROFILE" in lines[0] and "LOCALSTORE_STRESS" in lines[1]
    assert "warning" not in r.stdout
    assert r.stderr.count(_PROFLE) == 1  # load_settings does not log it again


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_ensure_sets_modes_only_on_folders_it_creates_but_closes_an_open_state_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `--home ~/projects` chmodded the user's own ~/projects/data and config to 0700.
    home = tmp_path / "projects"
    for name, mode in (("data", 0o755), ("config", 0o750), ("state", 0o755)):
        (home / name).mkdir(parents=True)
        (home / name).chmod(mode)
    paths = load_settings(home=home, environ={}).paths
    with caplog.at_level("WARNING", logger="localstore.config"):
        paths.ensure()
    assert _mode(paths.data) == 0o755 and _mode(paths.config) == 0o750
    # The state folder holds the daemon's token: others may not list or read it.
    assert _mode(paths.state) == 0o700
    warned = [r.getMessage() for r in caplog.records if r.name == "localstore.config"]
    assert len(warned) == 1 and str(paths.state) in warned[0] and "755" in warned[0]
    # Folders it makes are private to the user; a private state folder says nothing.
    caplog.clear()
    fresh = load_settings(home=tmp_path / "new", environ={}).paths
    fresh.ensure()
    fresh.ensure()
    assert {_mode(p) for p in (fresh.data, fresh.config, fresh.state)} == {0o700}
    assert not [r for r in caplog.records if r.name == "localstore.config"]


@pytest.mark.parametrize(
    ("profile", "suggestion"),
    [("work ", "work"), ("a:doctor", "a-doctor"), ("team/x", "team-x"), ("é", "")],
)
def test_a_new_profile_with_an_odd_name_is_refused(
    tmp_path: Path, profile: str, suggestion: str
) -> None:
    # A trailing space was another keychain service; a ':' could reach `localstore:<p>:doctor`.
    from localstore.credentials import CredentialStore
    from localstore.index import Index

    settings = load_settings(home=tmp_path, environ={"LOCALSTORE_PROFILE": profile})
    settings.paths.ensure()
    index = Index(settings.paths.index_db)
    try:
        with pytest.raises(ConfigError, match="profile") as info:
            CredentialStore(index, settings)
        assert repr(profile) in info.value.message
        assert "letters, digits" in info.value.hint
        assert (f"did you mean {suggestion!r}" in info.value.hint) == bool(suggestion)
        for good in ("work", "Team_2.prod-eu"):
            assert CredentialStore(index, settings.replace(profile=good)).list_names() == []
    finally:
        index.close()


def test_a_profile_already_holding_credentials_under_an_odd_name_keeps_working(
    tmp_path: Path,
) -> None:
    from localstore import crypto
    from localstore.credentials import CredentialStore, EncryptedFileBackend, service_name
    from localstore.index import Index

    settings = load_settings(home=tmp_path, environ={}, profile="old name")
    settings.paths.ensure()
    backend = EncryptedFileBackend(
        tmp_path / "creds.enc", "pw", params=crypto.ScryptParams(log2_n=10)
    )
    index = Index(settings.paths.index_db)
    try:
        CredentialStore(index, settings.replace(profile="x"))  # makes the credential tables
        # What an earlier version left: the value in the backend, the name in the index.
        service = service_name("old name")
        backend.set(service, "token", "s3cret")
        with index.write() as cur:
            cur.execute(
                "INSERT INTO credential_names VALUES (?, 'token', '2024-01-01', '2024-01-01')",
                (service,),
            )
        store = CredentialStore(index, settings, backend=backend)
        assert store.list_names() == ["token"] and store.get("token") == "s3cret"
        store.set("other", "v")
        assert store.get("other") == "v"
    finally:
        index.close()


def test_a_text_setting_with_a_nul_is_refused_wherever_it_comes_from(tmp_path: Path) -> None:
    """device_name="a\\x00b" was accepted: it goes to the server and into conflict copies' names."""
    home = tmp_path / "h"
    with pytest.raises(ConfigError, match=r"device_name.*NUL") as info:
        load_settings(home=home, environ={}, device_name="lap\x00top")
    assert info.value.hint
    with pytest.raises(ConfigError, match=r"LOCALSTORE_DEVICE_NAME.*NUL"):
        load_settings(home=home, environ={"LOCALSTORE_DEVICE_NAME": "lap\x00top"})
    assert load_settings(home=home, environ={}, device_name="laptop").device_name == "laptop"


@pytest.mark.parametrize(
    "text",
    ["myapp.rules", "myapp.rules:", ":check", "my-app.rules:check", "myapp:check()", "a:b c"],
)
def test_daemon_validator_must_be_module_colon_function(tmp_path: Path, text: str) -> None:
    """Checked when the settings load, naming the file, not first when the daemon imports it."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(f"daemon_validator: {json.dumps(text)}\n")
    with pytest.raises(ConfigError, match="module:function") as info:
        load_settings(home=tmp_path, environ={})
    assert "config.yaml" in info.value.message and "myapp.rules:validate" in (info.value.hint or "")


def test_daemon_validator_name_needs_a_validator_and_is_a_short_name(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    config = tmp_path / "config/config.yaml"
    config.write_text("daemon_validator_name: rules-1\n")
    with pytest.raises(ConfigError, match="without 'daemon_validator'") as info:
        load_settings(home=tmp_path, environ={})
    assert str(config) in info.value.message
    with pytest.raises(ConfigError, match="without 'daemon_validator'") as info:
        load_settings(home=tmp_path / "other", environ={"LOCALSTORE_DAEMON_VALIDATOR_NAME": "r"})
    assert "LOCALSTORE_DAEMON_VALIDATOR_NAME" in info.value.message
    config.write_text('daemon_validator: "app.rules:check"\ndaemon_validator_name: "a\\tb"\n')
    with pytest.raises(ConfigError, match="control character"):
        load_settings(home=tmp_path, environ={})
    config.write_text(f'daemon_validator: "app.rules:check"\ndaemon_validator_name: {"r" * 201}\n')
    with pytest.raises(ConfigError, match="over 200 characters"):
        load_settings(home=tmp_path, environ={})
    config.write_text('daemon_validator: "app.rules:Rules.check"\ndaemon_validator_name: r-1\n')
    settings = load_settings(home=tmp_path, environ={})
    assert (settings.daemon_validator, settings.daemon_validator_name) == (
        "app.rules:Rules.check",
        "r-1",
    )
    with pytest.raises(ConfigError, match="without 'daemon_validator'"):
        settings.replace(daemon_validator="")
