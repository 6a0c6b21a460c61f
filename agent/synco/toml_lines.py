"""Find the line a key path of a TOML document is written on, for error messages.

A light scanner, not a parser: it follows `[table]` and `[[array]]` headers and
`key = value` lines, which is what backup scripts use. Keys it cannot place (inside
multi-line values or inline tables) fall back to the nearest enclosing key.
"""

from __future__ import annotations

import re

HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_\-\"'.\s]+?)\s*=")


def _split_key(text: str) -> list[str]:
    parts: list[str] = []
    for match in re.finditer(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', text):
        parts.append(next(g for g in match.groups() if g is not None))
    return parts


def key_lines(text: str) -> dict[str, int]:
    """Map each key path (`servers.s01.port`, `directories[1].path`) to its 1-based line."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    depth = 0  # brackets still open from a multi-line value
    for number, line in enumerate(text.splitlines(), start=1):
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        header = HEADER.match(line)
        if header:
            parts = _split_key(header.group(2))
            prefix = ".".join(parts)
            if header.group(1) == "[[":
                counts[prefix] = counts.get(prefix, 0) + 1
            table = _with_indices(prefix, counts)
            lines.setdefault(table, number)
            for i in range(1, len(parts)):
                lines.setdefault(_with_indices(".".join(parts[:i]), counts), number)
            continue
        assignment = ASSIGNMENT.match(line)
        if assignment:
            key = ".".join(_split_key(assignment.group(1)))
            full = f"{table}.{key}" if table else key
            lines.setdefault(full, number)
            depth = _bracket_balance(line.split("=", 1)[1])
    return lines


def _with_indices(dotted: str, counts: dict[str, int]) -> str:
    """`directories.events` -> `directories[2].events` when [[directories]] was seen 3 times."""
    parts = dotted.split(".")
    out: list[str] = []
    for i, part in enumerate(parts):
        out.append(part)
        prefix = ".".join(parts[: i + 1])
        if prefix in counts:
            out[-1] = f"{part}[{counts[prefix] - 1}]"
    return ".".join(out)


def _bracket_balance(text: str) -> int:
    text = re.sub(
        r'"(\\.|[^"\\])*"|\'[^\']*\'',
        "",
        text.split("#", 1)[0] if "#" in text and '"' not in text else text,
    )
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def line_of(key: str, lines: dict[str, int]) -> int | None:
    """The line of `key`, or of its nearest enclosing key that has one."""
    candidate = key
    while candidate:
        if candidate in lines:
            return lines[candidate]
        cut = max(candidate.rfind("."), candidate.rfind("["))
        if cut <= 0:
            break
        candidate = candidate[:cut]
    return lines.get(candidate)
