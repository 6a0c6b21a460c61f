"""Push and pull between servers on this machine with different roots, with real rsync."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from tests.support.cli import read_tree, synco, write_tree
from tests.support.scripts import root, toml_script

pytestmark = pytest.mark.usefixtures("rsync")

HOSTILE = {
    "http/index.html": "<h1>hello</h1>",
    'http/with space/it\'s "quoted".txt': "quotes",
    "http/ünïcødé/日本語.txt": "unicode",
    "http/-leading-dash": "dash",
    "http/$(touch pwned)": "shell",
    "http/cache/big.tmp": "cache",
}


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_copies_master_to_every_other_server(tmp_path: Path, direction: str) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_tree(a, HOSTILE)
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        direction=direction,
        servers={"s01": root(a), "s02": root(b), "s03": root(c)},
        directories=[{"path": "http", "arguments": ["--exclude", "cache/"]}],
    )
    result = synco("run", str(script))
    assert result.returncode == 0, result.stderr
    expected = {k: v for k, v in HOSTILE.items() if "cache/" not in k}
    assert read_tree(b) == expected
    assert read_tree(c) == expected
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_deletes_only_with_delete(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tree(a, {"d/keep": "1"})
    write_tree(b, {"d/keep": "old", "d/extra": "only on target"})
    servers = {"s01": root(a), "s02": root(b)}
    plain = toml_script(tmp_path / "plain.toml", master="s01", servers=servers, directories=[{"path": "d"}])
    assert synco("run", str(plain)).returncode == 0
    assert read_tree(b) == {"d/keep": "1", "d/extra": "only on target"}
    deleting = toml_script(
        tmp_path / "delete.toml",
        master="s01",
        servers=servers,
        directories=[{"path": "d"}],
        arguments=["--archive", "--delete"],
    )
    assert synco("run", str(deleting)).returncode == 0
    assert read_tree(b) == {"d/keep": "1"}


def test_dry_run_changes_nothing_and_runs_no_handler(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tree(a, {"d/new": "1"})
    write_tree(b, {"d/extra": "2"})
    marker = tmp_path / "handler-ran"
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "d"}],
        arguments=["--archive", "--delete"],
        extra=f'[events]\nprepare = [["touch", "{marker}"]]\n',
    )
    result = synco("run", "--dry-run", str(script))
    assert result.returncode == 0, result.stderr
    assert read_tree(b) == {"d/extra": "2"}
    assert not marker.exists()
    assert "would run locally: touch" in result.stderr
    assert ">f+++++++++ new" in result.stderr  # rsync's itemized list of what would change


def test_whole_root_and_nested_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tree(a, {"x": "1", "deep/er/y": "2"})
    script = toml_script(
        tmp_path / "s.toml",
        master="s02",
        servers={"s01": root(b), "s02": root(a)},
        directories=[{"path": "deep/er"}],
    )
    assert synco("run", str(script)).returncode == 0
    assert read_tree(b) == {"deep/er/y": "2"}
    script.write_text(script.read_text().replace('path = "deep/er"', 'path = "."'))
    assert synco("run", str(script)).returncode == 0
    assert read_tree(b) == {"x": "1", "deep/er/y": "2"}


def test_failing_target_does_not_stop_the_others_and_fails_the_run(tmp_path: Path) -> None:
    a, c = tmp_path / "a", tmp_path / "c"
    write_tree(a, {"d/f": "1", "e/g": "2"})
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory root should be")
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(blocked), "s03": root(c)},
        directories=[{"path": "d"}, {"path": "e"}],
    )
    result = synco("run", "--json", str(script))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert read_tree(c) == {"d/f": "1", "e/g": "2"}
    statuses = {(c["target"], c["directory"]): c["status"] for c in report["copies"]}
    assert statuses == {
        ("s02", "d"): "failed",
        ("s02", "e"): "failed",
        ("s03", "d"): "ok",
        ("s03", "e"): "ok",
    }
    assert len(report["failures"]) == 2
    assert all("s02" in f and "rsync exit" in f for f in report["failures"])


def test_missing_source_is_an_error_23(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "missing"}],
    )
    result = synco("run", "--json", str(script))
    assert result.returncode == 1
    copy = json.loads(result.stdout)["copies"][0]
    assert (copy["status"], copy["exit_code"]) == ("failed", 23)
    assert "partial transfer due to error" in copy["message"]
    assert "missing" in result.stderr and "s02" in result.stderr


def test_vanished_files_are_a_warning_24(tmp_path: Path) -> None:
    """A file listed by rsync but deleted before it is sent: exit 24, which is not a failure."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "d").mkdir(parents=True)
    (a / "d" / "a-big").write_bytes(b"x" * 3_000_000)
    (a / "d" / "z-vanishing").write_text("soon gone")
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "d"}],
        arguments=["--archive", "--bwlimit=1000", "--whole-file"],
    )

    def remove_when_transfer_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (b / "d").is_dir() and any((b / "d").iterdir()):  # rsync's temporary file
                (a / "d" / "z-vanishing").unlink()
                return
            time.sleep(0.01)

    remover = threading.Thread(target=remove_when_transfer_started)
    remover.start()
    result = synco("run", "--json", str(script))
    remover.join()
    assert result.returncode == 0, result.stderr
    copy = json.loads(result.stdout)["copies"][0]
    assert (copy["status"], copy["exit_code"]) == ("warning", 24)
    assert "vanished" in result.stderr
    assert (b / "d" / "a-big").stat().st_size == 3_000_000


def test_progress_on_a_terminal(tmp_path: Path) -> None:
    """--progress streams rsync's overall progress to the terminal (stderr is a pty here)."""
    import os
    import pty
    import subprocess
    import sys

    a, b = tmp_path / "a", tmp_path / "b"
    write_tree(a, {f"d/{i}": "x" * 1000 for i in range(20)})
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "d"}],
    )
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", "--progress", str(script)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    os.close(leader)
    text = output.decode()
    assert "copy d: s01 -> s02" in text
    assert "100%" in text and "to-chk=0/" in text
    assert read_tree(b) == {f"d/{i}": "x" * 1000 for i in range(20)}


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_synco_stops_rsync(tmp_path: Path, how: str) -> None:
    """Whether synco is terminated or killed, the rsync it started does not run on behind it."""
    import signal
    import subprocess
    import sys

    import psutil

    a, b = tmp_path / "a", tmp_path / "b"
    (a / "d").mkdir(parents=True)
    (a / "d" / "big").write_bytes(b"x" * 5_000_000)
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "d"}],
        arguments=["--archive", "--bwlimit=200"],
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "synco.cli.main", "run", str(script)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    children: list[psutil.Process] = []
    while not children:
        assert time.monotonic() < deadline, "rsync did not start"
        children = [c for c in psutil.Process(process.pid).children(recursive=True) if c.name() == "rsync"]
        time.sleep(0.02)
    process.send_signal(getattr(signal, how))
    _, stderr = process.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"rsync still running after synco got {how}"
    if how == "SIGTERM":
        assert process.returncode == 143
        assert "terminated" in stderr
    assert synco("run", "--dry-run", str(script)).returncode == 0


def test_a_same_size_rewrite_within_the_second_is_copied(tmp_path: Path) -> None:
    """rsync's default quick check compares whole seconds: a file rewritten with the same size
    in the second it was copied would stay stale on the target (a replica pulling right after
    a change). Synco compares nanoseconds."""
    a, b = tmp_path / "a", tmp_path / "b"
    script = toml_script(
        tmp_path / "s.toml",
        master="s01",
        servers={"s01": root(a), "s02": root(b)},
        directories=[{"path": "d"}],
    )
    write_tree(a, {"d/f": "v1"})
    os.utime(a / "d/f", ns=(SECOND_NS + 100_000_000, SECOND_NS + 100_000_000))
    assert synco("run", str(script)).returncode == 0
    (a / "d/f").write_text("v2")  # the same size, later within the same second
    os.utime(a / "d/f", ns=(SECOND_NS + 600_000_000, SECOND_NS + 600_000_000))
    assert synco("run", str(script)).returncode == 0
    assert (b / "d/f").read_text() == "v2"


SECOND_NS = 1_700_000_000 * 10**9


def test_nanosecond_comparison_only_where_the_target_keeps_nanoseconds(tmp_path: Path) -> None:
    """ext4 with 128-byte inodes keeps whole seconds: comparing nanoseconds there would copy
    every file on every run (and defeat --link-dest), so Synco compares seconds there."""
    from synco.rsync_probe import keeps_nanoseconds
    from tests.support.loopfs import loop_filesystem

    assert keeps_nanoseconds(str(tmp_path / "not" / "yet"))
    with loop_filesystem(tmp_path, "ext4", size_mb=64, extra=["-I", "128"]) as disk:
        assert not keeps_nanoseconds(str(disk / "target"))
        assert list(disk.iterdir()) == [disk / "lost+found"]  # the probe leaves nothing behind
        a = tmp_path / "a"
        write_tree(a, {"d/f": "v1", "d/g": "unchanged"})
        script = toml_script(
            tmp_path / "s.toml",
            master="s01",
            servers={"s01": root(a), "s02": root(disk / "target")},
            directories=[{"path": "d"}],
        )
        assert synco("run", str(script)).returncode == 0
        again = synco("run", "--json", str(script))
        stats = json.loads(again.stdout)["copies"][0]["stats"]
        assert stats.get("files") == 0, stats  # nothing copied again
