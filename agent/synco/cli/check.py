"""`synco check SCRIPT`: validate a backup script and name every problem."""

from __future__ import annotations

import argparse
from pathlib import Path

from synco.cli.output import emit_json
from synco.config import parse_script
from synco.core.errors import EXIT_OK, EXIT_USAGE
from synco.core.failover import failover_off
from synco.core.model import Script
from synco.core.problems import Problem
from synco.loader import python_problems
from synco.resolver import local_identity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the problems as JSON on stdout")


def problems_of(path: Path) -> list[Problem]:
    return checked(path)[1]


def checked(path: Path) -> tuple[Script | None, list[Problem]]:
    """The script (None for a Python script, or one that does not parse) and every problem
    of the script in `path`, each once. This machine's names and addresses
    (no lookup) tell which servers share its file system, so that what `synco run` would
    refuse here for the script's shape (overlapping copies on one host) is reported."""
    if path.suffix == ".py":
        return None, python_problems(path, local_identity())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return None, [Problem("", f"cannot read {str(path)!r}: {error.strerror}")]
    except UnicodeDecodeError as error:
        return None, [Problem("", f"not UTF-8 text ({error.reason} at byte {error.start})")]
    return parse_script(text, source=str(path), local=local_identity())


def failover_line(script: Script) -> str:
    """What the agents do when the master fails, and why."""
    off = failover_off(script)
    if off is not None:
        return f"automatic failover: off ({off})"
    agent = script.agent
    assert agent is not None
    return (
        f"automatic failover: on ({len(script.voters)} voters: {', '.join(script.voters)}; "
        f"lease {agent.lease:g} s renewed every {agent.heartbeat_interval:g} s, "
        f"at most one failover per {agent.min_failover_interval:g} s)"
    )


def command(path: Path, arguments: argparse.Namespace) -> int:
    script, problems = checked(path)
    failover = None if script is None or script.agent is None or problems else failover_line(script)
    if arguments.json:
        document: dict[str, object] = {
            "ok": not problems,
            "script": str(path),
            "problems": [p.to_json() for p in problems],
        }
        if failover is not None and script is not None:
            document["automatic_failover"] = {"on": failover_off(script) is None, "why": failover}
        emit_json(document)
    elif problems:
        print(f"{path}: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
    else:
        print(f"{path}: ok")
        if failover is not None:
            print(f"  {failover}")
    return EXIT_OK if not problems else EXIT_USAGE
