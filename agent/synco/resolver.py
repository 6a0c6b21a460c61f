"""Name lookups through the system resolver, and this machine's identity (adapters).

`Resolver` is the interface; the authoritative DNS resolver replaces SystemResolver
when a script has a [dns] section.
"""

from __future__ import annotations

import socket
from typing import Protocol

from synco.core.errors import ResolutionError
from synco.core.model import Script
from synco.core.resolution import (
    CurrentDecision,
    HostAnswer,
    LocalIdentity,
    MasterDecision,
    choose_current,
    choose_master,
)


class Resolver(Protocol):
    def lookup(self, name: str) -> HostAnswer:
        """Canonical name and addresses of `name`; ResolutionError when it cannot say."""
        ...


class SystemResolver:
    """getaddrinfo(): /etc/hosts, then DNS, as the system is configured."""

    def lookup(self, name: str) -> HostAnswer:
        host = name.strip("[]")
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)
        except socket.gaierror as error:
            raise ResolutionError(f"cannot resolve {name!r}: {error.strerror}") from error
        canonical = next((info[3] for info in infos if info[3]), host)
        addresses = frozenset(str(info[4][0]).split("%", 1)[0] for info in infos)
        return HostAnswer(name=name, canonical=canonical, addresses=addresses)


def local_identity() -> LocalIdentity:
    import psutil  # only when this machine's addresses are needed: it costs start-up time

    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    addresses = {
        address.address.split("%", 1)[0]
        for entries in psutil.net_if_addrs().values()
        for address in entries
        if address.family in (socket.AF_INET, socket.AF_INET6)
    }
    return LocalIdentity(frozenset(names), frozenset(addresses))


def server_answers(script: Script, resolver: Resolver, local: LocalIdentity) -> dict[str, HostAnswer]:
    """An answer for every server: hosts are looked up, host-less servers are this machine."""
    answers: dict[str, HostAnswer] = {}
    for server in script.servers:
        if server.host is None:
            answers[server.name] = HostAnswer(server.name, socket.getfqdn(), local.addresses, "this machine")
            continue
        try:
            answers[server.name] = resolver.lookup(server.host)
        except ResolutionError:
            # An unresolvable host cannot be the master nor this machine; other checks report it.
            continue
    return answers


def default_resolver(script: Script) -> Resolver:
    """The zone's authoritative servers when the script has a [dns] section, else the system's."""
    if script.dns is not None:
        from synco.dns_client import Authority

        return Authority(script.dns)
    return SystemResolver()


def resolve(
    script: Script, as_name: str | None, resolver: Resolver | None = None, need_current: bool = True
) -> tuple[MasterDecision, CurrentDecision]:
    """Decide the master and the current server, doing only the lookups needed.

    With the master named in the script and `--as`, nothing is looked up at all. Without
    `need_current`, an ambiguous current server is reported in the decision, not raised.
    """
    resolver = resolver or default_resolver(script)
    master_is_named = script.master in script.server_names
    if master_is_named and as_name is not None:
        nobody = LocalIdentity(frozenset(), frozenset())
        return choose_master(script, None, {}), choose_current(script, as_name, nobody, {})
    local = local_identity()
    answers = server_answers(script, resolver, local)
    answer = None if master_is_named else resolver.lookup(script.master)
    master = choose_master(script, answer, answers)
    try:
        current = choose_current(script, as_name, local, answers)
    except ResolutionError as error:
        if need_current:
            raise
        current = CurrentDecision(None, f"unknown: {error}")
    return master, current
