"""Pools, nodes, their tuning, warm-up and quarantine, and the vantage canaries."""

from __future__ import annotations

import functools
import math
import re
from datetime import date, datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .checks import Check
from .checks.mta_sts import MtaSts
from .checks.sending import SendingGates
from .checks.tlsrpt import TlsRpt
from .fields import (Address, Duration, DurationOrZero, HeloName, Weight, _HOSTNAME, _Model, _name, _percent,
    is_zone_id, parse_duration, record_type_of, show)


WARMUP_PRESETS: dict[str, dict[str, str]] = {
    # Common IP warm-up curves for mail: roughly doubling volume every few days.
    "7d": {"0d": "10%", "2d": "25%", "4d": "50%", "7d": "100%"},
    "14d": {"0d": "5%", "3d": "20%", "7d": "50%", "14d": "100%"},
    "30d": {"0d": "2%", "5d": "10%", "10d": "25%", "20d": "60%", "30d": "100%"},
    "45d": {"0d": "1%", "7d": "5%", "14d": "15%", "28d": "50%", "45d": "100%"},
}


class Warmup(_Model):
    start: datetime
    schedule: tuple[tuple[float, float], ...] = ()
    preset: str | None = None
    # Gates: while one is closed the schedule stands still. `reputation` (listed on a
    # blocklist) or the `name` of one of the node's agent/prometheus checks (failing).
    hold_when: tuple[str, ...] = ()
    require: SendingGates | None = None  # FCrDNS and SPF: until they hold, the node is held at 0

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", v):
            # The YAML loader hands an impossible date (2026-13-45) over as a string.
            try:
                y, m, d = map(int, v.split("-"))
                return datetime(y, m, d, tzinfo=timezone.utc)
            except ValueError as e:
                raise ValueError(f"{show(v)} is not a date ({e})") from None
        return v

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        # Far-off years overflow once the schedule's offsets are added to them.
        if not 1970 <= v.year <= 2999:
            raise ValueError(f"{show(v.isoformat())}: give a year between 1970 and 2999")
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v: Any) -> Any:
        if isinstance(v, dict):
            points = sorted((parse_duration(k), _percent(s)) for k, s in v.items())
            return tuple(points)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "Warmup":
        if self.preset is not None:
            if self.schedule:
                raise ValueError("give either schedule or preset, not both")
            if self.preset not in WARMUP_PRESETS:
                raise ValueError(
                    f"unknown preset {show(self.preset)} (known: {', '.join(WARMUP_PRESETS)})"
                )
            points = tuple(
                sorted((parse_duration(k), _percent(s)) for k, s in WARMUP_PRESETS[self.preset].items())
            )
            object.__setattr__(self, "schedule", points)
        if not self.schedule:
            raise ValueError("a warmup needs a schedule or a preset")
        shares = [s for _, s in self.schedule]
        if shares != sorted(shares):
            raise ValueError("warmup shares must not decrease over time")
        if shares[-1] < 1.0:
            raise ValueError("a warmup schedule must end at 100%")
        return self


# --- nodes and pools ----------------------------------------------------------------------


class Node(_Model):
    id: Annotated[str, _name("node id")] = Field(min_length=1, max_length=128)
    address: tuple[Address, ...]
    probe_address: Address | None = None
    weight: Weight = 1
    warmup: Warmup | None = None
    checks: tuple[Check, ...] | None = None

    @field_validator("address", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, str):
            return (v,)
        if isinstance(v, list) and not v:
            raise ValueError("a node needs at least one address")
        return v

    @model_validator(mode="after")
    def _families(self) -> "Node":
        kinds = [record_type_of(a) for a in self.address]
        if len(set(kinds)) != len(kinds):
            raise ValueError(
                "address: a node has at most one address per family (one IPv4, one IPv6) "
                "or a single hostname"
            )
        if "CNAME" in kinds and len(kinds) > 1:
            raise ValueError("address: a hostname (CNAME) cannot be mixed with IP addresses")
        return self

    @property
    def target(self) -> str:
        """The address probes connect to."""
        return self.probe_address or self.address[0]

    def addresses_by_type(self) -> dict[str, str]:
        return {record_type_of(a): a for a in self.address}


class Quarantine(_Model):
    listed_on_n: int = Field(1, ge=1)


def _quarantine(value: Any) -> Any:
    if value is None or value == "listed_on_any":
        return {"listed_on_n": 1}
    if isinstance(value, str):
        m = re.fullmatch(r"listed_on_n\s*:\s*(\d+)", value.strip())
        if m:
            return {"listed_on_n": int(m.group(1))}
        raise ValueError(f"{show(value)} is not listed_on_any or listed_on_n: N")
    return value


def _probe_workers(value: Any) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    if isinstance(value, str) and value.isdigit() and 1 <= int(value) <= 64:
        return int(value)
    raise ValueError(f"{show(value)} is neither auto nor a number of processes from 1 to 64")


class Tuning(_Model):
    """Probe timing, set in `defaults` and overridable per pool."""

    interval: Duration = 10.0
    fastinter: Duration = 2.0
    timeout: Duration = 10.0
    rise: int = Field(3, ge=1, le=100)
    fall: int = Field(3, ge=1, le=100)
    helo: HeloName | None = None
    concurrency: int = Field(512, ge=1, le=100_000)
    # Processes that probe (`r53lb run`): this one and probe_workers - 1 workers; `auto`: one per
    # 2,500 probes/s asked, at most one per core (probes/workers.py).
    probe_workers: Annotated[int | str, BeforeValidator(_probe_workers)] = "auto"


class Pool(_Model):
    name: Annotated[str, _name("pool name")] = Field(min_length=1, max_length=128)
    zone: str = Field(min_length=1)
    record: str = Field(min_length=1)
    type: Literal["A", "AAAA", "CNAME"] = "A"
    ttl: int = Field(60, ge=0, le=2147483647)
    mode: Literal["weighted", "failover"] = "weighted"
    min_in_service: int = Field(1, ge=0)
    max_drain_per_cycle: int | str = "50%"
    slow_start: DurationOrZero = 0.0  # 0s: off
    preempt: bool = True
    preempt_delay: DurationOrZero = 0.0  # 0s: fail back at once
    quarantine: Annotated[Quarantine, BeforeValidator(_quarantine)] = Quarantine()
    mta_sts: MtaSts | None = None
    tlsrpt: TlsRpt | None = None
    checks: tuple[Check, ...] = ()
    nodes: tuple[Node, ...] = Field(min_length=1)
    # Per-pool overrides of `defaults` (None: inherit).
    interval: Duration | None = None
    fastinter: Duration | None = None
    timeout: Duration | None = None
    rise: int | None = Field(None, ge=1, le=100)
    fall: int | None = Field(None, ge=1, le=100)
    helo: HeloName | None = None

    # Filled in by Config from `defaults`.
    tuning: Tuning = Tuning()

    @field_validator("record")
    @classmethod
    def _record(cls, v: str) -> str:
        v = v.rstrip(".").lower()
        # `*` is a wildcard only as the whole leftmost label; elsewhere Route 53 takes it literally.
        bare = v[2:] if v.startswith("*.") else v
        if not _HOSTNAME.match(bare):
            raise ValueError(f"{show(v)} is not a DNS name (a `*` only as the whole first label: *.example.com)")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if re.fullmatch(r"Z[A-Z0-9]+", v):
            return v
        if not _HOSTNAME.match(v):
            raise ValueError(f"{show(v)} is neither a hosted zone id (Z...) nor a zone name")
        return v.rstrip(".").lower()

    @field_validator("max_drain_per_cycle")
    @classmethod
    def _max_drain(cls, v: int | str) -> int | str:
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"{v} is below 1 (a pool must be able to drain a node)")
            return v
        _percent(v)
        return v

    @model_validator(mode="after")
    def _nodes(self) -> "Pool":
        if not is_zone_id(self.zone) and self.record != self.zone and not self.record.endswith("." + self.zone):
            raise ValueError(f"record: {show(self.record)} is not in the zone {show(self.zone)}")
        if self.min_in_service > len(self.nodes):
            raise ValueError(
                f"min_in_service: {self.min_in_service} is above the pool's {len(self.nodes)} node(s): "
                "the pool would be in panic for good"
            )
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.id in seen:
                raise ValueError(f"nodes[{i}].id: {show(node.id)} appears twice in pool {show(self.name)}")
            seen.add(node.id)
            types = set(node.addresses_by_type())
            if self.type == "CNAME" and types != {"CNAME"}:
                raise ValueError(f"nodes[{i}].address: a CNAME pool lists hostnames, not IPs")
            if self.type != "CNAME" and "CNAME" in types:
                raise ValueError(
                    f"nodes[{i}].address: {show(node.address[0])} is a hostname; "
                    f"an {self.type} pool lists IP addresses"
                )
            # The pool's type names the family every node publishes; the other family of a
            # dual-stack node is published beside it.
            if self.type == "A" and "A" not in types:
                raise ValueError(
                    f"nodes[{i}].address: {show(node.address[0])} is IPv6; an A pool needs an IPv4 address "
                    "for every node (dual-stack: [192.0.2.10, '2001:db8::10']), or type: AAAA"
                )
            if self.type == "AAAA" and "AAAA" not in types:
                raise ValueError(
                    f"nodes[{i}].address: {show(node.address[0])} is IPv4; an AAAA pool needs an IPv6 address "
                    "for every node (dual-stack: [192.0.2.10, '2001:db8::10']), or type: A"
                )
            if not node.checks and not self.checks:
                raise ValueError(f"nodes[{i}].checks: node {show(node.id)} has no checks (none on the pool either)")
            if node.warmup is not None and node.warmup.hold_when:
                checks = self.checks_for(node)
                known = (["reputation"] if any(c.kind == "dnsbl" for c in checks) else []) + [
                    c.spec.name for c in checks if c.kind in ("agent", "prometheus") and c.spec.name]
                for j, gate in enumerate(node.warmup.hold_when):
                    if gate not in known:
                        why = ("needs a dnsbl check on the node" if gate == "reputation"
                               else "names no agent or prometheus check of the node (give the check a `name`)")
                        raise ValueError(f"nodes[{i}].warmup.hold_when[{j}]: {show(gate)} {why}"
                                         f" (known: {', '.join(known) or 'none'})")
        return self

    def max_drain(self) -> int:
        """How many nodes may be newly drained in one cycle (never less than 1)."""
        v = self.max_drain_per_cycle
        if isinstance(v, int):
            return v
        return max(1, math.floor(_percent(v) * len(self.nodes)))

    def checks_for(self, node: Node) -> tuple[Check, ...]:
        return node.checks if node.checks else self.checks

    def record_types(self) -> list[str]:
        """Every record type this pool's nodes are published under (A and AAAA for dual-stack)."""
        order = ("A", "AAAA", "CNAME")
        found = {t for n in self.nodes for t in n.addresses_by_type()}
        return [t for t in order if t in found]

    def node(self, node_id: str) -> Node | None:
        return self._nodes_by_id.get(node_id)

    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}


class Canary(_Model):
    """A target outside the fleet that must answer; if it fails, the controller's own network is suspect."""

    address: Address
    checks: tuple[Check, ...] = Field(min_length=1)


class VantageConfig(_Model):
    canaries: tuple[Canary, ...] = ()
