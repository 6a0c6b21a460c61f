"""Shared pieces of the benchmarks: generated trees, timing, and the JSON result line."""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench-results"


def generate_tree(root: Path, files: int, total_bytes: int, seed: int = 1) -> int:
    """A tree of `files` incompressible files adding up to about `total_bytes`, spread over
    nested directories; sizes follow a long-tailed distribution like real data. Returns bytes."""
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = total_bytes / sum(weights)
    block = rng.randbytes(1 << 20)
    written = 0
    for index, weight in enumerate(weights):
        size = max(1, int(weight * scale))
        path = root / f"d{index % 50:02d}" / f"e{index % 7}" / f"file-{index:06d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            remaining = size
            offset = index % 4096
            while remaining > 0:
                chunk = block[offset : offset + min(remaining, len(block) - offset)]
                out.write(chunk)
                remaining -= len(chunk)
                offset = 0
        written += size
    return written


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    return time.perf_counter() - started


def alternate(rounds: int, candidates: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each candidate once per round, alternating the order, so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):
            samples[name].append(candidates[name]())
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(samples), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
    }


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: `fraction` 0.99 gives p99."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def emit(figure: str, result: dict[str, object]) -> None:
    record = {
        "figure": figure,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        **result,
    }
    line = json.dumps(record)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{figure}.json").write_text(line + "\n")
    print(line)


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def need_packages(*packages: str) -> None:
    """The Debian packages a comparison needs (keepalived, lsyncd): installed here if missing
    (as root); a benchmark that cannot have its reference tool stops, it does not skip it."""
    missing = [
        p
        for p in packages
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False
        ).stdout.find("install ok installed")
        < 0
    ]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SystemExit(f"the comparison needs {', '.join(missing)}: install them (apt-get install)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
    # (policy-rc.d: the packages' own services must not start on this machine)
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env, check=True
        )
    finally:
        if created:
            policy.unlink()
