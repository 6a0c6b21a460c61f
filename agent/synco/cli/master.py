"""`synco master SCRIPT`: which server is the master, and why."""

from __future__ import annotations

import argparse
from typing import Any

from synco.cli.output import emit_json
from synco.core.errors import EXIT_OK
from synco.core.model import Script
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
                "record": _record(script),
            }
        )
    else:
        print(master.server)
        print(f"  {master.reason}")
        record = _record(script)
        if record is not None:
            print(
                f"  record: {record['state']} from {record['server']}; asked {', '.join(record['servers'])}"
            )
    return EXIT_OK


def _record(script: Script) -> dict[str, Any] | None:
    """The master record and its epoch as the primary serves them (scripts with [dns])."""
    if script.dns is None:
        return None
    from synco.dns_client import Authority, describe

    authority = Authority(script.dns)
    state = authority.read(script.master)
    return {
        "name": script.master,
        "kind": state.kind,
        "values": list(state.values),
        "epoch": state.epoch,
        "ttl": state.ttl,
        "server": state.server,
        "servers": [describe(s) for s in authority.servers()],
        "state": state.describe(),
    }
