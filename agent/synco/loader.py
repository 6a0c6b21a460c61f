"""Load a backup script from a TOML file or a Python file that defines `script`."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

from synco.config import load_script
from synco.errors import ConfigError
from synco.model import Script
from synco.validation import validate


def load(path: str | Path) -> Script:
    """The checked Script in `path`; ConfigError names every problem."""
    path = Path(path)
    if path.suffix == ".py":
        return load_python(path)
    return load_script(path)


def load_python(path: Path) -> Script:
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
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        raise ConfigError(f"{path}: line {where.lineno}: {type(error).__name__}: {error}") from error
    script = getattr(module, "script", None)
    if not isinstance(script, Script):
        raise ConfigError(f"{path}: defines no `script = synco.Script(...)`")
    return checked(script, str(path))


def checked(script: Script, source: str | None = None) -> Script:
    """`script` with its source recorded, or ConfigError with every problem."""
    if source is not None and script.source is None:
        from dataclasses import replace

        script = replace(script, source=source)
    problems = validate(script)
    if problems:
        raise ConfigError(
            f"{script.source or sys.argv[0]}: {len(problems)} problem(s) in the backup script",
            tuple(map(str, problems)),
        )
    return script
