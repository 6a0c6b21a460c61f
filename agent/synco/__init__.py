"""Synco: replication and backup for Linux servers.

A backup script names servers, the directories to copy, the method that copies them and
the master the data flows from. The same script can be a TOML file or a Python program
built with the classes exported here.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from synco.core.model import (
    Directory,
    Event,
    Handler,
    Method,
    Script,
    Server,
    Side,
    Staging,
    command,
)

if TYPE_CHECKING:
    from synco.pyapi import main, run


def __getattr__(name: str) -> Any:
    """`synco.main` and `synco.run` (they resolve hosts and run rsync), imported when first
    used: importing synco itself does no I/O."""
    if name in ("main", "run"):
        from synco import pyapi

        return getattr(pyapi, name)
    raise AttributeError(f"module 'synco' has no attribute {name!r}")


__all__ = [
    "Directory",
    "Event",
    "Handler",
    "Method",
    "Script",
    "Server",
    "Side",
    "Staging",
    "__version__",
    "command",
    "main",
    "run",
]
