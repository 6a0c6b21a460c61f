"""The Python API: run a Script built in Python, or make a Python file an executable script."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from synco.core.model import Script
from synco.report import RunReport
from synco.resolver import Resolver


def run(
    script: Script,
    *,
    dry_run: bool = False,
    as_server: str | None = None,
    progress: bool = False,
    resolver: Resolver | None = None,
    lock: bool = True,
) -> RunReport:
    """Check and run `script` once, as `synco run` does; the report says what happened.

    Raises ConfigError (bad script), ResolutionError (master or current server unclear)
    or LockedError (another run holds the lock). Copy failures are in the report.
    """
    from synco.cli.run import execute
    from synco.loader import checked

    source = script.source or (os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None)
    return execute(
        checked(script, source),
        dry_run=dry_run,
        as_server=as_server,
        progress=progress,
        resolver=resolver,
        lock=lock,
    )


def main(script: Script, argv: Sequence[str] | None = None) -> int:
    """Command line for an executable Python backup script: `./backup.py [run|check|master] ...`.

    Use as `raise SystemExit(synco.main(script))` under `if __name__ == "__main__":`.
    """
    from synco.cli.main import main_for_script

    return main_for_script(script, list(sys.argv[1:] if argv is None else argv))
