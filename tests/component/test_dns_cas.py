"""The compare-and-set and its propagation check against real BIND 9, where a weaker rule
would let a stale node's write through or count a server that still serves the old master."""

from __future__ import annotations

from pathlib import Path

import dns.query
import dns.rcode
import dns.tsig
import dns.update
import pytest

from synco.core.dns_records import RecordState, absolute, plan_change
from synco.core.model import DnsSettings
from synco.dns_client import Authority, Conflict, parse_server
from synco.tsig_key import load_key
from tests.support.named import ZONE, ZONE_FILE, DnsCluster, start_standalone

NAME = f"primary.{ZONE}"


def authority(servers: list[str]) -> Authority:
    return Authority(DnsSettings(zone=ZONE, servers=tuple(servers), timeout=2, propagation_timeout=20))


def raw_update(named: DnsCluster, key: dns.tsig.Key, name: str, *, delete: str, cname: str | None) -> None:
    """Another writer (an operator with nsupdate, say) changes the record at `name` and
    leaves its epoch TXT as it is."""
    update = dns.update.UpdateMessage(absolute(ZONE), keyring=key)
    update.delete(absolute(name), delete)
    if cname is not None:
        update.add(absolute(name), 5, "CNAME", absolute(cname))
    host, port = parse_server(named.primary.address)
    response = dns.query.tcp(update, host, port=port, timeout=5)
    assert response.rcode() == dns.rcode.NOERROR, response


@pytest.mark.parametrize("seen", ["address records", "no record"])
def test_a_cname_that_appeared_with_the_epoch_unchanged_is_a_conflict(named: DnsCluster, seen: str) -> None:
    """A writer that read address records (or none) at the name, epoch 1, must not overwrite a
    CNAME put there since, even though the epoch TXT still says 1: the UPDATE requires the
    CNAME to be absent, so it is a Conflict and the CNAME stays."""
    name = f"cas.{ZONE}"
    auth = authority([named.primary.address])
    key = load_key(named.key_file)
    auth.apply(plan_change(name, auth.read(name), "address", ["127.0.0.2"], 5), key)
    if seen == "no record":  # the addresses removed, the epoch left: the record reads as absent
        raw_update(named, key, name, delete="A", cname=None)
    before = auth.read(name)
    assert (before.kind, before.epoch) == (("absent", 1) if seen == "no record" else ("address", 1))

    raw_update(named, key, name, delete="A", cname=f"s03.{ZONE}")  # a CNAME appears, epoch still 1
    assert auth.read(name) == RecordState.cname(f"s03.{ZONE}", 1, 5, named.primary.address)
    stale = plan_change(name, before, "address", ["127.0.0.3"], 5)
    with pytest.raises(Conflict, match="record changed under us"):
        auth.apply(stale, key)
    assert auth.read(name) == RecordState.cname(f"s03.{ZONE}", 1, 5, named.primary.address)


def test_wait_visible_does_not_count_a_server_serving_the_value_with_an_older_epoch(
    named: DnsCluster, tmp_path: Path
) -> None:
    """A server that lags behind (here its own copy of the zone, as a secondary that missed
    the NOTIFYs serves it) answers the new master's name with the epoch of an earlier change
    to the same value: the change is not visible there, so it is not counted."""
    lagging_zone = ZONE_FILE.replace("primary  IN CNAME s01\n", "primary  IN CNAME s02\n")
    lagging_zone += '_synco-epoch.primary IN TXT "1"\n'
    assert "CNAME s02" in lagging_zone
    lagging = start_standalone(tmp_path / "lagging", lagging_zone)
    try:
        auth = authority([named.primary.address, named.secondary.address, lagging.address])
        key = load_key(named.key_file)
        auth.apply(plan_change(NAME, auth.read(NAME), "cname", [f"s02.{ZONE}"], 5), key)  # epoch 1
        first = plan_change(NAME, auth.read(NAME), "cname", [f"s03.{ZONE}"], 5)  # epoch 2
        auth.apply(first, key)
        change = plan_change(NAME, auth.read(NAME), "cname", [f"s02.{ZONE}"], 5)  # back to s02, epoch 3
        auth.apply(change, key)
        assert change.desired == RecordState.cname(f"s02.{ZONE}", 3)
        old = auth.read(NAME, parse_server(lagging.address))
        assert (old.values, old.epoch) == (change.desired.values, 1)  # the value, an older epoch

        visible = auth.wait_visible(change, timeout=1.5)

        assert visible[named.primary.address] is not None, visible
        assert visible[named.secondary.address] is not None, visible
        assert visible[lagging.address] is None, visible
    finally:
        lagging.stop()
