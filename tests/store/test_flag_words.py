"""A row flagged by an older localstore gets today's reason, with what to do, at the next open.

Before session 25 a flag's reason was the error's message alone; the reason is stored, and a row
is flagged again only when its file changes, so an upgraded home's check and status showed its
old flags without a hint until each file was edited (localstore/_flag_words.py).
"""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

import localstore
from localstore._flag_words import FLAG_WORDS, FLAG_WORDS_KEY
from localstore._reconcile import flag_reason
from localstore.blueprint import check_yaml, decode_meta
from localstore.errors import LocalStoreError

DOC = "steps: [a]\n"
UTF16 = "steps: [a, b]\n".encode("utf-16-le")
BAD_META = b"{not json"


def _refusal(case: str) -> LocalStoreError:
    """The error today's code refuses the case's file with (and the older code did)."""
    try:
        if case == "yaml":
            check_yaml(UTF16)
        else:
            decode_meta(BAD_META, source="old.blueprint.meta.json")
    except LocalStoreError as exc:
        return exc
    raise AssertionError("not refused")


def _older_words(case: str) -> str:
    """The reason as localstore wrote it before session 25 (30bd551): the message, no hint."""
    message = _refusal(case).message
    return f"invalid meta file: {message}" if case == "meta" else message


def _flag_as_older_code_did(home: Path, case: str) -> tuple[str, str]:
    """A home with blueprint 'old' flagged in the older words: (its id, those words)."""
    with localstore.open(home=home) as store:
        bp = store.save("old", DOC)
        if case == "yaml":
            store.abspath(bp.path).write_bytes(UTF16)
        else:
            store.abspath("old.blueprint.meta.json").write_bytes(BAD_META)
        store.check(fix=True)
        assert store.row(bp.id).flagged  # (flagged, in today's words)
    older = _older_words(case)
    conn = apsw.Connection(str(home / "data/index.db"))
    conn.execute("UPDATE blueprints SET flagged = ? WHERE id = ?", (older, bp.id))
    conn.execute("DELETE FROM settings WHERE key = ?", (FLAG_WORDS_KEY,))  # (older: none)
    conn.close()
    return bp.id, older


@pytest.mark.parametrize("case", ["yaml", "meta"])
def test_an_older_flag_gets_todays_reason_with_the_hint_at_the_next_open(
    home: Path, case: str
) -> None:
    bp_id, older = _flag_as_older_code_did(home, case)
    today = flag_reason(_refusal(case), "old.blueprint.yaml")
    assert today != older and today.startswith(older)  # (the hint, added)
    with localstore.open(home=home) as store:
        assert store.row(bp_id).flagged == today
        flagged = [p for p in store.check().problems if p["kind"] == "flagged"]
        assert flagged == [{"kind": "flagged", "path": "old.blueprint.yaml", "detail": today}]
        assert store.load(bp_id).content == DOC  # (the last good version is kept)
        assert len(store.history(bp_id)) == 1


def test_check_fix_run_first_after_the_upgrade_reports_todays_reason(home: Path) -> None:
    """check --fix opens without the open's reconcile: its own pass rewords the flag, and its
    report (taken before the pass's fix) said the old words."""
    bp_id, _ = _flag_as_older_code_did(home, "yaml")
    today = flag_reason(_refusal("yaml"), "old.blueprint.yaml")
    with localstore.open(home=home, reconcile=False) as store:
        report = store.check(fix=True)
        assert [p["detail"] for p in report.problems if p["kind"] == "flagged"] == [today]
        assert store.row(bp_id).flagged == today


def _row_commits(home: Path) -> int:
    """How many commits changed blueprint rows (the index's blueprints_gen counter)."""
    with localstore.open(home=home, reconcile=False) as store, store.index.read() as cur:
        sql = "SELECT value FROM counters WHERE name = 'blueprints_gen'"
        return int(cur.execute(sql).fetchall()[0][0])


def test_flags_are_read_again_once_not_at_every_open(home: Path) -> None:
    """Once the home's flags are in today's words, an open leaves flagged rows alone (read
    again at every open, each open took the write lock and rewrote every flagged row)."""
    _flag_as_older_code_did(home, "yaml")
    localstore.open(home=home).close()  # (the open that rewords)
    before = _row_commits(home)
    for _ in range(2):
        localstore.open(home=home).close()
    assert _row_commits(home) == before
    with localstore.open(home=home) as store:
        assert store.index.get_setting(FLAG_WORDS_KEY) == str(FLAG_WORDS)


def test_a_damaged_words_number_rewords_instead_of_stopping_the_open(home: Path) -> None:
    bp_id, _ = _flag_as_older_code_did(home, "yaml")
    conn = apsw.Connection(str(home / "data/index.db"))
    conn.execute("INSERT INTO settings VALUES (?, 'x2')", (FLAG_WORDS_KEY,))
    conn.close()
    with localstore.open(home=home) as store:
        assert store.row(bp_id).flagged == flag_reason(_refusal("yaml"), "old.blueprint.yaml")
        assert store.index.get_setting(FLAG_WORDS_KEY) == str(FLAG_WORDS)
