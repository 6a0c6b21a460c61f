"""The agent as a service: systemd notifications from its loop, and a clean stop mid-pull."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from tests.support.agents import make_cluster, wait_until

pytestmark = pytest.mark.usefixtures("rsync")


def test_ready_watchdog_and_stopping_notifications(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, ["s01", "s02"])
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    try:
        cluster.start("s02", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        messages = []
        deadline = time.monotonic() + 20
        while messages.count("WATCHDOG=1") < 3 and time.monotonic() < deadline:
            messages.append(listener.recv(1024).decode())
        assert messages[0] == "READY=1"
        assert messages.count("WATCHDOG=1") >= 3
        assert cluster.stop("s02") == 0
        while "STOPPING=1" not in messages:
            messages.append(listener.recv(1024).decode())
    finally:
        cluster.stop_all()
        listener.close()


def test_stopping_the_agent_stops_its_pull(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, ["s01", "s02"], arguments='["--archive", "--delete", "--bwlimit=100"]')
    (cluster.root("s01") / "srv" / "big").write_bytes(os.urandom(5_000_000))
    try:
        cluster.start("s01")
        cluster.start("s02")
        agent = psutil.Process(cluster.processes["s02"].pid)
        rsyncs: list[psutil.Process] = []

        def pulling() -> bool:
            rsyncs[:] = [p for p in agent.children(recursive=True) if p.name() == "rsync"]
            return bool(rsyncs)

        wait_until(pulling, "s02 pulling")
        assert cluster.stop("s02", signal.SIGTERM) == 0
        _, alive = psutil.wait_procs(rsyncs, timeout=15)
        assert not alive, "rsync outlived the agent"
        assert "s02: stopped" in cluster.log("s02")
        state = json.loads((tmp_path / "state/s02.json").read_text())
        assert state["pulled_master"] is None  # the interrupted pull is not recorded as complete
    finally:
        cluster.stop_all()


def test_sighup_reloads_what_can_change(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path, ["s01", "s02"])
    try:
        for name in cluster.names:
            cluster.start(name)
        text = cluster.config.read_text()
        cluster.config.write_text(text + '[[directories]]\npath = "etc"\n')
        (cluster.root("s01") / "etc").mkdir()
        for name in cluster.names:
            cluster.processes[name].send_signal(signal.SIGHUP)
        wait_until(
            lambda: all(
                "reloaded" in cluster.log(n) and "directories" in cluster.log(n) for n in cluster.names
            ),
            "both reloaded",
        )
        (cluster.root("s01") / "etc" / "app.conf").write_text("new directory")
        wait_until(
            lambda: (cluster.root("s02") / "etc" / "app.conf").exists(), "the new directory replicated"
        )

        cluster.config.write_text(text.replace("127.0.0.1:", "127.0.0.9:", 1))
        cluster.processes["s02"].send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused, nothing changed" in cluster.log("s02"), "bad reload refused")
        assert cluster.processes["s02"].poll() is None
    finally:
        cluster.stop_all()
