"""Command lines for servers: ssh, rsync locations and remote shell commands (pure)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from synco.core.model import Server

# Variables that change how rsync quotes remote arguments; Synco sets the behaviour itself.
RSYNC_ENVIRONMENT = ("RSYNC_OLD_ARGS", "RSYNC_PROTECT_ARGS")


def ssh_argv(server: Server) -> list[str]:
    """ssh and its options for `server`, without the destination (rsync's `-e` form)."""
    argv = ["ssh", "-o", "BatchMode=yes"]
    if server.port is not None:
        argv += ["-p", str(server.port)]
    if server.identity_file is not None:
        argv += ["-i", server.identity_file]
    if server.user is not None:
        argv += ["-l", server.user]
    argv += list(server.ssh_options)
    return argv


def ssh_host(server: Server) -> str:
    assert server.host is not None
    return server.host.strip("[]")


def rsync_location(server: Server, path: str) -> str:
    """`[user@]host:path` for rsync; IPv6 literals in brackets."""
    assert server.host is not None
    host = server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    login = f"{server.user}@{host}" if server.user else host
    return f"{login}:{path}"


def remote_shell_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> str:
    """One string for the remote shell: enter `cwd` (or fail), export `env`, exec argv.

    Quoted once with shlex, so every argument reaches the program exactly as given.
    """
    parts: list[str] = []
    if cwd is not None:
        missing = shlex.quote(f"synco: {cwd} does not exist or cannot be entered")
        parts.append(f"cd -- {shlex.quote(cwd)} 2>/dev/null || {{ echo {missing} >&2; exit 1; }};")
    if env:
        parts.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())) + ";")
    parts.append("exec " + shlex.join(list(argv)))
    return " ".join(parts)


def remote_argv(
    server: Server, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> list[str]:
    """The local argv that runs `argv` on `server` through ssh."""
    return [*ssh_argv(server), "--", ssh_host(server), remote_shell_command(argv, env or {}, cwd)]
