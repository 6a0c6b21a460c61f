"""Figure: change propagation, a small file written on the source until present (with its
content) on every copy, for Synco and for lsyncd, measured the same way in the same run.

Synco: three agents on this machine talking mutual TLS (tests/support/agents.py), the two
replicas pulling from the master, twice too: with the default settings (a change settles
for `debounce` = 0.2 s before the replicas pull), and with `debounce = 0.01`, its smallest
useful setting, to compare with lsyncd's smallest delay. lsyncd (the Debian package,
installed if missing): run in the foreground on a tree of the same kind (an empty source directory) with one
`sync { default.rsync }` per target, so two local rsync targets, twice:

- default: default.rsync as it comes, its `delay` (15 s in lsyncd 2.2.3) included;
- fastest: the same with `delay = 0`, the smallest lsyncd accepts (its config check reads
  "delay must be a number and >= 0"; lsyncd's manual, layer 4, describes default.rsync as
  aggregating events for up to `delay` seconds; `man lsyncd` only names the -delay option).

Each run waits for lsyncd's startup rsync to finish on both targets (its "Startup of ...
finished." log lines) before the first write.

Every write is timed on its own: from just before the write until the file is on every
target, then a 50 ms pause, then the next write. A write is thus never pending while the
previous one is, so lsyncd never batches two of these writes: each default-delay sample is
the delay plus one rsync, the latency of an isolated change. Were the writes a stream 50 ms
apart instead, lsyncd would batch them: when the oldest pending change's delay runs out one
rsync takes every pending change, so only the first write of a batch waits the whole delay
and the later ones less (a 5 s burst under a 15 s delay: 10 to 15 s), and a p50 over the
burst would come out below the delay by about half the burst's length; that drop measures
the burst, not faster replication, which is why it is not measured that way.

An isolated write costs about 15 s under the default delay, so that run makes fewer writes
(--lsyncd-default-writes, 20 by default: about 5 minutes). The delay makes its samples
nearly constant, so 20 give a steady p50; its p99 is then the slowest of the 20 (nearest
rank), which is why it is not fewer.

Result: Synco's p50 and p99, each configuration's, and Synco's as ratios to them (below 1:
Synco is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchlib import REPO, emit, need_packages, percentile

sys.path.insert(0, str(REPO))

from tests.support.agents import make_cluster, wait_until

PAUSE = 0.05  # between a write being everywhere and the next write
TIMEOUT = 60.0  # for one write to reach every copy
FASTEST_DELAY = 0  # lsyncd refuses a delay below 0


def measure(what: str, source: Path, targets: list[Path], writes: int) -> list[float]:
    """Seconds from each write on `source` until the file, with its content, is on every target."""
    samples = []
    for index in range(writes):
        name = f"file-{index:04d}.txt"
        text = f"write {index}\n"
        started = time.perf_counter()
        (source / name).write_text(text)
        while not all(present(target / name, text) for target in targets):
            if time.perf_counter() - started > TIMEOUT:
                raise SystemExit(f"{what}: write {index} not propagated within {TIMEOUT:g} s")
            time.sleep(0.002)
        samples.append(time.perf_counter() - started)
        time.sleep(PAUSE)
    return samples


def present(path: Path, text: str) -> bool:
    try:
        return path.read_text() == text
    except FileNotFoundError:
        return False


def synco(directory: Path, writes: int, debounce: float | None = None) -> list[float]:
    """Synco's agents with their default settings, or with `debounce` (seconds)."""
    directory.mkdir()
    extra = "" if debounce is None else f"debounce = {debounce}\n"
    cluster = make_cluster(directory, ["s01", "s02", "s03"], tls=True, heartbeat=1.0, extra=extra)
    try:
        for name in cluster.names:
            cluster.start(name)
        master = cluster.root("s01") / "srv"
        replicas = [cluster.root(n) / "srv" for n in ("s02", "s03")]
        wait_until(lambda: all(r.is_dir() for r in replicas), "first pull")
        return measure("synco", master, replicas, writes)
    finally:
        cluster.stop_all()


SYNCO_FASTEST_DEBOUNCE = 0.01  # [agent] debounce must be above 0: its smallest useful setting


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def lsyncd(directory: Path, delay: float | None) -> Iterator[tuple[Path, list[Path]]]:
    """lsyncd in the foreground, from an empty source to two local targets with default.rsync
    (`delay` None: its own default), once its startup rsync is done on both; stopped after."""
    source = directory / "source"
    source.mkdir(parents=True)
    targets = [directory / "target-1", directory / "target-2"]
    log = directory / "lsyncd.log"
    setting = "" if delay is None else f"    delay = {delay},\n"
    config = directory / "lsyncd.conf.lua"
    config.write_text(
        f"settings {{\n    logfile = {lua_string(str(log))},\n}}\n"
        + "".join(
            f"sync {{\n    default.rsync,\n    source = {lua_string(str(source))},\n"
            f"    target = {lua_string(str(target))},\n{setting}}}\n"
            for target in targets
        )
    )
    with (directory / "lsyncd.out").open("wb") as out:
        # A session of its own: its rsyncs go with it, and a Ctrl-C reaches only the bench,
        # which then stops it.
        process = subprocess.Popen(
            ["lsyncd", "-nodaemon", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = [f"Startup of {source}/ -> {target}/ finished." for target in targets]

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"lsyncd exited with {process.returncode} during its startup rsync")
        text = log.read_text(errors="replace") if log.exists() else ""
        return all(line in text for line in started)

    try:
        wait_until(ready, "lsyncd's startup rsync to both targets", timeout=TIMEOUT)
        yield source, targets
    except BaseException:
        for name in (log, directory / "lsyncd.out"):
            if name.exists():
                sys.stderr.write(f"--- {name.name} (last lines)\n")
                sys.stderr.writelines(name.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """lsyncd and its rsyncs (its process group): TERM, then KILL after 10 s."""
    for how in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, how)
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def lsyncd_run(directory: Path, delay: float | None, writes: int) -> list[float]:
    with lsyncd(directory, delay) as (source, targets):
        return measure(f"lsyncd (delay {'default' if delay is None else delay})", source, targets, writes)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=100, help="for Synco and lsyncd with delay 0")
    parser.add_argument(
        "--lsyncd-default-writes",
        type=int,
        default=20,
        help="for lsyncd with its default delay, about 15 s each (default 20, at most --writes)",
    )
    options = parser.parse_args()
    default_writes = min(options.writes, options.lsyncd_default_writes)
    need_packages("lsyncd")
    version = subprocess.run(["lsyncd", "-version"], capture_output=True, text=True, check=True).stdout
    # A TERM to the bench stops the agents and lsyncd as a Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="synco-bench-propagation-") as temporary:
        directory = Path(temporary).resolve()
        samples = synco(directory / "synco", options.writes)
        quick = synco(directory / "synco-fastest", options.writes, SYNCO_FASTEST_DEBOUNCE)
        fastest = lsyncd_run(directory / "lsyncd-fastest", FASTEST_DELAY, options.writes)
        default = lsyncd_run(directory / "lsyncd-default", None, default_writes)
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    default_p50, default_p99 = statistics.median(default), percentile(default, 0.99)
    fastest_p50, fastest_p99 = statistics.median(fastest), percentile(fastest, 0.99)
    quick_p50, quick_p99 = statistics.median(quick), percentile(quick, 0.99)
    emit(
        "propagation",
        {
            "writes": options.writes,
            "replicas": 2,
            "p50_ms": ms(p50),
            "p99_ms": ms(p99),
            "max_ms": ms(max(samples)),
            "lsyncd_version": version.split()[-1] if version.split() else "",
            "lsyncd_default_writes": default_writes,
            "lsyncd_default_p50_ms": ms(default_p50),
            "lsyncd_default_p99_ms": ms(default_p99),
            "lsyncd_fastest_delay": FASTEST_DELAY,
            "lsyncd_fastest_p50_ms": ms(fastest_p50),
            "lsyncd_fastest_p99_ms": ms(fastest_p99),
            "ratio_p50_vs_lsyncd_default": round(p50 / default_p50, 4),
            "ratio_p99_vs_lsyncd_default": round(p99 / default_p99, 4),
            "ratio_p50_vs_lsyncd_fastest": round(p50 / fastest_p50, 4),
            "ratio_p99_vs_lsyncd_fastest": round(p99 / fastest_p99, 4),
            "synco_fastest_debounce": SYNCO_FASTEST_DEBOUNCE,
            "synco_fastest_p50_ms": ms(quick_p50),
            "synco_fastest_p99_ms": ms(quick_p99),
            "ratio_fastest_p50_vs_lsyncd_fastest": round(quick_p50 / fastest_p50, 4),
            "ratio_fastest_p99_vs_lsyncd_fastest": round(quick_p99 / fastest_p99, 4),
            "target": "p50 < 1 s",
        },
    )


if __name__ == "__main__":
    main()
