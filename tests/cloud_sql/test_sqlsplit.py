"""split_statements cuts a file where `supabase db push` cuts it (supabase/cli pkg/parser).

The expectations are the CLI's behaviour, quirks included: the local runner must refuse what the
CLI would send broken, and accept what it sends whole.
"""

from __future__ import annotations

import pytest

from sync.localcloud.sqlsplit import split_statements

CASES = [
    # plain statements; trailing ';' and whitespace go, empty pieces are dropped
    ("create table a (x int);\n\n select 1 ;;", ["create table a (x int)", "select 1"]),
    # a ';' in a line comment, a block comment (nested) or a quoted string does not cut
    ("select 1 -- not; here\n;select 2", ["select 1 -- not; here", "select 2"]),
    ("select /* a; /* b; */ c; */ 1; select 2", ["select /* a; /* b; */ c; */ 1", "select 2"]),
    ("select 'a;''b;'; select \"x;y\"", ["select 'a;''b;'", 'select "x;y"']),
    # dollar quotes, named or not, hold anything up to the same tag
    (
        "do $$ begin perform 1; end $$; create function f() returns int language sql as"
        " $body$ select 1; $body$;",
        [
            "do $$ begin perform 1; end $$",
            "create function f() returns int language sql as $body$ select 1; $body$",
        ],
    ),
    # parentheses and BEGIN ATOMIC bodies hold their ';'
    (
        "create rule r as on update to t do (notify t; select 1); select 2",
        ["create rule r as on update to t do (notify t; select 1)", "select 2"],
    ),
    (
        "create function g() returns int language sql begin  atomic select 1; end; select 3",
        ["create function g() returns int language sql begin  atomic select 1; end", "select 3"],
    ),
    # a trailing comment is a piece of its own (Postgres answers it as an empty query)
    ("select 1;\n-- the end\n", ["select 1", "-- the end"]),
    # Quirks that differ from Postgres: a backslash inside E'' does not escape the quote, so
    # the CLI cuts inside the string; the first ')' after nested parentheses closes them all.
    ("select E'it\\'s; fine'", ["select E'it\\'s", "fine'"]),
    ("select ((1); 2)", ["select ((1)", "2)"]),
]


@pytest.mark.parametrize(("sql", "expected"), CASES)
def test_it_cuts_where_the_supabase_cli_cuts(sql: str, expected: list[str]) -> None:
    assert split_statements(sql) == expected
