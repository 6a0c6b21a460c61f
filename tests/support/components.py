"""Finding system components; a missing one skips locally and fails in CI."""

from __future__ import annotations

import os
import shutil

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(program: str) -> str:
    """The path of `program`; skip the test if absent, or fail it under CI=true."""
    path = shutil.which(program) or next(
        (f"{d}/{program}" for d in SBIN if os.access(f"{d}/{program}", os.X_OK)), None
    )
    if path is None:
        message = f"{program} is not installed (scripts/test installs it when run as root)"
        if in_ci():
            pytest.fail(f"missing component in CI: {message}")
        pytest.skip(message)
    return path
