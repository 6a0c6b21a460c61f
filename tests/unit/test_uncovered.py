from pathlib import Path

import pytest

from synco.snapshot_store import uncovered
from tests.support.cli import write_tree


@pytest.mark.parametrize(
    ("directories", "expected"),
    [
        (["."], []),
        (["etc", "home/u"], ["home/v", "srv", "top-file"]),
        (["home"], ["etc", "srv", "top-file"]),
        (["home/u/deep"], ["etc", "home/u/other", "home/v", "srv", "top-file"]),
    ],
)
def test_uncovered(tmp_path: Path, directories: list[str], expected: list[str]) -> None:
    write_tree(tmp_path, {"etc/a": "1", "home/u/deep/b": "2", "home/u/other": "3", "home/v/c": "4",
                          "srv/d": "5", "top-file": "6", ".synco-snapshot/meta.json": "{}"})  # fmt: skip
    assert uncovered(tmp_path, directories) == expected
