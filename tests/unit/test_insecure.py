"""`insecure = true` (plaintext gRPC) is for a loopback-only cluster: an agent address
anyone on a network could reach is refused, by key, with the reason."""

from __future__ import annotations

import pytest

from synco.config import parse_script


def script(agent_s01: str, agent_s02: str, insecure: bool = True) -> str:
    security = (
        "insecure = true\n"
        if insecure
        else 'ca_file = "/etc/synco/ca.pem"\ncert_file = "/etc/synco/{server}.pem"\n'
        'key_file = "/etc/synco/{server}.key"\n'
    )
    return (
        'master = "s01"\n[method]\narguments = ["--archive", "--delete"]\n'
        f'[agent]\n{security}state_dir = "/var/lib/synco"\ncontrol_socket = "/run/synco/{{server}}.sock"\n'
        f'[servers.s01]\nroot = "/srv/a"\nagent = "{agent_s01}"\n'
        f'[servers.s02]\nroot = "/srv/b"\nagent = "{agent_s02}"\n'
        '[[directories]]\npath = "data"\n'
    )


@pytest.mark.parametrize(
    "address", ["10.0.0.2:7000", "0.0.0.0:7000", "[2001:db8::2]:7000", "s02.example.com:7000"]
)
def test_insecure_with_a_network_address_is_refused(address: str) -> None:
    loaded, problems = parse_script(script("127.0.0.1:7001", address))
    assert loaded is None or problems
    assert [(p.key, p.message) for p in problems if "insecure" in p.message] == [
        ("servers.s02.agent", "insecure = true allows loopback addresses only")
    ], problems


@pytest.mark.parametrize("address", ["127.0.0.1:7000", "[::1]:7000", "localhost:7000"])
def test_insecure_on_loopback_is_accepted(address: str) -> None:
    loaded, problems = parse_script(script("127.0.0.1:7001", address))
    assert problems == [] and loaded is not None


def test_a_network_address_with_certificates_is_accepted() -> None:
    loaded, problems = parse_script(script("10.0.0.1:7000", "10.0.0.2:7000", insecure=False))
    assert problems == [] and loaded is not None
