"""Assemble docs/benchmarks.md from the per-topic result pages in docs/benchmarks/.

    .venv/bin/python bench/report.py

The summary table at the top is kept by hand in docs/benchmarks/_summary.md (goals vs the latest
measured figures); every topic page carries the exact command that produced its numbers.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "benchmarks"
ORDER = [
    "store",
    "yaml",
    "kv",
    "watcher",
    "bundles",
    "cloud_sql",
    "cloud",
    "sync",
    "sync-cloud",
    "daemon",
]


def main() -> None:
    parts = [(PAGES / "_summary.md").read_text(encoding="utf-8").rstrip() + "\n"]
    pages = {p.stem: p for p in PAGES.glob("*.md") if not p.stem.startswith("_")}
    for stem in [s for s in ORDER if s in pages] + sorted(set(pages) - set(ORDER)):
        text = pages[stem].read_text(encoding="utf-8").strip()
        # Demote the page's headings one level so they nest under this document's title.
        lines = ["#" + line if line.startswith("#") else line for line in text.splitlines()]
        parts.append("\n".join(lines) + "\n")
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
