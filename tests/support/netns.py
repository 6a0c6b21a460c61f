"""Hosts as Linux network namespaces joined by veth pairs to a bridge in a switch namespace.

Everything lives inside namespaces this module creates (names `syncoN-...`), with private
addresses that exist only there; nothing is added to the machine's own network namespace.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

import pytest

from tests.support.components import in_ci, need

SUBNET = "10.213.7"


def ip(*arguments: str) -> None:
    subprocess.run([need("ip"), *arguments], check=True, capture_output=True)


@dataclass
class Network:
    prefix: str
    hosts: list[str]
    switch: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def command(self, host: str, argv: list[str]) -> list[str]:
        return [need("ip"), "netns", "exec", self.namespace(host), *argv]

    def spawn(self, host: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(log, "ab") as stream:
            process = subprocess.Popen(self.command(host, argv), stdout=stream, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def cut(self, host: str) -> None:
        """Take `host`'s link down at the switch: its packets are dropped, connections stay open."""
        ip("-n", self.switch, "link", "set", f"port{self.hosts.index(host) + 1}", "down")

    def heal(self, host: str) -> None:
        ip("-n", self.switch, "link", "set", f"port{self.hosts.index(host) + 1}", "up")

    def destroy(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for name in [*(self.namespace(h) for h in self.hosts), self.switch]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def make_network(hosts: list[str]) -> Network:
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("network namespaces need root in CI")
        pytest.skip("network namespaces need root")
    prefix = f"synco{os.getpid()}"
    network = Network(prefix, hosts, f"{prefix}-switch")
    try:
        ip("netns", "add", network.switch)
        ip("-n", network.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", network.switch, "link", "set", "br0", "up")
        for index, host in enumerate(hosts, start=1):
            namespace = network.namespace(host)
            ip("netns", "add", namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
            ip(
                "-n",
                network.switch,
                "link",
                "add",
                f"port{index}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                namespace,
            )
            ip("-n", network.switch, "link", "set", f"port{index}", "master", "br0", "up")
            ip("-n", namespace, "addr", "add", f"{SUBNET}.{index}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
    except BaseException:
        network.destroy()
        raise
    return network
