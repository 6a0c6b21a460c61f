"""Figure: synco pull of a tree vs plain rsync of the same tree. Target ratio <= 1.05.

Both copy the same generated tree between two roots on this machine with the same rsync
arguments; synco's time includes its start-up, script loading and decisions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchlib import alternate, clean, emit, generate_tree, summary, timed

from synco.rsync_probe import local_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/synco-bench/sync_overhead"))
    options = parser.parse_args()

    work = options.workdir
    source, target = work / "master", work / "replica"
    marker = work / f"tree-{options.files}-{options.megabytes}"
    if not marker.exists():
        clean(work)
        source.mkdir(parents=True)
        generate_tree(source / "data", options.files, options.megabytes << 20)
        marker.touch()
    size = sum(p.stat().st_size for p in (source / "data").rglob("*") if p.is_file())

    arguments = ["--archive", "--delete"]
    script = work / "pull.toml"
    script.write_text(
        f'master = "master"\n[method]\ndirection = "pull"\narguments = {arguments!r}\n'.replace("'", '"')
        + f'[servers.master]\nroot = "{source}"\n[servers.replica]\nroot = "{target}"\n'
        + '[[directories]]\npath = "data"\n'
    )
    rsync = ["rsync", *arguments, *local_features().safety_arguments(), "--stats",
             f"{source}/data/", f"{target}/data/"]  # fmt: skip
    synco = [sys.executable, "-m", "synco.cli.main", "run", "--as", "replica", str(script)]

    def fresh(command: list[str]) -> float:
        clean(target)
        return timed(command)

    initial = alternate(options.rounds, {"rsync": lambda: fresh(rsync), "synco": lambda: fresh(synco)})
    unchanged = alternate(options.rounds * 2, {"rsync": lambda: timed(rsync), "synco": lambda: timed(synco)})

    def figure(samples: dict[str, list[float]]) -> dict[str, object]:
        rs, sy = summary(samples["rsync"]), summary(samples["synco"])
        return {"rsync": rs, "synco": sy, "ratio": round(sy["median_s"] / rs["median_s"], 3)}

    emit(
        "sync_overhead",
        {
            "files": options.files,
            "bytes": size,
            "initial_copy": figure(initial),
            "no_change": figure(unchanged),
            "target_ratio": 1.05,
            "reference": "rsync " + ".".join(map(str, local_features().version)),
        },
    )


if __name__ == "__main__":
    main()
