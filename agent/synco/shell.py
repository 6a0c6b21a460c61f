"""Commands on a server: built as argv (pure), run locally or through ssh (adapter)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from synco.model import Server


def ssh_argv(server: Server) -> list[str]:
    """ssh and its options for `server`, without the destination (rsync's `-e` form)."""
    argv = ["ssh", "-o", "BatchMode=yes"]
    if server.port is not None:
        argv += ["-p", str(server.port)]
    if server.identity_file is not None:
        argv += ["-i", server.identity_file]
    if server.user is not None:
        argv += ["-l", server.user]
    argv += list(server.ssh_options)
    return argv


def ssh_host(server: Server) -> str:
    assert server.host is not None
    return server.host.strip("[]")


def rsync_location(server: Server, path: str) -> str:
    """`[user@]host:path` for rsync; IPv6 literals in brackets."""
    assert server.host is not None
    host = server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    login = f"{server.user}@{host}" if server.user else host
    return f"{login}:{path}"


def remote_shell_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> str:
    """One string for the remote shell: change directory, set variables, exec argv.

    Quoted once with shlex so that it reaches the remote program exactly as given.
    """
    parts: list[str] = []
    if cwd is not None:
        parts.append(f"cd -- {shlex.quote(cwd)} 2>/dev/null || cd /;")
    assignments = [f"{k}={v}" for k, v in sorted(env.items())]
    if assignments:
        parts.append("exec " + shlex.join(["env", *assignments, *argv]))
    else:
        parts.append("exec " + shlex.join(list(argv)))
    return " ".join(parts)


def remote_argv(
    server: Server,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> list[str]:
    """The local argv that runs `argv` on `server` through ssh."""
    return [*ssh_argv(server), "--", ssh_host(server), remote_shell_command(argv, env or {}, cwd)]


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
    full_env = dict(os.environ)
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
    """SIGTERM the process group, then SIGKILL it if it outlives `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
