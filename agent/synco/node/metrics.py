"""Prometheus metrics of one agent, served on the server's `metrics` address (adapter)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.is_master = Gauge("synco_is_master", "1 while this node acts as master", registry=self.registry)
        self.role = Enum(
            "synco_role",
            "The role this node acts in",
            states=["master", "replica", "backup", "witness"],
            registry=self.registry,
        )
        self.health = Enum(
            "synco_health",
            "How well this node does its job (see synco-ctl status for why)",
            states=["ok", "degraded", "failing"],
            registry=self.registry,
        )
        self.master_reachable = Gauge(
            "synco_master_reachable",
            "A replica or backup server: 1 while its master's heartbeats arrive within the timeout",
            registry=self.registry,
        )
        self.cycle_errors = Counter(
            "synco_cycle_errors", "Agent cycles that failed with an unexpected error", registry=self.registry
        )
        self.epoch = Gauge(
            "synco_epoch", "The highest election epoch this node has seen", registry=self.registry
        )
        self.lease_remaining = Gauge(
            "synco_lease_remaining_seconds",
            "The master: seconds left on the lease a majority granted it (0 elsewhere)",
            registry=self.registry,
        )
        self.elections = Counter(
            "synco_elections_won",
            "Elections this node won (it then acts once DNS names it)",
            registry=self.registry,
        )
        self.generation = Gauge(
            "synco_generation",
            "Master: changes seen; replica: generation of the last complete pull",
            registry=self.registry,
        )
        self.master_generation = Gauge(
            "synco_master_generation", "The newest generation the master announced", registry=self.registry
        )
        self.lag = Gauge(
            "synco_lag_generations", "How many generations this replica is behind", registry=self.registry
        )
        self.lag_seconds = Gauge(
            "synco_lag_seconds",
            "Seconds since the oldest change this replica has not pulled yet",
            registry=self.registry,
        )
        self.pull_seconds = Histogram(
            "synco_pull_duration_seconds",
            "Duration of pulls from the master",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
        )
        self.pull_failures = Counter("synco_pull_failures", "Pulls that failed", registry=self.registry)
        self.snapshots = Counter(
            "synco_snapshots", "Snapshots a backup server took and published", registry=self.registry
        )
        self.latest_snapshot = Gauge(
            "synco_latest_snapshot_timestamp_seconds",
            "A backup server: the time of its newest published snapshot",
            registry=self.registry,
        )
        self.heartbeat_age = Gauge(
            "synco_peer_heartbeat_age_seconds",
            "Seconds since each peer's last heartbeat",
            ["peer"],
            registry=self.registry,
        )

    def serve(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=self.registry)
