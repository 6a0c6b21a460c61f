"""Writing results for people (stderr/stdout text) and for scripts (JSON on stdout)."""

from __future__ import annotations

import json
import sys


def emit_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def error(message: str) -> None:
    print(f"synco: error: {message}", file=sys.stderr, flush=True)
