"""The cluster script as an agent (or synco-ctl) reads it: which server this is, where its socket is."""

from __future__ import annotations

from pathlib import Path

from synco.core.errors import ConfigError
from synco.core.model import Script
from synco.core.resolution import LocalIdentity, choose_current
from synco.loader import load
from synco.resolver import default_resolver, local_identity, server_answers


def load_cluster(config: str, as_server: str | None) -> tuple[Script, str]:
    """The script (which must have an [agent] section) and the name of the server this is.

    The master is not looked up: synco-ctl needs only this server's control socket (on a
    node cut off from DNS, exactly when an operator needs it), and the agent follows the
    master itself, every `master_poll` seconds.
    """
    script = load(config)
    if script.agent is None:
        raise ConfigError(f"{config}: no [agent] section")
    return script, this_server(script, as_server)


def this_server(script: Script, as_server: str | None) -> str:
    """`--as NAME` (nothing is looked up), else the server whose host names this machine
    (the servers' hosts are looked up; the master is not)."""
    if as_server is not None:
        nobody = LocalIdentity(frozenset(), frozenset())
        current = choose_current(script, as_server, nobody, {})
    else:
        local = local_identity()
        current = choose_current(script, None, local, server_answers(script, default_resolver(script), local))
    if current.server is None:
        raise ConfigError("no server of the script is this machine; pass --as NAME")
    return current.server


def control_socket_path(script: Script, me: str) -> Path:
    assert script.agent is not None
    return Path(script.agent.path(script.agent.control_socket, me))
