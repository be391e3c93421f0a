"""Settings: one precedence rule (flag > env > config.yaml > default), typed, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from localstore.config import DEFAULT_SETTLE_MS, load_settings, resolve
from localstore.errors import ConfigError


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
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/config.yaml").write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_settings(home=tmp_path, environ={})


def test_bad_env_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LOCALSTORE_SETTLE_MS"):
        load_settings(home=tmp_path, environ={"LOCALSTORE_SETTLE_MS": "soon"})
    with pytest.raises(ConfigError, match="unknown"):
        load_settings(home=tmp_path, environ={}, not_a_setting=1)
