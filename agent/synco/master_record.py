"""The master's DNS record as the agents use it (adapter): which server it names with which
epoch, and the elected master publishing itself compare-and-set with its election epoch."""

from __future__ import annotations

from dataclasses import dataclass

from synco.core.dns_records import Change, RecordState, absolute
from synco.core.election import PublishOutcome
from synco.core.errors import ConfigError, OperationError, ResolutionError
from synco.core.model import Script, Server
from synco.dns_client import Authority, Conflict, describe
from synco.tsig_key import load_key


def server_of(script: Script, authority: Authority, state: RecordState) -> str | None:
    """The server a record names: by CNAME target = host, or by the host's addresses."""
    if state.kind == "absent":
        return None
    for server in script.servers:
        if server.host is None:
            continue
        if state.kind == "cname" and absolute(server.host) == state.values[0]:
            return server.name
        if state.kind == "address" and authority.lookup(server.host).addresses == frozenset(state.values):
            return server.name
    return "(no server of this script)"


def desired_values(script: Script, authority: Authority, server: Server) -> list[str]:
    if server.host is None:
        raise ConfigError(f"server {server.name} has no host for the DNS record to name")
    assert script.dns is not None
    if script.dns.mode == "cname":
        return [absolute(server.host)]
    return sorted(authority.lookup(server.host).addresses)


@dataclass(frozen=True)
class Seen:
    """What the zone's primary says now."""

    server: str | None
    epoch: int | None
    record: str  # the record, described


def read_master(script: Script) -> Seen:
    """The master record and its epoch as the zone's primary serves them."""
    assert script.dns is not None
    authority = Authority(script.dns)
    state = authority.read(script.master)
    return Seen(server_of(script, authority, state), state.epoch, state.describe())


@dataclass(frozen=True)
class Published:
    outcome: PublishOutcome
    epoch: int | None  # the epoch DNS carries afterwards, if known
    reason: str = ""
    change: Change | None = None  # what was applied (to watch it reach every server)


def publish(script: Script, me: str, epoch: int, attempts: int = 3) -> Published:
    """Point the master's name at `me` with `epoch`, compare-and-set against what the
    primary serves now. An epoch there higher than `epoch` means another master was
    elected since: STALE, nothing changed. A timeout's outcome is unknown: FAILED, and the
    caller reads again before acting."""
    assert script.dns is not None
    if script.dns.key_file is None:
        return Published(PublishOutcome.FAILED, None, "dns.key_file is not set")
    try:
        key = load_key(script.dns.key_file)
        authority = Authority(script.dns)
        for _ in range(attempts):
            current = authority.read(script.master)
            named = server_of(script, authority, current)
            if current.epoch is not None and current.epoch > epoch:
                return Published(PublishOutcome.STALE, current.epoch, f"DNS carries epoch {current.epoch}")
            values = desired_values(script, authority, script.server(me))
            desired = (
                RecordState.cname(values[0], epoch)
                if script.dns.mode == "cname"
                else RecordState.addresses(values, epoch)
            )
            change = Change(script.master, current, desired, script.dns.ttl)
            if current.epoch == epoch and current.same_record(desired):
                return Published(PublishOutcome.APPLIED, epoch, "already published", change)
            if current.epoch == epoch and named != me:  # (only a --force elsewhere can do this)
                return Published(PublishOutcome.STALE, epoch, f"DNS names {named} with epoch {epoch}")
            try:
                authority.apply(change, key)
            except Conflict:
                continue  # it moved between the read and the update: read again
            return Published(PublishOutcome.APPLIED, epoch, change.describe(), change)
        return Published(PublishOutcome.FAILED, None, f"the record kept changing ({attempts} attempts)")
    except (OperationError, ResolutionError, ConfigError, OSError) as error:
        return Published(PublishOutcome.FAILED, None, str(error))


def lagging(script: Script, change: Change, timeout: float) -> list[str]:
    """The authoritative servers that do not serve `change` within `timeout` seconds."""
    assert script.dns is not None
    visible = Authority(script.dns).wait_visible(change, timeout)
    return sorted(server for server, seconds in visible.items() if seconds is None)


def named_by_each(script: Script, server: str, epoch: int) -> dict[str, bool]:
    """Whether each authoritative server names `server` with `epoch` now."""
    assert script.dns is not None
    authority = Authority(script.dns)
    named = {}
    for address in authority.servers():
        try:
            state = authority.read(script.master, address)
        except (ResolutionError, OperationError):
            named[describe(address)] = False
            continue
        named[describe(address)] = server_of(script, authority, state) == server and state.epoch == epoch
    return named
