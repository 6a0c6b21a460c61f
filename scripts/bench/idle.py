"""Figure: an idle agent's resident memory and CPU seconds per minute. Targets: < 60 MB, < 0.5 s/min."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchlib import REPO, emit

sys.path.insert(0, str(REPO))

from tests.support.agents import make_cluster, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synco-bench-idle-") as directory:
        cluster = make_cluster(Path(directory), ["s01", "s02", "s03"], tls=True, heartbeat=1.0)
        try:
            for name in cluster.names:
                cluster.start(name)
            wait_until(lambda: all((cluster.root(n) / "srv").is_dir() for n in ("s02", "s03")), "first pull")
            time.sleep(3)
            processes = {name: psutil.Process(p.pid) for name, p in cluster.processes.items()}
            before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
            time.sleep(options.seconds)
            cpu = {name: sum(p.cpu_times()[:2]) - before[name] for name, p in processes.items()}
            rss = {name: p.memory_info().rss for name, p in processes.items()}
        finally:
            cluster.stop_all()
    per_minute = {name: round(value * 60 / options.seconds, 3) for name, value in cpu.items()}
    emit(
        "idle",
        {
            "seconds": options.seconds,
            "heartbeat_interval_s": 1.0,
            "rss_mb": {name: round(value / 2**20, 1) for name, value in rss.items()},
            "cpu_seconds_per_minute": per_minute,
            "max_rss_mb": round(max(rss.values()) / 2**20, 1),
            "max_cpu_seconds_per_minute": max(per_minute.values()),
            "targets": {"rss_mb": 60, "cpu_seconds_per_minute": 0.5},
        },
    )


if __name__ == "__main__":
    main()
