"""Which words a home's flag reasons are in, so rows flagged by an older localstore get today's.

A flagged row keeps its reason (``_reconcile_problems.flag_reason``) in the index, and check,
status, the daemon's ``flagged_files`` and the watcher's events show that stored text: one reason,
one place. A row is flagged again only when its file changes, so a reason stored in older words
stayed in them: a home upgraded from before the reasons carried a hint (what to do with the
file) showed its old flags without one until each file was edited.

``FLAG_WORDS`` numbers the words this version writes; the home's settings keep the number its
flags are in (no key: 1). While it is older, the next full pass that may write (an open's
reconcile, ``check --fix``) reads its flagged files again, which flags them anew in today's
words (or takes a file that is valid by today's rules), then notes the number: once per home,
so an open never reads flagged files otherwise. Rejected: working the reason out again each
time it is shown (status reads only the index, and every reader would have to read the files),
and a core schema step (it cannot read files, and would keep an older localstore out of the
index, and a read-only open out of an older backup, for the sake of a sentence).
"""

from __future__ import annotations

from typing import Any

# 1: the error's message alone (before session 25); 2: with the hint in a file's words. Raise it
# whenever flag_reason's words change.
FLAG_WORDS = 2
FLAG_WORDS_KEY = "flag_words"


def flags_in_older_words(cur: Any) -> bool:
    """Whether the home's flags may be in words older than today's (its caller knows that some
    row is flagged: the pass has every live row at hand)."""
    rows = cur.execute("SELECT value FROM settings WHERE key = ?", (FLAG_WORDS_KEY,)).fetchall()
    # (A value that is no number, hand-edited or damaged, must not stop the open: read again.)
    return not rows or not str(rows[0][0]).isdigit() or int(rows[0][0]) < FLAG_WORDS


def note_flag_words(cur: Any) -> None:
    """Note that the home's flags are in today's words (inside the pass's write transaction)."""
    cur.execute(
        "INSERT INTO settings VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (FLAG_WORDS_KEY, str(FLAG_WORDS)),
    )
