"""Settings review: every setting from every source, and what a bad config.yaml or value may not do.

Real files in temporary homes and the real CLI in a subprocess (its own environment), no mocks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

import localstore
from localstore.config import _TUNABLES, load_settings
from localstore.errors import ConfigError
from tests.conftest import run_cli

# One row per setting: a value for config.yaml (as YAML text), one for the environment (as text),
# one for the argument (a keyword to open() / load_settings()), and what each of them reads as.
# Each differs from the default and from the others, so the table shows who won.
PRECEDENCE: dict[str, tuple[str, Any, str, Any, Any]] = {
    # name: (file yaml, file value, env text, env value, argument)
    "profile": ("filep", "filep", "envp", "envp", "argp"),
    "device_name": ("file-dev", "file-dev", "env-dev", "env-dev", "arg-dev"),
    "max_yaml_bytes": ("1000", 1000, "2000", 2000, 3000),
    "max_depth": ("10", 10, "20", 20, 30),
    "max_nodes": ("100", 100, "200", 200, 300),
    "busy_timeout_ms": ("1", 1, "2", 2, 3),
    "settle_ms": ("1", 1, "2", 2, 3),
    "delete_grace_ms": ("1", 1, "2", 2, 3),
    "rescan_interval_s": ("1.5", 1.5, "2.5", 2.5, 3.5),
    "remote_fs": ("remote", "remote", "local", "local", "auto"),
    "remote_rescan_interval_s": ("1.5", 1.5, "2.5", 2.5, 3.5),
    "conflict_policy": ("keep-both", "keep-both", "prefer-local", "prefer-local", "prefer-remote"),
    "merge_tool": ("'file %MERGED'", "file %MERGED", "env %MERGED", "env %MERGED", "arg %MERGED"),
    "poll_interval_s": ("1", 1.0, "2", 2.0, 3.0),
    "sync_batch": ("1", 1, "2", 2, 3),
    "kv_hot_items": ("1", 1, "2", 2, 3),
    "kv_hot_bytes": ("1", 1, "2", 2, 3),
    "keychain_file_fallback": ("true", True, "yes", True, False),
    "cloud_url": (
        "https://file.example.com",
        "https://file.example.com",
        "https://env.example.com",
        "https://env.example.com",
        "https://arg.example.com",
    ),
    "cloud_anon_key": ("filekey", "filekey", "envkey", "envkey", "argkey"),
    "daemon_validator": ("'file.rules:check'", "file.rules:check", "env:check", "env:check", "a:b"),
    "daemon_validator_name": ("file-rules", "file-rules", "env-rules", "env-rules", "arg-rules"),
}
# Lines a setting's config.yaml needs besides its own (a validator name names a validator).
NEEDS = {"daemon_validator_name": "daemon_validator: 'app.rules:check'\n"}


def test_the_precedence_table_names_every_setting() -> None:
    assert set(PRECEDENCE) == set(_TUNABLES)


def _home_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config/config.yaml").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", sorted(PRECEDENCE))
def test_each_setting_from_each_source_in_order(tmp_path: Path, name: str) -> None:
    file_yaml, file_value, env_text, env_value, arg = PRECEDENCE[name]
    env = {"LOCALSTORE_" + name.upper(): env_text}
    default = getattr(load_settings(home=tmp_path / "none", environ={}), name)
    home = _home_with(tmp_path / "h", f"{NEEDS.get(name, '')}{name}: {file_yaml}\n")
    assert getattr(load_settings(home=home, environ={}), name) == file_value != default
    assert getattr(load_settings(home=home, environ=env), name) == env_value
    assert getattr(load_settings(home=home, environ=env, **{name: arg}), name) == arg
    # open() takes the same keywords and LOCALSTORE_HOME from the real environment.
    with localstore.open(home, **{name: arg}, reconcile=False, maintenance=False) as store:
        assert getattr(store.settings, name) == arg


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, env=env)


def test_the_cli_reads_the_environment_over_the_file(tmp_path: Path) -> None:
    home = _home_with(tmp_path, "max_depth: 1\n")
    (tmp_path / "doc.yaml").write_text("a:\n  b: 1\n")
    refused = _cli(home, "save", "x", "-f", str(tmp_path / "doc.yaml"))
    assert refused.returncode == 1 and "nested deeper than 1" in refused.stderr
    taken = _cli(home, "save", "x", "-f", str(tmp_path / "doc.yaml"), LOCALSTORE_MAX_DEPTH="5")
    assert taken.returncode == 0, taken.stderr


def _bomb(names: list[str], *, merge: bool) -> str:
    """About 400 bytes whose last setting expands to 9**(len(names)-1) entries."""
    first = "{x: 1}" if merge else "[lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    lines = [f"{names[0]}: &a0 {first}"]
    for i, name in enumerate(names[1:], 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"{name}: &a{i} {{<<: [{refs}]}}" if merge else f"{name}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


# Known names only (an unknown one is refused before any value is looked at); max_depth is
# checked first, and its value is the bomb.
_BOMB_KEYS = [
    "settle_ms",
    "delete_grace_ms",
    "busy_timeout_ms",
    "max_nodes",
    "sync_batch",
    "kv_hot_items",
    "kv_hot_bytes",
    "max_depth",
]


@pytest.mark.parametrize("merge", [False, True], ids=["aliases", "merge-keys"])
def test_a_config_alias_bomb_is_refused_before_it_expands(tmp_path: Path, merge: bool) -> None:
    text = _bomb(_BOMB_KEYS, merge=merge)
    assert len(text) < 520
    home = _home_with(tmp_path, text)
    # Expanded, this was 9**7 (4.8 million) entries: the error quoting the value took 300 MB (one
    # level more, gigabytes), the merge keys' flattening as much. Now refused unexpanded.
    with pytest.raises(ConfigError, match=r"expands to more than|nested deeper than") as info:
        load_settings(home=home, environ={})
    assert "config.yaml" in info.value.message and len(str(info.value)) < 400


def test_a_big_config_file_is_refused_unread(tmp_path: Path) -> None:
    home = _home_with(tmp_path, "# " + "x" * (2 * 1024 * 1024) + "\nsettle_ms: 5\n")
    with pytest.raises(ConfigError, match="over the limit of") as info:
        load_settings(home=home, environ={})
    assert "config.yaml" in info.value.message


def test_a_wrong_value_is_quoted_cut_in_the_error(tmp_path: Path) -> None:
    home = _home_with(tmp_path, f"settle_ms: '{'x' * 100_000}'\n")
    with pytest.raises(ConfigError, match="'settle_ms' must be a whole number") as info:
        load_settings(home=home, environ={})
    assert len(str(info.value)) < 400
    with pytest.raises(ConfigError, match="'device_name' must be text") as info:
        load_settings(home=tmp_path / "x", environ={}, device_name=list(range(100_000)))
    assert len(str(info.value)) < 400


def test_a_config_file_that_is_no_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "config/config.yaml").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is not a file") as info:
        load_settings(home=tmp_path, environ={})
    assert "may read" not in info.value.hint


def test_a_config_file_that_is_a_broken_link_is_no_missing_file(tmp_path: Path) -> None:
    # (Read as absent, every setting in the file it pointed to was silently dropped.)
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").symlink_to(tmp_path / "dotfiles/localstore.yaml")
    with pytest.raises(ConfigError, match=r"link to .*dotfiles/localstore.yaml, which does not"):
        load_settings(home=tmp_path, environ={})
    (tmp_path / "dotfiles").mkdir()
    (tmp_path / "dotfiles/localstore.yaml").write_text("settle_ms: 7\n")
    assert load_settings(home=tmp_path, environ={}).settle_ms == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("busy_timeout_ms", 3_000_000_000),  # OverflowError: overflowed C int, at open
        ("busy_timeout_ms", 10**20),
        ("max_depth", 10**20),  # OverflowError from re at the first save
        ("settle_ms", 10**30),
        ("max_yaml_bytes", 10**30),
        ("sync_batch", 10**30),
        ("poll_interval_s", 1e300),  # past threading.TIMEOUT_MAX: the wait raises
        ("rescan_interval_s", 1e12),
    ],
)
def test_a_value_too_big_to_use_is_refused_at_load(tmp_path: Path, name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=rf"LOCALSTORE_{name.upper()}.*at most"):
        load_settings(home=tmp_path, environ={f"LOCALSTORE_{name.upper()}": str(value)})
    # (YAML 1.1 reads a float only with a dot: 1e+300 is text.)
    text = f"{value:.1e}" if isinstance(value, float) else str(value)
    home = _home_with(tmp_path / "f", f"{name}: {text}\n")
    with pytest.raises(ConfigError, match=r"config.yaml.*at most"):
        load_settings(home=home, environ={})


def test_a_busy_timeout_too_big_is_an_error_that_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "h"
    done = _cli(home, "init", LOCALSTORE_BUSY_TIMEOUT_MS="3000000000")
    assert done.returncode == 1
    assert "LOCALSTORE_BUSY_TIMEOUT_MS" in done.stderr and "unexpected" not in done.stderr
    assert not home.exists()


def test_the_biggest_values_allowed_open_a_store(tmp_path: Path) -> None:
    big: dict[str, Any] = {
        "busy_timeout_ms": 2**31 - 1,
        "max_depth": 2**31 - 1,
        "settle_ms": 2**31 - 1,
        "poll_interval_s": 2_678_400.0,
    }
    with localstore.open(tmp_path, **big) as store:
        store.save("a/b", "a:\n  b: 1\n")
        assert store.load("a/b").content == "a:\n  b: 1\n"


@pytest.mark.parametrize("value", ["desk\nevil", "desk\x1b[31m", "desk\x7f", "desk\u0085"])
def test_a_device_name_with_a_control_character_is_refused_naming_the_source(
    tmp_path: Path, value: str
) -> None:
    # It is written into conflict copies' names, bundles' manifests and the server's rows.
    with pytest.raises(ConfigError, match=r"LOCALSTORE_DEVICE_NAME.*control character"):
        load_settings(home=tmp_path, environ={"LOCALSTORE_DEVICE_NAME": value})
    escaped = value.encode("unicode_escape").decode()
    home = _home_with(tmp_path / "f", f'device_name: "{escaped}"\n')
    with pytest.raises(ConfigError, match=r"config.yaml.*control character"):
        load_settings(home=home, environ={})
    assert load_settings(home=home / "x", environ={}, device_name="Desk é 2").device_name
