"""Mutual TLS between agents: the cluster CA, this node's certificate, and who a caller is."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from synco.core.errors import ConfigError
from synco.core.model import AgentSettings


@dataclass(frozen=True)
class Credentials:
    ca: bytes
    certificate: bytes
    key: bytes

    def server(self) -> grpc.ServerCredentials:
        """Require a client certificate signed by the cluster CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)], root_certificates=self.ca, require_client_auth=True
        )

    def channel(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.certificate
        )


def load_credentials(settings: AgentSettings, server: str) -> Credentials:
    files = {
        "ca_file": settings.ca_file,
        "cert_file": settings.path(settings.cert_file, server),
        "key_file": settings.path(settings.key_file, server),
    }
    contents = {}
    for key, path in files.items():
        try:
            contents[key] = Path(path).read_bytes()
        except OSError as error:
            raise ConfigError(
                f"agent.{key}: cannot read {path}: {error.strerror} (scripts/certs makes a CA and node "
                "certificates; or set insecure = true for a loopback-only cluster)"
            ) from error
    return Credentials(contents["ca_file"], contents["cert_file"], contents["key_file"])


def caller(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The server name the caller's certificate carries (its common name), if any."""
    names = list(auth_context.get("x509_common_name") or [])
    return names[0].decode(errors="replace") if names else None


EXPIRED_OR_NOT_YET = (9, 10)  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


def self_test(settings: AgentSettings, server: str) -> tuple[str | None, str | None]:
    """A TLS handshake of this node's certificate with itself, in memory, checked as a peer
    checks it (the cluster CA, the server's name): (why peers would always refuse it, why
    they refuse it now). An expired certificate is only the second: the clock may be wrong,
    and a renewed certificate is picked up at the next start."""
    cert_file = settings.path(settings.cert_file, server)
    key_file = settings.path(settings.key_file, server)
    try:
        accepting = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        accepting.load_cert_chain(cert_file, key_file)
        verifying = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        verifying.load_verify_locations(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as error:
        return f"{cert_file} with {key_file} and {settings.ca_file}: {error}", None
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = verifying.wrap_bio(client_in, client_out, server_hostname=server)
    peer = accepting.wrap_bio(server_in, server_out, server_side=True)
    try:
        for _ in range(10):
            done = _step(client)
            server_in.write(client_out.read())
            _step(peer)
            client_in.write(server_out.read())
            if done:
                break
    except ssl.SSLCertVerificationError as error:
        reason = f"{cert_file}: {error.verify_message} (checked against {settings.ca_file} for {server})"
        return (None, reason) if error.verify_code in EXPIRED_OR_NOT_YET else (reason, None)
    except ssl.SSLError as error:
        return f"{cert_file}: TLS handshake with itself failed: {error}", None
    subject: Any = (client.getpeercert() or {}).get("subject", ())
    names = [str(pair[1]) for rdn in subject for pair in rdn if pair[0] == "commonName"]
    if names != [server]:
        named = ", ".join(names) or "nobody"
        return f"{cert_file} names {named} (CN), not {server}: peers would refuse it", None
    return None, None


def _step(connection: ssl.SSLObject) -> bool:
    try:
        connection.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True
