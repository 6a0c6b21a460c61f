"""`synco verify`: check a snapshot against its checksum manifest, or targets against their source.

synco [--root DIR] verify [SNAPSHOT]        re-hash SNAPSHOT (default: latest) against the
                                            manifest recorded when it was published
synco verify --script SCRIPT [--as SERVER]  compare each target's copy (latest snapshot
                                            for the snapshot method) with the master, by checksum
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synco.cli.output import emit_json
from synco.core.errors import EXIT_FAILED, EXIT_OK, OperationError
from synco.core.snapshot_names import LATEST, METADATA_DIR
from synco.loader import load
from synco.manifest import compare
from synco.snapshot_store import SnapshotStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("snapshot", nargs="?", default=LATEST, help="snapshot name (default: latest)")
    parser.add_argument("--script", help="compare the targets of this backup script with its master instead")
    parser.add_argument("--as", dest="as_server", metavar="SERVER", help="act as this server (with --script)")
    parser.add_argument("--target", help="only this target server (with --script)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def command(root: Path, arguments: argparse.Namespace) -> int:
    if arguments.script:
        return _against_source(arguments)
    store = SnapshotStore(root)
    name = arguments.snapshot
    if name == LATEST:
        resolved = store.latest_name()
        if resolved is None:
            raise OperationError(f"{root}: no {LATEST} snapshot to verify")
        name = resolved
    if not (root / name).is_dir():
        raise OperationError(f"{root}: no snapshot {name!r}")
    expected = store.manifest_of(name)
    if expected is None:
        raise OperationError(
            f"snapshot {name} has no checksum manifest (set verify = true in the method), "
            "or compare with the source: synco verify --script SCRIPT"
        )
    differences = compare(root / name, expected, skip=METADATA_DIR)
    if arguments.json:
        emit_json(
            {
                "ok": not differences,
                "snapshot": name,
                "files": len(expected),
                "differences": [{"path": d.path, "problem": d.problem} for d in differences],
            }
        )
    else:
        for difference in differences:
            print(difference.describe())
        verdict = "matches its manifest" if not differences else f"{len(differences)} difference(s)"
        print(f"{name}: {len(expected)} files, {verdict}", file=sys.stderr if arguments.json else sys.stdout)
    return EXIT_OK if not differences else EXIT_FAILED


def _against_source(arguments: argparse.Namespace) -> int:
    from synco.execution import Execution
    from synco.resolver import resolve

    script = load(arguments.script)
    master, current = resolve(script, arguments.as_server)
    execution = Execution(script, master, current)
    report = execution.verify(only=arguments.target)
    if arguments.json:
        emit_json(report)
    else:
        for target, result in report["targets"].items():  # type: ignore[attr-defined]
            for line in result["differences"]:
                print(f"{target}: {line}")
            state = "matches the master" if result["ok"] else f"{len(result['differences'])} difference(s)"
            if result.get("error"):
                state = f"could not be compared: {result['error']}"
            print(f"{target}: {state}")
    return EXIT_OK if report["ok"] else EXIT_FAILED
