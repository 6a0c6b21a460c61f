"""When the agents fail over on their own (and why not), witnesses and votes, and the timings
`synco check` refuses."""

from __future__ import annotations

import pytest

from synco.cli.check import failover_line
from synco.config import parse_script
from synco.core.failover import election_timing, failover_off
from synco.core.model import Role, Script

SERVERS = {
    "s01": 'root = "/srv/a"\nhost = "s01.example.test"',
    "s02": 'root = "/srv/b"\nhost = "s02.example.test"',
    "s03": 'root = "/srv/c"\nhost = "s03.example.test"',
}
DNS = '[dns]\nzone = "example.test"\nkey_file = "/etc/synco/tsig.key"\n'


def script(
    master: str = "master.example.test",
    dns: str = DNS,
    agent: str = "",
    servers: dict[str, str] | None = None,
) -> tuple[Script | None, list[str]]:
    tables = "".join(
        f'[servers.{name}]\n{body}\nagent = "127.0.0.1:{7500 + i}"\n'
        for i, (name, body) in enumerate((servers or SERVERS).items())
    )
    text = (
        f'master = "{master}"\n{dns}[agent]\ninsecure = true\n{agent}\n{tables}'
        '[[directories]]\npath = "srv"\n'
    )
    parsed, problems = parse_script(text)
    return parsed, [str(p) for p in problems]


def test_three_voters_with_a_dns_master_fail_over() -> None:
    parsed, problems = script()
    assert parsed is not None, problems
    assert failover_off(parsed) is None
    assert parsed.voters == ("s01", "s02", "s03")
    assert failover_line(parsed) == (
        "automatic failover: on (3 voters: s01, s02, s03; lease 2.1 s renewed every 0.7 s, "
        "at most one failover per 30 s)"
    )
    timing = election_timing(parsed.agent)  # type: ignore[arg-type]
    assert (timing.heartbeat, timing.lease, timing.margin) == (0.7, 2.1, 0.25)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"master": "s01", "dns": ""}, "the master is named in the script (s01)"),
        ({"dns": ""}, "no [dns] section"),
        ({"dns": '[dns]\nzone = "example.test"\n'}, "dns.key_file is not set"),
        (
            {"servers": {**SERVERS, "s03": SERVERS["s03"] + "\nvoter = false"}},
            "2 voters (s01, s02): a majority that survives the loss of one needs three; add a server with "
            'role = "witness"',
        ),
        (
            {"servers": {**SERVERS, "s03": SERVERS["s03"] + '\nrole = "backup"'}},
            "2 voters (s01, s02)",
        ),
        (
            {"servers": {n: b + "\npriority = 0" for n, b in SERVERS.items()}},
            "no server may become master: every replica has priority 0",
        ),
    ],
)
def test_why_there_is_no_automatic_failover(changes: dict[str, object], why: str) -> None:
    parsed, problems = script(**changes)  # type: ignore[arg-type]
    assert parsed is not None, problems
    off = failover_off(parsed)
    assert off is not None and off.startswith(why), off
    assert failover_line(parsed).startswith(f"automatic failover: off ({why}")


def test_a_witness_makes_two_servers_a_cluster_that_fails_over() -> None:
    servers = {
        "s01": SERVERS["s01"],
        "s02": SERVERS["s02"],
        "w1": 'role = "witness"\nhost = "w1.example.test"',
    }
    parsed, problems = script(servers=servers)
    assert parsed is not None, problems
    assert parsed.server("w1").role == Role.WITNESS and parsed.server("w1").root == ""
    assert [s.name for s in parsed.data_servers] == ["s01", "s02"]
    assert failover_off(parsed) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('role = "witness"\nroot = "/srv/w"', "a witness holds no data: give it no root and no mountpoint"),
        ('role = "witness"\nvoter = false', "a witness that does not vote has nothing to do"),
        ('role = "witness"\npriority = 50', "a witness never becomes master"),
    ],
)
def test_witness_problems(body: str, problem: str) -> None:
    _, problems = script(servers={**SERVERS, "w1": body})
    assert any(problem in p for p in problems), problems


def test_a_witness_cannot_be_named_master() -> None:
    _, problems = script(master="w1", servers={**SERVERS, "w1": 'role = "witness"'})
    assert any("a witness holds no data: it cannot be the master" in p for p in problems), problems


@pytest.mark.parametrize(
    ("agent", "problem"),
    [
        ("heartbeat_interval = 1\nlease = 2", ("agent.lease ", "must last at least 3 heartbeats (3 s")),
        ("lease = 2\nlease_margin = 0.01", ("agent.lease_margin ", "must be at least 0.040 s")),
        ("lease = 2\nlease_margin = 1", ("agent.lease_margin ", "and less than half the lease, not 1")),
        ("lease = 0", ("agent.lease ", "must be more than 0 seconds")),
        ("min_failover_interval = -1", ("agent.min_failover_interval ", "must be 0 seconds or more")),
    ],
)
def test_timings_check_refuses(agent: str, problem: tuple[str, str]) -> None:
    _, problems = script(agent=agent)
    key, message = problem
    assert any(p.startswith(key) and message in p for p in problems), problems


def test_timings_are_not_checked_where_nothing_is_elected() -> None:
    _, problems = script(master="s01", dns="", agent="heartbeat_interval = 1\nlease = 2")
    assert problems == []
