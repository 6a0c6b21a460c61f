"""BIND 9 `named` on loopback ports: a primary with a dynamic zone and a TSIG key, and a
secondary that transfers the zone from it (NOTIFY), both started and stopped by tests.

Readiness, never fixed sleeps: the primary is started and asked for the zone's SOA until it
answers; only then is the secondary started (a secondary started first fails its first
refresh and retries later than a test's deadline), and it is ready once it answers the SOA
with the primary's serial, i.e. once it holds the zone transferred."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.support.components import need

ZONE = "example.test"
KEY_NAME = "synco-key"

ZONE_FILE = """$TTL 30
@        IN SOA ns1.example.test. hostmaster.example.test. 1 30 10 3600 5
@        IN NS  ns1.example.test.
ns1      IN A   127.0.0.1
s01      IN A   127.0.0.1
s02      IN A   127.0.0.2
s03      IN A   127.0.0.3
web      IN A   127.0.0.2
web      IN A   127.0.0.3
primary  IN CNAME s01
"""


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def write_key(path: Path, name: str = KEY_NAME, secret: bytes | None = None) -> Path:
    secret = secret or os.urandom(32)
    path.write_text(
        f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{base64.b64encode(secret).decode()}";\n}};\n'
    )
    path.chmod(0o600)
    return path


@dataclass
class Named:
    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    role: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return (self.directory / "named.log").read_text(errors="replace")


@dataclass
class DnsCluster:
    """A primary and a secondary serving ZONE, and the key that may update it."""

    primary: Named
    secondary: Named
    key_file: Path
    servers: list[str] = field(default_factory=list)

    def toml(self, mode: str = "cname", key: bool = True, servers: list[str] | None = None) -> str:
        listed = ", ".join(f'"{s}"' for s in (servers or self.servers))
        key_line = f'key_file = "{self.key_file}"\n' if key else ""
        return (
            f'[dns]\nzone = "{ZONE}"\nservers = [{listed}]\n{key_line}mode = "{mode}"\nttl = 5\n'
            "timeout = 2\npropagation_timeout = 20\n"
        )

    def stop(self) -> None:
        self.secondary.stop()
        self.primary.stop()


def soa_serial(host: str, port: int, timeout: float = 0.5) -> int | None:
    """The serial of ZONE's SOA as the server at host:port serves it with authority, or None
    (no answer yet, SERVFAIL while a secondary has no zone, not authoritative)."""
    try:
        query = dns.message.make_query(f"{ZONE}.", "SOA")
        query.flags &= ~dns.flags.RD
        response = dns.query.udp(query, host, port=port, timeout=timeout)
    except Exception:  # not answering yet
        return None
    if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AA:
        return None
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.SOA:
            return int(rrset[0].serial)
    return None


def wait_serial(
    host: str,
    port: int,
    serial: int | None = None,
    timeout: float = 30,
    alive: subprocess.Popen[bytes] | None = None,
) -> int | None:
    """Ask until the server answers ZONE's SOA (with `serial`, if given); the serial, or None
    at the deadline. `alive`, a Popen, ends the wait early when that process has exited."""
    deadline = time.monotonic() + timeout
    while True:
        found = soa_serial(host, port)
        if found is not None and (serial is None or found == serial):
            return found
        if alive is not None and alive.poll() is not None:
            return None
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def wait_serial_command(host: str, port: int, serial: int | None = None, timeout: float = 30) -> list[str]:
    """The same wait as a command (for a server only reachable inside a network namespace):
    prints the serial and exits 0, or exits 1 at the deadline."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from tests.support.named import wait_serial; "
        "s = wait_serial(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if sys.argv[4] else None, "
        "float(sys.argv[5])); print(s if s is not None else ''); sys.exit(s is None)"
    )
    checkout = str(Path(__file__).resolve().parents[2])
    return [
        sys.executable,
        "-c",
        code,
        checkout,
        host,
        str(port),
        "" if serial is None else str(serial),
        str(timeout),
    ]


def _start(directory: Path, role: str, config: str, port: int, serial: int | None = None) -> Named:
    """Start `named` and return once it serves ZONE (with `serial`: a secondary holding the
    primary's zone)."""
    named = need("named")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "named.conf").write_text(config)
    log = (directory / "named.log").open("wb")
    user = ["-u", "root"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [named, "-g", *user, "-c", str(directory / "named.conf")], stdout=log, stderr=subprocess.STDOUT
    )
    server = Named(directory, port, process, role)
    if wait_serial("127.0.0.1", port, serial, timeout=30, alive=process) is not None:
        return server
    if process.poll() is not None:
        raise RuntimeError(f"named ({role}) exited: {server.log()}")
    server.stop()
    wanted = f" at serial {serial}" if serial is not None else ""
    raise RuntimeError(f"named ({role}) did not serve {ZONE}{wanted} within 30 s: {server.log()}")


def options(directory: Path, port: int, address: str = "127.0.0.1") -> str:
    return f"""options {{
    directory "{directory}";
    listen-on port {port} {{ {address}; }};
    listen-on-v6 {{ none; }};
    pid-file "{directory}/named.pid";
    session-keyfile "{directory}/session.key";
    recursion no;
    dnssec-validation no;
    notify-delay 0;
    min-refresh-time 1;
    min-retry-time 1;
}};
controls {{ }};
"""


def start_cluster(directory: Path) -> DnsCluster:
    key_file = write_key(directory / "tsig.key")
    primary_port, secondary_port = free_port(), free_port()
    primary_dir, secondary_dir = directory / "primary", directory / "secondary"
    primary_dir.mkdir(parents=True)
    (primary_dir / f"{ZONE}.db").write_text(ZONE_FILE)
    primary = _start(
        primary_dir,
        "primary",
        options(primary_dir, primary_port)
        + f'include "{key_file}";\n'
        + f"""zone "{ZONE}" {{
    type primary;
    file "{primary_dir}/{ZONE}.db";
    update-policy {{ grant {KEY_NAME} zonesub ANY; }};
    allow-transfer {{ key {KEY_NAME}; }};
    notify explicit;
    also-notify {{ 127.0.0.1 port {secondary_port}; }};
}};
""",
        primary_port,
    )
    serial = soa_serial("127.0.0.1", primary_port)
    assert serial is not None, primary.log()
    try:  # started only now that the primary answers, and ready once it holds its zone
        secondary = _start(
            secondary_dir,
            "secondary",
            options(secondary_dir, secondary_port)
            + f'include "{key_file}";\n'
            + f"""zone "{ZONE}" {{
    type secondary;
    file "{secondary_dir}/{ZONE}.db";
    primaries {{ 127.0.0.1 port {primary_port} key {KEY_NAME}; }};
    allow-notify {{ 127.0.0.1; }};
}};
""",
            secondary_port,
            serial,
        )
    except Exception:
        primary.stop()
        raise
    return DnsCluster(primary, secondary, key_file, [primary.address, secondary.address])


def start_standalone(directory: Path, zone_file: str) -> Named:
    """One more server for ZONE with its own copy of the zone (`zone_file`), taking no updates:
    what a secondary that missed the primary's changes serves."""
    directory.mkdir(parents=True)
    (directory / f"{ZONE}.db").write_text(zone_file)
    port = free_port()
    return _start(
        directory,
        "lagging",
        options(directory, port)
        + f'zone "{ZONE}" {{\n    type primary;\n    file "{directory}/{ZONE}.db";\n}};\n',
        port,
    )
