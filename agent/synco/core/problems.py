"""A problem found in a backup script, named by its key path (and line, when known)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.key} (line {self.line})" if self.line else self.key
        return f"{where}: {self.message}" if where else self.message

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "message": self.message, "line": self.line}
