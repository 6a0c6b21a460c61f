"""An sshd on a loopback port with generated host and user keys."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.components import need


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    port: int
    user: str
    identity_file: Path
    known_hosts: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ssh_options(self) -> list[str]:
        return [
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
        ]

    def server_toml(self, host: str = "127.0.0.1", connect_to: str | None = None) -> str:
        """The TOML keys that make a [servers.X] table reach this sshd (at `connect_to`, if
        the host is a name only the test's DNS server knows)."""
        extra = ["-o", f"HostName={connect_to}"] if connect_to else []
        options = ", ".join(f'"{o}"' for o in [*self.ssh_options, *extra])
        return (
            f'host = "{host}"\nuser = "{self.user}"\nport = {self.port}\n'
            f'identity_file = "{self.identity_file}"\nssh_options = [{options}]\n'
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class SshdFiles:
    config: Path
    user_key: Path
    known_hosts: Path


def prepare_sshd(directory: Path, listen: list[str], port: int, names: list[str]) -> SshdFiles:
    """Host and user keys, authorized_keys, known_hosts (for `names` on `port`) and sshd_config."""
    keygen = need("ssh-keygen")
    need("ssh")
    directory.mkdir(parents=True, exist_ok=True)
    host_key = directory / "host_ed25519"
    user_key = directory / "user_ed25519"
    for key in (host_key, user_key):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (directory / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    os.chmod(directory / "authorized_keys", 0o600)
    host_public = host_key.with_suffix(".pub").read_text().split()
    known = directory / "known_hosts"
    known.write_text(
        "".join(f"{h if port == 22 else f'[{h}]:{port}'} {host_public[0]} {host_public[1]}\n" for h in names)
    )
    config = directory / "sshd_config"
    listen_lines = "".join(f"ListenAddress {address}\n" for address in listen)
    # The sessions' HOME is an empty directory of the test's: the login shell (bash, for
    # root) would otherwise source the machine user's ~/.bashrc on every ssh command, and
    # with it whatever that does (here, `pyenv init` takes a lock that a session killed by
    # a test leaves behind, and every later session waits 60 s for it).
    home = directory / "home"
    home.mkdir(exist_ok=True)
    config.write_text(
        f"""Port {port}
{listen_lines}HostKey {host_key}
PidFile {directory}/sshd.pid
AuthorizedKeysFile {directory}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 100
SetEnv HOME={home}
"""
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    return SshdFiles(config, user_key, known)


def start_sshd(directory: Path, extra_names: tuple[str, ...] = ()) -> Sshd:
    sshd = need("sshd")
    port = free_port()
    names = ["127.0.0.1", "127.0.0.2", "localhost", *(f"s0{i}.example.test" for i in (1, 2, 3)), *extra_names]
    files = prepare_sshd(directory, ["127.0.0.1", "127.0.0.2"], port, names)
    log = directory / "sshd.log"
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(files.config)], stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        process.kill()
        raise RuntimeError(f"sshd did not listen on port {port}: {log.read_text()}")
    return Sshd(port, getpass.getuser(), files.user_key, files.known_hosts, process, log)
