"""`synco check SCRIPT`: validate a backup script and name every problem."""

from __future__ import annotations

import argparse
from pathlib import Path

from synco.cli.output import emit_json
from synco.config import parse_script
from synco.errors import EXIT_OK, EXIT_USAGE, ConfigError
from synco.loader import load_python
from synco.problems import Problem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the problems as JSON on stdout")


def problems_of(path: Path) -> list[Problem]:
    if path.suffix == ".py":
        try:
            load_python(path)
        except ConfigError as error:
            return [Problem("", str(error))]
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        return [Problem("", f"cannot read {str(path)!r}: {error.strerror}")]
    except UnicodeDecodeError as error:
        return [Problem("", f"not UTF-8 text ({error.reason} at byte {error.start})")]
    return parse_script(text, source=str(path))[1]


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
