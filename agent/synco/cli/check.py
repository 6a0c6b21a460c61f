"""`synco check SCRIPT`: validate a backup script and name every problem."""

from __future__ import annotations

import argparse
from pathlib import Path

from synco.cli.output import emit_json
from synco.config import parse_script
from synco.core.errors import EXIT_OK, EXIT_USAGE
from synco.core.problems import Problem
from synco.loader import python_problems
from synco.resolver import local_identity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the problems as JSON on stdout")


def problems_of(path: Path) -> list[Problem]:
    """Every problem of the script in `path`, each once. This machine's names and addresses
    (no lookup) tell which servers share its file system, so that what `synco run` would
    refuse here for the script's shape (overlapping copies on one host) is reported."""
    if path.suffix == ".py":
        return python_problems(path, local_identity())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return [Problem("", f"cannot read {str(path)!r}: {error.strerror}")]
    except UnicodeDecodeError as error:
        return [Problem("", f"not UTF-8 text ({error.reason} at byte {error.start})")]
    return parse_script(text, source=str(path), local=local_identity())[1]


def command(path: Path, arguments: argparse.Namespace) -> int:
    problems = problems_of(path)
    if arguments.json:
        emit_json({"ok": not problems, "script": str(path), "problems": [p.to_json() for p in problems]})
    elif problems:
        print(f"{path}: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
    else:
        print(f"{path}: ok")
    return EXIT_OK if not problems else EXIT_USAGE
