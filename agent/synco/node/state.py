"""A node's persisted state: epoch and generations, written atomically (adapter).

An epoch must never go backwards after a restart, so a state file that cannot be read
is an error naming the file, never a silent reset to zero.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from synco.core.errors import OperationError


@dataclass(frozen=True)
class NodeState:
    epoch: int = 0  # the highest election epoch this node has seen (never goes back)
    voted_for: str | None = None  # its vote in that epoch
    generation: int = 0  # as master: the number of change batches seen
    pulled_generation: int = 0  # as replica: the generation of the last complete pull
    pulled_master: str | None = None  # the master that pull came from
    acted_as_master: bool = False  # acted as master since that pull: the next one keeps aside
    data_epoch: int = 0  # the data it holds came from the master of this epoch...
    data_generation: int = 0  # ...at this generation (how current it is, in elections)
    failover_paused: bool = False  # an operator paused automatic failover cluster-wide...
    pause_version: int = 0  # ...in the newest pause or resume this node has heard of
    pause_note: str = ""  # who paused or resumed it, and when


def load_state(path: Path) -> NodeState:
    """The state in `path`, or the initial state if the file does not exist yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return NodeState()
    except (OSError, ValueError) as error:
        raise OperationError(
            f"state file {path} is unreadable ({error}); move it away only if you know why"
        ) from error
    if not isinstance(data, dict):
        raise OperationError(f"state file {path} does not hold a JSON object")
    known = {f.name for f in fields(NodeState)}
    try:
        return NodeState(**{k: v for k, v in data.items() if k in known})
    except TypeError as error:
        raise OperationError(f"state file {path}: {error}") from error


def save_state(path: Path, state: NodeState) -> None:
    """Write `state` so that a crash leaves either the old or the new file, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w") as stream:
        json.dump(asdict(state), stream, sort_keys=True)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
