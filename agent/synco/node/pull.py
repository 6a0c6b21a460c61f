"""A replica's pull from the master: rsync for each directory, cancellable (adapter)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, replace

from synco.commands import RSYNC_ENVIRONMENT, remote_argv
from synco.model import Direction, Script, Server
from synco.resolution import CurrentDecision, is_local
from synco.rsync import Verdict, classify, describe_exit
from synco.rsync_probe import local_features
from synco.transfer import plan_transfer


@dataclass(frozen=True)
class PullResult:
    ok: bool
    message: str
    seconds: float
    generation: int  # the master generation the pull started at


async def pull(script: Script, master: Server, me: Server, generation: int) -> PullResult:
    """Make `me`'s copy of every directory equal to `master`'s (rsync runs here, pulling)."""
    started = time.monotonic()
    pulling = replace(script, method=replace(script.method, name="rsync", direction=Direction.PULL))
    current = CurrentDecision(me.name, "the agent's own server")
    features = local_features()
    for directory in pulling.directories:
        transfer = plan_transfer(
            pulling,
            master,
            me,
            directory,
            is_local=lambda s: is_local(s, current, pulling),
            features=features,
        )
        argv = list(transfer.argv) if transfer.local else remote_argv(transfer.runs_on, transfer.argv)
        code, output = await _run(argv)
        if classify(code) == Verdict.ERROR:
            lines = output.strip().splitlines()[-3:]
            message = f"{transfer.directory}: rsync exit {code} ({describe_exit(code)})"
            return PullResult(
                False,
                message + (": " + " / ".join(lines) if lines else ""),
                time.monotonic() - started,
                generation,
            )
    return PullResult(True, "ok", time.monotonic() - started, generation)


async def _run(argv: list[str]) -> tuple[int, str]:
    environment = {k: v for k, v in os.environ.items() if k not in RSYNC_ENVIRONMENT}
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
        start_new_session=True,
    )
    try:
        _, stderr = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        raise
    return process.returncode or 0, stderr.decode(errors="replace")
