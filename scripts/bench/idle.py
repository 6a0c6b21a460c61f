"""Figure: an idle agent's resident memory and CPU seconds per minute. Targets: < 60 MB, < 0.5 s/min.

Three agents in sync talking mutual TLS. `--failover` (the default): they elect their master
(a DNS name on a local BIND, reached over a local sshd) with the default timings: the master
renews its lease every heartbeat_interval (0.5 s) with both peers. `--named-master`: the
master is named in the script, heartbeats every second (the figure of earlier releases)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchlib import REPO, emit

sys.path.insert(0, str(REPO))

from tests.support.agents import acting, make_cluster, make_failover_cluster, wait_until
from tests.support.named import start_cluster
from tests.support.sshd import start_sshd

from synco.core.model import AgentSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--named-master", action="store_true", help="no election: the master named in the script"
    )
    options = parser.parse_args()
    heartbeat = 1.0 if options.named_master else AgentSettings().heartbeat_interval
    with (
        tempfile.TemporaryDirectory(prefix="synco-bench-idle-") as directory,
        contextlib.ExitStack() as stack,
    ):
        if options.named_master:
            cluster = make_cluster(Path(directory), ["s01", "s02", "s03"], tls=True, heartbeat=1.0)
        else:
            (Path(directory) / "sshd").mkdir()
            (Path(directory) / "named").mkdir()
            sshd = start_sshd(Path(directory) / "sshd")
            stack.callback(sshd.stop)
            named = start_cluster(Path(directory) / "named")
            stack.callback(named.stop)
            cluster = make_failover_cluster(
                Path(directory), ["s01", "s02", "s03"], sshd, named, timings="", tls=True
            )
        try:
            for name in cluster.names:
                cluster.start(name)
            if not options.named_master:
                wait_until(lambda: len(acting(cluster)) == 1, "a master elected")
                (master,) = acting(cluster)
                (cluster.root(master) / "srv" / "file").write_text("x")
            wait_until(
                lambda: (
                    sum(
                        (cluster.root(n) / "srv").is_dir() and any((cluster.root(n) / "srv").iterdir())
                        for n in cluster.names
                    )
                    == 3
                    or options.named_master
                ),
                "first pull",
            )
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
            "election": not options.named_master,
            "heartbeat_interval_s": heartbeat,
            "rss_mb": {name: round(value / 2**20, 1) for name, value in rss.items()},
            "cpu_seconds_per_minute": per_minute,
            "max_rss_mb": round(max(rss.values()) / 2**20, 1),
            "max_cpu_seconds_per_minute": max(per_minute.values()),
            "targets": {"rss_mb": 60, "cpu_seconds_per_minute": 0.5},
        },
    )


if __name__ == "__main__":
    main()
