"""Where rsync runs and its exact arguments, for push and pull, local and remote."""

from __future__ import annotations

import shlex

import pytest

from synco.core.errors import ConfigError
from synco.core.model import Direction, Directory, Method, Script, Server
from synco.core.resolution import CurrentDecision, is_local
from synco.core.rsync import Features
from synco.core.transfer import plan_transfer

NEW = Features((3, 2, 7))
OLD = Features((3, 1, 3))

HERE = Server("here", "/srv/here")
REMOTE = Server(
    "remote",
    "/srv/remote",
    host="r.example",
    user="bk",
    port=2222,
    identity_file="/k",
    ssh_options=("-o", "Compression=no"),
)
TWIN = Server("twin", "/srv/twin", host="r.example", user="bk", port=2222)


def plan(
    direction: Direction,
    master: Server,
    target: Server,
    current: str | None = "here",
    directory: Directory | None = None,
    **options: bool,
) -> tuple[str, bool, list[str]]:
    script = Script(
        servers=(HERE, REMOTE, TWIN),
        directories=(directory or Directory("http"),),
        master=master.name,
        method=Method(direction=direction, arguments=("--archive", "--delete")),
    )
    decision = CurrentDecision(current, "test")
    transfer = plan_transfer(
        script,
        master,
        target,
        script.directories[0],
        is_local=lambda s: is_local(s, decision, script),
        features=NEW,
        **options,
    )
    return transfer.runs_on.name, transfer.local, list(transfer.argv)


SSH = shlex.join(["ssh", "-o", "BatchMode=yes", "-p", "2222", "-i", "/k", "-l", "bk", "-o", "Compression=no"])


def test_push_from_here_to_remote() -> None:
    runs_on, local, argv = plan(Direction.PUSH, HERE, REMOTE)
    assert (runs_on, local) == ("here", True)
    assert argv == [
        "rsync",
        "--archive",
        "--delete",
        "--protect-args",
        "--mkpath",
        "--stats",
        "-e",
        SSH,
        "--",
        "/srv/here/http/",
        "bk@r.example:/srv/remote/http/",
    ]


def test_pull_from_remote_to_here() -> None:
    runs_on, local, argv = plan(Direction.PULL, REMOTE, HERE)
    assert (runs_on, local) == ("here", True)
    assert argv[-3:] == ["--", "bk@r.example:/srv/remote/http/", "/srv/here/http/"]


def test_colocated_servers_copy_with_local_paths_on_their_host() -> None:
    runs_on, local, argv = plan(Direction.PUSH, REMOTE, TWIN)
    assert (runs_on, local) == ("remote", False)
    assert "-e" not in argv
    assert argv[-2:] == ["/srv/remote/http/", "/srv/twin/http/"]


def test_hostless_server_cannot_be_reached_from_elsewhere() -> None:
    with pytest.raises(ConfigError, match="here has no host"):
        plan(Direction.PUSH, REMOTE, HERE)


def test_directory_arguments_follow_method_arguments_and_dry_run() -> None:
    directory = Directory("a b/ü", arguments=("--exclude", "cache/"))
    _, _, argv = plan(Direction.PUSH, HERE, REMOTE, directory=directory, dry_run=True)
    assert argv[1:7] == ["--archive", "--delete", "--exclude", "cache/", "--protect-args", "--mkpath"]
    assert "--dry-run" in argv and "--itemize-changes" in argv
    assert argv[-1] == "bk@r.example:/srv/remote/a b/ü/"
    _, _, argv = plan(Direction.PUSH, HERE, REMOTE, directory=directory, nanoseconds=True)
    assert argv[1:3] == ["--modify-window=-1", "--archive"]  # first: a script's own --modify-window wins


def test_whole_root() -> None:
    _, _, argv = plan(Direction.PUSH, HERE, REMOTE, directory=Directory("."))
    assert argv[-2:] == ["/srv/here/", "bk@r.example:/srv/remote/"]


def test_progress_replaces_stats() -> None:
    _, _, argv = plan(Direction.PUSH, HERE, REMOTE, progress=True)
    assert "--info=progress2" in argv and "--stats" not in argv


def test_arguments_are_always_protected() -> None:
    assert OLD.safety_arguments() == ["--protect-args"]
    assert OLD.comparison_arguments(nanoseconds=True) == ["--modify-window=-1"]
    assert OLD.comparison_arguments(nanoseconds=False) == []
    assert Features((3, 1, 2)).comparison_arguments(nanoseconds=True) == []
    assert NEW.safety_arguments() == ["--protect-args", "--mkpath"]
