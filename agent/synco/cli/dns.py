"""`synco dns set SCRIPT SERVER --expect CURRENT`: point the master's DNS name at SERVER,
compare-and-set, then wait until every authoritative server serves the change."""

from __future__ import annotations

import argparse
import sys

from synco.cli.output import emit_json
from synco.core.dns_records import plan_change
from synco.core.errors import EXIT_FAILED, EXIT_OK, ConfigError, OperationError
from synco.core.model import Script


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["set"], help="set: point the master's name at SERVER")
    parser.add_argument("script", metavar="SCRIPT", help="backup script with a [dns] section")
    parser.add_argument("server", metavar="SERVER", help="the server to make master")
    parser.add_argument(
        "--expect",
        required=True,
        metavar="CURRENT",
        help="the server the name points at now (`none` if there is no record); "
        "if it points elsewhere, nothing changes",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the change, send nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def command(script: Script, arguments: argparse.Namespace) -> int:
    if script.dns is None:
        raise ConfigError(
            f"{script.source}: no [dns] section: Synco does not know where the master's name lives"
        )
    if arguments.server not in script.server_names:
        raise ConfigError(f"no server {arguments.server!r}; servers are {', '.join(script.server_names)}")
    from synco.dns_client import Authority
    from synco.master_record import desired_values, server_of
    from synco.tsig_key import load_key

    key = None
    if not arguments.dry_run:
        if script.dns.key_file is None:
            raise ConfigError("dns.key_file is not set: changing the record needs a TSIG key")
        key = load_key(script.dns.key_file)
    authority = Authority(script.dns)
    current = authority.read(script.master)
    current_server = server_of(script, authority, current)
    expected = None if arguments.expect == "none" else arguments.expect
    if current_server != expected:
        raise OperationError(
            f"{script.master} names {current_server or 'nothing'} ({current.describe()}), "
            f"not {arguments.expect}; nothing changed"
        )
    change = plan_change(
        script.master,
        current,
        script.dns.mode,
        desired_values(script, authority, script.server(arguments.server)),
        script.dns.ttl,
    )
    log = sys.stderr if arguments.json else sys.stdout
    if arguments.dry_run:
        print(f"would change {change.describe()}", file=log)
        if arguments.json:
            emit_json({"ok": True, "dry_run": True, "change": change.describe()})
        return EXIT_OK
    assert key is not None
    authority.apply(change, key)
    print(f"changed {change.describe()}", file=log)
    visible = authority.wait_visible(change)
    for server, seconds in visible.items():
        state = f"serves it after {seconds:.2f} s" if seconds is not None else "does NOT serve it yet"
        print(f"  {server} {state}", file=log)
    everywhere = all(v is not None for v in visible.values())
    if arguments.json:
        emit_json(
            {"ok": everywhere, "change": change.describe(), "epoch": change.desired.epoch, "visible": visible}
        )
    return EXIT_OK if everywhere else EXIT_FAILED
