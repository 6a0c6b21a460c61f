"""Figure: change propagation, file written on the master until present on every replica.

Compared with lsyncd's default `delay` of 15 s (it batches changes for that long before
rsyncing); lsyncd itself is not run here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, emit, percentile

sys.path.insert(0, str(REPO))

from tests.support.agents import make_cluster, wait_until

LSYNCD_DEFAULT_DELAY = 15.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synco-bench-propagation-") as directory:
        cluster = make_cluster(Path(directory), ["s01", "s02", "s03"], tls=True, heartbeat=1.0)
        try:
            for name in cluster.names:
                cluster.start(name)
            master = cluster.root("s01") / "srv"
            replicas = [cluster.root(n) / "srv" for n in ("s02", "s03")]
            wait_until(lambda: all(r.is_dir() for r in replicas), "first pull")
            samples = []
            for index in range(options.writes):
                name = f"file-{index:04d}.txt"
                started = time.perf_counter()
                (master / name).write_text(f"write {index}\n")
                while not all(os.path.exists(r / name) for r in replicas):
                    if time.perf_counter() - started > 60:
                        sys.exit(f"write {index} not propagated within 60 s")
                    time.sleep(0.002)
                samples.append(time.perf_counter() - started)
                time.sleep(0.05)
        finally:
            cluster.stop_all()
    p50, p99 = statistics.median(samples), percentile(samples, 0.99)
    emit(
        "propagation",
        {
            "writes": options.writes,
            "replicas": 2,
            "p50_ms": round(p50 * 1000, 1),
            "p99_ms": round(p99 * 1000, 1),
            "max_ms": round(max(samples) * 1000, 1),
            "ratio_p50_vs_lsyncd_default_delay": round(p50 / LSYNCD_DEFAULT_DELAY, 4),
            "target": "p50 < 1 s",
        },
    )


if __name__ == "__main__":
    main()
