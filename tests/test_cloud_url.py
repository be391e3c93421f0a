"""The project URL (cloud_url, `login --url`): refused at load when no http(s) URL with a host,
warned about when plain http goes to another machine. Real files, the real CLI, no network."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localstore.config import load_settings
from localstore.errors import ConfigError
from tests.conftest import run_cli

# Each is refused before any request: before, they loaded and failed first when sync started.
BAD_URLS = [
    ("ftp://x", "absolute http"),
    ("not a url", "absolute http"),
    ("supabase.example.com", "absolute http"),
    ("https://", "absolute http"),
    ("https://:443", "no host"),
    ("https://h/?apikey=1", "no query"),
    ("https://h/#top", "no query"),
    ("https://h:99999", "not a valid URL"),
    ("https://exa mple.com", "without spaces"),
]


def _home_with(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config/config.yaml").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("url", "problem"), BAD_URLS)
def test_a_bad_cloud_url_is_refused_naming_its_source(
    tmp_path: Path, url: str, problem: str
) -> None:
    home = _home_with(tmp_path / "h", f"cloud_url: {url!r}\n")
    with pytest.raises(ConfigError, match=problem) as info:
        load_settings(home=home, environ={})
    assert str(home / "config/config.yaml") in info.value.message
    assert "https://" in (info.value.hint or "")
    env = {"LOCALSTORE_CLOUD_URL": url}
    with pytest.raises(ConfigError, match=f"LOCALSTORE_CLOUD_URL.*{problem}"):
        load_settings(home=tmp_path / "e", environ=env)
    with pytest.raises(ConfigError, match=f"argument.*{problem}"):
        load_settings(home=tmp_path / "a", environ={}, cloud_url=url)
    s = load_settings(home=tmp_path / "a", environ={})
    with pytest.raises(ConfigError, match=problem):
        s.replace(cloud_url=url)


def test_credentials_in_the_url_are_refused_and_not_repeated(tmp_path: Path) -> None:
    """The URL is logged and shown by status and doctor: a password in it would be too."""
    url = "https://alice:s3cret@abc.supabase.co"
    with pytest.raises(ConfigError, match="user name or password") as info:
        load_settings(home=tmp_path, environ={"LOCALSTORE_CLOUD_URL": url})
    assert "s3cret" not in info.value.message + (info.value.hint or "")


@pytest.mark.parametrize(
    "url",
    [
        "https://abc.supabase.co",
        "https://abc.supabase.co/",  # the trailing slash is stripped where the URL is used
        "HTTPS://ABC.supabase.co:8443/base",
        "http://192.168.1.20:8000",  # self-hosted on a LAN: warned about, not refused
        "http://127.0.0.1:54321",
        "http://[::1]:54321",
    ],
)
def test_a_good_cloud_url_loads(tmp_path: Path, url: str) -> None:
    assert load_settings(home=tmp_path, environ={"LOCALSTORE_CLOUD_URL": url}).cloud_url == url


def _cli(home: Path, *args: str, input: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, env=env, stdin=input or None)


def test_the_cli_names_the_config_file_with_a_bad_cloud_url(tmp_path: Path) -> None:
    home = _home_with(tmp_path / "h", "cloud_url: ftp://files.example.com\n")
    r = _cli(home, "status")
    assert r.returncode == 1
    assert "config.yaml" in r.stderr and "cloud_url" in r.stderr
    assert "http:// or https://" in r.stderr and "Traceback" not in r.stderr


def _login(home: Path, url: str) -> subprocess.CompletedProcess[str]:
    # No password on stdin: the prompt reads end of file and stops, so no request is made (or
    # the keychain check stops it first, where there is no keychain).
    return _cli(home, "login", "--url", url, "--anon-key", "k", "--email", "a@example.test")


@pytest.mark.parametrize("url", ["ftp://x", "not a url", "https://u:pw@h.example.com"])
def test_login_refuses_a_bad_url_naming_the_flag(tmp_path: Path, url: str) -> None:
    r = _login(tmp_path / "h", url)
    assert r.returncode == 1, r.stderr
    assert "--url" in r.stderr and "Traceback" not in r.stderr
    assert "pw@" not in r.stderr
    assert not (tmp_path / "h").exists()  # refused before the keychain made the home


def test_login_warns_of_plain_http_to_another_machine(tmp_path: Path) -> None:
    r = _login(tmp_path / "h", "http://192.168.1.20:8000")
    assert "warning:" in r.stderr and "plain http" in r.stderr
    assert "unencrypted" in r.stderr and "use https" in r.stderr


@pytest.mark.parametrize(
    "url",
    ["https://192.168.1.20", "http://127.0.0.1:54321", "http://localhost:8000/", "http://[::1]"],
)
def test_login_does_not_warn_for_https_or_this_machine(tmp_path: Path, url: str) -> None:
    r = _login(tmp_path / "h", url)
    assert "plain http" not in r.stderr, r.stderr


def test_doctor_warns_of_a_plain_http_cloud_url(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert _cli(home, "init").returncode == 0
    r = _cli(home, "doctor", LOCALSTORE_CLOUD_URL="http://192.168.1.20:8000")
    cloud = next(line for line in r.stdout.splitlines() if "] cloud:" in line)
    assert "plain http" in cloud and "unencrypted" in cloud, r.stdout
    assert "serve the project over https" in r.stdout
    r = _cli(home, "doctor", LOCALSTORE_CLOUD_URL="https://192.168.1.20:8000")
    assert "plain http" not in r.stdout
