"""`r53lb status`: Route 53 weights beside stored health, drains, reputation and warm-up, per node."""

from __future__ import annotations

from typing import Any

from .cycle import Controller
from ..core.weights import warmup_next_step, warmup_share


def collect(ctl: Controller) -> list[dict[str, Any]]:
    ctl.store = ctl.store.snapshot()  # status records nothing, not even first sight
    now = ctl.clock()
    records = ctl.read(ctl.cfg.pools)
    ctl.adopt(records, now)
    plan = ctl.plan(records, now)
    drains = ctl.store.drains()
    cached = ctl.store.check_results()
    verdicts = ctl.verdicts(cached)
    clocks = ctl.warmup_clocks(cached)
    rows: list[dict[str, Any]] = []
    for pool, pplan in zip(ctl.cfg.pools, plan.pools):
        for node in pool.nodes:
            key = (pool.name, node.id)
            h = ctl.health[key]
            rep = verdicts.get(key)
            listed_on, listed_detail = (rep.listed_on, rep.detail) if rep else ((), "")
            clock = clocks.get(key)
            paused = clock.paused(now) if clock is not None else 0.0
            nxt = warmup_next_step(node.warmup, now, paused)
            signals = ctl.node_signals(pool, node, cached)
            for rtype in node.addresses_by_type():
                rec = records[pool.name].get((pool.record, rtype, node.id))
                d = pplan.decisions[node.id]
                rows.append({
                    "pool": pool.name, "node": node.id, "record": pool.record, "type": rtype,
                    "weight": None if rec is None else rec.weight,
                    "base_weight": node.weight,
                    "desired_weight": d.weight,
                    "reason": d.reason,
                    "health": "up" if h.up else "down",
                    "since": h.since.isoformat(),
                    "last_result": h.reason,
                    "drained": drains[key][0] if key in drains else None,
                    "quarantined": len(listed_on) >= pool.quarantine.listed_on_n,
                    "listed_on": list(listed_on),
                    "listed_detail": listed_detail or None,
                    "warmup_share": None if node.warmup is None else round(warmup_share(node.warmup, now, paused), 4),
                    "warmup_next": None if nxt is None else {"at": nxt[0].isoformat(), "share": nxt[1]},
                    # Why a gated warm-up stands still (None when it runs), and for how long in all.
                    "warmup_paused": clock.reason if clock is not None and clock.paused_since else None,
                    "warmup_paused_seconds": round(paused) if clock is not None else 0,
                    "signals": [{"check": sig.name, "kind": sig.kind, "share": sig.share, "drain": sig.drain,
                                 "out": sig.out, "reason": sig.reason, "value": sig.value}
                                for sig in signals.signals],
                    "panic": pplan.panic,
                    "active": pplan.active,
                })
    return rows
