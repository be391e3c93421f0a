"""A word holding a private-use character (a Powerline or Nerd Font glyph, as in a prompt's
branch name) is found as it is indexed.

SQLite's unicode61 tokenizer keeps private-use characters in words ("L* N* Co"); the query
builder split them off, so the word as written, or without the glyph, found nothing, and the
glyph alone was "nothing to search for".
"""

from __future__ import annotations

from pathlib import Path

import pytest

import localstore

GLYPH = "\ue0a0"  # (Powerline's branch symbol, in the Private Use Area)


@pytest.mark.parametrize("query", [f"{GLYPH}main", f"deploy {GLYPH}main", f'"{GLYPH}main"', GLYPH])
def test_a_word_with_a_private_use_glyph_is_found(tmp_path: Path, query: str) -> None:
    with localstore.open(home=tmp_path / "home") as store:
        bp = store.save("ops/deploy", f"name: deploy\nbranch: {GLYPH}main\n")
        store.save("ops/other", "name: other\nbranch: main\n")
        assert [hit.info.id for hit in store.search(query)] == [bp.id]
