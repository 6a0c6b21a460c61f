"""`synco mount MOUNTPOINT LABEL` and `synco unmount MOUNTPOINT`: a backup disk by its label.

Both are idempotent (mounting a disk already mounted there, or unmounting what is not
mounted, succeeds and says so) and refuse what would surprise: no disk or two disks with
the label, the disk mounted elsewhere, something else on the mount point, a busy disk.
In a script, the backup server's handlers: prepare `synco mount /mnt/backup BACKUP`, finish
`synco unmount /mnt/backup BACKUP` (with the label: never another disk mounted there), and
`mountpoint = "/mnt/backup"` so that nothing is written while the disk is missing.
"""

from __future__ import annotations

import argparse
import sys

from synco.cli.output import emit_json
from synco.core.errors import EXIT_OK, OperationError
from synco.mounting import (
    MountPlan,
    checked_mountpoint,
    current_mounts,
    labelled,
    plan_mount,
    plan_unmount,
    run_mount,
    run_unmount,
)


def mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    parser.add_argument("label", metavar="LABEL", help="the file system's label (e2label, btrfs label...)")
    parser.add_argument("--options", "-o", metavar="OPTIONS", help="mount options, e.g. noatime")
    _common(parser)


def unmount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument(
        "label",
        metavar="LABEL",
        nargs="?",
        help="unmount only the file system with this label (what a finish handler should say)",
    )
    _common(parser)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    parser.add_argument("--json", action="store_true", help="the outcome as JSON on stdout")


def mount(arguments: argparse.Namespace) -> int:
    mountpoint = checked_mountpoint(arguments.mountpoint)
    filesystems = labelled(arguments.label)
    plan = plan_mount(mountpoint, arguments.label, filesystems, current_mounts())
    if plan.action == "mount" and not arguments.dry_run:
        assert plan.device is not None
        run_mount(plan.device, mountpoint, arguments.options)
        after = plan_mount(mountpoint, arguments.label, filesystems, current_mounts())
        if after.action != "nothing":  # verify: the disk, and nothing else, is there now
            run_unmount(mountpoint)
            raise OperationError(f"after mounting, {mountpoint} is not {plan.device}: {after.reason}")
    return _report(plan, arguments)


def unmount(arguments: argparse.Namespace) -> int:
    mountpoint = checked_mountpoint(arguments.mountpoint)
    filesystems = labelled(arguments.label) if arguments.label is not None else None
    plan = plan_unmount(mountpoint, current_mounts(), arguments.label, filesystems)
    if plan.action == "unmount" and not arguments.dry_run:
        run_unmount(mountpoint)
    return _report(plan, arguments)


def _report(plan: MountPlan, arguments: argparse.Namespace) -> int:
    if plan.action == "refuse":
        raise OperationError(plan.reason)
    done = {"mount": "mounted", "unmount": "unmounted"}.get(plan.action)
    if arguments.dry_run and done:
        message = f"would {plan.reason}"
    elif done:
        message = f"{done}: {plan.reason.split(' ', 1)[1]}"
    else:
        message = plan.reason
    if arguments.json:
        emit_json(
            {
                "ok": True,
                "action": plan.action if done else "nothing",
                "dry_run": arguments.dry_run,
                "device": plan.device,
                "message": message,
            }
        )
    else:
        print(message, file=sys.stdout)
    return EXIT_OK
