"""What a run did: one record per event and per copy, for the log and for --json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class EventRecord:
    level: str
    name: str
    event: str
    error: str | None = None


@dataclass(frozen=True)
class CopyRecord:
    directory: str
    master: str
    target: str
    runs_on: str
    status: str  # ok | warning | failed | skipped
    exit_code: int | None
    message: str
    duration: float
    command: tuple[str, ...]
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class RunReport:
    script: str | None
    master: str
    master_reason: str
    current: str | None
    current_reason: str
    dry_run: bool
    events: list[EventRecord] = field(default_factory=list)
    copies: list[CopyRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    snapshots: dict[str, str] = field(default_factory=dict)  # target -> snapshot published
    staged: list[dict[str, str]] = field(default_factory=list)  # the frozen views copies read

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        done = sum(1 for c in self.copies if c.status in ("ok", "warning"))
        warnings = sum(1 for c in self.copies if c.status == "warning")
        verb = "dry run" if self.dry_run else "run"
        extra = f", {warnings} with warnings" if warnings else ""
        if self.ok:
            return f"{verb} complete: {done} of {len(self.copies)} copies done{extra}"
        return (
            f"{verb} failed: {len(self.failures)} failure(s); {done} of {len(self.copies)} copies done{extra}"
        )

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "script": self.script,
            "master": {"server": self.master, "reason": self.master_reason},
            "current": {"server": self.current, "reason": self.current_reason},
            "dry_run": self.dry_run,
            "copies": [asdict(c) for c in self.copies],
            "events": [asdict(e) for e in self.events],
            "failures": self.failures,
            "snapshots": self.snapshots,
            "staged": self.staged,
            "summary": self.summary(),
        }
