"""Mutual TLS between agents: the cluster CA, this node's certificate, and who a caller is."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from synco.errors import ConfigError
from synco.model import AgentSettings


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
