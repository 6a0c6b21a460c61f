"""Running commands: in their own process group, stopped with synco, output captured (adapter)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from synco.core.commands import RSYNC_ENVIRONMENT


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    def last_lines(self, count: int = 8) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return "\n".join(text[-count:])


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    echo: bool = False,
) -> Completed:
    """Run argv in its own process group, capturing output; `echo` also streams stdout to stderr.

    If synco is interrupted the whole process group (ssh, rsync and their children) is
    terminated before the interruption propagates, so nothing keeps writing behind it.
    """
    started = time.monotonic()
    full_env = {k: v for k, v in os.environ.items() if k not in RSYNC_ENVIRONMENT}
    if env:
        full_env.update(env)
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError:
        return Completed(tuple(argv), 127, "", f"{argv[0]}: command not found", 0.0)
    except PermissionError as error:
        return Completed(tuple(argv), 126, "", f"{argv[0]}: {error.strerror}", 0.0)
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, stdout, echo), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, stderr, False), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        returncode = process.wait()
    except BaseException:
        terminate_group(process)
        raise
    for reader in readers:
        reader.join()
    return Completed(
        tuple(argv),
        returncode,
        b"".join(stdout).decode("utf-8", "replace"),
        b"".join(stderr).decode("utf-8", "replace"),
        time.monotonic() - started,
    )


def _die_with_parent() -> None:
    """In the child: get SIGTERM if synco dies, even by SIGKILL (Linux PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _pump(stream: object, sink: list[bytes], echo: bool) -> None:
    fd = stream.fileno()  # type: ignore[attr-defined]
    while chunk := os.read(fd, 65536):
        sink.append(chunk)
        if echo:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()


def terminate_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL what of it outlives `grace` seconds. Waits
    for the whole group, not only its leader: a local rsync's receiver and generator can
    outlive the sender by a moment, still writing."""
    deadline = time.monotonic() + grace
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _group_alive(process.pid) or process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        until = time.monotonic() + grace
        while _group_alive(process.pid) and time.monotonic() < until:
            time.sleep(0.02)


def _group_alive(group: int) -> bool:
    """Whether a process of `group` still runs (zombies do not: they write nothing, and
    whoever adopted them reaps them in its own time)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == group and fields[0] not in (b"Z", b"X"):
            return True
    return False
