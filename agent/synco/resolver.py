"""Name lookups through the system resolver, and this machine's identity (adapters).

`Resolver` is the interface; the authoritative DNS resolver replaces SystemResolver
when a script has a [dns] section.
"""

from __future__ import annotations

import socket
from typing import Protocol

import psutil

from synco.errors import ResolutionError
from synco.model import Script
from synco.resolution import (
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


def resolve(
    script: Script, as_name: str | None, resolver: Resolver | None = None
) -> tuple[MasterDecision, CurrentDecision]:
    """Decide the master and the current server, doing only the lookups needed."""
    resolver = resolver or SystemResolver()
    local = local_identity()
    master_is_named = script.master in script.server_names
    need_answers = not master_is_named or as_name is None
    answers = server_answers(script, resolver, local) if need_answers else {}
    answer = None if master_is_named else resolver.lookup(script.master)
    master = choose_master(script, answer, answers)
    current = choose_current(script, as_name, local, answers)
    return master, current
