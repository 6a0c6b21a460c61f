"""Synco: replication and backup for Linux servers.

A backup script names servers, the directories to copy, the method that copies them and
the master the data flows from. The same script can be a TOML file or a Python program
built with the classes exported here.
"""

__version__ = "0.1.0"

from synco.model import (
    Directory,
    Event,
    Handler,
    Method,
    Script,
    Server,
    Side,
    command,
)
from synco.pyapi import main, run

__all__ = [
    "Directory",
    "Event",
    "Handler",
    "Method",
    "Script",
    "Server",
    "Side",
    "__version__",
    "command",
    "main",
    "run",
]
