"""With no `servers` in [dns], Synco finds the zone's authoritative servers from its NS set
(port 53). Port 53 is only ours inside a network namespace: there, BIND 9 serves the zone as
primary on 127.0.0.1 and secondary on 127.0.0.2, and the namespace's resolv.conf (which
`ip netns exec` mounts from /etc/netns/NAME/) points at the primary."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.components import need
from tests.support.named import KEY_NAME, ZONE, ZONE_FILE, options, wait_serial_command, write_key
from tests.support.netns import Network, make_network
from tests.support.scripts import root, toml_script

# The secondary's name sorts first: only the SOA (MNAME ns1) says which server is the primary.
NS_ZONE = ZONE_FILE + "@        IN NS  aaa.example.test.\naaa      IN A   127.0.0.2\n"


def named_conf(directory: Path, address: str, key_file: Path, zone: str) -> str:
    return options(directory, 53, address) + f'include "{key_file}";\n' + zone


@pytest.fixture(params=["listed", "hidden", "unreachable"])
def dns_host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Network]:
    """The primary listed in the NS set, hidden (named only by the SOA: a common setup), or
    unreachable (the SOA names a server that does not answer here)."""
    named = need("named")
    network = make_network(["dns"])
    resolv = Path("/etc/netns") / network.namespace("dns")
    try:  # named listens only on addresses configured on an interface
        subprocess.run(network.command("dns", ["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"]), check=True)
        resolv.mkdir(parents=True)
        (resolv / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:2\n")
        key_file = write_key(tmp_path / "tsig.key")
        primary, secondary = tmp_path / "primary", tmp_path / "secondary"
        primary.mkdir()
        secondary.mkdir()
        zone = NS_ZONE
        if request.param == "hidden":
            zone = zone.replace("@        IN NS  ns1.example.test.\n", "")
            assert "NS  ns1" not in zone
        if request.param == "unreachable":
            zone = zone.replace("IN SOA ns1.example.test.", "IN SOA gone.example.test.")
            zone += "gone     IN A   127.0.0.9\n"
        (primary / f"{ZONE}.db").write_text(zone)
        (primary / "named.conf").write_text(
            named_conf(
                primary,
                "127.0.0.1",
                key_file,
                f"""zone "{ZONE}" {{
    type primary;
    file "{primary}/{ZONE}.db";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
    allow-transfer {{ key {KEY_NAME}; }};
}};
""",
            )
        )
        (secondary / "named.conf").write_text(
            named_conf(
                secondary,
                "127.0.0.2",
                key_file,
                f"""zone "{ZONE}" {{
    type secondary;
    file "{secondary}/{ZONE}.db";
    primaries {{ 127.0.0.1 port 53 key {KEY_NAME}; }};
    allow-notify {{ 127.0.0.1; }};
}};
""",
            )
        )
        # The primary first, and the secondary only once the primary answers (started
        # together, the secondary's first refresh could fail and its retry come too late);
        # the test proceeds once the secondary serves the primary's serial: it has the zone.
        serial = None
        for directory, address in ((primary, "127.0.0.1"), (secondary, "127.0.0.2")):
            argv = [named, "-g", "-u", "root", "-c", str(directory / "named.conf")]
            process = network.spawn("dns", argv, str(directory / "log"))
            ready = subprocess.run(
                network.command("dns", wait_serial_command(address, 53, serial, timeout=30)),
                capture_output=True,
                text=True,
                timeout=60,
            )
            log = (directory / "log").read_text(errors="replace")
            assert process.poll() is None, f"named on {address} exited: {log}"
            assert ready.returncode == 0, f"named on {address} did not serve {ZONE} (serial {serial}): {log}"
            serial = int(ready.stdout)
        yield network
    finally:
        network.destroy()
        shutil.rmtree(resolv, ignore_errors=True)
        with contextlib.suppress(OSError):
            resolv.parent.rmdir()  # /etc/netns, if nothing else uses it


def synco_in(network: Network, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        network.command("dns", [sys.executable, "-m", "synco.cli.main", *arguments]),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_servers_come_from_the_zone_ns_set(dns_host: Network, tmp_path: Path) -> None:
    script = toml_script(
        tmp_path / "dns.toml",
        master=f"primary.{ZONE}",
        servers={
            "s01": f'host = "s01.{ZONE}"\n' + root(tmp_path / "s01"),
            "s02": f'host = "s02.{ZONE}"\n' + root(tmp_path / "s02"),
        },
        directories=[{"path": "srv"}],
        extra=f'[dns]\nzone = "{ZONE}"\nkey_file = "{tmp_path / "tsig.key"}"\ntimeout = 2\n'
        "propagation_timeout = 30\n",
    )
    shown = synco_in(dns_host, "master", "--as", "s01", "--json", str(script))  # both servers ready
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert answer["master"] == "s01"
    if "gone" in (tmp_path / "primary" / f"{ZONE}.db").read_text():
        # the NS set is read; the update is refused here rather than sent to a secondary
        assert answer["record"]["servers"] == ["127.0.0.2", "127.0.0.1"]
        refused = synco_in(dns_host, "dns", "set", str(script), "s02", "--expect", "s01")
        assert refused.returncode == 1 and "the primary that takes updates is not usable" in refused.stderr
        return
    assert answer["record"]["servers"] == ["127.0.0.1", "127.0.0.2"]  # the primary first

    done = synco_in(dns_host, "dns", "set", str(script), "s02", "--expect", "s01", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["visible"]) == ["127.0.0.1", "127.0.0.2"]
    again = json.loads(synco_in(dns_host, "master", "--as", "s01", "--json", str(script)).stdout)
    assert again["master"] == "s02"
