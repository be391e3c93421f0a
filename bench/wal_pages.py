"""Which b-trees a durable save writes: index pages appended to the WAL per update, by table/index.

Fills a store, checkpoints, saves K updates, then reads the WAL frame headers (each names its page)
and maps pages to b-trees with SQLite's dbstat table.

    .venv/bin/python bench/wal_pages.py            # 2,000 blueprints, 30 updates
"""

from __future__ import annotations

import argparse
import collections
import random
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store import WORDS, make_doc

import localstore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=30)
    args = ap.parse_args()
    rng = random.Random(42)
    home = Path(tempfile.mkdtemp(prefix="ls-wal-")) / "home"
    with localstore.open(home=home) as store:
        docs = [make_doc(rng, i) for i in range(args.n)]
        with store.index.write():
            for i, d in enumerate(docs):
                store.save(f"f{i % 50}/workflow-{i}", d, tags=[WORDS[i % 7]])
        conn = store.index.conn
        conn.execute("INSERT INTO blueprints_fts(blueprints_fts) VALUES ('optimize')")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        for k in range(args.updates):
            i = rng.randrange(args.n)
            store.save(f"f{i % 50}/workflow-{i}", docs[i] + f"# edit {k}\n")
        page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        assert isinstance(page_size, int), page_size
        data = (home / "data" / "index.db-wal").read_bytes()
        frames, off = [], 32  # WAL header, then frames: 24-byte header (page number first)
        while off + 24 + page_size <= len(data):
            frames.append(struct.unpack(">I", data[off : off + 4])[0])
            off += 24 + page_size
        owner = {pageno: name for pageno, name in conn.execute("SELECT pageno, name FROM dbstat")}
    counts = collections.Counter(owner.get(p, "(new page)") for p in frames)
    print(f"WAL pages per update: {len(frames) / args.updates:.1f}")
    for name, count in counts.most_common():
        print(f"  {name:35} {count / args.updates:6.2f}")


if __name__ == "__main__":
    main()
