"""`synco-agent --check` opens what the agent needs (certificates, state, root, rsync) and
names each problem, without starting the agent."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from synco.core.model import AgentSettings
from synco.node.tls import self_test
from tests.support.agents import issue_certificates

SCRIPT = """\
master = "s01"
[agent]
state_dir = "{d}/state"
control_socket = "{d}/run/{{server}}.sock"
ca_file = "{certs}/ca.pem"
cert_file = "{certs}/{{server}}.pem"
key_file = "{certs}/{{server}}.key"
[servers.s01]
root = "{d}/s01"
agent = "127.0.0.1:7301"
[servers.s02]
root = "{d}/s02"
agent = "127.0.0.1:7302"
[[directories]]
path = "srv"
"""


def check(directory: Path, certs: Path, name: str = "s01") -> subprocess.CompletedProcess[str]:
    config = directory / "cluster.toml"
    config.write_text(SCRIPT.format(d=directory, certs=certs))
    return subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(config), "--as", name, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def failures(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return issue_certificates(tmp_path / "certs", ["s01", "s02"])


def test_a_ready_server_passes(tmp_path: Path, certs: Path) -> None:
    result = check(tmp_path, certs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    certificate" in result.stdout and "for s01, issued by the cluster CA" in result.stdout
    assert "matches the certificate" in result.stdout
    assert "none yet (a first start)" in result.stdout
    assert not (tmp_path / "state").exists()  # a check creates nothing


def test_missing_certificates_are_named(tmp_path: Path) -> None:
    result = check(tmp_path, tmp_path / "nowhere")
    assert result.returncode == 2
    assert len(failures(result)) == 3 and all("cannot read" in line for line in failures(result))


def test_certificate_from_another_ca(tmp_path: Path, certs: Path) -> None:
    other = issue_certificates(tmp_path / "other", ["s01"])
    for suffix in ("pem", "key"):
        (certs / f"s01.{suffix}").write_bytes((other / f"s01.{suffix}").read_bytes())
    result = check(tmp_path, certs)
    assert result.returncode == 2
    assert "not issued by the cluster CA" in "".join(failures(result))


def test_certificate_of_another_server(tmp_path: Path, certs: Path) -> None:
    result = check(tmp_path, certs, name="s02")
    assert result.returncode == 0
    for suffix in ("pem", "key"):
        (certs / f"s02.{suffix}").write_bytes((certs / f"s01.{suffix}").read_bytes())
    result = check(tmp_path, certs, name="s02")
    assert result.returncode == 2
    assert "names s01 (CN), not s02: peers would refuse it" in "".join(failures(result))


def test_key_of_another_certificate_or_readable_by_others(tmp_path: Path, certs: Path) -> None:
    os.chmod(certs / "s01.key", 0o640)  # a group such as ssl-cert: a warning
    result = check(tmp_path, certs)
    assert (
        result.returncode == 0
        and "WARN  private key" in result.stdout
        and "its group can read it" in result.stdout
    )
    os.chmod(certs / "s01.key", 0o644)
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "readable by every user" in "".join(failures(result))
    (certs / "s01.key").write_bytes((certs / "s02.key").read_bytes())
    os.chmod(certs / "s01.key", 0o600)
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "does not match the certificate" in "".join(failures(result))


def test_unreadable_state_fails(tmp_path: Path, certs: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state/s01.json").write_text("{torn")
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "s01.json is unreadable" in "".join(failures(result))


def test_agent_refuses_to_start_with_a_certificate_for_another_server(tmp_path: Path, certs: Path) -> None:
    for suffix in ("pem", "key"):
        (certs / f"s02.{suffix}").write_bytes((certs / f"s01.{suffix}").read_bytes())
    config = tmp_path / "cluster.toml"
    config.write_text(SCRIPT.format(d=tmp_path, certs=certs))
    result = subprocess.run(
        [sys.executable, "-m", "synco.node.main", "--config", str(config), "--as", "s02"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not valid for 's02'" in result.stderr  # the TLS handshake a peer would make


def test_ca_bundles_intermediates_and_names_without_subject_alt_name(tmp_path: Path) -> None:
    """What TLS accepts, --check and the agent accept: a CA file with several CAs (a CA
    rotation), a certificate issued by an intermediate that follows it in its file, and a
    certificate naming the server in its common name only."""
    old_root, _ = authority("Old cluster CA")
    root, root_key = authority("Synco cluster CA")
    intermediate, intermediate_key = authority("Intermediate", root, root_key)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(pem(old_root) + pem(root))
    leaf, leaf_key = node("s01", intermediate, intermediate_key, alternative=True)
    (certs / "s01.pem").write_bytes(pem(leaf) + pem(intermediate))
    write_key(certs / "s01.key", leaf_key)
    result = check(tmp_path, certs)
    assert result.returncode == 0, result.stdout
    assert "issued by the cluster CA" in result.stdout
    assert self_test(settings(certs), "s01") == (None, None)  # what the agent checks as it starts

    plain, plain_key = node("s01", root, root_key, alternative=False)
    (certs / "s01.pem").write_bytes(pem(plain))
    write_key(certs / "s01.key", plain_key)
    assert check(tmp_path, certs).returncode == 0
    assert self_test(settings(certs), "s01") == (None, None)

    (certs / "s01.pem").write_bytes(pem(leaf))  # the intermediate missing: no way to the CA
    write_key(certs / "s01.key", leaf_key)
    result = check(tmp_path, certs)
    assert result.returncode == 2 and "not issued by the cluster CA" in "".join(failures(result))
    always, _ = self_test(settings(certs), "s01")
    assert always is not None and "unable to get local issuer certificate" in always


def settings(certs: Path) -> AgentSettings:
    return AgentSettings(
        ca_file=str(certs / "ca.pem"),
        cert_file=str(certs / "{server}.pem"),
        key_file=str(certs / "{server}.key"),
    )


Key = ec.EllipticCurvePrivateKey


def authority(
    name: str, issuer: x509.Certificate | None = None, issuer_key: Key | None = None
) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = _base(subject, issuer.subject if issuer else subject, key).add_extension(
        x509.BasicConstraints(ca=True, path_length=None), critical=True
    )
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def node(
    name: str, issuer: x509.Certificate, issuer_key: Key, alternative: bool
) -> tuple[x509.Certificate, Key]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = _base(subject, issuer.subject, key)
    if alternative:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _base(subject: x509.Name, issuer: x509.Name, key: Key) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_key(path: Path, key: Key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
