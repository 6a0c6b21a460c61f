"""Semantic checks of a whole Script, shared by the TOML loader and the Python API."""

from __future__ import annotations

import re
from collections.abc import Iterator

from synco.core.errors import ConfigError
from synco.core.failover import failover_off
from synco.core.lease import safe_margin
from synco.core.model import (
    METHOD_NAMES,
    ROLE_EVENTS,
    SNAPSHOT_BACKENDS,
    AgentSettings,
    BackupSettings,
    CommandHandler,
    Directory,
    Event,
    Events,
    Method,
    Role,
    Script,
    Server,
    Side,
)
from synco.core.overlap import colocated, contains, overlapping
from synco.core.paths import normalize_relative
from synco.core.problems import Problem
from synco.core.resolution import LOOPBACK, LocalIdentity, names_this_machine
from synco.core.rsync import follows_target_symlinks, refusal
from synco.core.staging import live_path, origin_of, views_directory
from synco.core.staging import problems as staging_problems

MIN_RENEWALS = 3  # a lease lasts at least this many heartbeats

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]+:[0-9A-Fa-f:.]*|[A-Za-z0-9_]([A-Za-z0-9_.-]*))$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$")

SCRIPT_SIDES = (Side.LOCAL, Side.MASTER)
SERVER_SIDES = (Side.SERVER, Side.TARGET, Side.LOCAL, Side.MASTER)  # target: the server itself
DIRECTORY_SIDES = (Side.TARGET, Side.MASTER, Side.LOCAL)

ROLE_EVENTS_PLACE = (
    f"role events ({', '.join(e.value for e in ROLE_EVENTS)}) belong to [events] or [servers.NAME.events]"
)
ROLE_EVENTS_ON = "role-event handlers run on the agent's own machine: remove `on`"


def validate(script: Script, local: LocalIdentity = LOOPBACK) -> list[Problem]:
    """Every problem in `script`, each named by the key path a TOML file would use.

    `local` is what is known of this machine (by default only `localhost` and the loopback
    addresses, which need no lookup): servers whose host names it share the file system of
    the servers without a host, so their copies must not overlap (`synco check` passes this
    machine's names and addresses, so that it reports what `synco run` here would refuse).
    """
    return list(_script_problems(script, local))


def _script_problems(script: Script, local: LocalIdentity) -> Iterator[Problem]:
    types = list(_type_problems(script))
    if types:  # the checks below assume the right types
        yield from types
        return
    names = [s.name for s in script.servers]
    if len(script.data_servers) < 2:
        yield Problem("servers", "at least two servers (witnesses aside) are needed: a master and a target")
    seen: set[str] = set()
    for server in script.servers:
        if server.name in seen:
            yield Problem(f"servers.{server.name}", "is defined twice")
        seen.add(server.name)
        yield from _server_problems(server)
        if server.staging is not None:
            yield from _staging_problems(f"servers.{server.name}.staging", server, None)
    if not script.directories:
        yield Problem("directories", "no directories to copy: add at least one [[directories]]")
    normalized: dict[str, int] = {}
    for index, directory in enumerate(script.directories):
        key = f"directories[{index}]"
        try:
            path = normalize_relative(directory.path)
        except ValueError as error:
            yield Problem(f"{key}.path", str(error))
            continue
        if path in normalized:
            yield Problem(f"{key}.path", f"{path!r} is already copied by directories[{normalized[path]}]")
        normalized[path] = index
        yield from _arguments_problems(f"{key}.arguments", directory.arguments)
        yield from _following_problems(f"{key}.arguments", directory.arguments)
        yield from _events_problems(f"{key}.events", directory.events, DIRECTORY_SIDES, roles=False)
        if directory.staging is not None:
            for server in script.data_servers:
                if server.role != Role.BACKUP and server.root.startswith("/"):
                    yield from _staging_problems(f"{key}.staging", server, directory)
    method = script.method
    yield from _overlap_problems(script, local)
    if not _recurses([*method.arguments, *(a for d in script.directories for a in d.arguments)]):
        yield Problem(
            "method.arguments",
            "copies no directory contents: add --archive (or --recursive)",
        )
    if method.name not in METHOD_NAMES:
        yield Problem(
            "method.name",
            f"unknown method {method.name!r}; choose one of: {', '.join(METHOD_NAMES)}",
        )
    yield from _arguments_problems("method.arguments", method.arguments)
    yield from _following_problems("method.arguments", method.arguments)
    if method.snapshot_backend not in SNAPSHOT_BACKENDS:
        yield Problem(
            "method.snapshot_backend",
            f"{method.snapshot_backend!r} is not one of: {', '.join(SNAPSHOT_BACKENDS)}",
        )
    if not method.snapshots and (
        method.snapshot_backend != "hardlink" or method.verify or not method.publish
    ):
        yield Problem("method", "publish, verify and snapshot_backend apply to the snapshot method only")
    yield from _events_problems("method.events", method.events, SCRIPT_SIDES, roles=False)
    yield from _master_problems(script.master, names)
    if script.dns is not None:
        yield from _dns_problems(script)
    if script.agent is not None:
        yield from _agent_problems(script)
    yield from _backup_problems(script)
    yield from _events_problems("events", script.events, SCRIPT_SIDES, roles=True)


def _recurses(arguments: list[str]) -> bool:
    for argument in arguments:
        if argument in ("--archive", "--recursive"):
            return True
        if (
            argument.startswith("-")
            and not argument.startswith("--")
            and ("a" in argument or "r" in argument)
        ):
            return True
    return False


def _overlap_problems(script: Script, local: LocalIdentity) -> Iterator[Problem]:
    """Servers on one host whose copies of a directory would overlap (any may be master but
    a backup server), or two backup servers writing snapshots into one tree. One host: the
    rule `synco run` refuses a copy by (`colocated`), with every server this machine that
    has no host or a host naming this machine in `local`."""

    def here(server: Server) -> bool:
        return server.host is None or names_this_machine(server.host, local)

    for index, a in enumerate(script.data_servers):
        for b in script.data_servers[index + 1 :]:
            if not colocated(a, b, here):
                continue
            if a.role == b.role == Role.BACKUP:
                if contains(a.root, b.root) or contains(b.root, a.root):
                    yield Problem(
                        f"servers.{b.name}.root",
                        f"backup servers {a.name} and {b.name} would write snapshots into one tree "
                        "on one host",
                    )
                continue  # neither is ever a source
            for directory in script.directories:
                try:
                    path = normalize_relative(directory.path)
                except ValueError:
                    continue
                for source, target in ((a, b), (b, a)):
                    if source.role == Role.BACKUP:
                        continue  # never a master: never a source
                    snapshots = script.method.snapshots or target.role == Role.BACKUP
                    clash = overlapping(source, target, path, snapshots)
                    if clash:
                        yield Problem(
                            f"servers.{target.name}.root",
                            f"copying {path!r} from {source.name} to {target.name} on the same host "
                            f"would overlap: {clash[0]} and {clash[1]}",
                        )
                        return


def _type_problems(script: Script) -> Iterator[Problem]:
    """Wrong types, which the Python API can pass and the TOML loader has already reported."""

    def expect(key: str, value: object, kind: type, what: str, optional: bool = False) -> Iterator[Problem]:
        matches = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, kind) and not isinstance(value, bool)
        )
        if not matches and not (optional and value is None):
            yield Problem(key, f"must be {what}, not {value!r}")

    yield from expect("master", script.master, str, "a string")
    for server in script.servers:
        if not isinstance(server, Server):
            yield Problem("servers", f"must hold Server objects, not {server!r}")
            continue
        key = f"servers.{server.name}"
        yield from expect(key, server.name, str, "a string name")
        yield from expect(f"{key}.root", server.root, str, "a string")
        for name in ("host", "user", "identity_file", "mountpoint"):
            yield from expect(f"{key}.{name}", getattr(server, name), str, "a string", optional=True)
        yield from expect(f"{key}.port", server.port, int, "an integer", optional=True)
        yield from expect(f"{key}.priority", server.priority, int, "an integer")
        yield from expect(f"{key}.synco_path", server.synco_path, str, "a string")
    for index, directory in enumerate(script.directories):
        if not isinstance(directory, Directory):
            yield Problem("directories", f"must hold Directory objects, not {directory!r}")
            continue
        yield from expect(f"directories[{index}].path", directory.path, str, "a string")
    if not isinstance(script.method, Method):
        yield Problem("method", f"must be a Method, not {script.method!r}")
        return
    yield from expect("method.name", script.method.name, str, "a string")
    for name in ("publish", "verify"):
        yield from expect(f"method.{name}", getattr(script.method, name), bool, "true or false")


def _server_problems(server: Server) -> Iterator[Problem]:
    key = f"servers.{server.name}"
    if not NAME.match(server.name):
        yield Problem(
            key,
            "a server name uses letters, digits, '.', '_' and '-' and starts with a letter or digit",
        )
    if server.role == Role.WITNESS:
        if server.root or server.mountpoint is not None:
            yield Problem(f"{key}.root", "a witness holds no data: give it no root and no mountpoint")
        if server.priority != 100 and server.priority != 0:
            yield Problem(f"{key}.priority", "a witness never becomes master: it has no priority")
        if not server.voter:
            yield Problem(f"{key}.voter", "a witness that does not vote has nothing to do")
    elif not server.root.startswith("/"):
        yield Problem(f"{key}.root", f"must be an absolute path, not {server.root!r}")
    elif "\0" in server.root or "\n" in server.root:
        yield Problem(f"{key}.root", "contains a NUL or newline character")
    if server.host is not None and not HOST.match(server.host):
        yield Problem(f"{key}.host", f"{server.host!r} is not a host name or address")
    if server.user is not None and not USER.match(server.user):
        yield Problem(f"{key}.user", f"{server.user!r} is not a user name")
    if server.port is not None and not 1 <= server.port <= 65535:
        yield Problem(f"{key}.port", f"must be between 1 and 65535, not {server.port}")
    ssh_settings = (server.user, server.port, server.identity_file, server.ssh_options or None)
    if server.host is None and any(v is not None for v in ssh_settings):
        yield Problem(f"{key}.host", "ssh settings (user, port, identity_file, ssh_options) need a host")
    if server.identity_file is not None and not server.identity_file:
        yield Problem(f"{key}.identity_file", "is empty")
    yield from _arguments_problems(f"{key}.ssh_options", server.ssh_options)
    if server.priority < 0:
        yield Problem(f"{key}.priority", f"must be 0 (never promoted) or more, not {server.priority}")
    if server.mountpoint is not None and not server.mountpoint.startswith("/"):
        yield Problem(f"{key}.mountpoint", f"must be an absolute path, not {server.mountpoint!r}")
    elif server.mountpoint is not None and not contains(server.mountpoint, server.root):
        yield Problem(f"{key}.mountpoint", f"the root {server.root} is not on {server.mountpoint}")
    yield from _events_problems(f"{key}.events", server.events, SERVER_SIDES, roles=True)


def _staging_problems(key: str, server: Server, directory: Directory | None) -> Iterator[Problem]:
    """A staging table's own problems, and whether its origin holds what the copy reads
    (a directory's staging: on every server that may be master)."""
    staging = server.staging if directory is None else directory.staging
    assert staging is not None
    if directory is None and server.role in (Role.WITNESS, Role.BACKUP):
        yield Problem(key, f"a {server.role.value} server is never the master: its copies are never staged")
        return
    for name, message in staging_problems(staging):
        yield Problem(f"{key}.{name}", message)
    try:
        origin = origin_of(staging, server, directory or Directory(".", staging=None))
    except ConfigError as error:
        yield Problem(f"{key}.origin", f"{server.name}: {error}" if directory is not None else str(error))
        return
    # Views inside what is copied would be copied too, by every reader of the live tree
    # (a replica's pull included). A whole system ("/") excludes /run and the like anyway.
    copied = live_path(server, directory) if directory is not None else server.root.rstrip("/") or "/"
    views = views_directory(staging, origin)
    if views is not None and copied != "/" and contains(copied, views):
        yield Problem(
            f"{key}.snapshots",
            f"{views} is inside {copied}, which is copied: the views would be copied too",
        )


def _arguments_problems(key: str, arguments: tuple[str, ...]) -> Iterator[Problem]:
    for index, argument in enumerate(arguments):
        if not isinstance(argument, str):
            yield Problem(f"{key}[{index}]", f"must be a string, not {argument!r}")
        elif "\0" in argument:
            yield Problem(f"{key}[{index}]", "contains a NUL character")


def _following_problems(key: str, arguments: tuple[str, ...]) -> Iterator[Problem]:
    """What the copy refuses (synco.core.transfer): an argument that follows symlinks on the target."""
    strings = [a for a in arguments if isinstance(a, str)]
    argument = follows_target_symlinks(strings)
    if argument is not None:
        yield Problem(f"{key}[{strings.index(argument)}]", refusal(argument))


def _master_problems(master: str, names: list[str]) -> Iterator[Problem]:
    if not master:
        yield Problem("master", "is empty: name a server of this script or a DNS name")
        return
    if master in names:
        return
    if not HOST.match(master.rstrip(".")):
        yield Problem("master", f"{master!r} is neither a server of this script nor a DNS name")
    elif "." not in master and master != "localhost":
        yield Problem(
            "master",
            f"{master!r} is not a server of this script ({', '.join(names)}); "
            "a DNS name must be fully qualified (add a trailing dot to force a one-label name)",
        )


def _agent_problems(script: Script) -> Iterator[Problem]:
    agent = script.agent
    assert agent is not None
    for name in (
        "heartbeat_interval",
        "debounce",
        "periodic_pull",
        "pull_retry",
        "master_poll",
        "lease",
        "max_failover_lag",
        "hook_timeout",
    ):
        if getattr(agent, name) <= 0:
            yield Problem(f"agent.{name}", "must be more than 0 seconds")
    if failover_off(script) is None:  # the lease matters only where the agents elect
        yield from _timing_problems(agent)
    for name in ("state_dir", "control_socket", "ca_file", "cert_file", "key_file"):
        if not getattr(agent, name).startswith("/"):
            yield Problem(f"agent.{name}", f"must be an absolute path, not {getattr(agent, name)!r}")
    addresses: dict[str, str] = {}
    for server in script.servers:
        if server.agent is None:
            yield Problem(
                f"servers.{server.name}.agent", "is required with [agent]: ADDRESS:PORT of its agent"
            )
            continue
        host, _, port = server.agent.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            yield Problem(f"servers.{server.name}.agent", f"{server.agent!r} is not ADDRESS:PORT")
        elif server.agent in addresses:
            yield Problem(
                f"servers.{server.name}.agent", f"{server.agent} is also {addresses[server.agent]}'s"
            )
        elif agent.insecure and host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            yield Problem(f"servers.{server.name}.agent", "insecure = true allows loopback addresses only")
        addresses.setdefault(server.agent, server.name)
        if server.metrics is not None:
            host, _, port = server.metrics.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                yield Problem(f"servers.{server.name}.metrics", f"{server.metrics!r} is not ADDRESS:PORT")


def _timing_problems(agent: AgentSettings) -> Iterator[Problem]:
    """The lease must outlast a few renewals, and the margin must fit inside it while
    covering the clocks' drift (synco.core.lease)."""
    if agent.heartbeat_interval <= 0 or agent.lease <= 0:
        return
    if agent.lease < MIN_RENEWALS * agent.heartbeat_interval:
        yield Problem(
            "agent.lease",
            f"must last at least {MIN_RENEWALS} heartbeats ({MIN_RENEWALS * agent.heartbeat_interval:g} s "
            f"with heartbeat_interval = {agent.heartbeat_interval:g}): one lost renewal must not end it",
        )
    if not safe_margin(agent.lease) <= agent.lease_margin < agent.lease / 2:
        yield Problem(
            "agent.lease_margin",
            f"must be at least {safe_margin(agent.lease):.3f} s (clock drift over a {agent.lease:g} s "
            f"lease) and less than half the lease, not {agent.lease_margin:g}",
        )
    if agent.min_failover_interval < 0:
        yield Problem("agent.min_failover_interval", "must be 0 seconds or more")


def _backup_problems(script: Script) -> Iterator[Problem]:
    backup = script.backup
    backups = [s.name for s in script.servers if s.role == Role.BACKUP]
    if script.master in backups:
        yield Problem(
            f"servers.{script.master}.role",
            "a backup server keeps snapshots, not a live copy: it cannot be the master",
        )
    witnesses = [s.name for s in script.servers if s.role == Role.WITNESS]
    if script.master in witnesses:
        yield Problem(f"servers.{script.master}.role", "a witness holds no data: it cannot be the master")
    if not isinstance(backup, BackupSettings):
        yield Problem("backup", f"must be a BackupSettings, not {backup!r}")
        return
    if not backups and backup != BackupSettings():
        yield Problem("backup", 'applies to servers with role = "backup", and there is none')
    if not backup.interval >= 1:
        yield Problem("backup.interval", "must be 1 second or more (snapshot names count whole seconds)")
    if backup.backend not in SNAPSHOT_BACKENDS:
        yield Problem("backup.backend", f"{backup.backend!r} is not one of: {', '.join(SNAPSHOT_BACKENDS)}")
    policy = backup.policy
    for period, count in policy.counts.items():
        if count < 0:
            yield Problem(f"backup.{period}", f"must be 0 or more, not {count}")
    if policy.keep_last is not None and policy.keep_last < 0:
        yield Problem("backup.keep_last", f"must be 0 or more, not {policy.keep_last}")
    if policy.keep_within is not None and policy.keep_within.total_seconds() <= 0:
        yield Problem("backup.keep_within", "must be longer than 0 seconds")
    keeps_something = any(policy.counts.values()) or policy.keep_last or policy.keep_within
    if backup.prune and policy.has_rules and not keeps_something:
        yield Problem(
            "backup",
            "this policy keeps only the newest snapshot: every other one would be erased after each "
            "snapshot; give a rule above 0, or set prune = false",
        )


def _dns_problems(script: Script) -> Iterator[Problem]:
    dns = script.dns
    assert dns is not None
    zone = dns.zone.rstrip(".").lower()
    if not zone or not HOST.match(zone):
        yield Problem("dns.zone", f"{dns.zone!r} is not a DNS zone name")
    elif script.master in script.server_names:
        yield Problem("master", "with a [dns] section, master is the DNS name that points at the master")
    elif not (script.master.rstrip(".").lower() + ".").endswith("." + zone + "."):
        yield Problem("master", f"{script.master!r} is not inside the zone {dns.zone!r}")
    for index, server in enumerate(dns.servers):
        host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
        if not (host or server) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            yield Problem(f"dns.servers[{index}]", f"{server!r} is not ADDRESS or ADDRESS:PORT")
    if not 0 <= dns.ttl <= 86400:
        yield Problem("dns.ttl", f"must be between 0 and 86400 seconds, not {dns.ttl}")
    for name in ("timeout", "propagation_timeout"):
        if getattr(dns, name) <= 0:
            yield Problem(f"dns.{name}", "must be more than 0 seconds")
    if dns.key_file is not None and not dns.key_file.startswith("/"):
        yield Problem("dns.key_file", f"must be an absolute path, not {dns.key_file!r}")


def _events_problems(key: str, events: Events, sides: tuple[Side, ...], roles: bool) -> Iterator[Problem]:
    """Handlers that cannot run as declared. `sides`: where this owner's commands may run;
    `roles`: whether the owner may have role events (they run on the agent's own machine)."""
    for event in Event:
        role = event in ROLE_EVENTS
        if role and not roles and events.of(event):
            yield Problem(f"{key}.{event.value}", ROLE_EVENTS_PLACE)
            continue
        for index, handler in enumerate(events.of(event)):
            where = f"{key}.{event.value}[{index}]"
            if isinstance(handler, CommandHandler):
                if role and handler.side is not None:
                    yield Problem(f"{where}.on", ROLE_EVENTS_ON)
                elif handler.side is not None and handler.side not in sides:
                    allowed = ", ".join(s.value for s in sides)
                    yield Problem(
                        f"{where}.on",
                        f"{handler.side.value!r} is not possible here; choose {allowed}",
                    )
                if not handler.commands:
                    yield Problem(where, "has no command")
                for number, argv in enumerate(handler.commands):
                    if not argv or not argv[0]:
                        yield Problem(f"{where}.run[{number}]", "is an empty command")
                    elif argv[0].startswith("-"):
                        yield Problem(
                            f"{where}.run[{number}]", f"a command cannot start with '-': {argv[0]!r}"
                        )
            elif not callable(handler):
                yield Problem(where, f"is neither a command nor a callable: {handler!r}")
