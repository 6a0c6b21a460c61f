"""Load a backup script from a TOML file or a Python file that defines `script`."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from synco.config import load_script
from synco.core.errors import ConfigError
from synco.core.model import Script
from synco.core.problems import Problem
from synco.core.resolution import LOOPBACK, LocalIdentity
from synco.core.validation import validate


def load(path: str | Path) -> Script:
    """The checked Script in `path`; ConfigError names every problem."""
    path = Path(path)
    if path.suffix == ".py":
        return load_python(path)
    return load_script(path)


def load_python(path: Path, local: LocalIdentity = LOOPBACK) -> Script:
    """The checked Script a Python file defines; ConfigError names every problem."""
    return checked(_executed(path), str(path), local)


def python_problems(path: Path, local: LocalIdentity = LOOPBACK) -> list[Problem]:
    """Every problem of a Python backup script, each once (for `synco check`): why it cannot
    be loaded, or what `validate` finds in the script it defines."""
    try:
        script = _executed(path)
    except ConfigError as error:
        return [Problem("", str(error))]
    return validate(_with_source(script, str(path)), local)


def _executed(path: Path) -> Script:
    """The `script` a Python file defines once run; ConfigError (naming the file and the
    line of the script that failed) when it cannot be run or defines none."""
    if not path.is_file():
        raise ConfigError(f"cannot read backup script {str(path)!r}: no such file")
    spec = importlib.util.spec_from_file_location(f"synco_script_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SystemExit as exit_:
        raise ConfigError(
            f"{path}: exited while being loaded; guard main() with `if __name__ == '__main__':`"
        ) from exit_
    except SyntaxError as error:  # where the parser stopped: the script's file (or one it imports)
        where = f"{error.filename or path}: line {error.lineno}" if error.lineno else str(path)
        raise ConfigError(f"{where}: {type(error).__name__}: {error.msg}") from error
    except Exception as error:
        line = _line_in(path, error)
        where = f"{path}: line {line}" if line is not None else str(path)
        raise ConfigError(f"{where}: {type(error).__name__}: {error}") from error
    script = getattr(module, "script", None)
    if not isinstance(script, Script):
        raise ConfigError(f"{path}: defines no `script = synco.Script(...)`")
    return script


def _line_in(path: Path, error: BaseException) -> int | None:
    """The line of the script the error came through last: its own line when it was raised
    there, else the script's call into the code (synco's, a library's) that raised it."""
    script = path.resolve()
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if Path(frame.filename).resolve() == script
    ]
    return lines[-1] if lines else None


def _with_source(script: Script, source: str | None) -> Script:
    if source is not None and script.source is None:
        return replace(script, source=source)
    return script


def checked(script: Script, source: str | None = None, local: LocalIdentity = LOOPBACK) -> Script:
    """`script` with its source recorded, or ConfigError with every problem."""
    script = _with_source(script, source)
    problems = validate(script, local)
    if problems:
        raise ConfigError(
            f"{script.source or sys.argv[0]}: {len(problems)} problem(s) in the backup script",
            tuple(map(str, problems)),
        )
    return script
