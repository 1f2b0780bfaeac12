"""TLS-RPT in the engine: the senders' reports judged per node, as a signal (like a metric rule).

At the pool's `tlsrpt.interval` the directory is read (probes/tlsrpt.py, bounded), the
reports of the last `window` tallied per node (core/tlsrpt.py), and each node's verdict
kept in the state store (slot `tlsrpt`) with its counts, for the planner, status and the
page. A node fails when it has at least `min_count` failed sessions and its failure share
is above `threshold`: it is out (`action: out`) or stays in with an alert (`action: alert`).
A directory that cannot be read is unknown: the verdicts known stay.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from ..config import Node, Pool
from ..core.signals import MetricVerdict, Signal, fold_metric
from ..core.tlsrpt import tally
from .checkstate import Cached, Engine

__all__ = ["SLOT", "refresh", "node_signal"]

log = logging.getLogger("r53lb")

SLOT = "tlsrpt"
NAME = "tlsrpt"


def node_signal(pool: Pool, node: Node, cached: "Cached") -> Signal | None:
    if pool.tlsrpt is None:
        return None
    raw = cached.get((pool.name, node.id, SLOT))
    verdict = MetricVerdict.from_json(raw[1] if raw else None)
    if verdict.status == "fail" and pool.tlsrpt.action == "out":
        why = f"TLS-RPT: {verdict.detail}"
        return Signal(NAME, "tlsrpt", out=why, reason=why, value=verdict.value)  # type: ignore[arg-type]
    reason = f"TLS-RPT: {verdict.detail}" if verdict.detail else ""
    if verdict.status == "fail":
        reason += " (alert only)"
    return Signal(NAME, "tlsrpt", reason=reason, value=verdict.value)  # type: ignore[arg-type]


async def refresh(ctl: "Engine", nodes: list[tuple[Pool, Node]], now: datetime, force: bool = False) -> bool:
    """Read the reports of the pools that are due; True when a node's verdict changed."""
    assert ctl.store is not None
    pools: dict[str, Pool] = {p.name: p for p, _ in nodes if p.tlsrpt is not None}
    if not pools:
        return False
    from ..probes.tlsrpt import read_reports

    cached = ctl.checks_cached()
    changed = False
    for pool in pools.values():
        spec = pool.tlsrpt
        assert spec is not None
        stamps = [cached[(pool.name, n.id, SLOT)][0] for n in pool.nodes if (pool.name, n.id, SLOT) in cached]
        if not force and len(stamps) == len(pool.nodes) and \
                min((now - s).total_seconds() for s in stamps) < spec.interval * 0.9:
            continue
        read = await asyncio.to_thread(read_reports, spec.directory, max(1.0, pool.tuning.timeout))
        for why in read.skipped[:20]:
            log.warning("%s: TLS-RPT report skipped: %s", pool.name, why)
        counts = {} if read.error else tally(
            read.reports, {n.id: n.address for n in pool.nodes}, spec.domain,
            now - timedelta(seconds=spec.window), now + timedelta(minutes=5))
        if read.error:
            log.warning("%s: TLS-RPT reports unknown, weights untouched: %s", pool.name, read.error)
        with ctl.store.transaction():
            for node in pool.nodes:
                key = (pool.name, node.id, SLOT)
                prev = MetricVerdict.from_json(cached[key][1] if key in cached else None)
                if read.error:
                    status, share, detail, c = "unknown", None, read.error, None
                else:
                    c = counts[node.id]
                    share = round(c.share, 4)
                    bad = c.failed >= spec.min_count and c.share > spec.threshold
                    status = "fail" if bad else "ok"
                    detail = (f"{c.describe()} over {_days(spec.window)}"
                              + (f" (> {spec.threshold * 100:g}%, {c.failed} >= {spec.min_count})" if bad else ""))
                verdict = fold_metric(prev, status, share, None, detail)
                data: dict[str, Any] = verdict.to_json()
                if c is not None:
                    data["counts"] = {"failed": c.failed, "sessions": round(c.sessions, 1), "by_type": dict(c.by_type),
                                      "reports": c.reports, "read": len(read.reports), "skipped": len(read.skipped)}
                if verdict.status != prev.status and (prev.status, verdict.status) != ("unknown", "ok"):
                    changed = True
                    reason = f"TLS-RPT: {verdict.detail}"
                    ctl.store.add_event(now, pool.name, node.id, "tlsrpt", prev.status, verdict.status, reason)
                    log.warning("%s/%s: tlsrpt %s -> %s: %s", pool.name, node.id, prev.status, verdict.status, reason)
                    ctl.notify("alert", f"{pool.name}/{node.id}: {reason}",
                               {"pool": pool.name, "node": node.id, "reason": reason, "action": spec.action})
                cached[key] = (now, data)
                ctl.keep_check(pool.name, node.id, SLOT, now, data)
    return changed


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}d" if seconds >= 86400 else f"{seconds / 3600:g}h"
