"""Master and current-server decisions, as tables."""

from __future__ import annotations

import pytest

from synco.core.errors import ResolutionError
from synco.core.model import Directory, Script, Server
from synco.core.resolution import (
    CurrentDecision,
    HostAnswer,
    LocalIdentity,
    choose_current,
    choose_master,
    is_local,
    normalize_name,
)


def script(master: str, *servers: Server) -> Script:
    return Script(servers=servers, directories=(Directory("."),), master=master)


S01 = Server("s01", "/srv", host="s01.example.com")
S02 = Server("s02", "/srv", host="S02.Example.com.")
ANSWERS = {
    "s01": HostAnswer("s01.example.com", "s01.example.com", frozenset({"192.0.2.1", "2001:db8::1"})),
    "s02": HostAnswer("S02.Example.com.", "s02.example.com", frozenset({"192.0.2.2"})),
}
HERE = LocalIdentity(frozenset({"s02", "s02.example.com"}), frozenset({"192.0.2.2", "127.0.0.1"}))


@pytest.mark.parametrize(("name", "expected"), [("A.Example.COM.", "a.example.com"), (" b. ", "b")])
def test_normalize_name(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


def test_master_by_server_name() -> None:
    decision = choose_master(script("s02", S01, S02), None, {})
    assert decision.server == "s02"
    assert "named in the script" in decision.reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # a CNAME to the server's host, compared case-insensitively without the trailing dot
        (HostAnswer("www.example.com", "S01.EXAMPLE.COM.", frozenset({"192.0.2.1"})), "s01"),
        # the server's host written differently from its canonical name
        (HostAnswer("www.example.com", "s02.example.com", frozenset({"192.0.2.2"})), "s02"),
        # A records only: matched by a shared address
        (HostAnswer("www.example.com", "www.example.com", frozenset({"2001:db8::1"})), "s01"),
    ],
)
def test_master_by_dns(answer: HostAnswer, expected: str) -> None:
    decision = choose_master(script("www.example.com", S01, S02), answer, ANSWERS)
    assert decision.server == expected
    assert decision.answer == answer


def test_master_matching_nothing_names_the_servers() -> None:
    answer = HostAnswer("www.example.com", "www.example.com", frozenset({"198.51.100.1"}))
    with pytest.raises(ResolutionError, match="matches no server") as error:
        choose_master(script("www.example.com", S01, S02), answer, ANSWERS)
    assert "s01=" in str(error.value) and "s02=" in str(error.value)


def test_master_matching_two_servers_is_ambiguous() -> None:
    twin = Server("s03", "/other", host="s01.example.com")
    answers = {**ANSWERS, "s03": ANSWERS["s01"]}
    answer = HostAnswer("www.example.com", "s01.example.com", frozenset({"192.0.2.1"}))
    with pytest.raises(ResolutionError, match="ambiguous: servers s01, s03"):
        choose_master(script("www.example.com", S01, S02, twin), answer, answers)


def test_current_from_as() -> None:
    assert choose_current(script("s01", S01, S02), "s01", HERE, ANSWERS).server == "s01"
    with pytest.raises(ResolutionError, match="no such server; servers are s01, s02"):
        choose_current(script("s01", S01, S02), "s09", HERE, ANSWERS)


def test_current_by_names_and_addresses() -> None:
    assert choose_current(script("s01", S01, S02), None, HERE, ANSWERS).server == "s02"
    elsewhere = LocalIdentity(frozenset({"ctl"}), frozenset({"198.51.100.7"}))
    decision = choose_current(script("s01", S01, S02), None, elsewhere, ANSWERS)
    assert decision.server is None


def test_current_ambiguous_names_candidates() -> None:
    everywhere = LocalIdentity(frozenset(), frozenset({"192.0.2.1", "192.0.2.2"}))
    with pytest.raises(ResolutionError, match="pass --as") as error:
        choose_current(script("s01", S01, S02), None, everywhere, ANSWERS)
    assert error.value.problems == ("s01", "s02")


def test_hostless_servers_are_this_machine_and_not_ambiguous() -> None:
    a, b = Server("a", "/a"), Server("b", "/b")
    decision = choose_current(script("a", a, b), None, HERE, {})
    assert decision.server == "a"
    assert is_local(b, decision, script("a", a, b))


def test_locality_follows_the_login() -> None:
    here = Server("here", "/a")
    same = Server("same", "/b", host="h.example", port=22)
    twin = Server("twin", "/c", host="H.example.", port=22)
    other_port = Server("other", "/d", host="h.example", port=2222)
    s = script("here", here, same, twin, other_port)
    current = CurrentDecision("same", "test")
    assert is_local(here, current, s)
    assert is_local(twin, current, s)
    assert not is_local(other_port, current, s)
    assert not is_local(same, CurrentDecision(None, "controller"), s)
