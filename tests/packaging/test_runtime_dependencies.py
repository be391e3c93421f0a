"""Every third-party module the installed package imports comes with `pip install localstore`:
its distribution is a runtime dependency of pyproject.toml or one of theirs (with the extras they
are asked for), never only the `test` extra. The dev loop installs `.[test]`, so a module that only
the test extra brings works in every test and is missing in every user's install (psutil did so:
the daemon's RSS and open-files gauges were absent outside the dev venv)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("localstore", "sync")


def _imported_top_level_modules() -> dict[str, str]:
    """Top-level module name -> one file importing it (for the message), over localstore/, sync/.
    Guarded imports (try/except ImportError) count too: the code they guard is meant to run."""
    found: dict[str, str] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def _runtime_closure() -> set[str]:
    """The distributions `pip install localstore` brings: the declared dependencies and, through
    the installed metadata, theirs, following the extras each requirement names."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    todo = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        for text in metadata.requires(req.name) or []:
            dep = Requirement(text)
            if dep.marker is None:
                todo.append(dep)
                continue
            # The base requirements and those of the extras asked for (psycopg[pool]).
            if any(dep.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(dep)
    return names


def test_every_imported_third_party_module_is_a_runtime_dependency() -> None:
    closure = _runtime_closure()
    dists_of = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing: list[str] = []
    for module, where in sorted(_imported_top_level_modules().items()):
        if module in stdlib or module in PACKAGES or module == "__future__":
            continue
        dists = {canonicalize_name(d) for d in dists_of.get(module, [])}
        assert dists, f"{module} (imported in {where}) is not installed in the dev venv"
        if not dists & closure:
            missing.append(f"{module} ({sorted(dists)}, imported in {where})")
    assert missing == [], "imported but not a runtime dependency: " + "; ".join(missing)
