"""Sending-IP gates in the engine: FCrDNS and SPF before warm-up gives a new address any weight.

A node whose `warmup` has `require` is checked at `require.interval` (DNS facts, not
health: slowly), every published address of it. While a gate fails the node is held at 0
(a signal that says out, with the missing record as its reason); once both hold, warm-up
runs as configured. A check that could not tell (a DNS timeout, SERVFAIL) keeps the last
verdict: unknown never changes a weight. The verdict lives in the state store (slot
`sending`), read by sync, run, status and the page alike.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from ..config import Node, Pool
from ..core.signals import MetricVerdict, Signal, fold_metric
from .checkstate import Cached, Engine

__all__ = ["SLOT", "refresh", "node_signal"]

log = logging.getLogger("r53lb")

SLOT = "sending"
NAME = "sending"


def node_signal(pool: Pool, node: Node, cached: "Cached") -> Signal | None:
    if node.warmup is None or node.warmup.require is None:
        return None
    raw = cached.get((pool.name, node.id, SLOT))
    verdict = MetricVerdict.from_json(raw[1] if raw else None)
    if verdict.status == "fail":
        why = f"held at 0 before warm-up: {verdict.detail}"
        return Signal(NAME, "sending", out=why, reason=why)  # type: ignore[arg-type]
    if verdict.status == "unknown":  # never read (DNS unreachable): unknown changes no weight
        return Signal(NAME, "sending", reason=f"FCrDNS/SPF unknown: {verdict.last_unknown}" if verdict.last_unknown else "")  # type: ignore[arg-type]
    return Signal(NAME, "sending", reason=verdict.detail)  # type: ignore[arg-type]


async def _check(node: Node, timeout: float) -> tuple[str, str]:
    from ..probes.sending import fcrdns, spf_check

    spec = node.warmup.require  # type: ignore[union-attr]
    assert spec is not None
    jobs = []
    for address in node.address:
        if spec.fcrdns:
            jobs.append(fcrdns(address, spec, timeout))
        if spec.spf:
            jobs.append(spf_check(address, spec, timeout))
    results = await asyncio.gather(*jobs)
    failed = [r.detail for r in results if r.status == "fail"]
    if failed:
        return "fail", "; ".join(failed)
    unknown = [r.detail for r in results if r.status == "unknown"]
    if unknown:
        return "unknown", "; ".join(unknown)
    return "ok", "; ".join(r.detail for r in results)


async def refresh(ctl: "Engine", nodes: list[tuple[Pool, Node]], now: datetime, force: bool = False) -> bool:
    """The gates that are due; True when a node's verdict changed (it is held, or released)."""
    assert ctl.store is not None
    gated = [(p, n) for p, n in nodes if n.warmup is not None and n.warmup.require is not None]
    if not gated:
        return False
    cached = ctl.checks_cached()
    due = []
    for pool, node in gated:
        prev = cached.get((pool.name, node.id, SLOT))
        interval = node.warmup.require.interval  # type: ignore[union-attr]
        if force or prev is None or (now - prev[0]).total_seconds() >= interval * 0.9:
            due.append((pool, node))
    if not due:
        return False
    results = await asyncio.gather(*(_check(n, n.warmup.require.timeout or p.tuning.timeout)  # type: ignore[union-attr]
                                     for p, n in due))
    changed = False
    with ctl.store.transaction():
        for (pool, node), (status, detail) in zip(due, results):
            key = (pool.name, node.id, SLOT)
            prev = MetricVerdict.from_json(cached[key][1] if key in cached else None)
            verdict = fold_metric(prev, status, None, None, detail)
            if verdict.status != prev.status:
                changed = True
                reason = verdict.detail if verdict.status != "unknown" else verdict.last_unknown
                ctl.store.add_event(now, pool.name, node.id, "sending", prev.status, verdict.status, reason)
                level = log.warning if verdict.status == "fail" else log.info
                level("%s/%s: sending gates %s -> %s: %s", pool.name, node.id, prev.status, verdict.status, reason)
            elif status == "unknown":
                log.warning("%s/%s: sending gates unknown, weight untouched: %s", pool.name, node.id, detail)
            ctl.keep_check(pool.name, node.id, SLOT, now, verdict.to_json())
    return changed
