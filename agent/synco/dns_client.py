"""Talking to the zone's authoritative servers: read the master record, change it
compare-and-set (RFC 2136 + TSIG) and watch the change reach every server (adapter)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.update

from synco.core.dns_records import Change, RecordState, absolute, epoch_name
from synco.core.errors import OperationError, ResolutionError
from synco.core.model import DnsSettings
from synco.core.resolution import HostAnswer
from synco.resolver import SystemResolver

Address = tuple[str, int]
log = logging.getLogger("synco.dns")

CONFLICT_RCODES = (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN)


class Conflict(OperationError):
    """The record changed under us: the compare-and-set UPDATE was refused, nothing changed."""


def parse_server(spec: str) -> Address:
    """`127.0.0.1`, `127.0.0.1:5353`, `[::1]:5353` or `::1`."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, 53


def describe(server: Address) -> str:
    host, port = server
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 53 else f"{shown}:{port}"


@dataclass
class Authority:
    """The authoritative servers of one zone, asked directly: no cache, no recursion."""

    settings: DnsSettings
    fallback: SystemResolver = field(default_factory=SystemResolver)
    sleep: Callable[[float], None] = time.sleep
    _servers: list[Address] | None = None
    _unusable_primary: str | None = None  # found from the SOA, but not usable from here: why

    @property
    def zone(self) -> str:
        return absolute(self.settings.zone)

    def servers(self) -> list[Address]:
        """The configured servers, else the zone's NS set (port 53)."""
        if self._servers is None:
            if self.settings.servers:
                self._servers = [parse_server(s) for s in self.settings.servers]
            else:
                self._servers = self._ns_set()
        return self._servers

    def _ns_set(self) -> list[Address]:
        """The zone's name servers, the primary first: the SOA's MNAME (in the NS set or
        hidden), where RFC 2136 sends updates (a secondary would refuse or forward them) and
        where reads are current. A primary that does not resolve or answer here (firewalled,
        a placeholder MNAME) is left out with a warning: the NS set is asked instead."""
        try:
            answer = dns.resolver.resolve(self.zone, "NS")
            soa = dns.resolver.resolve(self.zone, "SOA")
        except dns.exception.DNSException as error:
            raise ResolutionError(f"cannot find the name servers of zone {self.zone}: {error}") from error
        primary = str(soa.rrset[0].mname) if soa.rrset else ""
        listed: list[Address] = []
        for host in sorted({r.to_text() for r in answer} - {primary}):
            listed += [a for a in _addresses(host) if a not in listed]
        first: list[Address] = []
        if primary:
            try:
                first = _addresses(primary, strict=True)
                self.query(first[0], self.zone, "SOA")
            except (OSError, ResolutionError) as error:
                log.warning(
                    "zone %s: its primary %s (SOA) cannot be used here: %s", self.zone, primary, error
                )
                self._unusable_primary = f"{primary}: {error}"
                first = []
        servers = first + [a for a in listed if a not in first]
        if not servers:
            raise ResolutionError(f"zone {self.zone} has no reachable name servers")
        return servers

    def primary(self) -> Address:
        return self.servers()[0]

    # -- queries ---------------------------------------------------------------------------

    def query(self, server: Address, name: str, rdtype: str) -> dns.message.Message:
        request = dns.message.make_query(absolute(name), rdtype)
        request.flags &= ~dns.flags.RD
        host, port = server
        try:
            response, _ = dns.query.udp_with_fallback(request, host, port=port, timeout=self.settings.timeout)
        except dns.exception.Timeout as error:
            raise ResolutionError(
                f"no answer from {describe(server)} within {self.settings.timeout:g} s for {name} {rdtype}"
            ) from error
        except OSError as error:
            raise ResolutionError(f"cannot ask {describe(server)}: {error.strerror or error}") from error
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise ResolutionError(
                f"{describe(server)} answered {dns.rcode.to_text(rcode)} for {name} {rdtype}"
            )
        if not response.flags & dns.flags.AA:
            raise ResolutionError(f"{describe(server)} is not authoritative for {name} (zone {self.zone})")
        return response

    def read(self, name: str, server: Address | None = None) -> RecordState:
        """The master record and its epoch as `server` (default: the primary) serves them."""
        server = server or self.primary()
        where = describe(server)
        cname = self._rrset(server, name, "CNAME")
        epoch = self._epoch(server, name)
        if cname is not None:
            return RecordState.cname(cname[0][0], epoch, cname[1], where)
        addresses: list[str] = []
        ttls = []
        for rdtype in ("A", "AAAA"):
            found = self._rrset(server, name, rdtype)
            if found is not None:
                addresses += found[0]
                ttls.append(found[1])
        if not addresses:
            return RecordState("absent", (), epoch, None, where)
        return RecordState.addresses(addresses, epoch, min(ttls), where)

    def _rrset(self, server: Address, name: str, rdtype: str) -> tuple[list[str], int] | None:
        response = self.query(server, name, rdtype)
        wanted = dns.name.from_text(absolute(name))
        for rrset in response.answer:
            if rrset.name == wanted and rrset.rdtype == dns.rdatatype.from_text(rdtype):
                return sorted(
                    absolute(r.to_text()) if rdtype == "CNAME" else r.to_text() for r in rrset
                ), rrset.ttl
        return None

    def _epoch(self, server: Address, name: str) -> int | None:
        found = self._rrset(server, epoch_name(name), "TXT")
        if found is None:
            return None
        text = found[0][0].strip('"')
        try:
            return int(text)
        except ValueError as error:
            raise ResolutionError(f"{epoch_name(name)} holds {text!r}, not an epoch number") from error

    # -- the Resolver interface --------------------------------------------------------------

    def in_zone(self, name: str) -> bool:
        return absolute(name) == self.zone or absolute(name).endswith("." + self.zone)

    def lookup(self, name: str) -> HostAnswer:
        """Canonical name and addresses from the first authoritative server that answers,
        following CNAMEs (out of the zone through the system resolver)."""
        if not self.in_zone(name):
            return self.fallback.lookup(name)
        errors = []
        for server in self.servers():
            try:
                return self._lookup_on(server, name)
            except ResolutionError as error:
                if "does not exist" in str(error):
                    raise
                errors.append(str(error))
        raise ResolutionError(f"cannot resolve {name}: " + "; ".join(errors))

    def _lookup_on(self, server: Address, name: str) -> HostAnswer:
        current = absolute(name)
        ttls: list[int] = []
        for _ in range(8):  # CNAME chain length limit
            if not self.in_zone(current):
                outside = self.fallback.lookup(current)
                return HostAnswer(
                    name,
                    outside.canonical,
                    outside.addresses,
                    f"{describe(server)} + system resolver",
                    min(ttls) if ttls else None,
                )
            cname = self._rrset(server, current, "CNAME")
            if cname is not None:
                ttls.append(cname[1])
                current = cname[0][0]
                continue
            addresses: set[str] = set()
            for rdtype in ("A", "AAAA"):
                response = self.query(server, current, rdtype)
                if response.rcode() == dns.rcode.NXDOMAIN:
                    raise ResolutionError(f"{current} does not exist (NXDOMAIN at {describe(server)})")
                for rrset in response.answer:
                    if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                        addresses |= {r.to_text() for r in rrset}
                        ttls.append(rrset.ttl)
            if not addresses:
                raise ResolutionError(f"{current} has no A or AAAA record at {describe(server)}")
            return HostAnswer(
                name,
                current.rstrip("."),
                frozenset(addresses),
                f"{describe(server)} (authoritative)",
                min(ttls) if ttls else None,
            )
        raise ResolutionError(f"{name}: CNAME chain longer than 8")

    # -- changes ------------------------------------------------------------------------------

    def apply(self, change: Change, key: dns.tsig.Key) -> None:
        """Send the compare-and-set UPDATE to the primary; Conflict if the record moved on."""
        update = dns.update.UpdateMessage(self.zone, keyring=key)
        name = absolute(change.name)
        _require(update, name, change.expected)
        epoch = epoch_name(change.name)
        if change.expected.epoch is None:
            update.absent(epoch, "TXT")
        else:
            update.present(epoch, _rdataset("TXT", [f'"{change.expected.epoch}"']))
        for rdtype in ("CNAME", "A", "AAAA"):
            update.delete(name, rdtype)
        desired = change.desired
        if desired.kind == "cname":
            update.add(name, change.ttl, "CNAME", desired.values[0])
        else:
            for address in desired.values:
                update.add(name, change.ttl, "AAAA" if ":" in address else "A", address)
        update.delete(epoch, "TXT")
        update.add(epoch, change.ttl, "TXT", f'"{desired.epoch}"')
        server = self.primary()
        if self._unusable_primary is not None:  # a secondary would refuse it, or forward it blindly
            raise OperationError(
                f"zone {self.zone}: the primary that takes updates is not usable from here "
                f"({self._unusable_primary}); list it first in [dns] servers; nothing changed"
            )
        host, port = server
        try:
            response = dns.query.tcp(update, host, port=port, timeout=self.settings.timeout)
        except dns.exception.Timeout as error:
            raise OperationError(
                f"no answer from {describe(server)} to the update within {self.settings.timeout:g} s; "
                "an UPDATE is all or nothing: run `synco master` to see which"
            ) from error
        except (dns.tsig.PeerError, dns.tsig.BadSignature) as error:
            raise OperationError(f"{describe(server)} refused the TSIG key: {error}") from error
        except OSError as error:
            raise OperationError(
                f"cannot send the update to {describe(server)}: {error.strerror or error}"
            ) from error
        rcode = response.rcode()
        if rcode in CONFLICT_RCODES:
            raise Conflict(
                f"record changed under us ({dns.rcode.to_text(rcode)}): {name} is no longer "
                f"{change.expected.describe()}; nothing changed"
            )
        if rcode == dns.rcode.NOTAUTH:
            raise OperationError(
                f"{describe(server)} refused the TSIG key (NOTAUTH): wrong key or clock skew"
            )
        if rcode == dns.rcode.REFUSED:
            raise OperationError(
                f"{describe(server)} refused the update (REFUSED): the key may not change {name}"
            )
        if rcode != dns.rcode.NOERROR:
            raise OperationError(f"{describe(server)} answered the update with {dns.rcode.to_text(rcode)}")

    def wait_visible(self, change: Change, timeout: float | None = None) -> dict[str, float | None]:
        """Seconds until each authoritative server served the change (None: not by the deadline)."""
        timeout = self.settings.propagation_timeout if timeout is None else timeout
        started = time.monotonic()
        seen: dict[str, float | None] = {describe(s): None for s in self.servers()}
        pending = list(self.servers())
        while pending:
            for server in list(pending):
                try:
                    state = self.read(change.name, server)
                except ResolutionError:
                    continue
                if state.same_record(change.desired):
                    seen[describe(server)] = round(time.monotonic() - started, 3)
                    pending.remove(server)
            if not pending or time.monotonic() - started > timeout:
                break
            self.sleep(0.02)
        return seen


def _rdataset(rdtype: str, values: list[str]) -> dns.rdataset.Rdataset:
    return dns.rdataset.from_text_list(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), 0, values)


def _require(update: dns.update.UpdateMessage, name: str, state: RecordState) -> None:
    """Prerequisites: the record at `name` is exactly `state` (RFC 2136 value-dependent)."""
    if state.kind == "cname":
        update.present(name, _rdataset("CNAME", list(state.values)))
        return
    update.absent(name, "CNAME")
    for rdtype, values in (
        ("A", [v for v in state.values if ":" not in v]),
        ("AAAA", [v for v in state.values if ":" in v]),
    ):
        if values:
            update.present(name, _rdataset(rdtype, values))
        else:
            update.absent(name, rdtype)


def _addresses(host: str, strict: bool = False) -> list[Address]:
    """The port-53 addresses of a name server; none if it does not resolve (or OSError, strict)."""
    try:
        found = socket.getaddrinfo(host, 53, type=socket.SOCK_DGRAM)
    except OSError:
        if strict:
            raise
        return []
    addresses: list[Address] = []
    for info in found:
        address = (str(info[4][0]), 53)
        if address not in addresses:
            addresses.append(address)
    return addresses
