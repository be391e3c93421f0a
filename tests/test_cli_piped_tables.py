"""Lists piped or redirected: plain aligned lines with every cell whole.

rich drew its tables 80 columns wide when stdout was not a terminal and folded long paths in the
middle of a word (``team/pre.blueprint`` / ``.yaml``), so `localstore ls | grep NAME.yaml` and a
copy of the path missed. The CLI runs in a process of its own, its stdout a pipe.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli

LONG = "team/pre-production/deployments/a-rather-long-blueprint-name-for-the-staging-cluster"


def test_ls_search_and_history_keep_long_paths_whole(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = f"{LONG}.blueprint.yaml"
    assert run_cli(home, "save", path, stdin="steps: [deploy]\n").returncode == 0
    assert run_cli(home, "mv", path, f"{LONG}-2.blueprint.yaml").returncode == 0
    for args, wanted in (
        (["ls"], f"{LONG}-2.blueprint.yaml"),
        (["search", "deploy"], f"{LONG}-2.blueprint.yaml"),
        (["history", f"{LONG}-2.blueprint.yaml"], path),
    ):
        done = run_cli(home, *args)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        lines = out.splitlines()
        assert any(wanted in line for line in lines), (args, out)
        assert not any(c in out for c in "│┃━─"), out  # no table drawing in a pipe
        assert lines[1].split()[0] in ("path", "rev"), out  # the header line under the title
