"""Local clusters of real synco-agent processes, started and stopped by tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.components import need
from tests.support.named import ZONE, DnsCluster, free_port
from tests.support.sshd import Sshd


@dataclass
class Cluster:
    directory: Path
    config: Path
    names: list[str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def root(self, name: str) -> Path:
        return self.directory / name

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def start(self, name: str, env: dict[str, str] | None = None) -> None:
        with (self.directory / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "synco.node.main", "--config", str(self.config), "--as", name, "-v"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        wait_until(lambda: (self.directory / "run" / f"{name}.sock").exists(), f"{name} serving")

    def stop(self, name: str, how: signal.Signals = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        process.send_signal(how)
        return process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def metrics(self, name: str) -> str:
        """The text of `name`'s Prometheus metrics."""
        address = self.config.read_text().split(f"[servers.{name}]")[1].split('metrics = "')[1].split('"')[0]
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            text: str = response.read().decode()
        return text

    def ctl(self, name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "synco.ctl", "--config", str(self.config), "--as", name, *arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


CERTS = Path(__file__).resolve().parents[2] / "scripts" / "certs"


def issue_certificates(directory: Path, names: list[str]) -> Path:
    """A cluster CA and one certificate per node, made by scripts/certs."""
    need("openssl")
    subprocess.run([str(CERTS), "init", str(directory)], check=True, capture_output=True)
    for name in names:
        subprocess.run(
            [str(CERTS), "issue", str(directory), name, "127.0.0.1"], check=True, capture_output=True
        )
    return directory


def security_toml(directory: Path, names: list[str], tls: bool) -> str:
    """The [agent] keys for mutual TLS (certificates issued here for `names`), or plaintext."""
    if not tls:
        return "insecure = true\n"
    certs = issue_certificates(directory / "certs", names)
    return (
        f'ca_file = "{certs}/ca.pem"\ncert_file = "{certs}/{{server}}.pem"\n'
        f'key_file = "{certs}/{{server}}.key"\n'
    )


def make_cluster(
    directory: Path,
    names: list[str],
    arguments: str = '["--archive", "--delete"]',
    extra: str = "",
    tls: bool = False,
    heartbeat: float = 0.3,
    backups: tuple[str, ...] = (),
) -> Cluster:
    """Agents for `names` (the first is master), on loopback ports; `backups` are servers with
    role = "backup" (give their [backup] table in `extra`)."""
    servers = "".join(
        f'[servers.{n}]\nroot = "{directory / n}"\nagent = "127.0.0.1:{free_port()}"\n'
        f'metrics = "127.0.0.1:{free_port()}"\n' + ('role = "backup"\n' if n in backups else "")
        for n in names
    )
    config = directory / "cluster.toml"
    security = security_toml(directory, names, tls)
    config.write_text(
        f'master = "{names[0]}"\n[method]\narguments = {arguments}\n'
        f'[agent]\n{security}state_dir = "{directory}/state"\n'
        f'control_socket = "{directory}/run/{{server}}.sock"\n'
        f"heartbeat_interval = {heartbeat}\nperiodic_pull = 60\npull_retry = 1\n{extra}"
        f'{servers}[[directories]]\npath = "srv"\n'
    )
    (directory / names[0] / "srv").mkdir(parents=True)
    os.makedirs(directory / "run", exist_ok=True)
    return Cluster(directory, config, names)


FAST_FAILOVER = "heartbeat_interval = 0.3\nlease = 1.2\nlease_margin = 0.15\nmaster_poll = 0.5\n"


def make_failover_cluster(
    directory: Path,
    names: list[str],
    sshd: Sshd,
    named: DnsCluster,
    timings: str = FAST_FAILOVER,
    extra_servers: str = "",
    tls: bool = False,
) -> Cluster:
    """Agents on loopback that elect their master: every server reached over `sshd` by a host
    name of the test zone, the master a name of its own in that zone (the zone is shared by
    other tests), moved compare-and-set on `named`'s primary. Nobody is master at start."""
    servers = "".join(
        f"[servers.{n}]\n"
        + sshd.server_toml(f"{n}.{ZONE}", connect_to="127.0.0.1")
        + f'root = "{directory / n}"\nagent = "127.0.0.1:{free_port()}"\n'
        for n in names
    )
    config = directory / "cluster.toml"
    security = security_toml(directory, names, tls)
    config.write_text(
        f'master = "m{free_port()}.{ZONE}"\n[method]\narguments = ["--archive", "--delete"]\n'
        f'[agent]\n{security}state_dir = "{directory}/state"\n'
        f'control_socket = "{directory}/run/{{server}}.sock"\n'
        f"{timings}periodic_pull = 60\npull_retry = 1\n"
        f'{servers}{extra_servers}[[directories]]\npath = "srv"\n{named.toml()}'
    )
    for name in names:
        (directory / name / "srv").mkdir(parents=True)
    os.makedirs(directory / "run", exist_ok=True)
    return Cluster(directory, config, names)


def acting(cluster: Cluster, names: list[str] | None = None) -> list[str]:
    """The nodes whose own agent says it acts as master now."""
    found = []
    for name in names or cluster.names:
        result = cluster.ctl(name, "status", "--json")
        if result.returncode == 0 and json.loads(result.stdout)["local"]["heartbeat"].get("acting"):
            found.append(name)
    return found
