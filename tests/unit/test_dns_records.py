from pathlib import Path

import pytest

from synco.config import parse_script
from synco.core.dns_records import RecordState, absolute, epoch_name, plan_change
from synco.dns_client import parse_server


def test_names() -> None:
    assert absolute("Primary.Example.COM") == "primary.example.com."
    assert epoch_name("primary.example.com.") == "_synco-epoch.primary.example.com."


def test_plan_change_increments_the_epoch() -> None:
    seen = RecordState.cname("s01.example.com", 4)
    change = plan_change("primary.example.com", seen, "cname", ["s02.example.com."], 30)
    assert change.desired == RecordState.cname("s02.example.com", 5)
    assert change.describe() == (
        "primary.example.com.: CNAME s01.example.com. (epoch 4) -> CNAME s02.example.com. (epoch 5)"
    )
    first = plan_change(
        "p.example.com", RecordState("absent", (), None), "address", ["192.0.2.2", "2001:db8::2"], 5
    )
    assert first.desired == RecordState("address", ("192.0.2.2", "2001:db8::2"), 1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_server(spec: str, expected: tuple[str, int]) -> None:
    assert parse_server(spec) == expected


BASE = """master = "primary.example.com"
[servers.s01]
host = "s01.example.com"
root = "/srv"
[servers.s02]
host = "s02.example.com"
root = "/srv"
[[directories]]
path = "www"
[dns]
"""


@pytest.mark.parametrize(
    ("dns", "key", "words"),
    [
        ('zone = "other.org"\n', "master", "not inside the zone"),
        ('zone = "example.com"\nttl = -1\n', "dns.ttl", "between 0 and 86400"),
        ('zone = "example.com"\nmode = "txt"\n', "dns.mode", "not one of"),
        ('zone = "example.com"\nkey_file = "tsig.key"\n', "dns.key_file", "absolute"),
        ('zone = "example.com"\nservers = ["127.0.0.1:99999"]\n', "dns.servers[0]", "ADDRESS:PORT"),
        ('zone = "example.com"\ntimeout = 0\n', "dns.timeout", "more than 0"),
        ("servers = []\n", "dns.zone", "is required"),
        ('zone = "example.com"\nprimary = "x"\n', "dns.primary", "unknown key"),
    ],
)
def test_dns_section_problems(dns: str, key: str, words: str) -> None:
    _, problems = parse_script(BASE + dns)
    matching = [p for p in problems if p.key == key]
    assert matching and words in matching[0].message, problems


def test_good_dns_section() -> None:
    script, problems = parse_script(BASE + 'zone = "example.com"\nservers = ["192.0.2.53", "[::1]:5353"]\n')
    assert problems == [] and script is not None and script.dns is not None
    assert script.dns.mode == "cname" and script.dns.ttl == 30


def test_key_file_with_slashes_in_the_secret(tmp_path: Path) -> None:
    """base64 secrets may contain "//": it must not be taken for a comment."""
    from synco.tsig_key import load_key

    path = tmp_path / "k.key"
    path.write_text('# made by hand\nkey "k" {\n\talgorithm hmac-sha256;\n\tsecret "ab//cd+/ef==";\n};\n')
    path.chmod(0o600)
    assert load_key(path).secret == __import__("base64").b64decode("ab//cd+/ef==")
