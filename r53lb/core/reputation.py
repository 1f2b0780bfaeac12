"""Reputation as values: a blocklist verdict per check, one quarantine rule. Pure: no I/O.

An unknown answer (a lookup error, a list's own error code, a timeout) never changes a
weight: it keeps the last known verdict. That rule lives here, in `fold`, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any, Iterable, Mapping


class Listing(str, Enum):
    CLEAN = "clean"
    LISTED = "listed"
    UNKNOWN = "unknown"  # never known yet: treated as clean, changes nothing


@dataclass(frozen=True)
class Verdict:
    """The last known answer of one dnsbl check of one node."""

    status: Listing
    listed_on: tuple[str, ...] = ()
    detail: str = ""
    at: datetime | None = None  # when the check last ran (its own interval counts from here)
    last_unknown: str = ""  # the latest unknown answer, kept for status and logs

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "listed_on": list(self.listed_on), "detail": self.detail,
                "last_unknown": self.last_unknown}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], at: datetime | None = None) -> "Verdict":
        try:
            status = Listing(data.get("status", "unknown"))
        except ValueError:
            status = Listing.UNKNOWN
        listed = tuple(data.get("listed_on") or ())
        if listed and status is not Listing.LISTED:
            status = Listing.LISTED  # stored by an older release: the listing is what counts
        return cls(status, listed, str(data.get("detail", "")), at, str(data.get("last_unknown", "")))


def fold(previous: Verdict | None, status: str, listed_on: Iterable[str], detail: str, at: datetime) -> Verdict:
    """The verdict after one check result: unknown keeps the previous verdict (weights untouched)."""
    if status == "unknown":
        keep = previous or Verdict(Listing.UNKNOWN)
        return replace(keep, at=at, last_unknown=detail)
    listed = tuple(dict.fromkeys(listed_on))
    return Verdict(Listing.LISTED if listed else Listing.CLEAN, listed, detail, at)


@dataclass(frozen=True)
class Reputation:
    """What the planner needs of a node's verdicts: where it is listed and why."""

    listed_on: tuple[str, ...] = ()
    detail: str = ""

    def quarantined(self, listed_on_n: int) -> bool:
        """The pool's `quarantine` rule: listed on at least `listed_on_n` distinct lists."""
        return len({z.strip().rstrip(".").lower() for z in self.listed_on}) >= max(1, listed_on_n)


CLEAN = Reputation()


def combine(verdicts: Iterable[Verdict]) -> Reputation:
    """One node's verdicts (several dnsbl checks) as one Reputation."""
    listed: list[str] = []
    details: list[str] = []
    for v in verdicts:
        if v.status is Listing.LISTED and v.listed_on:
            listed.extend(v.listed_on)
            if v.detail:
                details.append(v.detail)
    if not listed:
        return CLEAN
    return Reputation(tuple(dict.fromkeys(listed)), "; ".join(details))


def reputations(cached: Mapping[tuple[str, str, str], tuple[datetime | None, Mapping[str, Any]]]
                ) -> dict[tuple[str, str], Reputation]:
    """Every node's reputation from the cached check results (slots `dnsbl:N`), read once."""
    per_node: dict[tuple[str, str], list[Verdict]] = {}
    for (p, n, slot), (at, v) in cached.items():
        if slot.startswith("dnsbl:"):
            per_node.setdefault((p, n), []).append(Verdict.from_json(v, at))
    return {k: combine(vs) for k, vs in per_node.items()}
