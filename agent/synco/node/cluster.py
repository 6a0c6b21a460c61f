"""The cluster script as an agent (or synco-ctl) reads it: which server this is, where its socket is."""

from __future__ import annotations

from pathlib import Path

from synco.errors import ConfigError
from synco.loader import load
from synco.model import Script
from synco.resolver import resolve


def load_cluster(config: str, as_server: str | None) -> tuple[Script, str]:
    """The script (which must have an [agent] section) and the name of the server this is."""
    script = load(config)
    if script.agent is None:
        raise ConfigError(f"{config}: no [agent] section")
    _, current = resolve(script, as_server)
    if current.server is None:
        raise ConfigError("no server of the script is this machine; pass --as NAME")
    return script, current.server


def control_socket_path(script: Script, me: str) -> Path:
    assert script.agent is not None
    return Path(script.agent.path(script.agent.control_socket, me))
