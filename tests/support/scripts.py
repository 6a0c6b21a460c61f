"""Writing backup scripts for tests."""

from __future__ import annotations

import json
from pathlib import Path


def toml_script(
    path: Path,
    *,
    master: str,
    servers: dict[str, str],
    directories: list[dict[str, object]],
    direction: str = "push",
    arguments: list[str] | None = None,
    extra: str = "",
) -> Path:
    """A TOML backup script; `servers` maps a name to the body of its [servers.NAME] table."""
    lines = [
        f"master = {json.dumps(master)}",
        extra,
        "[method]",
        f"direction = {json.dumps(direction)}",
    ]
    lines.append(f"arguments = {json.dumps(arguments or ['--archive'])}")
    for name, body in servers.items():
        lines += [f"[servers.{name}]", body]
    for directory in directories:
        lines.append("[[directories]]")
        for key, value in directory.items():
            lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def root(path: Path) -> str:
    return f"root = {json.dumps(str(path))}"
