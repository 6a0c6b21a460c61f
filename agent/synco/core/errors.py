"""Error classes that carry the exit code the command line reports for them."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class SyncoError(Exception):
    """Base of every error Synco reports to its user; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILED


class OperationError(SyncoError):
    """An operation was attempted and failed (rsync, ssh, a handler, a lock held)."""

    exit_code = EXIT_FAILED


class ConfigError(SyncoError):
    """The backup script or the command line is wrong; nothing was changed."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        return "\n".join([super().__str__(), *(f"  {p}" for p in self.problems)])


class ResolutionError(ConfigError):
    """The master or the current server cannot be determined unambiguously."""


class LockedError(OperationError):
    """Another run of the same script holds its lock."""


class Terminated(BaseException):
    """SIGTERM: unwinds like an interruption, so that child processes are stopped first."""
