"""Synco's pure core: the model, validation, retention planning, transfer planning and the
replication, backup-schedule and health decisions.

Nothing here does I/O: no files, processes, sockets, clocks or event loops. Functions take
the time and the observations as arguments and return decisions with their reasons, so
they are tested with tables and property tests. The layering contract (import-linter, in
pyproject.toml) keeps adapters, the daemon, the CLI and I/O modules out of this package.
"""
