"""_listing.below(): the one key range of what is below a folder, used by the store's folder
filter (list, search) and by the watcher's deletes of a folder moved out
(tests/store/test_api_input_edges.py and tests/watcher/test_moves.py check both callers with
emoji sub-folders). Checked here against SQLite's own text order (UTF-8 bytes), which is not
Python's for every string: the old bound F/\\uffff was below every name starting above U+FFFF."""

from __future__ import annotations

import apsw
from hypothesis import example, given
from hypothesis import strategies as st

from localstore._listing import below

# Folder and path names: any character a path may hold (no surrogates, no NUL), '/' often.
_NAMES = st.text(
    alphabet=st.one_of(
        st.sampled_from("/-.0aé😀\U0010fffd\uffff"),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    max_size=8,
)


@example(folder="a", key="a/\uffff")
@example(folder="a", key="a/😀")
@given(folder=_NAMES.filter(lambda f: f and not f.endswith("/")), key=_NAMES)
def test_the_range_holds_exactly_the_keys_below_the_folder(folder: str, key: str) -> None:
    low, high = below(folder)
    conn = apsw.Connection(":memory:")
    try:
        ((inside,),) = conn.execute("SELECT ?2 >= ?1 AND ?2 < ?3", (low, key, high)).fetchall()
    finally:
        conn.close()
    assert bool(inside) == key.startswith(folder + "/")


def test_emoji_and_the_last_code_points_are_below_and_neighbours_are_not() -> None:
    low, high = below("box")
    conn = apsw.Connection(":memory:")
    try:
        for key, inside in [
            ("box/\U0001f600 sub/b", True),
            ("box/\U0010fffd", True),
            ("box/\uffff", True),
            ("box/", True),
            ("box", False),
            ("box0/e", False),
            ("box-b/x", False),
            ("box.b/x", False),
        ]:
            found = conn.execute("SELECT ?2 >= ?1 AND ?2 < ?3", (low, key, high)).fetchall()
            assert bool(found[0][0]) == inside, key
    finally:
        conn.close()
