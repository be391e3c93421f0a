"""Export with a wall clock outside what a zip entry's date can hold."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from localstore import _bundle_write, archive

from .conftest import StoreFactory, populate, tree


@pytest.mark.parametrize(
    ("clock", "stamped"),
    [
        # A board without a battery-backed clock, before NTP answers.
        (datetime(1970, 1, 1, 0, 5, tzinfo=UTC), (1980, 1, 1, 0, 0, 0)),
        (datetime(2150, 6, 1, 12, 0, tzinfo=UTC), (2107, 12, 31, 23, 59, 58)),
    ],
    ids=["1970", "2150"],
)
def test_export_with_a_clock_outside_the_zip_range_round_trips(
    stores: StoreFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: datetime,
    stamped: tuple[int, ...],
) -> None:
    src = stores("src")
    ids = populate(src, 3)

    class _Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return clock

    monkeypatch.setattr(_bundle_write, "datetime", _Clock)  # fault injection: the wall clock
    out = tmp_path / "all.lsbundle"
    assert sorted(archive.export_bundle(src, out).ids) == sorted(ids)
    monkeypatch.undo()
    with zipfile.ZipFile(out) as zf:
        assert {i.date_time for i in zf.infolist()} == {stamped}
    dst = stores("dst")
    assert archive.import_bundle(dst, out).counts() == {"create": 3}
    assert tree(dst) == tree(src)
