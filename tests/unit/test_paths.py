import pytest
from hypothesis import given
from hypothesis import strategies as st

from synco.core.paths import normalize_relative


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".", "."),
        ("./", "."),
        ("http", "http"),
        ("srv/http/", "srv/http"),
        ("a/../b", "b"),
        ("a/./b//c", "a/b/c"),
        ("with space/ünï'cøde\"", "with space/ünï'cøde\""),
        ("a/b/../..", "."),
    ],
)
def test_normalizes(path: str, expected: str) -> None:
    assert normalize_relative(path) == expected


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc", "absolute"),
        ("..", "escapes"),
        ("a/../../b", "escapes"),
        ("../srv", "escapes"),
        ("", "empty"),
        ("a\0b", "NUL"),
        ("a\nb", "newline"),
    ],
)
def test_rejects(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_relative(path)


@given(st.lists(st.sampled_from(["a", "b", "..", ".", ""]), min_size=1, max_size=8))
def test_never_escapes(parts: list[str]) -> None:
    path = "/".join(parts)
    try:
        normalized = normalize_relative(path)
    except ValueError:
        return
    assert not normalized.startswith("/")
    assert normalized == "." or ".." not in normalized.split("/")
