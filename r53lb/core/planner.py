"""From health and current records to a Plan: modes, safety rules, diff. Pure: no I/O, `now` passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

from ..config import Node, Pool
from .dane import DANE_MISMATCH, tlsa_name
from .health import NodeHealth
from .records import RecordChange, RecordSet, normalize_value
from .reputation import CLEAN, Reputation
from .signals import NO_SIGNALS, NodeSignals
from .weights import WarmupClock, effective_weight, slow_start_share, warmup_share


@dataclass(frozen=True)
class NodeFacts:
    """What is known of one node when a cycle plans."""

    node: Node
    health: NodeHealth
    records: dict[str, RecordSet | None]  # record type -> the set in Route 53 (None: missing)
    drained: str | None = None  # the manual drain's reason
    reputation: Reputation = CLEAN  # blocklists that list the node's sending IP
    quarantine_n: int = 1  # how many lists must agree before the node is quarantined
    signals: NodeSignals = NO_SIGNALS  # what its agent and metric rules say (last known)
    warmup_clock: WarmupClock | None = None  # a gated warm-up's pauses

    @property
    def quarantined(self) -> bool:
        return self.reputation.quarantined(self.quarantine_n)

    @property
    def listed_on(self) -> tuple[str, ...]:
        return self.reputation.listed_on

    @property
    def current_weight(self) -> int:
        """What the node carries now: the highest weight among its record sets."""
        return max((r.weight for r in self.records.values() if r is not None), default=0)


@dataclass(frozen=True)
class Change:
    pool: str
    node: str
    zone: str
    record: str
    type: str
    set_identifier: str
    from_weight: int | None  # None: the record set is created
    to_weight: int
    reason: str
    record_change: RecordChange = field(compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool, "node": self.node, "zone": self.zone, "record": self.record,
            "type": self.type, "set_identifier": self.set_identifier,
            "from_weight": self.from_weight, "to_weight": self.to_weight, "reason": self.reason,
        }


@dataclass(frozen=True)
class Decision:
    """The weight a node should carry and why."""

    weight: int
    reason: str


@dataclass
class PoolPlan:
    pool: str
    decisions: dict[str, Decision] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # drift, missing record sets: nothing written for those nodes
    alerts: list[str] = field(default_factory=list)
    panic: bool = False
    fail_open: bool = False
    active: str | None = None  # failover mode: the node carrying traffic
    blocked: dict[str, str] = field(default_factory=dict)  # node -> why it cannot be written (drift, missing)
    newly_drained: list[str] = field(default_factory=list)  # taken to 0 for health: they spend the drain budget
    deferred: int = 0  # nodes whose drain waits for the next cycle (max_drain_per_cycle)


@dataclass
class Plan:
    pools: list[PoolPlan] = field(default_factory=list)
    hold: str | None = None
    applied: bool = False

    @property
    def changes(self) -> list[Change]:
        return [] if self.hold else [c for p in self.pools for c in p.changes]

    @property
    def errors(self) -> list[str]:
        return [e for p in self.pools for e in p.errors]

    @property
    def alerts(self) -> list[str]:
        return ([f"hold: {self.hold}"] if self.hold else []) + [a for p in self.pools for a in p.alerts]

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [c.to_json() for c in self.changes],
            "hold": self.hold,
            "applied": self.applied,
            "errors": self.errors,
            "alerts": self.alerts,
            "pools": {
                p.pool: {"panic": p.panic, "fail_open": p.fail_open, "active": p.active,
                         "weights": {n: {"weight": d.weight, "reason": d.reason} for n, d in p.decisions.items()}}
                for p in self.pools
            },
        }


# --- per-node intent ----------------------------------------------------------------------


def _share_reason(share_ss: float, share_wu: float, f: NodeFacts, now: datetime) -> str:
    """The share in force, named by where it comes from: the lowest wins."""
    low = f.signals.lowest()
    if low is not None and low.share < min(share_ss, share_wu):
        return low.reason
    if share_wu < 1.0 and share_wu <= share_ss:
        clock = f.warmup_clock
        paused = f" (paused: {clock.reason})" if clock is not None and clock.paused_since is not None else ""
        return f"warm-up {share_wu:.0%}{paused}"
    if share_ss < 1.0:
        return f"slow start {share_ss:.0%}"
    return "healthy"


def _serving_weight(pool: Pool, f: NodeFacts, now: datetime) -> Decision:
    """A healthy node's weight: base x the lowest of slow start, warm-up and its signals' shares."""
    drain = f.signals.drain
    if drain is not None:
        return Decision(0, drain)  # the node asks for it: not a failure, no drain budget spent
    ss = slow_start_share(f.health.recovered_at, pool.slow_start, now)
    paused = f.warmup_clock.paused(now) if f.warmup_clock is not None else 0.0
    wu = warmup_share(f.node.warmup, now, paused)
    share = min(ss, wu, f.signals.share)
    if f.node.warmup is not None and wu <= 0:
        return Decision(0, "warm-up not started")
    return Decision(effective_weight(f.node.weight, share), _share_reason(ss, wu, f, now))


def _out_reason(f: NodeFacts) -> str | None:
    """Why a node should carry no traffic for its health, or None when it may serve.

    Blocklists first, then liveness, then the node's own agent and the metric rules: the
    first that applies is the reason shown.
    """
    if f.quarantined:
        return f"quarantined: {f.reputation.detail or 'listed on ' + ', '.join(f.listed_on)}"
    if not f.health.up:
        return f"down: {f.health.reason}" if f.health.reason else "down"
    return f.signals.out


def _check_records(pool: Pool, f: NodeFacts, create_missing: bool) -> list[str]:
    """Drift and missing sets: an error for that node, no write."""
    errors = []
    for rtype, address in f.node.addresses_by_type().items():
        rec = f.records.get(rtype)
        where = f"{pool.name}/{f.node.id} ({pool.record} {rtype} {f.node.id})"
        if rec is None:
            if not create_missing:
                errors.append(f"{where}: record set missing in Route 53 (use --create-missing to create it)")
            continue
        held = tuple(sorted(normalize_value(rtype, v) for v in rec.values))
        if held != (normalize_value(rtype, address),):
            errors.append(
                f"{where}: drift: Route 53 holds {', '.join(rec.values) or 'nothing'}, "
                f"config says {address}; not written"
            )
    return errors


# --- the pool -----------------------------------------------------------------------------


def plan_pool(
    pool: Pool,
    zone_id: str,
    facts: Sequence[NodeFacts],
    now: datetime,
    *,
    create_missing: bool = False,
    drain_budget: int | None = None,
) -> PoolPlan:
    """The weights a pool should carry.

    A node whose record set cannot be written (drift, missing) counts in every rule at the
    weight Route 53 holds (0 for a missing set), never at the weight it should have: the
    rules are about what DNS serves. `drain_budget` is how many nodes may still be newly
    drained in this cycle (default: the pool's max_drain_per_cycle).
    """
    out = PoolPlan(pool=pool.name)
    for f in facts:
        errs = _check_records(pool, f, create_missing)
        if errs:
            out.errors.extend(errs)
            out.blocked[f.node.id] = errs[0]

    decisions: dict[str, Decision] = {}
    for f in facts:
        if f.node.id in out.blocked:
            decisions[f.node.id] = Decision(f.current_weight, "not written (see the error)")
        elif f.drained is not None:
            decisions[f.node.id] = Decision(0, f"drained: {f.drained}")

    def serves(f: NodeFacts) -> bool:
        """Healthy and carrying weight once this plan is applied."""
        if f.drained is not None or _out_reason(f) is not None:
            return False
        if f.node.id in out.blocked:
            return f.current_weight > 0
        return _serving_weight(pool, f, now).weight > 0

    serving = [f for f in facts if serves(f)]
    candidates = [f for f in facts if f.drained is None and f.node.id not in out.blocked]

    if candidates and not serving:
        # Never all zero: with nobody healthy, fail open as Route 53 itself does.
        out.fail_open = True
        down = [f for f in facts if f.drained is None and _out_reason(f) is not None]
        if down and all(f.quarantined and f.health.up for f in down):
            out.alerts.append(f"pool {pool.name}: every node is quarantined; failing open to base weights")
        elif len(down) < len(candidates) and any(f.signals.drain for f in candidates):
            out.alerts.append(f"pool {pool.name}: no node left to carry weight (drained by their agents or out); "
                              "failing open to base weights")
        elif down and all(DANE_MISMATCH in f.health.reason for f in down):
            out.alerts.append(f"pool {pool.name}: no node matches the TLSA records of {tlsa_name(pool.record)} "
                              "(a TLSA rollover gone wrong?): DANE senders will defer everything; "
                              "failing open to base weights")
        else:
            out.alerts.append(f"pool {pool.name}: no healthy node; failing open to base weights")
        for f in candidates:
            why = _out_reason(f) or f.signals.drain or "carries no weight"
            decisions[f.node.id] = Decision(f.node.weight, f"fail open ({why})")
    elif not serving:
        pass  # every node is drained by hand or cannot be written: nothing for r53lb to decide
    elif pool.mode == "failover":
        _plan_failover(pool, facts, serving, decisions, now, out)
    else:
        _plan_weighted(pool, facts, serving, decisions, now, out,
                       pool.max_drain() if drain_budget is None else max(0, drain_budget))

    out.decisions = {f.node.id: decisions[f.node.id] for f in facts}
    for f in facts:
        if f.node.id in out.blocked:
            continue
        d = out.decisions[f.node.id]
        for rtype, address in f.node.addresses_by_type().items():
            rec = f.records.get(rtype)
            if rec is not None and rec.weight == d.weight:
                continue
            out.changes.append(Change(
                pool=pool.name, node=f.node.id, zone=pool.zone, record=pool.record, type=rtype,
                set_identifier=f.node.id, from_weight=None if rec is None else rec.weight,
                to_weight=d.weight, reason=d.reason,
                record_change=RecordChange(
                    zone_id=zone_id, name=pool.record, type=rtype, set_identifier=f.node.id,
                    weight=d.weight, current=rec, ttl=pool.ttl, values=(address,),
                ),
            ))
    return out


def _plan_weighted(
    pool: Pool,
    facts: Sequence[NodeFacts],
    serving: list[NodeFacts],
    decisions: dict[str, Decision],
    now: datetime,
    out: PoolPlan,
    budget: int,
) -> None:
    newly_out: list[NodeFacts] = []
    for f in facts:
        if f.node.id in decisions:
            continue
        why = _out_reason(f)
        if why is None:
            decisions[f.node.id] = _serving_weight(pool, f, now)
        else:
            decisions[f.node.id] = Decision(0, why)
            if f.current_weight > 0:
                newly_out.append(f)

    def in_service() -> int:
        return sum(1 for d in decisions.values() if d.weight > 0)

    # Floor: draining for health never takes the pool below min_in_service.
    keep: list[NodeFacts] = []
    for f in newly_out:
        if in_service() >= pool.min_in_service:
            break
        keep.append(f)
        decisions[f.node.id] = Decision(
            f.current_weight, f"panic: kept in service, {decisions[f.node.id].reason} (min_in_service {pool.min_in_service})"
        )
    if keep or len(serving) < pool.min_in_service:
        out.panic = True
        out.alerts.append(
            f"pool {pool.name}: panic: {len(serving)} healthy node(s), min_in_service is {pool.min_in_service}"
        )
    # Blast radius: at most max_drain_per_cycle nodes newly drained in one cycle.
    draining = [f for f in newly_out if f not in keep]
    for f in draining[budget:]:
        decisions[f.node.id] = Decision(
            f.current_weight,
            f"drain deferred (max_drain_per_cycle {pool.max_drain_per_cycle}): {decisions[f.node.id].reason}",
        )
    out.newly_drained = [f.node.id for f in draining[:budget]]
    out.deferred = max(0, len(draining) - budget)
    if out.deferred:
        out.alerts.append(
            f"pool {pool.name}: {len(draining)} nodes to drain, {min(budget, len(draining))} this cycle "
            f"(max_drain_per_cycle)"
        )


def _plan_failover(
    pool: Pool,
    facts: Sequence[NodeFacts],
    serving: list[NodeFacts],
    decisions: dict[str, Decision],
    now: datetime,
    out: PoolPlan,
) -> None:
    first = serving[0]
    current = next((f for f in facts if f.current_weight > 0 and f in serving), None)
    active = first
    why = "active (first healthy node)"
    if current is not None and current is not first:
        if not pool.preempt:
            active, why = current, "active (preempt off: stays active while healthy)"
        else:
            healthy_for = (now - first.health.since).total_seconds()
            if healthy_for < pool.preempt_delay:
                active = current
                why = (f"active (fail-back to {first.node.id} after preempt_delay "
                       f"{pool.preempt_delay:g}s; healthy for {healthy_for:.0f}s)")
            else:
                why = "active (preempt: first node healthy again)"
    out.active = active.node.id
    for f in facts:
        if f.node.id in decisions:
            continue  # drained by hand, or not writable (counted at the weight it holds)
        if f is active:
            decisions[f.node.id] = Decision(max(1, f.node.weight), why)
        elif f is first:
            # The preferred node is healthy but not active: preempt is off, or preempt_delay runs.
            wait = "preempt off" if not pool.preempt else f"fail-back after preempt_delay {pool.preempt_delay:g}s"
            decisions[f.node.id] = Decision(0, f"healthy, waiting ({wait}); {active.node.id} is active")
        else:
            reason = _out_reason(f) or f.signals.drain or f"standing by; {active.node.id} is active"
            decisions[f.node.id] = Decision(0, reason)


# --- vantage ------------------------------------------------------------------------------


def held_after_state_loss(pool: Pool, found: dict[str, int], now: datetime) -> list[str]:
    """Nodes to keep at 0 after the state store was rebuilt: found at 0 where the config has them carry weight.

    The lost store may have held a drain for them, and restoring them because they answer probes
    would undo an operator's decision. `found` is node id -> the weight Route 53 holds (nodes with
    no record set are absent: nothing was found). A weight of 0 that the config itself asks for
    (base weight 0, warm-up not started) is no sign of a drain, and neither is a failover pool's
    standby: a node at 0 listed after the node carrying the weight.
    """
    held = []
    active_seen = False
    for node in pool.nodes:
        weight = found.get(node.id)
        if weight is None:
            continue
        if weight > 0:
            active_seen = True
            continue
        if node.weight == 0 or warmup_share(node.warmup, now) == 0:
            continue
        if pool.mode == "failover" and active_seen:
            continue
        held.append(node.id)
    return held


def vantage_hold(node_ok: dict[tuple[str, str], bool], canaries_failed: Iterable[str] = ()) -> str | None:
    """The controller's own network is suspect: every node failed every check, or a canary failed."""
    failed = list(canaries_failed)
    if failed:
        return f"vantage canary failed: {'; '.join(failed)}"
    if len(node_ok) >= 2 and not any(node_ok.values()):
        return f"every check of every node failed ({len(node_ok)} nodes): suspect the controller's own network"
    return None
