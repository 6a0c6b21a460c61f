from datetime import UTC, datetime

import pytest

from synco.core.snapshot_names import parse_name, snapshot_name

MOMENT = datetime(2026, 11, 26, 4, 5, 6, tzinfo=UTC)


def test_round_trip() -> None:
    assert snapshot_name(MOMENT, set()) == "2026.11.26-04.05.06"
    assert parse_name("2026.11.26-04.05.06") == (MOMENT, 0)


def test_collision_gets_a_suffix_that_still_parses() -> None:
    taken = {"2026.11.26-04.05.06", "2026.11.26-04.05.06_1"}
    name = snapshot_name(MOMENT, taken)
    assert name == "2026.11.26-04.05.06_2"
    assert parse_name(name) == (MOMENT, 2)


@pytest.mark.parametrize(
    "name",
    [
        "latest",
        "latest.snapshot",
        "2026.11.26-04.05.6",
        "2026.11.26-04.05.06_0",
        "x2026.11.26-04.05.06",
        ".synco-deleting.2026.11.26-04.05.06",
        "2026.13.26-04.05.06",
        "2026.11.26-04.05.06_a",
        "a/b",
    ],
)
def test_not_snapshot_names(name: str) -> None:
    assert parse_name(name) is None


def test_custom_format() -> None:
    assert parse_name("backup-20261126", "backup-%Y%m%d") == (datetime(2026, 11, 26, tzinfo=UTC), 0)
    with pytest.raises(ValueError):
        snapshot_name(MOMENT, set(), "%Y/%m")
