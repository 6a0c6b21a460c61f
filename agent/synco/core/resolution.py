"""Which server is the master, and which one is this machine: pure decisions.

The lookups (DNS answers, this machine's names and addresses) are made by the caller
and passed in, so every rule here is testable with tables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from synco.core.errors import ResolutionError
from synco.core.model import Script, Server


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and without the trailing dot."""
    return name.strip().rstrip(".").lower()


@dataclass(frozen=True)
class HostAnswer:
    """What a resolver said about a name."""

    name: str
    canonical: str
    addresses: frozenset[str]
    source: str = "system resolver"
    ttl: int | None = None

    def describe(self) -> str:
        via = (
            f" (CNAME {self.canonical})"
            if normalize_name(self.canonical) != normalize_name(self.name)
            else ""
        )
        addresses = ", ".join(sorted(self.addresses)) or "no addresses"
        return f"{self.name}{via} -> {addresses} [{self.source}]"


@dataclass(frozen=True)
class LocalIdentity:
    """This machine's names and interface addresses."""

    names: frozenset[str]
    addresses: frozenset[str]

    def matches(self, answer: HostAnswer) -> bool:
        names = {normalize_name(n) for n in self.names}
        if normalize_name(answer.name) in names or normalize_name(answer.canonical) in names:
            return True
        return any(a in self.addresses or _is_loopback(a) for a in answer.addresses)


LOOPBACK = LocalIdentity(frozenset({"localhost"}), frozenset())
"""What is known of this machine without asking it: `localhost` and the loopback addresses."""


def names_this_machine(host: str, local: LocalIdentity) -> bool:
    """Whether `host`, as written in a script (no lookup), is this machine: one of `local`'s
    names or addresses, `localhost` or a loopback address. `synco check` decides with it
    which servers share this machine's file system, without asking DNS."""
    literal = host.strip("[]")
    addresses = frozenset({literal}) if _is_address(literal) else frozenset()
    return local.matches(HostAnswer(host, host, addresses, "as written"))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MasterDecision:
    server: str
    reason: str
    answer: HostAnswer | None = None


def choose_master(
    script: Script,
    answer: HostAnswer | None,
    server_answers: Mapping[str, HostAnswer],
) -> MasterDecision:
    """The master: a server named in the script, or the one server a DNS answer points at.

    A server matches the answer when its host's canonical name equals the answer's
    canonical name; failing any such match, when their address sets intersect.
    Servers without a host stand for this machine and are compared by address only.
    """
    if script.master in script.server_names:
        return MasterDecision(script.master, f"master {script.master!r} is named in the script")
    if answer is None:
        raise ResolutionError(f"master {script.master!r} is not a server and was not resolved")
    wanted = normalize_name(answer.canonical)
    by_name = [
        s.name
        for s in script.servers
        if s.name in server_answers
        and s.host is not None
        and wanted in (normalize_name(server_answers[s.name].canonical), normalize_name(s.host))
    ]
    if len(by_name) == 1:
        return MasterDecision(by_name[0], f"DNS {answer.describe()} names server {by_name[0]!r}", answer)
    if len(by_name) > 1:
        raise _ambiguous(script.master, answer, by_name, "the same canonical name")
    by_address = [
        s.name
        for s in script.servers
        if s.name in server_answers and server_answers[s.name].addresses & answer.addresses
    ]
    if len(by_address) == 1:
        server = by_address[0]
        return MasterDecision(
            server, f"DNS {answer.describe()} shares an address with server {server!r}", answer
        )
    if len(by_address) > 1:
        raise _ambiguous(script.master, answer, by_address, "an address")
    hosts = ", ".join(
        f"{s.name}={server_answers[s.name].describe()}" for s in script.servers if s.name in server_answers
    )
    raise ResolutionError(
        f"master {script.master!r} resolves to {answer.describe()}, which matches no server",
        (f"servers: {hosts}",) if hosts else (),
    )


def _ambiguous(master: str, answer: HostAnswer, candidates: list[str], what: str) -> ResolutionError:
    return ResolutionError(
        f"master {master!r} ({answer.describe()}) is ambiguous: servers {', '.join(candidates)} "
        f"share {what}; give each server a distinct host name or name the master directly",
        tuple(candidates),
    )


@dataclass(frozen=True)
class CurrentDecision:
    """The server this machine is, or None when synco runs from elsewhere."""

    server: str | None
    reason: str


def choose_current(
    script: Script,
    as_name: str | None,
    local: LocalIdentity,
    server_answers: Mapping[str, HostAnswer],
) -> CurrentDecision:
    """The current server: `--as NAME`, else the server(s) whose host names this machine.

    Servers without a host are always on this machine and never make the choice
    ambiguous. Several matching servers with different logins are ambiguous.
    """
    if as_name is not None:
        if as_name not in script.server_names:
            raise ResolutionError(
                f"--as {as_name!r}: no such server; servers are {', '.join(script.server_names)}"
            )
        return CurrentDecision(as_name, f"--as {as_name}")
    matching = [
        s
        for s in script.servers
        if s.host is not None and s.name in server_answers and local.matches(server_answers[s.name])
    ]
    connections = {s.connection for s in matching}
    if len(connections) > 1:
        raise ResolutionError(
            "cannot tell which server this machine is: "
            + ", ".join(s.describe() for s in matching)
            + " all name it; pass --as SERVER",
            tuple(s.name for s in matching),
        )
    if matching:
        return CurrentDecision(matching[0].name, f"host {matching[0].host} names this machine")
    local_servers = [s.name for s in script.servers if s.host is None]
    if local_servers:
        return CurrentDecision(local_servers[0], "servers without a host are this machine")
    return CurrentDecision(None, "no server names this machine; running as a controller")


def is_local(server: Server, current: CurrentDecision, script: Script) -> bool:
    """Whether commands for `server` run on this machine rather than through ssh."""
    if server.host is None:
        return True
    if current.server is None:
        return False
    return server.connection == script.server(current.server).connection
