"""DNS indirection against real BIND 9: authoritative reads, compare-and-set updates, cut-over."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from synco.core.dns_records import RecordState, plan_change
from synco.core.errors import OperationError, ResolutionError
from synco.core.model import DnsSettings
from synco.dns_client import Authority, Conflict
from synco.tsig_key import load_key
from tests.support.cli import read_tree, synco, write_tree
from tests.support.named import ZONE, DnsCluster, write_key
from tests.support.scripts import root, toml_script
from tests.support.sshd import Sshd

NAME = f"primary.{ZONE}"


def authority(named: DnsCluster, servers: list[str] | None = None) -> Authority:
    return Authority(
        DnsSettings(zone=ZONE, servers=tuple(servers or named.servers), timeout=2, propagation_timeout=20)
    )


def test_resolves_cname_and_address_records(named: DnsCluster) -> None:
    dns = authority(named)
    answer = dns.lookup(NAME)
    assert answer.canonical == f"s01.{ZONE}"
    assert answer.addresses == {"127.0.0.1"}
    assert answer.ttl == 30 and named.primary.address in answer.source
    web = dns.lookup(f"web.{ZONE}")
    assert web.canonical == f"web.{ZONE}" and web.addresses == {"127.0.0.2", "127.0.0.3"}
    with pytest.raises(ResolutionError, match="does not exist"):
        dns.lookup(f"nothing.{ZONE}")
    assert dns.read(NAME) == RecordState.cname(f"s01.{ZONE}", None, 30, named.primary.address)


def test_update_and_read_back_on_every_server(named: DnsCluster) -> None:
    dns = authority(named)
    key = load_key(named.key_file)
    change = plan_change(NAME, dns.read(NAME), "cname", [f"s02.{ZONE}"], 5)
    dns.apply(change, key)
    visible = dns.wait_visible(change)
    assert all(seconds is not None for seconds in visible.values()), visible
    for server in named.servers:
        from synco.dns_client import parse_server

        state = dns.read(NAME, parse_server(server))
        assert state.values == (f"s02.{ZONE}.",) and state.epoch == 1
    # address mode: the name becomes the server's A records, epoch 2
    change = plan_change(NAME, dns.read(NAME), "address", ["127.0.0.3"], 5)
    dns.apply(change, key)
    assert dns.read(NAME).describe() == "127.0.0.3 (epoch 2)"
    assert dns.lookup(NAME).addresses == {"127.0.0.3"}


def test_stale_writer_changes_nothing(named: DnsCluster) -> None:
    dns = authority(named)
    key = load_key(named.key_file)
    seen = dns.read(NAME)
    dns.apply(plan_change(NAME, seen, "cname", [f"s02.{ZONE}"], 5), key)
    stale = plan_change(NAME, seen, "cname", [f"s03.{ZONE}"], 5)
    with pytest.raises(Conflict, match="record changed under us"):
        dns.apply(stale, key)
    assert dns.read(NAME).describe() == f"CNAME s02.{ZONE}. (epoch 1)"


def test_concurrent_writers_exactly_one_wins_every_round(named: DnsCluster) -> None:
    dns = authority(named, [named.primary.address])
    key = load_key(named.key_file)
    targets = [f"s02.{ZONE}", f"s03.{ZONE}"]
    for round_ in range(30):
        seen = dns.read(NAME)
        results: list[str] = []
        barrier = threading.Barrier(2)

        def write(
            target: str,
            seen: RecordState = seen,
            barrier: threading.Barrier = barrier,
            results: list[str] = results,
        ) -> None:
            change = plan_change(NAME, seen, "cname", [target], 5)
            barrier.wait()
            try:
                dns.apply(change, key)
                results.append(f"won {target}")
            except Conflict:
                results.append("lost")

        threads = [threading.Thread(target=write, args=(t,)) for t in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results)[0] == "lost" and sorted(results)[1].startswith("won"), (round_, results)
        after = dns.read(NAME)
        assert after.epoch == (seen.epoch or 0) + 1
        assert f"won {after.values[0].rstrip('.')}" in results


def test_wrong_or_missing_key_is_refused_and_nothing_changes(named: DnsCluster, tmp_path: Path) -> None:
    dns = authority(named)
    before = dns.read(NAME)
    change = plan_change(NAME, before, "cname", [f"s02.{ZONE}"], 5)
    wrong = load_key(write_key(tmp_path / "wrong.key"))
    with pytest.raises(OperationError, match=r"TSIG|NOTAUTH|refused"):
        dns.apply(change, wrong)
    other_name = load_key(write_key(tmp_path / "other.key", name="intruder"))
    with pytest.raises(OperationError, match=r"TSIG|NOTAUTH|refused"):
        dns.apply(change, other_name)
    assert dns.read(NAME) == before


def test_key_file_readable_by_others_is_refused(named: DnsCluster) -> None:
    os.chmod(named.key_file, 0o644)
    try:
        with pytest.raises(Exception, match="chmod 600"):
            load_key(named.key_file)
    finally:
        os.chmod(named.key_file, 0o600)


def test_server_stopped_gives_a_clear_error_and_no_half_state(named: DnsCluster) -> None:
    dns = authority(named, [named.primary.address])
    key = load_key(named.key_file)
    before = dns.read(NAME)
    named.primary.stop()
    with pytest.raises(OperationError, match=r"cannot send the update|no answer"):
        dns.apply(plan_change(NAME, before, "cname", [f"s02.{ZONE}"], 5), key)
    with pytest.raises(ResolutionError, match=r"no answer|cannot ask"):
        dns.read(NAME)
    secondary = authority(named, [named.secondary.address])
    assert secondary.read(NAME).same_record(before)


def failover_script(tmp_path: Path, named: DnsCluster, sshd_toml: str = "") -> Path:
    return toml_script(
        tmp_path / "dns.toml",
        master=NAME,
        servers={
            "s01": f'host = "s01.{ZONE}"\n' + root(tmp_path / "s01"),
            "s02": f'host = "s02.{ZONE}"\n' + root(tmp_path / "s02"),
        },
        directories=[{"path": "srv"}],
        extra=named.toml(),
    )


def test_cli_master_and_dns_set(tmp_path: Path, named: DnsCluster) -> None:
    script = failover_script(tmp_path, named)
    shown = synco("master", "--as", "s01", "--json", str(script))
    assert shown.returncode == 0, shown.stderr
    answer = json.loads(shown.stdout)
    assert answer["master"] == "s01"
    assert answer["record"]["kind"] == "cname" and answer["record"]["epoch"] is None
    assert answer["record"]["servers"] == named.servers
    assert answer["answer"]["ttl"] == 30

    wrong = synco("dns", "set", str(script), "s02", "--expect", "s02")
    assert wrong.returncode == 1 and "names s01" in wrong.stderr and "nothing changed" in wrong.stderr
    done = synco("dns", "set", str(script), "s02", "--expect", "s01", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["epoch"] == 1 and set(result["visible"]) == set(named.servers)
    assert json.loads(synco("master", "--as", "s01", "--json", str(script)).stdout)["master"] == "s02"


def test_failover_example_follows_the_record(
    tmp_path: Path, named: DnsCluster, sshd: Sshd, rsync: str
) -> None:
    """The DNS-failover example against real named: move the record, run again, data flows back.
    Hosts are names only named knows; ssh reaches them through HostName options."""
    examples = Path(__file__).resolve().parents[2] / "scripts/examples"
    text = (
        (examples / "dns-failover.toml")
        .read_text()
        .replace('master = "primary.example.com"', f'master = "{NAME}"')
    )
    for server, address in (("s01", "127.0.0.1"), ("s02", "127.0.0.2")):
        text = text.replace(
            f'host = "{server}.example.com"\nroot = "/"',
            sshd.server_toml(f"{server}.{ZONE}", connect_to=address) + root(tmp_path / server),
        )
    script = tmp_path / "dns-failover.toml"
    script.write_text(text + "\n" + named.toml())
    write_tree(tmp_path / "s01", {"srv/http/index.html": "from s01"})
    result = synco("run", "--as", "s01", "--json", str(script))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["master"]["server"] == "s01"
    assert read_tree(tmp_path / "s02") == {"srv/http/index.html": "from s01"}

    assert synco("dns", "set", str(script), "s02", "--expect", "s01").returncode == 0
    write_tree(tmp_path / "s02", {"srv/http/index.html": "written on s02 after failover"})
    result = synco("run", "--as", "s01", "--json", str(script))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["master"]["server"] == "s02" and report["copies"][0]["runs_on"] == "s02"
    assert read_tree(tmp_path / "s01") == {"srv/http/index.html": "written on s02 after failover"}


def test_unsigned_update_is_refused(named: DnsCluster) -> None:
    dns = authority(named)
    before = dns.read(NAME)
    with pytest.raises(OperationError, match=r"REFUSED"):
        dns.apply(plan_change(NAME, before, "cname", [f"s02.{ZONE}"], 5), None)  # type: ignore[arg-type]
    assert dns.read(NAME) == before


def test_a_server_that_is_not_authoritative_is_named(named: DnsCluster) -> None:
    other = Authority(DnsSettings(zone="elsewhere.test", servers=(named.primary.address,), timeout=2))
    with pytest.raises(ResolutionError, match=rf"{named.primary.address} answered REFUSED"):
        other.lookup("primary.elsewhere.test")
