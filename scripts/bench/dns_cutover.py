"""Figure: update-to-visible time on every authoritative server (BIND primary + secondary)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO, emit, percentile

sys.path.insert(0, str(REPO))

from tests.support.named import ZONE, start_cluster

from synco.core.dns_records import plan_change
from synco.core.model import DnsSettings
from synco.dns_client import Authority
from synco.tsig_key import load_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=50)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synco-bench-dns-") as directory:
        cluster = start_cluster(Path(directory))
        try:
            dns = Authority(
                DnsSettings(zone=ZONE, servers=tuple(cluster.servers), timeout=2, propagation_timeout=30)
            )
            key = load_key(cluster.key_file)
            name = f"primary.{ZONE}"
            applied: list[float] = []
            everywhere: list[float] = []
            for index in range(options.updates):
                target = f"s0{2 + index % 2}.{ZONE}"
                change = plan_change(name, dns.read(name), "cname", [target], 5)
                started = time.perf_counter()
                dns.apply(change, key)
                applied.append(time.perf_counter() - started)
                visible = dns.wait_visible(change)
                if any(v is None for v in visible.values()):
                    sys.exit(f"update {index} not visible everywhere: {visible}")
                everywhere.append(time.perf_counter() - started)
        finally:
            cluster.stop()

    def figures(samples: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(statistics.median(samples) * 1000, 1),
            "p99_ms": round(percentile(samples, 0.99) * 1000, 1),
            "max_ms": round(max(samples) * 1000, 1),
        }

    emit(
        "dns_cutover",
        {
            "updates": options.updates,
            "servers": 2,
            "update_acknowledged": figures(applied),
            "visible_on_all_servers": figures(everywhere),
            "note": "BIND 9 primary + secondary (NOTIFY, IXFR) on loopback; no reference tool",
        },
    )


if __name__ == "__main__":
    main()
