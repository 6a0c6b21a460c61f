"""Whether a cluster fails over on its own, and with which timings (pure).

Automatic failover needs a master that is a DNS name with a [dns] section (and its TSIG
key), so that Synco can move the name compare-and-set, and at least three voters, so that a
majority survives the loss of one. Otherwise the agents follow the script as it says.
"""

from __future__ import annotations

from synco.core.election import ElectionTiming
from synco.core.model import AgentSettings, Role, Script


def failover_off(script: Script) -> str | None:
    """Why the agents of `script` do not fail over on their own, or None if they do."""
    if script.agent is None:
        return "the script has no [agent] section"
    if script.master in script.server_names:
        return (
            f"the master is named in the script ({script.master}); name it by DNS, with a [dns] section, "
            "for automatic failover"
        )
    if script.dns is None:
        return "no [dns] section: Synco could not move the master's name"
    if script.dns.key_file is None:
        return "dns.key_file is not set: Synco could not update the master's record"
    voters = script.voters
    if len(voters) < 3:
        counted = f"{len(voters)} voter{'s' if len(voters) != 1 else ''} ({', '.join(voters) or 'none'})"
        return (
            f"{counted}: a majority that survives the loss of one needs three; "
            'add a server with role = "witness"'
        )
    if not any(s.priority > 0 and s.role == Role.REPLICA for s in script.servers):
        return "no server may become master: every replica has priority 0"
    return None


def election_timing(agent: AgentSettings) -> ElectionTiming:
    return ElectionTiming(
        heartbeat=agent.heartbeat_interval,
        lease=agent.lease,
        margin=agent.lease_margin,
        min_failover_interval=agent.min_failover_interval,
    )
