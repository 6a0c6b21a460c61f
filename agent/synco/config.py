"""Load a backup script from TOML, naming every problem by key path and line."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from synco.core.errors import ConfigError
from synco.core.model import (
    DEFAULT_RSYNC_ARGUMENTS,
    DNS_MODES,
    ROLE_EVENTS,
    SNAPSHOT_BACKENDS,
    AgentSettings,
    BackupSettings,
    CommandHandler,
    Direction,
    Directory,
    DnsSettings,
    Event,
    Events,
    Handler,
    Method,
    Role,
    Script,
    Server,
    Side,
    Staging,
    StagingProvider,
)
from synco.core.problems import Problem
from synco.core.resolution import LOOPBACK, LocalIdentity
from synco.core.retention import PERIODS, Policy, parse_duration
from synco.core.validation import ROLE_EVENTS_ON, ROLE_EVENTS_PLACE, validate
from synco.toml_lines import key_lines, line_of

TOP_KEYS = (
    "master",
    "description",
    "method",
    "servers",
    "directories",
    "events",
    "dns",
    "agent",
    "backup",
)
BACKUP_KEYS = (
    "interval",
    "backend",
    "verify",
    "prune",
    *PERIODS,
    "keep",
    "keep_last",
    "keep_within",
    "timezone",
)
AGENT_KEYS = tuple(f.name for f in fields(AgentSettings))
DNS_KEYS = ("zone", "servers", "key_file", "mode", "ttl", "timeout", "propagation_timeout")
METHOD_KEYS = ("name", "direction", "arguments", "events", "publish", "verify", "snapshot_backend")
SERVER_KEYS = (
    "host",
    "root",
    "user",
    "port",
    "identity_file",
    "ssh_options",
    "priority",
    "role",
    "voter",
    "mountpoint",
    "synco_path",
    "agent",
    "metrics",
    "events",
    "staging",
)
DIRECTORY_KEYS = ("path", "arguments", "events", "staging")
STAGING_KEYS = tuple(f.name for f in fields(Staging))
HANDLER_KEYS = ("run", "on")


@dataclass
class _Reader:
    """Typed access to a parsed TOML document that records problems instead of raising."""

    problems: list[Problem] = field(default_factory=list)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(key, message))

    def keys(self, key: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for name in table:
            if name not in allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
                self.problem(_join(key, name), f"unknown key{hint}")

    def string(self, key: str, table: dict[str, Any], name: str, required: bool = False) -> str | None:
        value = table.get(name)
        if value is None:
            if required:
                self.problem(_join(key, name), "is required")
            return None
        if not isinstance(value, str):
            self.problem(_join(key, name), f"must be a string, not {_kind(value)}")
            return None
        return value

    def integer(self, key: str, table: dict[str, Any], name: str) -> int | None:
        value = table.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(_join(key, name), f"must be an integer, not {_kind(value)}")
            return None
        return value

    def strings(self, key: str, table: dict[str, Any], name: str) -> tuple[str, ...] | None:
        value = table.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(_join(key, name), f"must be an array of strings, not {_kind(value)}")
            return None
        return tuple(value)

    def number(self, key: str, table: dict[str, Any], name: str, default: float) -> float:
        value = table.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(_join(key, name), f"must be a number, not {_kind(value)}")
            return default
        return float(value)

    def boolean(self, key: str, table: dict[str, Any], name: str, default: bool) -> bool:
        value = table.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(_join(key, name), f"must be true or false, not {_kind(value)}")
            return default
        return value

    def duration(self, key: str, table: dict[str, Any], name: str) -> timedelta | None:
        """Seconds as a number, or a duration such as "90m", "1h" or "1d12h"."""
        value = table.get(name)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return timedelta(seconds=value)
            except OverflowError:
                self.problem(_join(key, name), f"{value} seconds is too long")
                return None
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except (ValueError, OverflowError) as error:
                self.problem(_join(key, name), str(error))
                return None
        self.problem(_join(key, name), f'must be seconds or a duration like "1h", not {_kind(value)}')
        return None

    def table(self, key: str, table: dict[str, Any], name: str) -> dict[str, Any] | None:
        value = table.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(_join(key, name), f"must be a table, not {_kind(value)}")
            return None
        return value

    def choice(self, key: str, table: dict[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(key, table, name)
        if value is not None and value not in choices:
            self.problem(_join(key, name), f"{value!r} is not one of: {', '.join(choices)}")
            return None
        return value


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _kind(value: object) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return kinds.get(type(value), type(value).__name__)


def load_script(path: str | Path) -> Script:
    """Read and check a TOML backup script; ConfigError lists every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read backup script {str(path)!r}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    script, problems = parse_script(text, source=str(path))
    if problems or script is None:
        raise ConfigError(
            f"{path}: {len(problems)} problem(s) in the backup script", tuple(map(str, problems))
        )
    return script


def parse_script(
    text: str, source: str | None = None, local: LocalIdentity = LOOPBACK
) -> tuple[Script | None, list[Problem]]:
    """The script and the problems found in TOML `text` (script is None when unusable).

    Structural problems (types, unknown keys) and semantic ones (paths, overlaps, sides)
    are all reported together, each key once. `local`: what `validate` knows of this machine.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return None, [Problem("", f"not valid TOML: {error}")]
    reader = _Reader()
    script = _build_script(reader, data, source)
    problems = list(reader.problems)
    seen = {p.key for p in problems}
    for problem in validate(script, local):
        if problem.key not in seen and not any(problem.key.startswith(k + ".") for k in seen if k):
            problems.append(problem)
            seen.add(problem.key)
    lines = key_lines(text)
    located = [Problem(p.key, p.message, line_of(p.key, lines)) for p in problems]
    return (script if not located else None), located


def _build_script(reader: _Reader, data: dict[str, Any], source: str | None) -> Script:
    reader.keys("", data, TOP_KEYS)
    master = reader.string("", data, "master", required=True)
    reader.string("", data, "description")
    method = _build_method(reader, reader.table("", data, "method") or {})
    servers = list(_build_servers(reader, data))
    directories = list(_build_directories(reader, data))
    events = _build_events(reader, "events", data, roles=True)
    dns_table = reader.table("", data, "dns")
    agent_table = reader.table("", data, "agent")
    backup_table = reader.table("", data, "backup")
    return Script(
        servers=tuple(servers),
        directories=tuple(directories),
        master=master or "",
        dns=None if dns_table is None else _build_dns(reader, dns_table),
        agent=None if agent_table is None else _build_agent(reader, agent_table),
        backup=BackupSettings() if backup_table is None else _build_backup(reader, backup_table),
        method=method,
        events=events,
        source=source,
    )


def _build_dns(reader: _Reader, table: dict[str, Any]) -> DnsSettings:
    reader.keys("dns", table, DNS_KEYS)
    zone = reader.string("dns", table, "zone", required=True)
    return DnsSettings(
        zone=zone or "",
        servers=reader.strings("dns", table, "servers") or (),
        key_file=reader.string("dns", table, "key_file"),
        mode=reader.choice("dns", table, "mode", DNS_MODES) or "cname",
        ttl=_default(reader.integer("dns", table, "ttl"), 30),
        timeout=reader.number("dns", table, "timeout", 3.0),
        propagation_timeout=reader.number("dns", table, "propagation_timeout", 30.0),
    )


def _build_agent(reader: _Reader, table: dict[str, Any]) -> AgentSettings:
    reader.keys("agent", table, AGENT_KEYS)
    defaults = AgentSettings()
    values: dict[str, Any] = {}
    for field_ in fields(AgentSettings):
        default = getattr(defaults, field_.name)
        if isinstance(default, bool):
            values[field_.name] = reader.boolean("agent", table, field_.name, default)
        elif isinstance(default, float):
            values[field_.name] = reader.number("agent", table, field_.name, default)
        else:
            values[field_.name] = reader.string("agent", table, field_.name) or default
    return AgentSettings(**values)


def _build_backup(reader: _Reader, table: dict[str, Any]) -> BackupSettings:
    reader.keys("backup", table, BACKUP_KEYS)
    interval = reader.duration("backup", table, "interval")
    counts = {}
    for period in PERIODS:
        count = reader.integer("backup", table, period)
        if count is not None:
            counts[period] = count
    zone_name = reader.string("backup", table, "timezone")
    timezone: Any = UTC
    if zone_name is not None:
        try:
            timezone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            reader.problem("backup.timezone", f"unknown time zone {zone_name!r}")
    policy = Policy(
        counts=counts,
        keep=reader.choice("backup", table, "keep", ("old", "new")) or "old",
        keep_last=reader.integer("backup", table, "keep_last"),
        keep_within=reader.duration("backup", table, "keep_within"),
        timezone=timezone,
    )
    return BackupSettings(
        interval=3600.0 if interval is None else interval.total_seconds(),
        backend=reader.choice("backup", table, "backend", SNAPSHOT_BACKENDS) or "hardlink",
        verify=reader.boolean("backup", table, "verify", False),
        prune=reader.boolean("backup", table, "prune", True),
        policy=policy,
    )


def _build_method(reader: _Reader, table: dict[str, Any]) -> Method:
    reader.keys("method", table, METHOD_KEYS)
    name = reader.string("method", table, "name")
    direction = reader.choice("method", table, "direction", tuple(d.value for d in Direction))
    arguments = reader.strings("method", table, "arguments")
    return Method(
        name="rsync" if name is None else name,
        direction=Direction(direction or Direction.PUSH),
        arguments=DEFAULT_RSYNC_ARGUMENTS if arguments is None else arguments,
        events=_build_events(reader, "method.events", table, roles=False),
        publish=reader.boolean("method", table, "publish", True),
        verify=reader.boolean("method", table, "verify", False),
        snapshot_backend=reader.choice("method", table, "snapshot_backend", SNAPSHOT_BACKENDS) or "hardlink",
    )


def _build_servers(reader: _Reader, data: dict[str, Any]) -> Iterator[Server]:
    servers = reader.table("", data, "servers")
    if servers is None:
        if "servers" not in data:
            reader.problem("servers", "is required: add a [servers.NAME] table for each server")
        return
    for name, table in servers.items():
        key = f"servers.{name}"
        if not isinstance(table, dict):
            reader.problem(key, f"must be a table, not {_kind(table)}")
            continue
        reader.keys(key, table, SERVER_KEYS)
        role = reader.choice(key, table, "role", tuple(r.value for r in Role))
        root = reader.string(key, table, "root", required=role != Role.WITNESS)
        events = _build_events(reader, f"{key}.events", table, roles=True)
        server = Server(
            name=name,
            root="" if root is None else root,
            host=reader.string(key, table, "host"),
            user=reader.string(key, table, "user"),
            port=reader.integer(key, table, "port"),
            identity_file=reader.string(key, table, "identity_file"),
            ssh_options=reader.strings(key, table, "ssh_options") or (),
            priority=_default(reader.integer(key, table, "priority"), 100),
            role=Role(role or Role.REPLICA),
            voter=reader.boolean(key, table, "voter", True),
            mountpoint=reader.string(key, table, "mountpoint"),
            synco_path=reader.string(key, table, "synco_path") or "synco",
            agent=reader.string(key, table, "agent"),
            metrics=reader.string(key, table, "metrics"),
            events=events,
            staging=_build_staging(reader, key, table),
        )
        yield server


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _build_directories(reader: _Reader, data: dict[str, Any]) -> Iterator[Directory]:
    directories = data.get("directories")
    if directories is None:
        reader.problem("directories", "is required: add a [[directories]] table for each directory")
        return
    if not isinstance(directories, list):
        reader.problem(
            "directories", f"must be an array of tables ([[directories]]), not {_kind(directories)}"
        )
        return
    for index, table in enumerate(directories):
        key = f"directories[{index}]"
        if isinstance(table, str):
            table = {"path": table}
        if not isinstance(table, dict):
            reader.problem(key, f"must be a table or a path string, not {_kind(table)}")
            continue
        reader.keys(key, table, DIRECTORY_KEYS)
        path = reader.string(key, table, "path", required=True)
        arguments = reader.strings(key, table, "arguments") or ()
        events = _build_events(reader, f"{key}.events", table, roles=False)
        staging = _build_staging(reader, key, table)
        if path is not None:
            yield Directory(path=path, arguments=arguments, events=events, staging=staging)


def _build_staging(reader: _Reader, key: str, owner: dict[str, Any]) -> Staging | None:
    table = reader.table(key, owner, "staging")
    if table is None:
        return None
    key = f"{key}.staging"
    reader.keys(key, table, STAGING_KEYS)
    provider = reader.choice(key, table, "provider", tuple(p.value for p in StagingProvider))
    if provider is None:
        if "provider" not in table:
            choices = ", ".join(p.value for p in StagingProvider)
            reader.problem(f"{key}.provider", f"is required: one of {choices}")
        return None
    text = {name: reader.string(key, table, name) for name in ("origin", "snapshots", "volume", "dataset")}
    return Staging(
        provider=StagingProvider(provider),
        **{name: value for name, value in text.items() if value is not None},
        size=reader.string(key, table, "size") or "1G",
        mount_options=reader.string(key, table, "mount_options") or "ro",
        create=reader.strings(key, table, "create") or (),
        path=reader.strings(key, table, "path") or (),
        destroy=reader.strings(key, table, "destroy") or (),
        list=reader.strings(key, table, "list") or (),
    )


def _build_events(reader: _Reader, key: str, owner: dict[str, Any], roles: bool) -> Events:
    """The handlers in `owner[events]`; `roles`: whether role events may be among them."""
    name = key.rsplit(".", 1)[-1]
    table = reader.table(key.rsplit(".", 1)[0] if "." in key else "", owner, name)
    if not table:
        return Events()
    reader.keys(key, table, tuple(e.value for e in Event))
    handlers: dict[str, tuple[Handler, ...]] = {}
    for event in Event:
        if event.value not in table:
            continue
        role = event in ROLE_EVENTS
        if role and not roles:
            reader.problem(f"{key}.{event.value}", ROLE_EVENTS_PLACE)
            continue
        handlers[event.field_name] = tuple(
            _build_handlers(reader, f"{key}.{event.value}", table[event.value], role)
        )
    return Events(**handlers)


def _build_handlers(reader: _Reader, key: str, value: object, role: bool) -> Iterator[CommandHandler]:
    """A handler is an argv, a list of argvs, a `{run = [...], on = "..."}` table, or a list of those.
    `role`: a role event's handler, which has no `on` (it runs on the agent's own machine)."""
    if isinstance(value, dict):
        yield from _build_handler_table(reader, key, value, role)
        return
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            yield from _build_handler_table(reader, f"{key}[{index}]", item, role)
        return
    commands = _commands(reader, key, value)
    if commands is not None:
        yield CommandHandler(commands)


def _build_handler_table(
    reader: _Reader, key: str, table: dict[str, Any], role: bool
) -> Iterator[CommandHandler]:
    reader.keys(key, table, HANDLER_KEYS)
    if role:
        side = None
        if "on" in table:
            reader.problem(f"{key}.on", ROLE_EVENTS_ON)
    else:
        side = reader.choice(key, table, "on", tuple(s.value for s in Side))
    if "run" not in table:
        reader.problem(
            f"{key}.run",
            'is required: the commands to run, e.g. [["systemctl", "reload", "nginx"]]',
        )
        return
    commands = _commands(reader, f"{key}.run", table["run"])
    if commands is not None:
        yield CommandHandler(commands, Side(side) if side else None)


def _commands(reader: _Reader, key: str, value: object) -> tuple[tuple[str, ...], ...] | None:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return (tuple(value),)
    if (
        isinstance(value, list)
        and value
        and all(isinstance(c, list) and c and all(isinstance(a, str) for a in c) for c in value)
    ):
        return tuple(tuple(c) for c in value)
    reader.problem(key, 'must be a command (["cmd", "arg"]) or a list of commands ([["cmd"], ["cmd2"]])')
    return None
