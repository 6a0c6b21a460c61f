"""`synco-agent --check`: what this server's agent needs, opened and checked without starting
it (certificates, state, root, rsync, DNS key), each with a line that says what was found."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from synco import btrfs
from synco.core.errors import SyncoError
from synco.core.model import Role, Script, Server
from synco.node.state import load_state
from synco.tsig_key import load_key

EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True)
class Check:
    ok: bool
    what: str
    detail: str
    warning: bool = False  # ok, but the operator should act soon

    def line(self) -> str:
        mark = "FAIL" if not self.ok else ("WARN" if self.warning else "ok")
        return f"{mark:<5} {self.what}: {self.detail}"


HINT = "scripts/certs makes a CA and node certificates; or set insecure = true for a loopback-only cluster"


def preflight(script: Script, me: str, now: datetime | None = None) -> list[Check]:
    """Every check for `me`'s agent, passing or not."""
    assert script.agent is not None
    server = script.server(me)
    checks = [*_certificates(script, me, now or datetime.now(UTC))]
    checks.append(_state(script, me))
    if server.role == Role.WITNESS:  # it votes, and holds no data: no root, no rsync
        checks.append(Check(True, "role", "witness (votes in elections, holds no data)"))
        return checks
    checks.append(_root(server))
    if server.mountpoint is not None:
        mounted = os.path.ismount(server.mountpoint)
        checks.append(
            Check(mounted, f"mountpoint {server.mountpoint}", "mounted" if mounted else "not mounted")
        )
    rsync = shutil.which("rsync")
    checks.append(Check(rsync is not None, "rsync", rsync or "not found in PATH"))
    if server.role == Role.BACKUP and script.backup.backend == "btrfs":
        root = _existing_parent(Path(server.root))
        on = btrfs.on_btrfs(root)
        checks.append(Check(on, "backup.backend btrfs", f"{root} is {'' if on else 'not '}on btrfs"))
    if script.dns is not None and script.dns.key_file is not None:
        try:
            key = load_key(script.dns.key_file)
            checks.append(Check(True, f"dns.key_file {script.dns.key_file}", f"key {key.name}"))
        except SyncoError as error:
            checks.append(Check(False, "dns.key_file", str(error)))
    return checks


def _certificates(script: Script, me: str, now: datetime) -> list[Check]:
    agent = script.agent
    assert agent is not None
    if agent.insecure:
        return [Check(True, "certificates", "none: insecure = true (plaintext on loopback)", warning=True)]
    paths = {
        "ca_file": Path(agent.ca_file),
        "cert_file": Path(agent.path(agent.cert_file, me)),
        "key_file": Path(agent.path(agent.key_file, me)),
    }
    contents: dict[str, bytes] = {}
    checks = []
    for key, path in paths.items():
        try:
            contents[key] = path.read_bytes()
        except OSError as error:
            checks.append(Check(False, f"agent.{key} {path}", f"cannot read: {error.strerror} ({HINT})"))
    if checks:
        return checks
    try:
        authorities = x509.load_pem_x509_certificates(contents["ca_file"])
    except ValueError as error:
        return [Check(False, f"agent.ca_file {paths['ca_file']}", f"no PEM certificate: {error}")]
    try:
        chain = x509.load_pem_x509_certificates(contents["cert_file"])
    except ValueError as error:
        return [Check(False, f"agent.cert_file {paths['cert_file']}", f"no PEM certificate: {error}")]
    certificate = chain[0]
    what = f"certificate {paths['cert_file']}"
    refused = [*_trust_problems(chain, authorities, paths["ca_file"]), *_name_problems(certificate, me)]
    if refused:
        checks.append(Check(False, what, "; ".join(refused)))
    else:
        until = certificate.not_valid_after_utc
        start = certificate.not_valid_before_utc
        if now < start:  # peers refuse it until then; the clock may be wrong
            detail = f"not valid before {start:%Y-%m-%d %H:%M} UTC (is the clock right?)"
            checks.append(Check(False, what, detail))
        elif now >= until:
            checks.append(Check(False, what, f"expired on {until:%Y-%m-%d}: peers refuse it"))
        else:
            soon = until - now < EXPIRY_WARNING
            detail = f"for {me}, issued by the cluster CA, valid until {until:%Y-%m-%d}"
            checks.append(Check(True, what, detail + (" (renew it soon)" if soon else ""), warning=soon))
    checks.append(_key(paths["key_file"], contents["key_file"], certificate))
    return checks


def _trust_problems(
    chain: list[x509.Certificate], authorities: list[x509.Certificate], ca_file: Path
) -> list[str]:
    """Whether the certificate leads to one of the CA file's certificates, through the
    intermediates that follow it in its file."""
    current, intermediates = chain[0], chain[1:]
    for _ in range(len(chain) + 1):
        if any(_issued_by(current, authority) for authority in authorities):
            return []
        issuer = next((c for c in intermediates if _issued_by(current, c)), None)
        if issuer is None:
            break
        intermediates.remove(issuer)
        current = issuer
    return [f"not issued by the cluster CA in {ca_file}: peers would refuse it"]


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _name_problems(certificate: x509.Certificate, me: str) -> list[str]:
    """Peers identify a caller by its certificate's common name, and check a server's name
    against its subjectAltName (its common name when it has none)."""
    problems = []
    names = [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [me]:
        problems.append(f"names {', '.join(names) or 'nobody'} (CN), not {me}: peers would refuse it")
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return problems
    if me not in alternative.value.get_values_for_type(x509.DNSName):
        problems.append(f"its subjectAltName lacks DNS:{me}, which peers check when they connect")
    return problems


def _key(path: Path, content: bytes, certificate: x509.Certificate) -> Check:
    what = f"private key {path}"
    try:
        key = serialization.load_pem_private_key(content, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        return Check(False, what, f"not an unencrypted PEM private key: {error}")
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != certificate.public_key().public_bytes(*public):
        return Check(False, what, "does not match the certificate")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o007:
        return Check(False, what, f"mode {mode:04o}: readable by every user; chmod 600 it")
    if mode & 0o070:
        return Check(
            True, what, f"matches the certificate; mode {mode:04o}: its group can read it", warning=True
        )
    return Check(True, what, "matches the certificate, mode 0600 or stricter")


def _state(script: Script, me: str) -> Check:
    assert script.agent is not None
    directory = Path(script.agent.path(script.agent.state_dir, me))
    path = directory / f"{me}.json"
    try:
        state = load_state(path)
    except SyncoError as error:
        return Check(False, f"state {path}", str(error))
    existing = _existing_parent(directory)
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(False, f"state {directory}", f"{existing} is not writable")
    found = "epoch {}, generation {}, last pull {} from {}".format(
        state.epoch, state.generation, state.pulled_generation, state.pulled_master or "nowhere"
    )
    return Check(True, f"state {path}", found if path.exists() else "none yet (a first start)")


def _root(server: Server) -> Check:
    root = Path(server.root)
    if root.is_dir():
        return Check(True, f"root {root}", "exists")
    if root.exists():
        return Check(False, f"root {root}", "is not a directory")
    existing = _existing_parent(root)
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(False, f"root {root}", f"missing, and {existing} is not writable")
    return Check(True, f"root {root}", "missing: a pull creates it (as master, there is nothing to copy)")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
