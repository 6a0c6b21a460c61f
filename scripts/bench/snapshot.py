"""Figure: synco snapshot vs rsnapshot on the same tree; first run and no-change run.

rsnapshot is measured with its default configuration (rotation by `cp -al`) and with
`link_dest 1` (rsync --link-dest, what synco does); synco with hard links on the same
file system, and with its btrfs backend on a btrfs loop device (when run as root).
Staging: the same tree on a btrfs subvolume, backed up with hard links once as it is and
once read from a read-only snapshot of it (`[servers.source.staging] provider = "btrfs"`):
the cost of a point-in-time copy, as the ratio staged / unstaged.
Targets: ratio <= 1.0 with hard links; far below with btrfs; staging close to 1.0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from benchlib import alternate, clean, emit, generate_tree, summary, timed


def rsnapshot_config(work: Path, name: str, source: Path, link_dest: bool) -> Path:
    root = work / name
    lines = [
        ("config_version", "1.2"),
        ("snapshot_root", f"{root}/"),
        ("cmd_rsync", shutil.which("rsync") or "/usr/bin/rsync"),
        ("cmd_cp", "/bin/cp"),
        ("cmd_rm", "/bin/rm"),
        ("retain", "alpha\t1000"),
        ("lockfile", f"{work}/{name}.pid"),
        ("link_dest", "1" if link_dest else "0"),
        ("backup", f"{source}/\tlocalhost/"),
    ]
    path = work / f"{name}.conf"
    path.write_text("".join(f"{k}\t{v}\n" for k, v in lines))
    return path


def synco_script(
    work: Path, name: str, source: Path, target: Path, backend: str, staged: bool = False
) -> Path:
    path = work / f"{name}.toml"
    staging = '[servers.source.staging]\nprovider = "btrfs"\n' if staged else ""
    path.write_text(
        'master = "source"\n[method]\nname = "snapshot"\ndirection = "pull"\n'
        f'snapshot_backend = "{backend}"\narguments = ["--archive"]\n'
        f'[servers.source]\nroot = "{source}"\n{staging}[servers.backup]\nroot = "{target}"\n'
        '[[directories]]\npath = "."\n'
    )
    return path


@contextlib.contextmanager
def btrfs_mount(work: Path, size_mb: int) -> Iterator[Path | None]:
    if os.geteuid() != 0 or not shutil.which("mkfs.btrfs"):
        yield None
        return
    image, mountpoint = work / "btrfs.img", work / "btrfs"
    mountpoint.mkdir(exist_ok=True)
    with image.open("wb") as stream:
        stream.truncate(size_mb << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        image.unlink(missing_ok=True)


def first_and_unchanged(reset: Callable[[], None], command: list[str]) -> tuple[float, float]:
    reset()
    first = timed(command)
    return first, timed(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/synco-bench/snapshot"))
    options = parser.parse_args()
    if not shutil.which("rsnapshot"):
        sys.exit("rsnapshot is not installed (run this as root on Debian to install it)")

    work = options.workdir
    source = work / "source"
    marker = work / f"tree-{options.files}-{options.megabytes}"
    if not marker.exists():
        clean(work)
        source.mkdir(parents=True)
        generate_tree(source, options.files, options.megabytes << 20)
        marker.touch()

    synco = [sys.executable, "-m", "synco.cli.main", "run"]

    def rsnapshot(name: str, link_dest: bool) -> tuple[Callable[[], None], list[str]]:
        config = rsnapshot_config(work, name, source, link_dest)
        return (lambda: clean(work / name)), ["rsnapshot", "-c", str(config), "alpha"]

    def synco_run(name: str, target: Path, backend: str) -> list[str]:
        return [*synco, str(synco_script(work, name, source, target, backend))]

    candidates: dict[str, tuple[Callable[[], None], list[str]]] = {
        "rsnapshot": rsnapshot("rsnapshot", False),
        "rsnapshot_link_dest": rsnapshot("rsnapshot_link_dest", True),
        "synco": ((lambda: clean(work / "synco")), synco_run("synco", work / "synco", "hardlink")),
    }
    with btrfs_mount(work, max(1024, options.megabytes * 6)) as mountpoint:
        if mountpoint is not None:
            target = mountpoint / "backups"

            def reset_btrfs() -> None:
                for entry in target.glob("*") if target.exists() else []:
                    if entry.is_symlink() or not entry.is_dir():  # `latest`, the writer lock
                        entry.unlink()
                    else:
                        subprocess.run(
                            ["btrfs", "subvolume", "delete", str(entry)], check=True, capture_output=True
                        )

            candidates["synco_btrfs"] = (
                reset_btrfs,
                [*synco, str(synco_script(work, "btrfs", source, target, "btrfs"))],
            )
            # the same tree on a subvolume: copied as it is, and from a read-only snapshot of it
            live = mountpoint / "source"
            subprocess.run(["btrfs", "subvolume", "create", str(live)], check=True, capture_output=True)
            subprocess.run(["cp", "-a", f"{source}/.", str(live)], check=True)
            for name, staged in (("synco_unstaged", False), ("synco_staged", True)):
                script = synco_script(work, name, live, work / name, "hardlink", staged=staged)
                candidates[name] = ((lambda n=name: clean(work / n)), [*synco, str(script)])

        pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
        runs = {name: (lambda n=name: pairs[n].append(first_and_unchanged(*candidates[n])) or 0.0)
                for name in candidates}  # fmt: skip
        alternate(options.rounds, runs)

    first = {name: summary([p[0] for p in values]) for name, values in pairs.items()}
    unchanged = {name: summary([p[1] for p in values]) for name, values in pairs.items()}

    def ratios(figures: dict[str, dict[str, float]]) -> dict[str, float]:
        out = {}
        for candidate in ("synco", "synco_btrfs"):
            if candidate in figures:
                for reference in ("rsnapshot", "rsnapshot_link_dest"):
                    out[f"{candidate}/{reference}"] = round(
                        figures[candidate]["median_s"] / figures[reference]["median_s"], 3
                    )
        if "synco_staged" in figures:
            out["synco_staged/synco_unstaged"] = round(
                figures["synco_staged"]["median_s"] / figures["synco_unstaged"]["median_s"], 3
            )
        return out

    emit(
        "snapshot",
        {
            "files": options.files,
            "bytes": sum(p.stat().st_size for p in source.rglob("*") if p.is_file()),
            "first_run": {"seconds": first, "ratios": ratios(first)},
            "no_change_run": {"seconds": unchanged, "ratios": ratios(unchanged)},
            "target": "synco/rsnapshot <= 1.0 with hard links; far below with btrfs; staged/unstaged ~1",
        },
    )


if __name__ == "__main__":
    main()
