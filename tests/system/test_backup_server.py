"""A backup server among real agents: it takes snapshots of the master on a schedule and
prunes them by the policy, instead of mirroring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from synco.snapshot_store import SnapshotStore
from tests.support.agents import Cluster, make_cluster, wait_until
from tests.support.cli import read_tree, write_tree

pytestmark = pytest.mark.usefixtures("rsync")


def snapshots(cluster: Cluster) -> list[str]:
    return [s.name for s in SnapshotStore(cluster.root("b01")).snapshots()]


def counter(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_snapshots_on_schedule_pruned_by_the_policy(tmp_path: Path) -> None:
    cluster = make_cluster(
        tmp_path, ["s01", "s02", "b01"], backups=("b01",), extra="[backup]\ninterval = 1\nkeep_last = 3\n"
    )
    master = cluster.root("s01") / "srv"
    write_tree(master, {"index.html": "v1", "deep/file.txt": "deep"})
    try:
        for name in cluster.names:
            cluster.start(name)
        latest = cluster.root("b01") / "latest" / "srv"
        wait_until(lambda: latest.is_dir() and read_tree(latest) == read_tree(master), "a first snapshot")
        (master / "index.html").write_text("version 2")
        wait_until(
            lambda: (latest / "index.html").read_text() == "version 2", "the change in a newer snapshot"
        )
        replica = cluster.root("s02") / "srv/index.html"  # the replica mirrors
        wait_until(lambda: replica.exists() and replica.read_text() == "version 2", "the replica's copy")
        assert not (cluster.root("b01") / "srv").exists()  # the backup server does not

        wait_until(lambda: counter(cluster.metrics("b01"), "synco_snapshots_total") >= 6, "six snapshots")
        wait_until(lambda: len(snapshots(cluster)) == 3, "pruning down to keep_last = 3")
        metrics = cluster.metrics("b01")
        assert 'synco_role{synco_role="backup"} 1.0' in metrics
        assert counter(metrics, "synco_latest_snapshot_timestamp_seconds") > 0

        status = json.loads(cluster.ctl("s02", "status", "--json").stdout)
        b01 = next(p["status"] for p in status["peers"] if p["node"] == "b01")
        assert b01["heartbeat"]["role"] == "ROLE_BACKUP"
        assert b01["latestSnapshot"] in snapshots(cluster)
        table = cluster.ctl("s02", "status").stdout
        assert re.search(r"^b01\s+backup\s", table, re.MULTILINE), table
        assert "pruned" in cluster.log("b01")
    finally:
        cluster.stop_all()


def test_schedule_survives_a_restart_and_sync_now_takes_one(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, ["s01", "b01"], backups=("b01",), extra='[backup]\ninterval = "1h"\n')
    write_tree(cluster.root("s01") / "srv", {"a": "1"})
    try:
        for name in cluster.names:
            cluster.start(name)
        wait_until(lambda: len(snapshots(cluster)) == 1, "the first snapshot")
        first = snapshots(cluster)[0]

        def verdict() -> str:
            reply = cluster.ctl("b01", "status", "--json")
            return str(json.loads(reply.stdout)["local"]["verdict"]) if reply.returncode == 0 else ""

        wait_until(lambda: verdict().startswith(f"newest snapshot {first}; next from s01 at "), "waiting")
        cluster.stop("b01")
        cluster.start("b01")
        wait_until(lambda: verdict().startswith(f"newest snapshot {first}; next"), "the schedule resumed")
        assert snapshots(cluster) == [first]  # no extra snapshot for the restart

        (cluster.root("s01") / "srv/b").write_text("2")
        reply = cluster.ctl("b01", "sync-now")
        assert (reply.returncode, reply.stdout.strip()) == (0, "snapshot requested"), reply.stderr
        assert "s01 is the master: it has nothing to pull" in cluster.ctl("s01", "sync-now").stdout
        wait_until(lambda: len(snapshots(cluster)) == 2, "a snapshot on request")
        assert read_tree(cluster.root("b01") / "latest" / "srv") == {"a": "1", "b": "2"}
    finally:
        cluster.stop_all()
