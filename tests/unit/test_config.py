"""The TOML loader: good scripts load, and each broken one names its problem by key and line."""

from __future__ import annotations

import textwrap

import pytest

from synco.config import parse_script
from synco.core.errors import ConfigError
from synco.core.model import CommandHandler, Direction, Directory, Method, Script, Server, Side
from synco.core.resolution import LocalIdentity, names_this_machine
from synco.core.rsync import Features
from synco.core.transfer import plan_transfer
from synco.core.validation import validate

GOOD = """\
master = "s01"

[method]
name = "rsync"
direction = "pull"
arguments = ["--archive", "--delete"]

[servers.s01]
host = "s01.example.com"
root = "/srv"

[servers.s02]
host = "s02.example.com"
root = "/srv"
user = "backup"
port = 2222
priority = 0
[servers.s02.events]
prepare = [["mkdir", "-p", "/srv"]]
success = { run = [["echo", "ok"]], on = "local" }

[[directories]]
path = "http"
arguments = ["--exclude", "cache/"]
[directories.events]
finish = ["logger", "copied http"]

[[directories]]
path = "./etc/"
"""


def test_good_script_loads() -> None:
    script, problems = parse_script(GOOD)
    assert problems == []
    assert script is not None
    assert script.master == "s01"
    assert script.method.direction == Direction.PULL
    assert script.method.arguments == ("--archive", "--delete")
    s02 = script.server("s02")
    assert (s02.user, s02.port, s02.priority) == ("backup", 2222, 0)
    assert s02.events.prepare == (CommandHandler((("mkdir", "-p", "/srv"),)),)
    assert s02.events.success == (CommandHandler((("echo", "ok"),), Side.LOCAL),)
    assert script.directories[0].arguments == ("--exclude", "cache/")
    assert script.directories[0].events.finish == (CommandHandler((("logger", "copied http"),)),)


def test_defaults() -> None:
    script, problems = parse_script(
        'master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n[[directories]]\npath = "."\n'
    )
    assert problems == []
    assert script is not None
    assert script.method.direction == Direction.PUSH
    assert script.method.arguments == ("--archive",)
    assert script.server("a").host is None


BROKEN = [
    # (replacement applied to GOOD, expected key, expected words in message, expected line)
    (('master = "s01"', "master = 42"), "master", "must be a string", 1),
    (('master = "s01"', 'master = "s03"'), "master", "not a server", 1),
    (('master = "s01"\n', ""), "master", "is required", None),
    (('direction = "pull"', 'direction = "sideways"'), "method.direction", "not one of", 5),
    (('name = "rsync"', 'name = "ftp"'), "method.name", "unknown method", 4),
    (("port = 2222", "port = 70000"), "servers.s02.port", "between 1 and 65535", 16),
    (("port = 2222", 'port = "22"'), "servers.s02.port", "must be an integer", 16),
    (
        ('root = "/srv"\n\n[servers.s02]', 'root = "srv"\n\n[servers.s02]'),
        "servers.s01.root",
        "absolute",
        10,
    ),
    (('path = "http"', 'path = "../etc"'), "directories[0].path", "escapes", 23),
    (('path = "./etc/"', 'path = "/etc"'), "directories[1].path", "absolute", 29),
    (('path = "./etc/"', 'path = "http/"'), "directories[1].path", "already copied", 29),
    (("priority = 0", "priority = -1"), "servers.s02.priority", "0 (never promoted) or more", 17),
    (('user = "backup"', 'usr = "backup"'), "servers.s02.usr", "did you mean 'user'", 15),
    (
        ('host = "s02.example.com"', 'host = "-oProxyCommand=sh"'),
        "servers.s02.host",
        "not a host name",
        13,
    ),
    (
        (
            'success = { run = [["echo", "ok"]], on = "local" }',
            'success = { run = [["echo", "ok"]], on = "elsewhere" }',
        ),
        "servers.s02.events.success.on",
        "not one of",
        20,
    ),
    (
        ('finish = ["logger", "copied http"]', 'finish = "logger"'),
        "directories[0].events.finish",
        "must be a command",
        26,
    ),
    (
        ('prepare = [["mkdir"', 'prepair = [["mkdir"'),
        "servers.s02.events.prepair",
        "did you mean 'prepare'",
        19,
    ),
    (
        ('arguments = ["--exclude", "cache/"]', 'arguments = "--exclude cache/"'),
        "directories[0].arguments",
        "array of strings",
        24,
    ),
    (  # what the copy refuses: rsync would follow symlinks on the target, out of its root
        ('arguments = ["--exclude", "cache/"]', 'arguments = ["--exclude", "cache/", "-avK"]'),
        "directories[0].arguments[2]",
        "(--keep-dirlinks) follows symlinks on the target",
        24,
    ),
    (
        ('arguments = ["--archive", "--delete"]', 'arguments = ["--archive", "--keep-dirlinks"]'),
        "method.arguments[1]",
        "would write outside its root",
        6,
    ),
]


@pytest.mark.parametrize(("change", "key", "words", "line"), BROKEN)
def test_broken_script_names_the_problem(
    change: tuple[str, str], key: str, words: str, line: int | None
) -> None:
    old, new = change
    assert old in GOOD
    script, problems = parse_script(GOOD.replace(old, new, 1))
    assert script is None
    matching = [p for p in problems if p.key == key]
    assert matching, f"no problem for {key}: {problems}"
    assert words in matching[0].message
    assert matching[0].line == line


def test_side_not_possible_for_the_owner() -> None:
    _, problems = parse_script(
        GOOD.replace('finish = ["logger", "copied http"]', 'finish = { run = [["true"]], on = "server" }')
    )
    assert [(p.key, p.line) for p in problems] == [("directories[0].events.finish[0].on", 26)]
    assert "not possible here" in problems[0].message


def test_every_problem_is_listed() -> None:
    text = GOOD.replace("port = 2222", "port = 0").replace('root = "/srv"\nuser', 'root = "x"\nuser')
    _, problems = parse_script(text)
    assert {p.key for p in problems} == {"servers.s02.port", "servers.s02.root"}


def test_syntax_error_gives_line() -> None:
    script, problems = parse_script("master = \n")
    assert script is None
    assert "line 1" in problems[0].message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('master = "a"\n[servers.a]\nroot = "/a"\n[[directories]]\npath = "."\n', "servers"),
        ('master = "a"\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n', "directories"),
        ('master = "a"\nservers = 3\n[[directories]]\npath = "."\n', "servers"),
        (
            'master = "a"\n[servers.a]\nhost = "x.example"\n[servers.b]\nroot = "/b"\n'
            '[[directories]]\npath = "."\n',
            "servers.a.root",
        ),
        (
            'master = "a"\n[servers.a]\nroot = "/a"\nport = 22\n[servers.b]\nroot = "/b"\n'
            '[[directories]]\npath = "."\n',
            "servers.a.host",
        ),
        (
            'master = "a"\nfoo = 1\n[servers.a]\nroot = "/a"\n[servers.b]\nroot = "/b"\n'
            '[[directories]]\npath = "."\n',
            "foo",
        ),
    ],
)
def test_structural_problems(text: str, key: str) -> None:
    script, problems = parse_script(textwrap.dedent(text))
    assert script is None
    assert key in {p.key for p in problems}, problems


BACKUP = GOOD.replace("priority = 0\n", 'priority = 0\nrole = "backup"\n')


def test_backup_table_loads() -> None:
    script, problems = parse_script(
        BACKUP
        + '[backup]\ninterval = "90m"\nbackend = "btrfs"\nverify = true\ndaily = 7\nweekly = 4\n'
        + 'keep_within = "2d"\nkeep = "new"\ntimezone = "Europe/Paris"\n'
    )
    assert problems == []
    assert script is not None
    backup = script.backup
    assert (backup.interval, backup.backend, backup.verify, backup.prune) == (5400.0, "btrfs", True, True)
    assert backup.policy.counts == {"daily": 7, "weekly": 4}
    assert backup.policy.keep_within is not None and backup.policy.keep_within.days == 2
    assert (backup.policy.keep, str(backup.policy.timezone)) == ("new", "Europe/Paris")


def test_backup_defaults_to_hourly_snapshots_and_the_default_policy() -> None:
    script, problems = parse_script(BACKUP)
    assert problems == [] and script is not None
    assert script.backup.interval == 3600.0
    assert not script.backup.policy.has_rules  # the default policy, as with `synco prune`


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('interval = "soon"', "backup.interval", "not a duration"),
        ("interval = 0", "backup.interval", "1 second or more"),
        ("interval = 0.5", "backup.interval", "1 second or more"),
        ("interval = 1e300", "backup.interval", "too long"),
        ("hourly = 0", "backup", "keeps only the newest snapshot"),
        ("hourly = 0\nkeep_last = 0", "backup", "keeps only the newest snapshot"),
        ("interval = true", "backup.interval", "seconds or a duration"),
        ('backend = "zfs"', "backup.backend", "not one of"),
        ("daily = -1", "backup.daily", "0 or more"),
        ('daily = "7"', "backup.daily", "must be an integer"),
        ("keep_last = -2", "backup.keep_last", "0 or more"),
        ('keep_within = "0s"', "backup.keep_within", "longer than 0"),
        ('keep = "newest"', "backup.keep", "not one of"),
        ('timezone = "Mars/Olympus"', "backup.timezone", "unknown time zone"),
        ("hourli = 3", "backup.hourli", "did you mean 'hourly'"),
    ],
)
def test_backup_problems(table: str, key: str, words: str) -> None:
    script, problems = parse_script(BACKUP + f"[backup]\n{table}\n")
    assert script is None
    matching = [p for p in problems if p.key == key]
    assert matching, problems
    assert words in matching[0].message


def test_backup_table_without_a_backup_server_is_a_mistake() -> None:
    _, problems = parse_script(GOOD + "[backup]\ndaily = 7\n")
    assert [p.key for p in problems] == ["backup"]
    assert 'role = "backup"' in problems[0].message


def test_a_backup_server_cannot_be_the_master() -> None:
    _, problems = parse_script(BACKUP.replace('master = "s01"', 'master = "s02"'))
    assert [p.key for p in problems] == ["servers.s02.role"]


def test_a_backup_server_snapshots_beside_a_master_on_the_same_host() -> None:
    """A backup server writes into latest.snapshot/: it may share the master's root on one host,
    where a replica would overwrite the master's own files."""
    text = textwrap.dedent(
        """\
        master = "s01"
        [servers.s01]
        root = "/srv"
        [servers.b01]
        root = "/srv"
        role = "backup"
        [[directories]]
        path = "http"
        """
    )
    _, problems = parse_script(text)
    assert problems == []
    _, problems = parse_script(text.replace('role = "backup"\n', ""))
    assert [p.key for p in problems] == ["servers.b01.root"]


def test_a_policy_keeping_only_the_newest_is_fine_without_pruning() -> None:
    _, problems = parse_script(BACKUP + "[backup]\nhourly = 0\nprune = false\n")
    assert problems == []


def test_two_backup_servers_cannot_share_a_snapshot_tree() -> None:
    text = textwrap.dedent(
        """\
        master = "s01"
        [servers.s01]
        root = "/srv"
        [servers.b01]
        root = "/backup"
        role = "backup"
        [servers.b02]
        root = "/backup"
        role = "backup"
        [[directories]]
        path = "http"
        """
    )
    _, problems = parse_script(text)
    assert [p.key for p in problems] == ["servers.b02.root"]


def _same_root(host: str) -> str:
    return (
        f'master = "s01"\n[servers.s01]\nroot = "/srv"\n[servers.s02]\nhost = "{host}"\nroot = "/srv"\n'
        '[[directories]]\npath = "http"\n'
    )


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "127.0.0.1", "127.0.1.1", "[::1]"])
def test_a_loopback_host_shares_the_file_system_of_the_servers_without_a_host(host: str) -> None:
    _, problems = parse_script(_same_root(host))
    assert [p.key for p in problems] == ["servers.s02.root"]
    assert "on the same host would overlap: /srv/http and /srv/http" in problems[0].message


BOX = LocalIdentity(frozenset({"localhost", "box", "box.example.com"}), frozenset({"192.0.2.7"}))


@pytest.mark.parametrize(
    ("host", "here"),
    [("box", True), ("BOX.example.com.", True), ("192.0.2.7", True), ("other.example.com", False)],
)
def test_this_machine_is_known_by_its_names_and_addresses_without_a_lookup(host: str, here: bool) -> None:
    _, problems = parse_script(_same_root(host), local=BOX)
    assert [p.key for p in problems] == (["servers.s02.root"] if here else [])


@pytest.mark.parametrize("host", ["box", "localhost", "192.0.2.7", "other.example.com"])
@pytest.mark.parametrize("direction", [Direction.PUSH, Direction.PULL])
@pytest.mark.parametrize("name", ["rsync", "snapshot"])
def test_check_reports_an_overlap_exactly_when_the_copy_refuses_it(
    host: str, direction: Direction, name: str
) -> None:
    """One rule (overlap.colocated, then overlapping) serves `check` and the copy's plan."""
    script = Script(
        servers=(Server("s01", root="/srv"), Server("s02", root="/srv/http", host=host)),
        directories=(Directory("."),),
        master="s01",
        method=Method(name=name, direction=direction),
    )
    master, target = script.servers

    def here(server: Server) -> bool:
        return server.host is None or names_this_machine(server.host, BOX)

    try:
        plan_transfer(script, master, target, script.directories[0], is_local=here, features=Features((3, 4)))
    except ConfigError as error:
        refused = "would overlap" in str(error)
    else:
        refused = False
    assert refused == (host != "other.example.com")
    assert [p.key for p in validate(script, BOX)] == (["servers.s02.root"] if refused else [])
