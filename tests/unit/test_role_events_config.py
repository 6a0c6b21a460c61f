"""Role events (pre-promote, promote, demote, role-change) in a script: where they may be
declared, in which syntax, what is refused (by key and line), and the agent's hook_timeout."""

from __future__ import annotations

import pytest

import synco
from synco.config import parse_script
from synco.core.model import (
    ROLE_EVENTS,
    AgentSettings,
    CommandHandler,
    Event,
    Events,
    Method,
    Script,
    Server,
    Side,
)
from synco.core.validation import ROLE_EVENTS_ON, ROLE_EVENTS_PLACE, validate

BASE = """\
master = "s01"

[servers.s01]
root = "/srv/a"

[servers.s02]
root = "/srv/b"

[[directories]]
path = "http"
"""

README_EXAMPLE = """
[events]
pre-promote = ["/usr/local/bin/can-i-be-master"]
promote = [["systemctl", "start", "postgresql"]]
demote = [["systemctl", "stop", "postgresql"]]
role-change = ["logger", "-t", "synco", "role changed"]
"""


def one(command: str) -> tuple[CommandHandler]:
    return (CommandHandler((tuple(command.split()),)),)


def test_the_readme_example_loads_into_the_script_events() -> None:
    script, problems = parse_script(BASE + README_EXAMPLE)
    assert problems == []
    assert script is not None
    events = script.events
    assert events.pre_promote == one("/usr/local/bin/can-i-be-master")
    assert events.promote == one("systemctl start postgresql")
    assert events.demote == one("systemctl stop postgresql")
    assert events.role_change == (CommandHandler((("logger", "-t", "synco", "role changed"),)),)
    assert events.of(Event.ROLE_CHANGE) is events.role_change
    assert not events.prepare and not events.finish
    assert script.server("s02").events == Events()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["a", "1"]', (CommandHandler((("a", "1"),)),)),
        ('[["a", "1"], ["b"]]', (CommandHandler((("a", "1"), ("b",))),)),
        ('{ run = [["a"], ["b", "2"]] }', (CommandHandler((("a",), ("b", "2"))),)),
        ('{ run = ["a", "1"] }', (CommandHandler((("a", "1"),)),)),
        (
            '[{ run = [["a"]] }, { run = ["b"] }]',
            (CommandHandler((("a",),)), CommandHandler((("b",),))),
        ),
    ],
)
@pytest.mark.parametrize("event", ROLE_EVENTS)
@pytest.mark.parametrize("table", ["events", "servers.s02.events"])
def test_each_handler_syntax_is_accepted_for_each_role_event(
    table: str, event: Event, value: str, expected: tuple[CommandHandler, ...]
) -> None:
    script, problems = parse_script(BASE + f"\n[{table}]\n{event.value} = {value}\n")
    assert problems == []
    assert script is not None
    owner = script.events if table == "events" else script.server("s02").events
    assert owner.of(event) == expected
    assert [e for e in Event if owner.of(e)] == [event]
    other = script.server("s02").events if table == "events" else script.events
    assert not other


@pytest.mark.parametrize("event", ROLE_EVENTS)
@pytest.mark.parametrize(
    ("table", "key", "line"),
    [
        ("method.events", "method.events", 14),
        ("directories.events", "directories[0].events", 14),
    ],
)
def test_role_events_belong_to_the_script_or_a_server(event: Event, table: str, key: str, line: int) -> None:
    script, problems = parse_script(BASE + f'\n[{table}]\nprepare = ["true"]\n{event.value} = ["x"]\n')
    assert script is None
    assert [(p.key, p.line, p.message) for p in problems] == [
        (f"{key}.{event.value}", line, ROLE_EVENTS_PLACE)
    ]
    assert ROLE_EVENTS_PLACE == (
        "role events (pre-promote, promote, demote, role-change) belong to [events] or [servers.NAME.events]"
    )


@pytest.mark.parametrize(
    ("table", "value", "key", "line"),
    [
        ("events", '{ run = [["a"]], on = "local" }', "events.promote.on", 13),
        ("events", '[{ run = ["a"] }, { run = ["b"], on = "master" }]', "events.promote[1].on", 13),
        ("servers.s02.events", '{ run = [["a"]], on = "server" }', "servers.s02.events.promote.on", 13),
        ("servers.s02.events", '{ run = [["a"]], on = "nowhere" }', "servers.s02.events.promote.on", 13),
    ],
)
def test_a_role_handler_has_no_on(table: str, value: str, key: str, line: int) -> None:
    script, problems = parse_script(BASE + f"\n[{table}]\npromote = {value}\n")
    assert script is None
    assert [(p.key, p.line, p.message) for p in problems] == [(key, line, ROLE_EVENTS_ON)]
    assert "agent's own machine" in ROLE_EVENTS_ON


def test_a_run_handler_keeps_its_on_beside_role_handlers() -> None:
    script, problems = parse_script(
        BASE + '\n[servers.s02.events]\nprepare = { run = [["a"]], on = "local" }\ndemote = ["b"]\n'
    )
    assert problems == []
    assert script is not None
    assert script.server("s02").events.prepare == (CommandHandler((("a",),), Side.LOCAL),)
    assert script.server("s02").events.demote == (CommandHandler((("b",),)),)


def test_a_misspelt_role_event_is_named_with_a_suggestion() -> None:
    _, problems = parse_script(BASE + '\n[events]\npre_promote = ["a"]\n')
    assert [(p.key, p.line) for p in problems] == [("events.pre_promote", 13)]
    assert "did you mean 'pre-promote'?" in problems[0].message


def test_role_handler_problems_are_still_checked() -> None:
    _, problems = parse_script(
        BASE + '\n[events]\npromote = [["-x"]]\n[servers.s02.events]\ndemote = "stop"\n'
    )
    assert {p.key: p.line for p in problems} == {
        "events.promote[0].run[0]": 13,
        "servers.s02.events.demote": 15,
    }


# The Python API: Events.build, Server(events=...), Script(events=...), and validate.


def on_change(change: object) -> None:
    pass


def test_events_build_takes_the_hyphenated_names_and_their_underscore_forms() -> None:
    stop = synco.command("systemctl", "stop", "postgresql")
    events = Events.build(
        {"pre-promote": on_change, "role_change": [on_change, stop], Event.DEMOTE: stop, "promote": [stop]}
    )
    assert events.pre_promote == (on_change,)
    assert events.of(Event.PRE_PROMOTE) == (on_change,)
    assert events.of(Event.ROLE_CHANGE) == (on_change, stop)
    assert events.of(Event.DEMOTE) == (stop,)
    assert events.of(Event.PROMOTE) == (stop,)
    assert events.of(Event.PREPARE) == ()
    with pytest.raises(ValueError, match="'pre-demote' is not a valid Event"):
        Events.build({"pre-demote": on_change})


@pytest.mark.parametrize("event", ROLE_EVENTS)
def test_one_role_handler_makes_the_events_true(event: Event) -> None:
    assert not Events()
    assert Events.build({event.value: on_change})
    assert Events(**{event.field_name: (on_change,)}).of(event) == (on_change,)


def test_event_values_and_field_names() -> None:
    assert [(e.value, e.field_name) for e in ROLE_EVENTS] == [
        ("pre-promote", "pre_promote"),
        ("promote", "promote"),
        ("demote", "demote"),
        ("role-change", "role_change"),
    ]
    assert Event.PREPARE.field_name == "prepare"


def python_script(**changes: object) -> Script:
    servers = [
        Server("s01", "/srv/a", events=changes.pop("s01", {})),  # type: ignore[arg-type]
        Server("s02", "/srv/b"),
    ]
    return Script(servers=servers, directories=[synco.Directory("http")], master="s01", **changes)  # type: ignore[arg-type]


def test_python_servers_and_scripts_take_role_callables() -> None:
    script = python_script(s01={"promote": on_change}, events={"pre-promote": [on_change]})
    assert validate(script) == []
    assert script.server("s01").events.promote == (on_change,)
    assert script.events.pre_promote == (on_change,)


def test_python_role_events_are_refused_on_a_method_or_a_directory() -> None:
    script = Script(  # the Python API's lists and dicts, as a script would pass them
        servers=[Server("s01", "/srv/a"), Server("s02", "/srv/b")],  # type: ignore[arg-type]
        directories=[synco.Directory("http", events={"role-change": on_change})],  # type: ignore[arg-type]
        master="s01",
        method=Method(events={"demote": synco.command("x")}),  # type: ignore[arg-type]
    )
    assert [(p.key, p.message) for p in validate(script)] == [
        ("directories[0].events.role-change", ROLE_EVENTS_PLACE),
        ("method.events.demote", ROLE_EVENTS_PLACE),
    ]


def test_a_python_role_command_has_no_side() -> None:
    script = python_script(
        s01={"demote": [synco.command("a"), synco.command("b", on="local")]},
        events={"promote": synco.command("c", on="master")},
    )
    assert [(p.key, p.message) for p in validate(script)] == [
        ("servers.s01.events.demote[1].on", ROLE_EVENTS_ON),
        ("events.promote[0].on", ROLE_EVENTS_ON),
    ]


# [agent] hook_timeout

AGENT = """\
master = "s01"

[agent]
insecure = true
{setting}

[servers.s01]
root = "/srv/a"
agent = "127.0.0.1:7501"

[servers.s02]
root = "/srv/b"
agent = "127.0.0.1:7502"

[[directories]]
path = "http"
"""


def test_hook_timeout_defaults_to_ten_seconds() -> None:
    assert AgentSettings().hook_timeout == 10.0
    script, problems = parse_script(AGENT.format(setting=""))
    assert problems == []
    assert script is not None and script.agent is not None
    assert script.agent.hook_timeout == 10.0


@pytest.mark.parametrize(("value", "seconds"), [("2.5", 2.5), ("30", 30.0)])
def test_hook_timeout_is_read(value: str, seconds: float) -> None:
    script, problems = parse_script(AGENT.format(setting=f"hook_timeout = {value}"))
    assert problems == []
    assert script is not None and script.agent is not None
    assert script.agent.hook_timeout == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be more than 0 seconds"),
        ("-1.5", "must be more than 0 seconds"),
        ('"10s"', "must be a number, not a string"),
    ],
)
def test_hook_timeout_must_be_positive_seconds(value: str, message: str) -> None:
    script, problems = parse_script(AGENT.format(setting=f"hook_timeout = {value}"))
    assert script is None
    assert [(p.key, p.line, p.message) for p in problems] == [("agent.hook_timeout", 5, message)]
