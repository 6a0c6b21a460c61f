"""Clusters with automatic failover on hosts in network namespaces, for system tests and the
failover benchmark: one host per agent (each with its own sshd, the agents talking mutual
TLS), and a BIND primary and secondary on hosts of their own ("dns1", "dns2"), serving the
zone in which the elected master moves MASTER compare-and-set.

    with failover_hosts(tmp_path) as hosts:
        first = hosts.wait_for_master()
        hosts.write(first, {"a": "1"})
        hosts.kill(first)
        ...

The test process stays in the machine's own network namespace: it reads each agent's
status on its control socket (a unix socket, reachable from any network namespace), and
asks each DNS server from inside that server's namespace. Everything started here is ended
when the `with` block is left, however it is left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from synco.core.model import AgentSettings
from synco.v1 import control_pb2, control_pb2_grpc
from tests.support.agents import issue_certificates, wait_until
from tests.support.cli import read_tree, write_tree
from tests.support.components import need
from tests.support.named import KEY_NAME, ZONE, options, wait_serial_command, write_key
from tests.support.netns import Network, make_network
from tests.support.sshd import SshdFiles, prepare_sshd

DNS_HOSTS = ("dns1", "dns2")  # the zone's primary, then its secondary
MASTER = f"master.{ZONE}"  # the name the elected master points at itself
DATA = "srv"  # the one directory the cluster replicates
AGENT_PORT = 7300
CHECKOUT = Path(__file__).resolve().parents[2]
ACTING = re.compile(r"^(\S+ \S+) \S+ (\S+): (now acting|no longer acting) as master")


@dataclass(frozen=True)
class Member:
    """One server of the cluster: a replica (with a root; priority 0: never promoted) or a
    witness (votes, holds no data, has no root)."""

    name: str
    role: str = "replica"
    priority: int = 100

    @property
    def holds_data(self) -> bool:
        return self.role != "witness"


THREE = (Member("s01"), Member("s02"), Member("s03"))


@dataclass(frozen=True)
class Timings:
    """The [agent] timings, fast enough for tests."""

    heartbeat_interval: float = 0.3
    lease: float = 1.2
    lease_margin: float = 0.15
    master_poll: float = 0.5
    min_failover_interval: float = 5.0
    max_failover_lag: float = 60.0
    periodic_pull: float = 60.0
    pull_retry: float = 1.0
    dns_timeout: float = 1.0

    def agent_toml(self) -> str:
        keys = (
            "heartbeat_interval",
            "lease",
            "lease_margin",
            "master_poll",
            "min_failover_interval",
            "max_failover_lag",
            "periodic_pull",
            "pull_retry",
        )
        return "".join(f"{key} = {getattr(self, key)}\n" for key in keys)


_DEFAULTS = AgentSettings()
PROFILES = {  # the timings the benchmarks run: the product's defaults, and the fastest documented
    "default": Timings(
        heartbeat_interval=_DEFAULTS.heartbeat_interval,
        lease=_DEFAULTS.lease,
        lease_margin=_DEFAULTS.lease_margin,
        master_poll=_DEFAULTS.master_poll,
    ),
    "fastest": Timings(heartbeat_interval=0.2, lease=0.8, lease_margin=0.1, master_poll=2.0),
}


@dataclass(frozen=True)
class Written:
    """A file the test wrote into a node's tree (path relative to the replicated directory)."""

    node: str
    path: str
    content: str


@dataclass(frozen=True)
class DnsAnswer:
    """What one authoritative server names as master, and the epoch it carries beside it."""

    server: str | None
    epoch: int | None
    error: str = ""  # it did not answer (as the agents would see it)


@dataclass
class FailoverHosts:
    network: Network
    directory: Path
    config: Path
    members: tuple[Member, ...]
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    cut_off: set[str] = field(default_factory=set)
    written: list[Written] = field(default_factory=list)

    # -- the cluster -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def data_nodes(self) -> list[str]:
        return [m.name for m in self.members if m.holds_data]

    def live(self) -> list[str]:
        """The nodes whose agent runs (and is not paused)."""
        return [n for n in self.names if n in self.agents and n not in self.paused]

    def socket(self, name: str) -> Path:
        return self.directory / "run" / f"{name}.sock"

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    # -- agents ----------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start `name`'s agent on its host; return once its control socket answers."""
        assert name not in self.agents, f"{name}'s agent runs already"
        self.socket(name).unlink(missing_ok=True)  # left by an agent that was killed
        argv = [sys.executable, "-m", "synco.node.main", "--config", str(self.config), "--as", name, "-v"]
        process = self.network.spawn(name, argv, str(self.directory / f"{name}.log"))
        self.agents[name] = process

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name}'s agent exited {process.returncode}:\n{self.log(name)}")
            return self.socket(name).exists() and self.status(name) is not None

        wait_until(serving, f"{name}'s agent serving")

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)

    def stop(self, name: str, how: signal.Signals = signal.SIGTERM) -> int:
        """Stop `name`'s agent (SIGTERM: as systemd would; SIGKILL: a crash); its exit code."""
        process = self.agents.pop(name)
        process.send_signal(how)
        if name in self.paused:  # a stopped process handles its signals only once continued
            self.paused.discard(name)
            process.send_signal(signal.SIGCONT)
        return process.wait(timeout=30)

    def kill(self, name: str) -> int:
        return self.stop(name, signal.SIGKILL)

    def pause(self, name: str) -> None:
        """SIGSTOP: the agent is frozen (a long GC pause, a VM stopped), its host still runs."""
        self.agents[name].send_signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.agents[name].send_signal(signal.SIGCONT)
        self.paused.discard(name)

    # -- the network ------------------------------------------------------------------------

    def cut(self, host: str) -> None:
        """`host`'s link down at the switch (an agent's, or "dns1" / "dns2")."""
        self.network.cut(host)
        self.cut_off.add(host)

    def heal(self, host: str) -> None:
        self.network.heal(host)
        self.cut_off.discard(host)

    def pin_neighbours(self) -> None:
        """Permanent neighbour (ARP) entries on every host for every other one. A cut takes
        the host's carrier away, which flushes its neighbour cache, and ARP asks again only
        once a second: a link flapping every 0.3 s would be down for seconds at a time at the
        IP level (measured: up to 3.7 s without a reply over TCP), whatever the agents do."""
        hosts = self.network.hosts
        macs = {}
        for host in hosts:
            shown = subprocess.run(
                ["ip", "-n", self.network.namespace(host), "-j", "link", "show", "dev", "eth0"],
                capture_output=True,
                text=True,
                check=True,
            )
            macs[host] = json.loads(shown.stdout)[0]["address"]
        for host, other in ((h, o) for h in hosts for o in hosts if o != h):
            address, mac = self.network.address(other), macs[other]
            argv = ["neigh", "replace", address, "lladdr", mac, "dev", "eth0", "nud", "permanent"]
            subprocess.run(["ip", "-n", self.network.namespace(host), *argv], check=True, capture_output=True)

    # -- what the agents say ----------------------------------------------------------------

    def status(self, name: str, timeout: float = 3.0) -> control_pb2.ClusterStatus | None:
        """`name`'s own status, as `synco-ctl --as NAME status` asks it on the control socket
        (its agent asks every peer with a 1 s deadline); None if it does not answer."""
        try:
            with grpc.insecure_channel(f"unix:{self.socket(name)}") as channel:
                stub = control_pb2_grpc.ControlStub(channel)
                answer: control_pb2.ClusterStatus = stub.Status(
                    control_pb2.ClusterStatusRequest(), timeout=timeout
                )
                return answer
        except grpc.RpcError:
            return None

    def statuses(self, names: Iterable[str] | None = None) -> dict[str, control_pb2.ClusterStatus | None]:
        """The status of each of `names` (default: every live node), asked in parallel."""
        asked = list(self.live() if names is None else names)
        if not asked:
            return {}
        with ThreadPoolExecutor(len(asked)) as pool:
            return dict(zip(asked, pool.map(self.status, asked), strict=True))

    def acting(self, names: Iterable[str] | None = None) -> list[str]:
        """The nodes (default: every live one) whose own agent says it acts as master."""
        return [n for n, s in self.statuses(names).items() if s is not None and s.local.heartbeat.acting]

    def epoch(self, name: str) -> int:
        status = self.status(name)
        assert status is not None, f"{name}'s agent does not answer"
        return status.local.heartbeat.epoch

    def ctl(self, name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        """synco-ctl run as an operator runs it on this machine (its own network namespace)."""
        return subprocess.run(
            [sys.executable, "-m", "synco.ctl", "--config", str(self.config), "--as", name, *arguments],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def ctl_on(self, name: str, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """synco-ctl run on `name`'s host (its network namespace: it reaches the DNS servers)."""
        argv = [sys.executable, "-m", "synco.ctl", "--config", str(self.config), "--as", name, *arguments]
        return subprocess.run(
            self.network.command(name, argv), capture_output=True, text=True, timeout=timeout
        )

    def acting_intervals(self) -> list[tuple[str, float, float]]:
        """When each node acted as master, from its own log lines (start, end; a node that
        still acts: until now), on the machine's one clock."""
        found = []
        for name in self.names:
            path = self.directory / f"{name}.log"
            if not path.exists():
                continue
            since = None
            for line in path.read_text(errors="replace").splitlines():
                match = ACTING.match(line)
                if match is None or match.group(2) != name:
                    continue
                at = time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S"))
                at += int(match.group(1)[20:23]) / 1000
                if match.group(3) == "now acting" and since is None:
                    since = at
                elif match.group(3) == "no longer acting" and since is not None:
                    found.append((name, since, at))
                    since = None
            if since is not None:
                found.append((name, since, time.time()))
        return found

    # -- DNS ----------------------------------------------------------------------------------

    def dns(self) -> list[DnsAnswer]:
        """What the primary and the secondary each serve now, asked inside their own
        namespaces (so a cut link does not hide what a server holds)."""
        probes = [
            subprocess.Popen(
                self.network.command(host, probe_command(self.network.address(host), MASTER)),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for host in DNS_HOSTS
        ]
        answers = []
        for host, probe in zip(DNS_HOSTS, probes, strict=True):
            out, err = probe.communicate(timeout=30)
            assert probe.returncode == 0, f"asking {host}: {err}"
            seen = json.loads(out)
            if "error" in seen:
                answers.append(DnsAnswer(None, None, seen["error"]))
                continue
            server = seen["values"][0].split(".")[0] if seen["kind"] == "cname" else None
            answers.append(DnsAnswer(server, seen["epoch"]))
        return answers

    # -- data ----------------------------------------------------------------------------------

    def root(self, name: str) -> Path:
        return self.directory / name

    def tree(self, name: str) -> dict[str, str]:
        """Every file of `name`'s replicated directory, by relative path, with its text."""
        return read_tree(self.root(name) / DATA)

    def write(self, name: str, files: dict[str, str]) -> None:
        """Write into `name`'s tree, as a user of that server would, and remember it."""
        write_tree(self.root(name) / DATA, files)
        self.written += [Written(name, path, content) for path, content in files.items()]

    def kept_aside(self, name: str) -> dict[str, list[str]]:
        """What `name`'s pulls kept aside, every time (<state_dir>/kept-aside/<node>/<stamp>/
        <directory>/...): each relative path with the contents it had."""
        found: dict[str, list[str]] = {}
        for stamp in sorted((self.directory / "state" / "kept-aside" / name).glob("*")):
            for path, content in read_tree(stamp / DATA).items():
                found.setdefault(path, []).append(content)
        return found

    def lost(self, master: str) -> list[Written]:
        """The files written that are neither on `master` nor kept aside on the node they were
        written on (with the content written)."""
        final = self.tree(master)
        kept = {n: self.kept_aside(n) for n in self.data_nodes}
        return [
            w
            for w in self.written
            if final.get(w.path) != w.content and w.content not in kept[w.node].get(w.path, [])
        ]

    # -- waiting ---------------------------------------------------------------------------------

    def describe(self) -> str:
        """What each node and DNS server says now, for the message of a failed wait."""
        lines = []
        for name, status in self.statuses().items():
            if status is None:
                lines.append(f"{name}: does not answer")
                continue
            local = status.local
            lines.append(
                f"{name}: acting {local.heartbeat.acting}, epoch {local.heartbeat.epoch}, "
                f"verdict {local.verdict!r}, election {local.election!r}"
            )
        lines += [f"{n}: agent stopped" for n in self.names if n not in self.agents]
        lines += [f"{n}: agent paused" for n in sorted(self.paused)]
        lines += [f"{h}: link cut" for h in sorted(self.cut_off)]
        try:
            lines += [
                f"{h}: {a.error}" if a.error else f"{h} names {a.server} with epoch {a.epoch}"
                for h, a in zip(DNS_HOSTS, self.dns(), strict=True)
            ]
        except (AssertionError, subprocess.TimeoutExpired, ValueError) as error:
            lines.append(f"DNS: {error}")
        return "\n".join(lines)

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> float:
        """wait_until, the seconds it took; if it times out, what every node says is told."""
        started = time.monotonic()
        try:
            wait_until(condition, what, timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.describe()}") from None
        return time.monotonic() - started

    def wait_for_master(self, names: Iterable[str] | None = None, timeout: float = 30) -> str:
        """The one node (of `names`, default every live one) acting as master, once exactly
        one does and both DNS servers name it with its epoch."""
        found: list[str] = []

        def settled() -> bool:
            statuses = self.statuses(names)
            acting = [n for n, s in statuses.items() if s is not None and s.local.heartbeat.acting]
            if len(acting) != 1:
                return False
            status = statuses[acting[0]]
            assert status is not None
            want = DnsAnswer(acting[0], status.local.heartbeat.epoch)
            if self.dns() != [want, want]:
                return False
            found[:] = acting
            return True

        self.wait(settled, "exactly one master, named by both DNS servers with its epoch", timeout)
        return found[0]

    def wait_replicated(self, master: str, timeout: float = 30) -> dict[str, str]:
        """`master`'s tree, once every other node holding data has the same."""
        others = [n for n in self.data_nodes if n != master]

        def equal() -> bool:
            final = self.tree(master)
            return all(self.tree(n) == final for n in others)

        self.wait(equal, f"the trees of {', '.join(others)} equal to {master}'s", timeout)
        return self.tree(master)

    def hold(self, condition: Callable[[], bool], seconds: float, what: str) -> int:
        """Check `condition` again and again for `seconds` (a window in which nothing may
        change, not a wait for readiness); AssertionError, with what every node says, the
        first time it is false. How many times it was checked."""
        deadline = time.monotonic() + seconds
        checks = 0
        while time.monotonic() < deadline:
            try:
                assert condition(), f"not true after {checks} checks"
            except AssertionError as error:
                raise AssertionError(f"{what}: {error}\n{self.describe()}") from None
            checks += 1
            time.sleep(0.05)
        return checks

    # -- the end -----------------------------------------------------------------------------

    def close(self) -> None:
        """End every process started on the hosts (the agents' rsync and ssh children too),
        then the namespaces."""
        for name in self.paused:
            with suppress(ProcessLookupError):
                self.agents[name].send_signal(signal.SIGCONT)
        for host in self.network.hosts:
            listed = subprocess.run(
                ["ip", "netns", "pids", self.network.namespace(host)], capture_output=True, text=True
            )
            for pid in listed.stdout.split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        self.network.destroy()


def probe_command(address: str, name: str) -> list[str]:
    """A command that prints what the server at address:53 serves for `name` (JSON: kind,
    values, epoch; or error), as the agents read it."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1])\n"
        "from synco.core.model import DnsSettings\n"
        "from synco.dns_client import Authority, parse_server\n"
        "server = parse_server(sys.argv[2])\n"
        "authority = Authority(DnsSettings(zone=sys.argv[3], servers=(sys.argv[2],), timeout=2.0))\n"
        "try:\n"
        "    state = authority.read(sys.argv[4], server)\n"
        "except Exception as error:\n"
        "    print(json.dumps({'error': f'{type(error).__name__}: {error}'}))\n"
        "else:\n"
        "    print(json.dumps({'kind': state.kind, 'values': list(state.values), 'epoch': state.epoch}))\n"
    )
    return [sys.executable, "-c", code, str(CHECKOUT / "agent"), f"{address}:53", ZONE, name]


def zone_file(network: Network, hosts: Sequence[str]) -> str:
    records = "".join(f"{h:<8} IN A   {network.address(h)}\n" for h in hosts)
    return (
        f"$TTL 30\n@        IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 30 10 3600 5\n"
        f"@        IN NS  ns1.{ZONE}.\n@        IN NS  ns2.{ZONE}.\n"
        f"ns1      IN A   {network.address(DNS_HOSTS[0])}\nns2      IN A   {network.address(DNS_HOSTS[1])}\n"
        + records
    )


def start_dns(network: Network, directory: Path, key_file: Path, hosts: Sequence[str]) -> None:
    """The primary on dns1 and the secondary on dns2, each on port 53 of its own address; the
    secondary is started once the primary answers, and ready once it serves its serial."""
    named = need("named")
    primary, secondary = (network.address(h) for h in DNS_HOSTS)
    zones = {
        DNS_HOSTS[0]: f"""zone "{ZONE}" {{
    type primary;
    file "{directory / DNS_HOSTS[0]}/{ZONE}.db";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
    allow-transfer {{ key {KEY_NAME}; }};
    notify explicit;
    also-notify {{ {secondary} port 53; }};
}};
""",
        DNS_HOSTS[1]: f"""zone "{ZONE}" {{
    type secondary;
    file "{directory / DNS_HOSTS[1]}/{ZONE}.db";
    primaries {{ {primary} port 53 key {KEY_NAME}; }};
    allow-notify {{ {primary}; }};
}};
""",
    }
    serial: int | None = None
    for host in DNS_HOSTS:
        home = directory / host
        home.mkdir(parents=True)
        if host == DNS_HOSTS[0]:
            (home / f"{ZONE}.db").write_text(zone_file(network, hosts))
        (home / "named.conf").write_text(
            options(home, 53, network.address(host)) + f'include "{key_file}";\n' + zones[host]
        )
        process = network.spawn(
            host, [named, "-g", "-u", "root", "-c", str(home / "named.conf")], str(home / "log")
        )
        ready = subprocess.run(
            network.command(host, wait_serial_command(network.address(host), 53, serial, timeout=30)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        log = (home / "log").read_text(errors="replace")
        assert process.poll() is None, f"named on {host} exited: {log}"
        assert ready.returncode == 0, f"named on {host} did not serve {ZONE} (serial {serial}): {log}"
        serial = int(ready.stdout)


def start_sshd(network: Network, directory: Path, hosts: Sequence[str]) -> SshdFiles:
    """An sshd on port 22 of each host, all with the same keys."""
    sshd = need("sshd")
    addresses = [network.address(h) for h in hosts]
    files = prepare_sshd(directory, ["0.0.0.0"], 22, addresses)
    for host in hosts:
        config = directory / f"sshd_config.{host}"
        config.write_text(files.config.read_text().replace("sshd.pid", f"sshd.{host}.pid"))
        network.spawn(host, [sshd, "-D", "-e", "-f", str(config)], str(directory / f"sshd.{host}.log"))
    for host in hosts:
        log = directory / f"sshd.{host}.log"
        wait_until(
            lambda log=log: "Server listening on 0.0.0.0 port 22" in log.read_text(errors="replace"),  # type: ignore[misc]
            f"sshd on {host}",
        )
    return files


def cluster_toml(
    network: Network,
    directory: Path,
    members: Sequence[Member],
    timings: Timings,
    certs: Path,
    ssh: SshdFiles,
    key_file: Path,
    extra: str = "",
) -> str:
    """The script: servers named in the zone (the CNAME targets) but reached by address;
    `extra` is appended (event handlers, say)."""
    ssh_options = [
        *("-o", f"UserKnownHostsFile={ssh.known_hosts}", "-o", "StrictHostKeyChecking=yes"),
        *("-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5"),
    ]
    servers = ""
    for member in members:
        address = network.address(member.name)
        servers += (
            f'[servers.{member.name}]\nhost = "{member.name}.{ZONE}"\nagent = "{address}:{AGENT_PORT}"\n'
        )
        if member.holds_data:
            listed = ", ".join(f'"{o}"' for o in [*ssh_options, "-o", f"HostName={address}"])
            servers += (
                f'root = "{directory / member.name}"\nuser = "root"\nport = 22\n'
                f'identity_file = "{ssh.user_key}"\nssh_options = [{listed}]\n'
                f"priority = {member.priority}\n"
            )
        else:
            servers += f'role = "{member.role}"\n'
    dns_servers = ", ".join(f'"{network.address(h)}:53"' for h in DNS_HOSTS)
    return (
        f'master = "{MASTER}"\n[method]\narguments = ["--archive", "--delete"]\n'
        f'[agent]\nstate_dir = "{directory}/state"\ncontrol_socket = "{directory}/run/{{server}}.sock"\n'
        f'ca_file = "{certs}/ca.pem"\ncert_file = "{certs}/{{server}}.pem"\n'
        f'key_file = "{certs}/{{server}}.key"\n'
        f"{timings.agent_toml()}{servers}"
        f'[[directories]]\npath = "{DATA}"\n'
        f'[dns]\nzone = "{ZONE}"\nservers = [{dns_servers}]\nkey_file = "{key_file}"\nmode = "cname"\n'
        f"ttl = 5\ntimeout = {timings.dns_timeout}\npropagation_timeout = 20\n{extra}"
    )


@contextmanager
def failover_hosts(
    directory: Path,
    members: Sequence[Member] = THREE,
    timings: Timings | None = None,
    certs: Path | None = None,
    start: bool = True,
    extra_toml: str = "",
) -> Iterator[FailoverHosts]:
    """The hosts of `members` and the two DNS hosts, with sshd and BIND running, and (with
    `start`) every agent; `certs`: a directory of certificates issued for every member (by
    default issued here: tests sharing the members can share them)."""
    need("rsync")
    need("named")
    names = [m.name for m in members]
    network = make_network([*names, *DNS_HOSTS])
    made: FailoverHosts | None = None
    try:
        key_file = write_key(directory / "tsig.key")
        start_dns(network, directory / "dns", key_file, names)
        ssh = start_sshd(network, directory / "ssh", [m.name for m in members if m.holds_data])
        certs = certs or issue_certificates(directory / "certs", names)
        config = directory / "cluster.toml"
        config.write_text(
            cluster_toml(network, directory, members, timings or Timings(), certs, ssh, key_file, extra_toml)
        )
        for member in members:
            if member.holds_data:
                (directory / member.name / DATA).mkdir(parents=True)
        made = FailoverHosts(network, directory, config, tuple(members))
        if start:
            made.start_all()
        yield made
    finally:
        if made is not None:
            made.close()
        else:
            network.destroy()
