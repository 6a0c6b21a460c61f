"""TSIG keys in BIND's key-file format, refused when others can read them (adapter)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import dns.name
import dns.tsig

from synco.core.errors import ConfigError

KEY = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>[^}]*)\}\s*;',
    re.DOTALL,
)
ALGORITHM = re.compile(r"algorithm\s+\"?(?P<value>[A-Za-z0-9.-]+)\"?\s*;")
SECRET = re.compile(r'secret\s+"(?P<value>[A-Za-z0-9+/=\s]+)"\s*;')


def load_key(path: str | Path) -> dns.tsig.Key:
    """The TSIG key in `path` (`key "name" { algorithm hmac-sha256; secret "..."; };`)."""
    path = Path(path)
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read TSIG key file {path}: {error.strerror}") from error
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"TSIG key file {path} is accessible to group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run chmod 600 {path}"
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"TSIG key file {path} belongs to another user (uid {info.st_uid})")
    text = re.sub(r"(?m)^\s*(#|//).*$", "", text)  # whole-line comments; a secret may contain "//"
    match = KEY.search(text)
    if not match:
        raise ConfigError(f'{path}: no key "NAME" {{ algorithm ...; secret "..."; }}; found')
    algorithm = ALGORITHM.search(match.group("body"))
    secret = SECRET.search(match.group("body"))
    if not secret:
        raise ConfigError(f"{path}: key {match.group('name')} has no secret")
    name = algorithm.group("value").lower() if algorithm else "hmac-sha256"
    try:
        return dns.tsig.Key(
            match.group("name"), "".join(secret.group("value").split()), dns.name.from_text(name)
        )
    except Exception as error:  # dnspython rejects bad base64 or algorithms in several ways
        raise ConfigError(f"{path}: unusable key: {error}") from error
