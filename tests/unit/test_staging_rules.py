"""The staging rules: names, origins, each provider's commands and undo steps, what a survey
finds, and the problems `synco check` names (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from synco.config import parse_script
from synco.core.errors import ConfigError
from synco.core.model import Directory, Server, Staging, StagingProvider
from synco.core.staging import (
    Found,
    Nested,
    Step,
    found,
    is_this_scripts,
    made_by,
    nested_in,
    origin_of,
    plan,
    problems,
    removal,
    source_in_view,
    stage_id,
    stage_name,
    staging_of,
    survey_argv,
    uncovered,
)

WHEN = datetime(2026, 12, 2, 8, 30, 5, tzinfo=UTC)
BTRFS = Staging(StagingProvider.BTRFS)


def test_names_tell_the_script_and_machine_apart() -> None:
    one, other = stage_id("/etc/synco/a.toml", "db1"), stage_id("/etc/synco/a.toml", "backup1")
    assert one != other and len(one) == 8
    name = stage_name(one, WHEN, 4242, 2)
    assert name == f"synco-stage-{one}-20261202T083005Z-4242-2"
    assert is_this_scripts(name, one) and not is_this_scripts(name, other)
    assert made_by(name) == (WHEN, 4242)
    assert made_by(f"synco-stage-{one}-20261202T083005Z-2") is None  # an earlier version's: no process
    assert made_by(f"synco-stage-{one}-garbage-1-2") is None


def test_the_directorys_staging_comes_before_the_servers() -> None:
    own = Staging(StagingProvider.ZFS, dataset="tank/db")
    master = Server("db", "/srv", staging=BTRFS)
    assert staging_of(master, Directory("db", staging=own)) is own
    assert staging_of(master, Directory("www")) is BTRFS
    assert staging_of(Server("db", "/srv"), Directory("www")) is None


@pytest.mark.parametrize(
    ("staging", "directory", "origin"),
    [
        (BTRFS, Directory("www"), "/srv"),
        (Staging(StagingProvider.BTRFS, origin="/"), Directory("www"), "/"),
        (Staging(StagingProvider.BTRFS, origin="/srv/"), Directory("www"), "/srv"),
    ],
)
def test_a_servers_origin_is_its_root_or_above(staging: Staging, directory: Directory, origin: str) -> None:
    assert origin_of(staging, Server("db", "/srv", staging=staging), directory) == origin


def test_a_directorys_origin_is_the_directory_or_above() -> None:
    own = Staging(StagingProvider.ZFS, dataset="tank/db")
    directory = Directory("var/db", staging=own)
    assert origin_of(own, Server("db", "/srv"), directory) == "/srv/var/db"
    above = Staging(StagingProvider.ZFS, dataset="tank/var", origin="/srv/var")
    assert origin_of(above, Server("db", "/srv"), Directory("var/db", staging=above)) == "/srv/var"


def test_an_origin_that_does_not_hold_the_copy_is_refused() -> None:
    below = Staging(StagingProvider.BTRFS, origin="/srv/www")
    with pytest.raises(ConfigError, match="origin /srv/www does not hold /srv"):
        origin_of(below, Server("db", "/srv", staging=below), Directory("www"))
    beside = Staging(StagingProvider.BTRFS, origin="/srv/db")
    with pytest.raises(ConfigError, match="origin /srv/db does not hold /srv/dbx"):
        origin_of(beside, Server("db", "/srv"), Directory("dbx", staging=beside))


def test_the_source_in_the_view_keeps_the_path_below_the_origin() -> None:
    assert source_in_view("/srv", "/snap/v", "/srv") == "/snap/v/"
    assert source_in_view("/srv", "/snap/v", "/srv/www/site") == "/snap/v/www/site/"
    assert source_in_view("/", "/snap/v", "/srv/www") == "/snap/v/srv/www/"


def test_btrfs_snapshots_read_only_beside_the_origin_and_deletes_it() -> None:
    made = plan(BTRFS, "/mnt/pool/data", "synco-stage-x-1")
    assert made.view == "/mnt/pool/.synco-staging/synco-stage-x-1"
    ready, snapshot, check = made.create
    assert ready.argv[-1] == "/mnt/pool/.synco-staging" and ready.undo is None  # private, checked
    assert snapshot == Step(
        ("btrfs", "subvolume", "snapshot", "-r", "/mnt/pool/data", made.view),
        undo=("btrfs", "subvolume", "delete", made.view),
    )
    assert check.argv[-2:] == (made.view, "/mnt/pool/data")  # the origin's read-only snapshot
    elsewhere = plan(Staging(StagingProvider.BTRFS, snapshots="/mnt/pool/snaps/"), "/mnt/pool/data", "n")
    assert elsewhere.view == "/mnt/pool/snaps/n"


def test_lvm_creates_tags_mounts_and_undoes_in_reverse() -> None:
    staging = Staging(StagingProvider.LVM, volume="vg0/data", size="5G", mount_options="ro,noload")
    made = plan(staging, "/srv", "n")
    assert [s.argv for s in made.create] == [
        ("lvcreate", "--snapshot", "--name", "n", "--size", "5G", "--addtag", "synco_staging", "vg0/data"),
        ("mkdir", "-p", "--", "/run/synco/staging/n"),
        ("mount", "-o", "ro,noload", "/dev/vg0/n", "/run/synco/staging/n"),
    ]
    assert [s.undo for s in made.create] == [
        ("lvremove", "--yes", "vg0/n"),
        ("rmdir", "--", "/run/synco/staging/n"),
        ("umount", "--", "/run/synco/staging/n"),
    ]
    assert made.view == "/run/synco/staging/n"


def test_zfs_marks_its_snapshot_and_reads_dot_zfs() -> None:
    staging = Staging(StagingProvider.ZFS, dataset="tank/data")
    name = stage_name("abcd1234", WHEN, 7, 1)
    made = plan(staging, "/tank/data", name)
    assert made.create == (
        Step(
            ("zfs", "snapshot", "-o", "synco:staging=abcd1234", f"tank/data@{name}"),
            undo=("zfs", "destroy", f"tank/data@{name}"),
        ),
    )
    assert made.view == f"/tank/data/.zfs/snapshot/{name}"


def test_the_command_provider_is_given_the_name_and_origin() -> None:
    staging = Staging(StagingProvider.COMMAND, create=("make-view",), destroy=("drop-view",))
    made = plan(staging, "/srv", "n")
    assert made.create == (Step(("make-view",), undo=("drop-view",)),)
    assert made.view is None  # the path command, or create's last line, says
    assert dict(made.env) == {"SYNCO_STAGING_NAME": "n", "SYNCO_STAGING_ORIGIN": "/srv"}
    assert survey_argv(staging, "/srv", "x") is None  # no list command: nothing to survey


def test_a_survey_finds_this_scripts_views_and_tells_synco_made_ones_from_others() -> None:
    me = "abcd1234"
    mine, other = f"synco-stage-{me}-20261202T083005Z-1", "synco-stage-99999999-20261202T083005Z-1"
    btrfs = (
        f"origin U1\nro=true U1 {mine}\nnone - synco-stage-{me}-plain\nro=true U1 {other}\n"
        f"link - synco-stage-{me}-link\nro=true U2 synco-stage-{me}-elsewhere\n"
    )
    assert found(BTRFS, me, btrfs) == [
        Found(mine, True),
        Found(f"synco-stage-{me}-plain", False, "not a read-only btrfs snapshot"),
        Found(f"synco-stage-{me}-link", False, "a symlink"),
        Found(
            f"synco-stage-{me}-elsewhere",
            False,
            "a read-only btrfs snapshot of another subvolume than the origin",
        ),
    ]
    assert found(BTRFS, me, f"origin \nro=true - {mine}\n") == [
        Found(mine, False, "a read-only btrfs snapshot of another subvolume than the origin")
    ]
    lvm = Staging(StagingProvider.LVM, volume="vg0/data")
    listing = f"  data|\n  {mine}|synco_staging,backup\n  synco-stage-{me}-x|\n"
    assert [(f.name, f.ours) for f in found(lvm, me, listing)] == [
        (mine, True),
        (f"synco-stage-{me}-x", False),
    ]
    zfs = Staging(StagingProvider.ZFS, dataset="tank/data")
    listing = f"tank/data@{mine}\t{me}\ntank/data@{mine}-2\t-\ntank/data@daily\t-\n"
    assert [(f.name, f.ours) for f in found(zfs, me, listing)] == [(mine, True), (f"{mine}-2", False)]


def test_a_leftover_lvm_view_is_unmounted_if_it_still_is_then_removed() -> None:
    lvm = Staging(StagingProvider.LVM, volume="vg0/data", snapshots="/mnt/stage")
    steps = removal(lvm, "/srv", "n")
    assert [(s.argv, s.tolerated) for s in steps] == [
        (("umount", "--", "/dev/vg0/n"), True),
        (("rmdir", "--", "/mnt/stage/n"), True),
        (("lvremove", "--yes", "vg0/n"), False),
    ]


PROBE = """origin /mnt/pool/data
self data
sub data/db
sub data/www/uploads
sub data/sp ace
mount /
mount /mnt/pool/data/www/cache
mount /mnt/pool/data/mail\\040box
mount /mnt/pool/database
mount /mnt/pool/.synco-staging/synco-stage-x
"""


def test_file_systems_nested_below_the_origin_are_found() -> None:
    assert nested_in(PROBE) == [
        Nested("db", "btrfs subvolume"),
        Nested("mail box", "mount"),
        Nested("sp ace", "btrfs subvolume"),
        Nested("www/cache", "mount"),
        Nested("www/uploads", "btrfs subvolume"),
    ]
    top = "origin /mnt/pool\nself /\nsub data\nsub data/db\n"
    assert nested_in(top) == [Nested("data", "btrfs subvolume"), Nested("data/db", "btrfs subvolume")]
    elsewhere = "origin /mnt/pool/data\nself data\nsub /abs/data/db\n"  # a form it cannot read
    (unplaced,) = nested_in(elsewhere)
    assert uncovered([unplaced], BTRFS, "/mnt/pool/data", "/mnt/pool/data/www", []) == [unplaced]


@pytest.mark.parametrize(
    ("live", "arguments", "left"),
    [
        ("/mnt/pool/data", [], ["db", "mail box", "sp ace", "www/cache", "www/uploads"]),
        ("/mnt/pool/data/www", [], ["cache", "uploads"]),
        ("/mnt/pool/data/www", ["--exclude=/cache/"], ["uploads"]),
        ("/mnt/pool/data/www", ["--exclude", "cache", "--exclude=/up*/***"], []),
        ("/mnt/pool/data", ["--exclude=/www"], ["db", "mail box", "sp ace"]),
        ("/mnt/pool/data", ["--exclude=/cache"], ["db", "mail box", "sp ace", "www/cache", "www/uploads"]),
        (
            "/mnt/pool/data",
            ["--exclude=www/cache", "--exclude=**/uploads"],
            ["db", "mail box", "sp ace", "www/uploads"],
        ),
        ("/mnt/pool/data", ["-x"], ["mail box", "www/cache"]),  # a mount is on the view's device
        ("/mnt/pool/data", ["-ax", "--exclude=/mail*", "--exclude=cache/"], []),
        ("/mnt/pool/data/www", ["--include=/cache/", "--exclude=*"], ["cache", "uploads"]),
        ("/mnt/pool/data/www", ["--exclude=/cache/", "--delete-excluded"], ["cache", "uploads"]),
        ("/mnt/pool/data/mail box", [], ["."]),  # the copied path is a mount: empty in the view
        ("/mnt/pool/data/db/x", ["--exclude=/x"], ["."]),  # below a subvolume
    ],
)
def test_a_nested_file_system_must_be_left_out_of_the_copy(
    live: str, arguments: list[str], left: list[str]
) -> None:
    nested = nested_in(PROBE)
    assert [n.path for n in uncovered(nested, BTRFS, "/mnt/pool/data", live, arguments)] == left


def test_synco_s_own_views_are_not_nested_file_systems() -> None:
    nested = [
        Nested(".synco-staging/synco-stage-v", "btrfs subvolume"),
        Nested(".zfs/snapshot/synco-stage-v", "mount"),
    ]
    assert uncovered(
        nested, Staging(StagingProvider.BTRFS, snapshots="/srv/.synco-staging"), "/srv", "/srv", []
    ) == [Nested(".zfs/snapshot/synco-stage-v", "mount")]
    zfs = Staging(StagingProvider.ZFS, dataset="tank/srv")
    assert uncovered(nested, zfs, "/srv", "/srv", []) == [
        Nested(".synco-staging/synco-stage-v", "btrfs subvolume")
    ]
    # a views directory that is the origin itself leaves out only Synco's own names
    everything = Staging(StagingProvider.BTRFS, snapshots="/srv")
    assert uncovered([Nested("db", "btrfs subvolume")], everything, "/srv", "/srv", []) == [
        Nested("db", "btrfs subvolume")
    ]


@pytest.mark.parametrize(
    ("staging", "expected"),
    [
        (Staging(StagingProvider.LVM), [("volume", 'is required for lvm, as "VG/LV" (e.g. "vg0/data")')]),
        (
            Staging(StagingProvider.LVM, volume="vg0/data", size="lots"),
            [("size", "'lots' is not an LVM size")],
        ),
        (Staging(StagingProvider.ZFS, dataset="tank@x"), [("dataset", "is required for zfs")]),
        (
            Staging(StagingProvider.COMMAND, create=("x",)),
            [("destroy", "is required for the command provider")],
        ),
        (Staging(StagingProvider.BTRFS, create=("x",)), [("create", "is only for the command provider")]),
        (Staging(StagingProvider.BTRFS, origin="srv"), [("origin", "must be an absolute path")]),
        (Staging(StagingProvider.LVM, volume="vg0/data", size="20%ORIGIN"), []),
    ],
)
def test_problems_of_a_staging_table(staging: Staging, expected: list[tuple[str, str]]) -> None:
    got = problems(staging)
    assert [key for key, _ in got] == [key for key, _ in expected]
    for (_, message), (_, start) in zip(got, expected, strict=True):
        assert message.startswith(start)


SCRIPT = """master = "db"
[servers.db]
root = "/srv"
[servers.db.staging]
provider = "lvm"
volume = "vg0"
colour = "blue"
[servers.backup]
root = "/backups"
role = "backup"
[servers.backup.staging]
provider = "btrfs"
[[directories]]
path = "www"
[[directories]]
path = "db"
staging = { provider = "snapshotter" }
[[directories]]
path = "mail"
staging = { provider = "btrfs", origin = "/srv/www" }
"""


def test_synco_check_names_every_staging_problem_by_key_and_line() -> None:
    script, found_problems = parse_script(SCRIPT)
    assert script is None
    named = {(p.key, p.line) for p in found_problems}
    assert ("servers.db.staging.colour", 7) in named
    assert ("servers.db.staging.volume", 6) in named
    assert ("servers.backup.staging", 11) in named
    assert ("directories[1].staging.provider", 17) in named
    assert any(
        p.key == "directories[2].staging.origin" and "does not hold /srv/mail" in p.message
        for p in found_problems
    )


def test_a_good_staging_table_parses() -> None:
    text = SCRIPT.replace('volume = "vg0"\ncolour = "blue"', 'volume = "vg0/data"\nsize = "10%ORIGIN"')
    text = text.replace('[servers.backup.staging]\nprovider = "btrfs"\n', "")
    text = text.replace(
        'staging = { provider = "snapshotter" }', 'staging = { provider = "zfs", dataset = "tank/db" }'
    )
    text = text.replace('origin = "/srv/www"', 'origin = "/srv"')
    script, found_problems = parse_script(text)
    assert found_problems == [] and script is not None
    assert script.server("db").staging == Staging(StagingProvider.LVM, volume="vg0/data", size="10%ORIGIN")
    assert script.directories[1].staging == Staging(StagingProvider.ZFS, dataset="tank/db")


def test_views_inside_what_is_copied_are_refused_but_a_whole_system_may_hold_them() -> None:
    text = SCRIPT.replace('volume = "vg0"\ncolour = "blue"', 'volume = "vg0/data"\nsnapshots = "/srv/.views"')
    _, found_problems = parse_script(text)
    (problem,) = [p for p in found_problems if p.key == "servers.db.staging.snapshots"]
    assert problem.message == "/srv/.views is inside /srv, which is copied: the views would be copied too"
    whole = text.replace('root = "/srv"', 'root = "/"', 1).replace('snapshots = "/srv/.views"', "")
    _, found_problems = parse_script(whole)
    assert not [p for p in found_problems if p.key == "servers.db.staging.snapshots"]


def test_the_python_api_takes_a_staging() -> None:
    import synco
    from synco.loader import checked

    script = synco.Script(
        servers=[
            synco.Server("db", "/srv", staging=synco.Staging("command", create=["mk"], destroy=["rm"])),
            synco.Server("b", "/b"),
        ],
        directories=[synco.Directory(".")],
        master="db",
    )
    assert checked(script).server("db").staging == Staging(
        StagingProvider.COMMAND, create=("mk",), destroy=("rm",)
    )
