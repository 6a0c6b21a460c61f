"""The master record and its epoch, and the compare-and-set change between two states (pure).

The record is a CNAME to the master's host, or A/AAAA records with its addresses. Beside
it, a TXT record `_synco-epoch.<name>` holds the epoch of the last change. A change is one
RFC 2136 UPDATE whose prerequisites are exactly what the writer last saw (record and
epoch) and which replaces both: a writer that saw an older state changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

EPOCH_LABEL = "_synco-epoch"


def absolute(name: str) -> str:
    """A DNS name in canonical absolute form: lower case, one trailing dot."""
    return name.strip().rstrip(".").lower() + "."


def epoch_name(name: str) -> str:
    return f"{EPOCH_LABEL}.{absolute(name)}"


@dataclass(frozen=True)
class RecordState:
    """What one authoritative server says the master record is."""

    kind: str  # "cname" | "address" | "absent"
    values: tuple[str, ...]  # CNAME target (absolute), or sorted addresses
    epoch: int | None
    ttl: int | None = None
    server: str = ""

    @staticmethod
    def cname(target: str, epoch: int | None, ttl: int | None = None, server: str = "") -> RecordState:
        return RecordState("cname", (absolute(target),), epoch, ttl, server)

    @staticmethod
    def addresses(
        values: list[str] | tuple[str, ...], epoch: int | None, ttl: int | None = None, server: str = ""
    ) -> RecordState:
        return RecordState("address", tuple(sorted(values)), epoch, ttl, server)

    def same_record(self, other: RecordState) -> bool:
        return (self.kind, self.values, self.epoch) == (other.kind, other.values, other.epoch)

    def describe(self) -> str:
        epoch = f"epoch {self.epoch}" if self.epoch is not None else "no epoch"
        if self.kind == "absent":
            return f"no record ({epoch})"
        what = "CNAME " if self.kind == "cname" else ""
        return f"{what}{', '.join(self.values)} ({epoch})"


@dataclass(frozen=True)
class Change:
    """One compare-and-set UPDATE: require `expected` (record and epoch), then write `desired`."""

    name: str
    expected: RecordState
    desired: RecordState
    ttl: int

    def describe(self) -> str:
        return f"{absolute(self.name)}: {self.expected.describe()} -> {self.desired.describe()}"


def plan_change(name: str, expected: RecordState, kind: str, values: list[str], ttl: int) -> Change:
    """The change that points `name` at `values` (a host for a CNAME, or addresses),
    with the next epoch, provided the record still is `expected`."""
    epoch = (expected.epoch or 0) + 1
    desired = RecordState.cname(values[0], epoch) if kind == "cname" else RecordState.addresses(values, epoch)
    return Change(name, expected, desired, ttl)
