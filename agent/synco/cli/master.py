"""`synco master SCRIPT`: which server is the master, and why."""

from __future__ import annotations

import argparse

from synco.cli.output import emit_json
from synco.errors import EXIT_OK
from synco.model import Script
from synco.resolver import resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--as", dest="as_server", metavar="SERVER", help="act as this server")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")


def command(script: Script, arguments: argparse.Namespace) -> int:
    master, current = resolve(script, arguments.as_server, need_current=False)
    if arguments.json:
        answer = master.answer
        emit_json(
            {
                "master": master.server,
                "reason": master.reason,
                "name": script.master,
                "answer": None
                if answer is None
                else {
                    "name": answer.name,
                    "canonical": answer.canonical,
                    "addresses": sorted(answer.addresses),
                    "source": answer.source,
                    "ttl": answer.ttl,
                },
                "current": current.server,
                "current_reason": current.reason,
            }
        )
    else:
        print(master.server)
        print(f"  {master.reason}")
    return EXIT_OK
