"""Signal checks in the engine: dnsbl, agent and prometheus, each at its own interval.

The shell around core/reputation.py and core/signals.py, shared by `sync` and `run` through
`Controller.refresh_verdicts`: run the checks that are due, fold each result into the last
known verdict (unknown keeps it: the core's rule), keep it in the state store under the
check's slot (`dnsbl:2`, `agent:1`, `prom:3`: kind and position in the node's checks), record
every change in the history, and step the clocks of gated warm-ups.

The check state is read from the store once (`cached`) and kept in memory; a result is
written back when it changed, or to refresh its stored time at most every `RESTAMP` (so
a restart knows which checks are due). In a cluster each replica keeps its own (state/
dynamodb.py: per replica, never overwritten by another), only the lease holder records
the changes in the history and notifies (`ctl.records`), and the writer plans with the
quorum's say on what takes a node out (`quorum_signals`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..config import Check, Node, Pool
from ..core.reputation import Verdict, combine, fold
from ..core.signals import (NO_SIGNALS, AgentState, MetricVerdict, NodeSignals, Signal, agent_signal, fold_agent,
                            fold_metric, metric_signal)
from ..core.weights import WarmupClock, step_warmup_clock
from ..probes.base import ProbeResult
from ..probes.runner import Job, run_all
from . import mtasts, sending, tlsrpt
from .checkstate import DUE_SLACK, RESTAMP, Cached, Engine, cached, keep, memory

__all__ = ["DUE_SLACK", "RESTAMP", "SLOT_PREFIX", "WARMUP_SLOT", "Cached", "cached", "quorum_signals",
           "signal_checks", "node_signals", "warmup_clock", "refresh"]

log = logging.getLogger("r53lb")

SLOT_PREFIX = {"dnsbl": "dnsbl", "agent": "agent", "prometheus": "prom"}
WARMUP_SLOT = "warmup"  # a gated warm-up's clock (its pauses)


def quorum_signals(own: NodeSignals, say: str | None | bool) -> NodeSignals:
    """A node's signals as the writer of a cluster plans with them: taken out or not as a quorum
    of replicas says (`say`: the reason out, None: in, False: no quorum view, the own signals)."""
    if say is False:
        return own
    if say is not None:
        return own if own.out is not None else NodeSignals(own.signals + (Signal("quorum", "agent", out=say, reason=say),))
    if own.out is None:
        return own
    return NodeSignals(tuple(s if s.out is None else Signal(s.name, s.kind, reason=f"{s.reason} (no quorum sees it out)",
                                                             value=s.value) for s in own.signals))


def signal_checks(pool: Pool, node: Node) -> list[tuple[str, Check, float]]:
    """(slot, check, interval) of each signal check of a node."""
    out = []
    for i, check in enumerate(pool.checks_for(node)):
        if check.kind == "dnsbl":
            interval = check.dnsbl.interval
        elif check.kind == "agent":
            interval = check.agent.interval or pool.tuning.interval
        elif check.kind == "prometheus":
            interval = check.prometheus.interval
        else:
            continue
        out.append((f"{SLOT_PREFIX[check.kind]}:{i}", check, interval))
    return out


def node_signals(pool: Pool, node: Node, cached: Cached) -> NodeSignals:
    """The last known agent states and metric verdicts of a node, as the planner reads them."""
    out = []
    for slot, check, _ in signal_checks(pool, node):
        raw = cached.get((pool.name, node.id, slot))
        if check.kind == "agent":
            state = AgentState.from_json(raw[1].get("state")) if raw else AgentState()
            out.append(agent_signal(check.agent.name or slot, state))
        elif check.kind == "prometheus":
            verdict = MetricVerdict.from_json(raw[1] if raw else None)
            out.append(metric_signal(check.prometheus.name or slot, verdict))
    sts = mtasts.node_signal(pool, node, cached)  # pool `mta_sts`: the node's certificate as senders see it
    if sts is not None:
        out.append(sts)
    gates = sending.node_signal(pool, node, cached)  # warm-up's `require`: FCrDNS and SPF
    if gates is not None:
        out.append(gates)
    rpt = tlsrpt.node_signal(pool, node, cached)  # pool `tlsrpt`: what senders report
    if rpt is not None:
        out.append(rpt)
    return NodeSignals(tuple(out)) if out else NO_SIGNALS


def warmup_clock(pool: Pool, node: Node, cached: Cached) -> WarmupClock | None:
    """A gated warm-up's pauses as stored, or None (never paused)."""
    raw = cached.get((pool.name, node.id, WARMUP_SLOT))
    if node.warmup is None or raw is None:
        return None
    clock = WarmupClock.from_json(raw[1])
    if not node.warmup.hold_when and clock.paused_since is not None:
        # The gates were removed from the config: the pauses so far still count, none goes on.
        return WarmupClock(clock.paused(clock.paused_since))
    return clock


async def refresh(ctl: Engine, nodes: list[tuple[Pool, Node]], now: datetime, force: bool = False) -> bool:
    """Run the signal checks of `nodes` that are due (dnsbl, agent, prometheus, each at its own interval).

    Each verdict is folded into the last known one (unknown keeps it), kept in the state
    store, and every change goes into the history. Then the warm-up gates of these nodes
    are looked at. True when something that steers a weight changed.
    """
    assert ctl.store is not None
    cached = dict(memory(ctl).cached)
    due: list[tuple[str, Job]] = []
    for pool, node in nodes:
        for slot, check, interval in signal_checks(pool, node):
            prev = cached.get((pool.name, node.id, slot))
            if force or prev is None or (now - prev[0]).total_seconds() >= interval * (1 - DUE_SLACK):
                due.append((slot, Job(ctl.target(pool, node), check, pool.tuning.timeout)))
    if not due:
        return False
    results = await run_all([j for _, j in due], concurrency=ctl.cfg.defaults.concurrency)
    changed = False
    with ctl.store.transaction():
        for (slot, _), r in zip(due, results):
            key = (r.pool, r.node, slot)
            if r.check == "dnsbl":
                result, moved = _fold_dnsbl(ctl, r, cached.get(key), now)
            elif r.check == "agent":
                result, moved = _fold_agent(ctl, r, cached.get(key), now)
            else:
                result, moved = _fold_metric(ctl, r, cached.get(key), now)
            changed |= moved
            cached[key] = (now, result)
            keep(ctl, key, now, result)
        changed |= _step_gates(ctl, nodes, cached, now)
    for pool, node in nodes:
        ctl.last_signals[(pool.name, node.id)] = node_signals(pool, node, cached)
    return changed


def _fold_dnsbl(ctl: Engine, r: ProbeResult, prev_raw: tuple[datetime, dict[str, Any]] | None,
                now: datetime) -> tuple[dict[str, Any], bool]:
    prev = Verdict.from_json(prev_raw[1], prev_raw[0]) if prev_raw else None
    verdict = fold(prev, r.status, r.listed_on, r.detail, now)
    if r.status == "unknown":
        log.warning("%s/%s: dnsbl unknown, weight untouched: %s", r.pool, r.node, r.detail)
    was = sorted(prev.listed_on) if prev else []
    moved = sorted(verdict.listed_on) != was
    if moved:
        reason = verdict.detail if verdict.listed_on else f"delisted: {r.detail}"
        _event(ctl, now, r, "reputation", ", ".join(was) or "clean", ", ".join(verdict.listed_on) or "clean",
               reason, {"listed_on": list(verdict.listed_on)}, notify=True)
    return verdict.to_json(), moved


def _fold_agent(ctl: Engine, r: ProbeResult, prev_raw: tuple[datetime, dict[str, Any]] | None,
                now: datetime) -> tuple[dict[str, Any], bool]:
    prev = AgentState.from_json(prev_raw[1].get("state")) if prev_raw else None
    state = fold_agent(prev, r.status, r.agent)
    if r.status == "unknown":
        log.warning("%s/%s: agent unknown, weight untouched: %s", r.pool, r.node, r.detail)
    was = prev or AgentState()
    moved = state != was
    if moved:
        _event(ctl, now, r, "agent", was.reason.removeprefix("agent: "), state.reason.removeprefix("agent: "),
               f"agent said: {r.detail.removeprefix('agent: ')}", {"share": state.weight_share, "state": state.word},
               notify=state.status != was.status)  # out or back in; a drain is no alert
    return {"state": state.to_json(), "last_unknown": r.detail if r.status == "unknown" else ""}, moved


def _fold_metric(ctl: Engine, r: ProbeResult, prev_raw: tuple[datetime, dict[str, Any]] | None,
                 now: datetime) -> tuple[dict[str, Any], bool]:
    prev = MetricVerdict.from_json(prev_raw[1] if prev_raw else None)
    verdict = fold_metric(prev, r.status, r.value, r.share, r.detail)
    if r.status == "unknown":
        log.warning("%s/%s: prometheus unknown, weight untouched: %s", r.pool, r.node, r.detail)

    def said(v: MetricVerdict) -> str:
        if v.status == "unknown":
            return "unknown"
        if v.status == "fail":
            return "out"
        return "ok" if v.share is None else f"{v.share * 100:.0f}%"

    # The verdict, not every new value: a scaled share moves in whole percents. A rule read
    # for the first time and found within bounds changes no weight: no event for a new fleet.
    moved = said(verdict) != said(prev) and (said(prev), said(verdict)) != ("unknown", "ok")
    if moved:
        back = " (back within bounds)" if said(prev) == "out" and verdict.status == "ok" else ""
        _event(ctl, now, r, "metric", said(prev), said(verdict), verdict.detail + back,
               {"value": verdict.value, "share": verdict.share}, notify="out" in (said(prev), said(verdict)))
    return verdict.to_json(), moved


def _event(ctl: Engine, now: datetime, r: ProbeResult, kind: str, frm: str, to: str, reason: str,
           details: dict[str, Any], notify: bool) -> None:
    """History and a log line for every change; a notification only when the node goes out or comes back."""
    assert ctl.store is not None
    log.info("%s/%s: %s %s -> %s: %s", r.pool, r.node, kind, frm, to, reason)
    if not _records(ctl):
        return  # a cluster's follower: the lease holder records it (once, not once per replica)
    ctl.store.add_event(now, r.pool, r.node, kind, frm, to, reason)
    if notify:
        ctl.notify(kind, f"{r.pool}/{r.node}: {reason}",
                   {"pool": r.pool, "node": r.node, "from": frm, "to": to, "reason": reason, **details})


def _records(ctl: Engine) -> bool:
    """Whether this engine records signal changes in the history (a cluster: the lease holder only)."""
    records = getattr(ctl, "records", None)
    return records is None or bool(records())


def _step_gates(ctl: Engine, nodes: list[tuple[Pool, Node]], cached: Cached, now: datetime) -> bool:
    """A gated warm-up's clock stops while a gate is closed and runs again once all are open."""
    assert ctl.store is not None
    moved = False
    for pool, node in nodes:
        w = node.warmup
        if w is None or not w.hold_when:
            continue
        key = (pool.name, node.id, WARMUP_SLOT)
        raw = cached.get(key)
        clock = WarmupClock.from_json(raw[1]) if raw else WarmupClock()
        listed = combine(Verdict.from_json(cached[(pool.name, node.id, slot)][1])
                         for slot, check, _ in signal_checks(pool, node)
                         if check.kind == "dnsbl" and (pool.name, node.id, slot) in cached).listed_on
        closed = node_signals(pool, node, cached).closed_gates(w.hold_when, listed)
        after = step_warmup_clock(clock, closed, w, now)
        if after == clock:
            continue
        if (after.paused_since is None) != (clock.paused_since is None):
            moved = True
            if after.paused_since is not None:
                frm, to, reason = "running", "paused", after.reason
            else:
                frm, to = "paused", "running"
                reason = f"gates open again; paused {after.paused_seconds - clock.paused_seconds:.0f}s"
            if _records(ctl):
                ctl.store.add_event(now, pool.name, node.id, "warm-up", frm, to, reason)
            log.info("%s/%s: warm-up %s: %s", pool.name, node.id, to, reason)
        cached[key] = (now, after.to_json())
        keep(ctl, key, now, after.to_json())
    return moved
