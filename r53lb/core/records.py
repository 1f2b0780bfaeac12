"""Record sets and weight changes as plain values, shared by the planner and route53.py (no I/O)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

RecordKey = tuple[str, str, str]  # (name, type, set_identifier)


def normalize_name(name: str) -> str:
    r"""Route 53 returns 'mx.example.com.' and escapes '*' as '\052'; compare without either."""
    return name.replace("\\052", "*").rstrip(".").lower()


def normalize_value(rtype: str, value: str) -> str:
    """A record value compared by what it means: `2001:0DB8::1` is `2001:db8::1`, a CNAME target has no trailing dot."""
    if rtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return value.strip()
    if rtype == "CNAME":
        return normalize_name(value)
    return value


@dataclass(frozen=True)
class RecordSet:
    """One weighted record set exactly as Route 53 holds it."""

    name: str  # normalized: lowercase, no trailing dot
    type: str
    set_identifier: str
    weight: int
    ttl: int | None
    values: tuple[str, ...]
    # The ResourceRecordSet mapping as read, so that a compare-and-swap DELETE matches exactly.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def key(self) -> RecordKey:
        return (self.name, self.type, self.set_identifier)


@dataclass(frozen=True)
class RecordChange:
    """Set one record set's weight: DELETE `current` exactly, CREATE it again with `weight`.

    `current` is None for a record set that does not exist yet (`--create-missing`): then
    only a CREATE with `ttl` and `values` goes out.
    """

    zone_id: str
    name: str
    type: str
    set_identifier: str
    weight: int
    current: RecordSet | None
    ttl: int = 60
    values: tuple[str, ...] = ()
