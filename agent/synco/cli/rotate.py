"""`synco [--root DIR] rotate`: publish `latest.snapshot` under its UTC timestamp and point `latest` at it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synco.core.errors import EXIT_OK, ConfigError
from synco.core.snapshot_names import DEFAULT_FORMAT, IN_PROGRESS, LATEST
from synco.lock import snapshot_lock
from synco.snapshot_store import BACKENDS, SnapshotStore


def add_store_arguments(parser: argparse.ArgumentParser, snapshot: bool = True) -> None:
    if snapshot:
        parser.add_argument(
            "--snapshot", default=IN_PROGRESS, help=f"in-progress snapshot (default {IN_PROGRESS})"
        )
    parser.add_argument("--latest", default=LATEST, help=f"symlink to the newest snapshot (default {LATEST})")
    parser.add_argument(
        "--format",
        default=DEFAULT_FORMAT,
        help="strftime format of snapshot names, in UTC (default %%Y.%%m.%%d-%%H.%%M.%%S)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--backend", choices=BACKENDS, default="hardlink", help="snapshot backend")
    parser.add_argument("--manifest", action="store_true", help="record a checksum manifest for verify")
    parser.add_argument("--metadata", help="JSON object to record in the snapshot's metadata")


def store(root: Path, arguments: argparse.Namespace) -> SnapshotStore:
    return SnapshotStore(
        root,
        fmt=arguments.format,
        in_progress=getattr(arguments, "snapshot", IN_PROGRESS),
        latest=arguments.latest,
    )


def command(root: Path, arguments: argparse.Namespace) -> int:
    metadata = None
    if arguments.metadata:
        try:
            metadata = json.loads(arguments.metadata)
        except ValueError as error:
            raise ConfigError(f"--metadata is not JSON: {error}") from error
        if not isinstance(metadata, dict):
            raise ConfigError("--metadata must be a JSON object")
    with snapshot_lock(root):
        name = store(root, arguments).publish(
            metadata, with_manifest=arguments.manifest, backend=arguments.backend
        )
    print(name)
    return EXIT_OK


def begin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--snapshot", default=IN_PROGRESS, help=f"in-progress snapshot (default {IN_PROGRESS})"
    )
    parser.add_argument("--backend", choices=BACKENDS, default="hardlink", help="snapshot backend")
    parser.add_argument(
        "--directory",
        action="append",
        dest="directories",
        metavar="PATH",
        help="a directory the script copies; anything else is removed from the snapshot in progress",
    )


def begin(root: Path, arguments: argparse.Namespace) -> int:
    removed = SnapshotStore(root, in_progress=arguments.snapshot).begin(
        arguments.backend, arguments.directories
    )
    for path in removed:
        print(f"removed {path} from {arguments.snapshot}: no longer copied", file=sys.stderr)
    print(json.dumps({"latest": SnapshotStore(root).latest_name(), "removed": removed}))
    return EXIT_OK
