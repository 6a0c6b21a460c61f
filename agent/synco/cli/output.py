"""Writing results for people (stderr/stdout text) and for scripts (JSON on stdout)."""

from __future__ import annotations

import json
import os
import select
import sys

# A reader that went away (`synco list | head -1`): exit quietly, as other Unix tools do.
# They die of SIGPIPE, which a shell reports as 128 + 13 = 141; Python ignores SIGPIPE and
# raises BrokenPipeError instead, so synco exits with the same status, and prints nothing
# (to a stderr that may be the closed pipe too). Nonzero: the output was cut short, which
# `set -o pipefail` sees, as it does for `ls | head -1`.
EXIT_BROKEN_PIPE = 141


def emit_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def error(message: str) -> None:
    print(f"synco: error: {message}", file=sys.stderr, flush=True)


def reader_gone() -> bool:
    """Whether stdout or stderr is a pipe whose reader has closed it (so that a
    BrokenPipeError means the reader went away, not some other pipe of ours failed)."""
    poller = select.poll()
    for stream in (sys.stdout, sys.stderr):
        try:
            poller.register(stream.fileno(), select.POLLOUT)
        except (AttributeError, ValueError, OSError):
            continue  # closed or not a real file: nothing to write to
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def leave_quietly() -> int:
    """Point stdout and stderr at /dev/null, so that nothing more (not even Python's flush at
    exit) writes to the closed pipe, and give the exit status for a reader that went away."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, ValueError, OSError):
            continue
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def flushed(code: int) -> int:
    """`code`, once what is buffered for stdout is written: a closed pipe then raises
    BrokenPipeError here, where the caller handles it, rather than at interpreter exit."""
    sys.stdout.flush()
    return code
