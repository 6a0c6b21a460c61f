"""rsync's exit codes, version features and --stats output (pure)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

EXIT_MESSAGES = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files or directories",
    4: "requested action not supported",
    5: "error starting client-server protocol",
    6: "daemon unable to append to log file",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in rsync protocol data stream",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    20: "received SIGUSR1 or SIGINT",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    126: "command not executable",
    127: "command not found",
    255: "ssh failed (connection, authentication or remote command)",
}


class Verdict(StrEnum):
    OK = "ok"
    WARNING = "warning"  # vanished source files: the copy is as complete as the source allows
    ERROR = "error"


def classify(returncode: int) -> Verdict:
    if returncode == 0:
        return Verdict.OK
    if returncode == 24:
        return Verdict.WARNING
    return Verdict.ERROR


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return EXIT_MESSAGES.get(returncode, f"exit status {returncode}")


@dataclass(frozen=True)
class Features:
    version: tuple[int, ...]

    @property
    def mkpath(self) -> bool:
        return self.version >= (3, 2, 3)

    def comparison_arguments(self, nanoseconds: bool) -> list[str]:
        """With `nanoseconds` (the target keeps them), compare modification times to the
        nanosecond: by default rsync compares whole seconds, and misses a file rewritten
        with the same size within the second it was last copied (a replica pulling right
        after a change). Placed before the script's arguments, so that a script's own
        --modify-window wins."""
        return ["--modify-window=-1"] if nanoseconds and self.version >= (3, 1, 3) else []

    def safety_arguments(self) -> list[str]:
        """Arguments that make remote paths arrive unchanged whatever the rsync versions and
        environment (--protect-args also overrides RSYNC_OLD_ARGS), and create parents."""
        arguments = ["--protect-args"]
        if self.mkpath:
            arguments.append("--mkpath")
        return arguments


def parse_version(text: str) -> tuple[int, ...]:
    match = re.search(r"version\s+v?(\d+(?:\.\d+)+)", text)
    if not match:
        raise ValueError("no version in rsync --version output")
    return tuple(int(p) for p in match.group(1).split("."))


STATS = {
    "files": r"Number of regular files transferred:\s*([\d,]+)",
    "bytes_sent": r"Total bytes sent:\s*([\d,]+)",
    "bytes_received": r"Total bytes received:\s*([\d,]+)",
    "transferred_size": r"Total transferred file size:\s*([\d,]+)",
    "total_size": r"Total file size:\s*([\d,]+)",
    "created": r"Number of created files:\s*([\d,]+)",
    "deleted": r"Number of deleted files:\s*([\d,]+)",
}


def parse_stats(output: str) -> dict[str, int]:
    """The counters of rsync --stats that a report needs."""
    stats: dict[str, int] = {}
    for name, pattern in STATS.items():
        match = re.search(pattern, output)
        if match:
            stats[name] = int(match.group(1).replace(",", ""))
    return stats


# Short options of rsync that take a value, so that the letters after them are not options.
_SHORT_WITH_VALUE = frozenset("eBfTM@")


def follows_target_symlinks(arguments: Sequence[str]) -> str | None:
    """The argument that makes the receiving rsync follow a symlink to a directory found on
    the target inside the tree (--keep-dirlinks, -K), and so write outside its root; None."""
    for argument in arguments:
        if argument == "--":
            return None
        if argument == "--keep-dirlinks" or "K" in _short_flags(argument):
            return argument
    return None


def refusal(argument: str) -> str:
    return (
        f"rsync argument {argument!r} (--keep-dirlinks) follows symlinks on the target "
        "and would write outside its root; remove it"
    )


def _short_flags(argument: str) -> str:
    """The single-letter options of a cluster such as `-avK` (none for a long option)."""
    if len(argument) < 2 or argument[0] != "-" or not argument[1].isascii() or not argument[1].isalpha():
        return ""  # a long option, a value or a filter rule such as "- K*"
    flags = ""
    for letter in argument[1:]:
        flags += letter
        if letter in _SHORT_WITH_VALUE:
            break
    return flags
