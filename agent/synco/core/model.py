"""The backup-script model: frozen values, no I/O.

A script copies `directories` from the `master` to every other server with `method`.
Event handlers hang off the script, each server, each directory and the method; the
agents' role events (ROLE_EVENTS) hang off the script and each server only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from synco.core.retention import Policy


class Event(StrEnum):
    # around a run of the script (`synco run`, an agent's pull or snapshot)
    PREPARE = "prepare"
    SUCCESS = "success"
    FAILURE = "failure"
    FINISH = "finish"
    # an agent's own role changes (synco.node.hooks); `synco run` never fires them
    PRE_PROMOTE = "pre-promote"  # before this server stands as master: a failure vetoes
    PROMOTE = "promote"  # this server has become the master
    DEMOTE = "demote"  # this server is no longer the master
    ROLE_CHANGE = "role-change"  # after any change of this server's role

    @property
    def field_name(self) -> str:
        """The name of the Events field holding this event's handlers."""
        return self.value.replace("-", "_")


ROLE_EVENTS = (Event.PRE_PROMOTE, Event.PROMOTE, Event.DEMOTE, Event.ROLE_CHANGE)


class Side(StrEnum):
    """Where a command handler runs."""

    LOCAL = "local"  # the machine synco runs on
    MASTER = "master"
    TARGET = "target"  # the server being copied to (server and directory handlers)
    SERVER = "server"  # the server the handler is declared on (server handlers)


class Direction(StrEnum):
    PUSH = "push"  # rsync runs where the master is
    PULL = "pull"  # rsync runs where the target is


class Role(StrEnum):
    REPLICA = "replica"
    BACKUP = "backup"  # keeps snapshots; never master, does not vote
    WITNESS = "witness"  # votes in elections, holds no data (no root, no copies)


class StagingProvider(StrEnum):
    """How a frozen view of a master's tree is made (synco.core.staging)."""

    BTRFS = "btrfs"  # a read-only subvolume snapshot
    LVM = "lvm"  # lvcreate --snapshot, mounted read-only
    ZFS = "zfs"  # zfs snapshot, read from .zfs/snapshot/NAME
    COMMAND = "command"  # the operator's create / path / destroy commands


@dataclass(frozen=True)
class Staging:
    """rsync reads from a point-in-time view of `origin` instead of the live tree.

    `origin` is the live path the view stands for: the server's root, or a directory of it,
    or a path above either (a file system's mountpoint); empty means the root (on a
    server) or the directory itself (on a directory)."""

    provider: StagingProvider
    origin: str = ""
    snapshots: str = ""  # btrfs: where snapshots go; lvm: where views are mounted
    volume: str = ""  # lvm: VG/LV
    size: str = "1G"  # lvm: copy-on-write space (lvcreate --size, or --extents with a %)
    mount_options: str = "ro"  # lvm
    dataset: str = ""  # zfs
    create: tuple[str, ...] = ()  # command: makes the view named $SYNCO_STAGING_NAME
    path: tuple[str, ...] = ()  # command: prints the view's path (default: create's last line)
    destroy: tuple[str, ...] = ()  # command: removes it
    list: tuple[str, ...] = ()  # command: prints the names of the views that exist

    def __post_init__(self) -> None:
        _coerce(
            self,
            provider=StagingProvider(self.provider),
            create=tuple(self.create),
            path=tuple(self.path),
            destroy=tuple(self.destroy),
            list=tuple(self.list),
        )


METHOD_NAMES = ("rsync", "snapshot")
SNAPSHOT_BACKENDS = ("hardlink", "btrfs")
DEFAULT_RSYNC_ARGUMENTS = ("--archive",)


@dataclass(frozen=True)
class CommandHandler:
    """Commands (argv lists) run in order on `side`; None means the default for its owner."""

    commands: tuple[tuple[str, ...], ...]
    side: Side | None = None

    def describe(self) -> str:
        import shlex

        return "; ".join(shlex.join(c) for c in self.commands)


HandlerFunction = Callable[[Any], object]
"""A Python handler. It receives a synco.events.Scope for the run events and a
synco.node.hooks.RoleChange for the role events (a role handler returning False fails)."""
Handler = CommandHandler | HandlerFunction


def command(*argv: str | Sequence[str], on: Side | str | None = None) -> CommandHandler:
    """A command handler: `command("pg_dump", "-f", "/srv/db.sql", on="master")`.

    Several commands: `command(["sync"], ["echo", "done"])`.
    """
    if argv and all(isinstance(a, str) for a in argv):
        commands: tuple[tuple[str, ...], ...] = (tuple(str(a) for a in argv),)
    else:
        commands = tuple(tuple([a] if isinstance(a, str) else a) for a in argv)
    return CommandHandler(commands, Side(on) if on is not None else None)


@dataclass(frozen=True)
class Events:
    """Handlers for each event, run in declaration order (field names: Event.field_name)."""

    prepare: tuple[Handler, ...] = ()
    success: tuple[Handler, ...] = ()
    failure: tuple[Handler, ...] = ()
    finish: tuple[Handler, ...] = ()
    pre_promote: tuple[Handler, ...] = ()
    promote: tuple[Handler, ...] = ()
    demote: tuple[Handler, ...] = ()
    role_change: tuple[Handler, ...] = ()

    def of(self, event: Event) -> tuple[Handler, ...]:
        handlers: tuple[Handler, ...] = getattr(self, Event(event).field_name)
        return handlers

    @classmethod
    def build(cls, handlers: Mapping[str | Event, Handler | Iterable[Handler]] | None) -> Events:
        """Events from `{"prepare": handler_or_handlers, "pre-promote": ...}` (the Python
        API's `events=`); "pre_promote" and "role_change" are accepted for the hyphenated names."""
        if not handlers:
            return cls()
        values: dict[str, tuple[Handler, ...]] = {}
        for key, value in handlers.items():
            event = Event(key.replace("_", "-"))
            if isinstance(value, str):
                raise TypeError(
                    f"{event.value} handler {value!r} is a string; use synco.command({value!r}, ...)"
                )
            if isinstance(value, CommandHandler) or callable(value):
                values[event.field_name] = (value,)
            else:
                values[event.field_name] = tuple(value)
        return cls(**values)

    def __bool__(self) -> bool:
        return any(self.of(event) for event in Event)


@dataclass(frozen=True)
class Server:
    """A host plus a root directory. `host=None` is the machine synco runs on."""

    name: str
    root: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    priority: int = 100  # 0: never promoted
    role: Role = Role.REPLICA
    voter: bool = True  # votes in elections (backup servers never do)
    mountpoint: str | None = None
    synco_path: str = "synco"  # the synco command on this server, for snapshot publication over ssh
    agent: str | None = None  # ADDRESS:PORT where this server's synco-agent listens
    metrics: str | None = None  # ADDRESS:PORT for the agent's Prometheus metrics (none: off)
    events: Events = field(default_factory=Events)
    staging: Staging | None = None  # as the master, copies are read from a frozen view

    def __post_init__(self) -> None:
        _coerce(
            self,
            ssh_options=tuple(self.ssh_options),
            role=Role(self.role),
            events=_events(self.events),
        )

    @property
    def connection(self) -> tuple[str, str | None, int | None] | None:
        """What identifies the login this server is reached through; None for this machine."""
        if self.host is None:
            return None
        return (self.host.lower().rstrip("."), self.user, self.port)

    def path(self, relative: str) -> str:
        """The absolute path of a directory of this server, with a trailing slash."""
        root = self.root.rstrip("/") or ""
        if relative in ("", "."):
            return root + "/"
        return f"{root}/{relative.rstrip('/')}/"

    def describe(self) -> str:
        if self.host is None:
            return f"{self.name} (this machine, {self.root})"
        login = f"{self.user}@{self.host}" if self.user else self.host
        port = f":{self.port}" if self.port else ""
        return f"{self.name} ({login}{port}, {self.root})"


@dataclass(frozen=True)
class Directory:
    """A path relative to every server's root, with rsync arguments of its own."""

    path: str
    arguments: tuple[str, ...] = ()
    events: Events = field(default_factory=Events)
    staging: Staging | None = None  # read from a frozen view on every master (before the server's)

    def __post_init__(self) -> None:
        _coerce(self, arguments=tuple(self.arguments), events=_events(self.events))


@dataclass(frozen=True)
class Method:
    name: str = "rsync"
    direction: Direction = Direction.PUSH
    arguments: tuple[str, ...] = DEFAULT_RSYNC_ARGUMENTS
    events: Events = field(default_factory=Events)
    publish: bool = True  # snapshot: publish each target's snapshot when all its directories succeed
    verify: bool = False  # snapshot: record a checksum manifest in every snapshot
    snapshot_backend: str = "hardlink"  # snapshot: "hardlink" (--link-dest) or "btrfs"

    @property
    def snapshots(self) -> bool:
        return self.name == "snapshot"

    def __post_init__(self) -> None:
        _coerce(
            self,
            direction=Direction(self.direction),
            arguments=tuple(self.arguments),
            events=_events(self.events),
        )


@dataclass(frozen=True)
class AgentSettings:
    """How the servers' agents run and talk: cluster-wide, in the script's [agent] table.
    `{server}` in a path stands for the server's name (several servers may share a host)."""

    state_dir: str = "/var/lib/synco"
    control_socket: str = "/run/synco/{server}.sock"
    insecure: bool = False  # plaintext gRPC, loopback addresses only
    ca_file: str = "/etc/synco/ca.pem"
    cert_file: str = "/etc/synco/{server}.pem"
    key_file: str = "/etc/synco/{server}.key"
    heartbeat_interval: float = 0.7  # the master renews its lease this often; peers say how they are
    debounce: float = 0.2
    periodic_pull: float = 300.0
    pull_retry: float = 10.0
    master_poll: float = 2.0  # how often a master given as a DNS name is looked up again
    # automatic failover (see packaging/doc/failover.md)
    lease: float = 2.1  # how long a majority's grant lets the master act (3 heartbeats)
    lease_margin: float = 0.25  # the master stops acting this long before its lease ends
    min_failover_interval: float = 30.0  # no automatic failover sooner than this after one
    max_failover_lag: float = 60.0  # a replica further behind (seconds) is no candidate
    hook_timeout: float = 10.0  # how long a role-event handler may run; a pre-promote that overruns vetoes

    def path(self, template: str, server: str) -> str:
        return template.replace("{server}", server)


@dataclass(frozen=True)
class BackupSettings:
    """What the agent of a server with `role = "backup"` keeps: a snapshot of the master's
    directories every `interval` seconds, pruned by `policy` (the `synco prune` rules;
    no rule given means the default policy). The script's [backup] table."""

    interval: float = 3600.0
    backend: str = "hardlink"  # "hardlink" (--link-dest) or "btrfs"
    verify: bool = False  # record a checksum manifest in every snapshot
    prune: bool = True  # erase what the policy does not keep after each snapshot
    policy: Policy = field(default_factory=Policy)


DNS_MODES = ("cname", "address")


@dataclass(frozen=True)
class DnsSettings:
    """Where the master's DNS name is published: its zone's authoritative servers, read
    directly (no cache) and updated compare-and-set with RFC 2136 and a TSIG key."""

    zone: str
    servers: tuple[str, ...] = ()  # "address[:port]"; empty: the zone's NS records
    key_file: str | None = None  # TSIG key in BIND's format, needed to change the record
    mode: str = "cname"  # publish the master as a CNAME to its host, or as its A/AAAA records
    ttl: int = 30
    timeout: float = 3.0  # per query
    propagation_timeout: float = 30.0  # how long `dns set` waits for every server to serve the change

    def __post_init__(self) -> None:
        _coerce(self, servers=tuple(self.servers))


@dataclass(frozen=True)
class Script:
    """A whole backup script. `master` is a server name or a DNS name."""

    servers: tuple[Server, ...]
    directories: tuple[Directory, ...]
    master: str
    method: Method = field(default_factory=Method)
    events: Events = field(default_factory=Events)
    source: str | None = None  # the file it came from, if any
    dns: DnsSettings | None = None
    agent: AgentSettings | None = None
    backup: BackupSettings = field(default_factory=BackupSettings)

    def __post_init__(self) -> None:
        _coerce(
            self,
            servers=tuple(self.servers),
            directories=tuple(self.directories),
            events=_events(self.events),
        )

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers)

    @property
    def data_servers(self) -> tuple[Server, ...]:
        """The servers that hold a copy of the directories (every one but witnesses)."""
        return tuple(s for s in self.servers if s.role != Role.WITNESS)

    @property
    def voters(self) -> tuple[str, ...]:
        """The servers that vote in elections: not backup servers, not `voter = false`."""
        return tuple(s.name for s in self.servers if s.role != Role.BACKUP and s.voter)


def _coerce(obj: object, **values: object) -> None:
    """Let the Python API pass lists and strings where the model stores tuples and enums."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def _events(value: Events | Mapping[str | Event, Handler | Iterable[Handler]]) -> Events:
    """The Python API accepts `events={"prepare": handler}` as well as an Events."""
    return value if isinstance(value, Events) else Events.build(value)
