#!/usr/bin/env python3
"""The server-backup example as a Python program: `./backup.py [--dry-run]`, or `synco run backup.py`.

Handlers can be commands (run on a side of your choice) or Python callables that get a
scope with `run()`.
"""

import synco
from synco.events import Scope


def dump_packages(scope: Scope) -> None:
    scope.run("mkdir", "-p", "var/backups/synco", on="master")
    scope.run("sh", "-c", "dpkg --get-selections > var/backups/synco/packages.list", on="master")


script = synco.Script(
    master="server",
    method=synco.Method(direction="pull", arguments=["--archive", "--delete", "--numeric-ids"]),
    servers=[
        synco.Server("server", host="server.example.com", root="/", events={"prepare": dump_packages}),
        synco.Server("backup", host="backup.example.com", root="/tank/backups/server.example.com", priority=0),
    ],
    directories=[
        synco.Directory("etc"),
        synco.Directory("var/backups"),
        synco.Directory("home", arguments=["--exclude", ".cache/"]),
    ],
)

if __name__ == "__main__":
    raise SystemExit(synco.main(script))
