"""The status document: every pool and node, holds, zone errors and the latest history.

One builder (`document`) serves `r53lb status --json` (Route 53 read now, health from the
state store) and `r53lb run`'s status page and `/api/status` (the daemon's live health,
records and probe results). Drains, reputation, the watcher's hold and zone errors and the
history come from the state store in both, so a drain made from another shell shows at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.planner import Plan, plan_pool
from ..core.reputation import Reputation, reputations
from ..core.watcher import WatchState
from ..core.weights import slow_start_share, warmup_next_step, warmup_share
from . import signals
from .cycle import Controller, NodeKey, load_watch_state

if TYPE_CHECKING:
    from ..config import Config
    from ..core.health import NodeHealth
    from ..core.records import RecordKey, RecordSet
    from ..probes.base import ProbeResult
    from ..state.sqlite import Event, StateStore

__all__ = ["HISTORY", "StoreFacts", "collect", "document", "fences", "plan_now", "read_store"]

HISTORY = 25  # the latest history events in the document (`r53lb history` has them all)


@dataclass(frozen=True)
class StoreFacts:
    """What the status document takes from the state store, read in one go."""

    drains: Mapping[NodeKey, tuple[str, datetime]]
    verdicts: Mapping[NodeKey, Reputation]
    watch: WatchState
    events: Sequence["Event"]
    cached: Mapping[tuple[str, str, str], tuple[datetime, dict[str, Any]]]  # check results: signals, warm-up clocks


def read_store(store: "StateStore", history: int = HISTORY) -> StoreFacts:
    """Drains, reputation verdicts, the watcher's state (hold, failing zones) and the latest events."""
    cached = store.check_results()
    return StoreFacts(
        drains=store.drains(),
        verdicts=reputations(cached),
        watch=load_watch_state(store),
        events=store.events(limit=history),
        cached=cached,
    )


def plan_now(ctl: Controller, records: Mapping[str, Mapping["RecordKey", "RecordSet"]],
             health: Mapping[NodeKey, "NodeHealth"], facts: StoreFacts, now: datetime) -> Plan:
    """What a reconcile would decide now, recording nothing (no drain budget spent, no store write)."""
    plan = Plan()
    for pool in ctl.cfg.pools:
        recs = records.get(pool.name)
        if recs is None or any((pool.name, n.id) not in health for n in pool.nodes):
            continue  # its zone has not been read: nothing to plan against
        node_facts = ctl.facts(pool, dict(recs), dict(facts.drains), dict(facts.verdicts), dict(health),
                               dict(facts.cached))
        plan.pools.append(plan_pool(pool, ctl.zone_id(pool), node_facts, now, drain_budget=pool.max_drain()))
    return plan


def _probe(r: "ProbeResult") -> dict[str, Any]:
    return {"check": r.check, "status": r.status, "ok": r.ok if r.status != "unknown" else None,
            "latency_ms": round(r.latency_ms, 1), "detail": r.detail}


def document(
    cfg: "Config",
    *,
    records: Mapping[str, Mapping["RecordKey", "RecordSet"]],
    health: Mapping[NodeKey, "NodeHealth"],
    plan: Plan,
    store: StoreFacts,
    now: datetime,
    probes: Mapping[NodeKey, Sequence["ProbeResult"]] | None = None,
) -> dict[str, Any]:
    """The status document (contract: the keys of `nodes` rows are stable, new keys may appear).

    `probes` are the latest liveness results per node: the daemon has them, `r53lb status`
    does not (it probes nothing), so there they are null.
    """
    plans = {pp.pool: pp for pp in plan.pools}
    rows: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    for pool in cfg.pools:
        pplan = plans.get(pool.name)
        recs = records.get(pool.name, {})
        pools.append({
            "name": pool.name, "zone": pool.zone, "record": pool.record, "mode": pool.mode,
            "read": pool.name in records,
            "panic": bool(pplan and pplan.panic), "fail_open": bool(pplan and pplan.fail_open),
            "active": pplan.active if pplan else None,
            "alerts": list(pplan.alerts) if pplan else [],
            "errors": list(pplan.errors) if pplan else [],
            "deferred": pplan.deferred if pplan else 0,
        })
        for node in pool.nodes:
            key = (pool.name, node.id)
            h = health.get(key)
            rep = store.verdicts.get(key)
            listed_on, listed_detail = (rep.listed_on, rep.detail) if rep else ((), "")
            drain = store.drains.get(key)
            clock = signals.warmup_clock(pool, node, store.cached)
            paused = clock.paused(now) if clock is not None else 0.0
            nxt = warmup_next_step(node.warmup, now, paused)
            node_signals = signals.node_signals(pool, node, store.cached)
            d = pplan.decisions.get(node.id) if pplan else None
            latest = None if probes is None else [_probe(r) for r in probes.get(key, ())]
            for rtype in node.addresses_by_type():
                rec = recs.get((pool.record, rtype, node.id))
                rows.append({
                    "pool": pool.name, "node": node.id, "record": pool.record, "type": rtype,
                    "weight": None if rec is None else rec.weight,
                    "base_weight": node.weight,
                    "desired_weight": None if d is None else d.weight,
                    "reason": None if d is None else d.reason,
                    "health": "unknown" if h is None else ("up" if h.up else "down"),
                    "since": None if h is None else h.since.isoformat(),
                    "last_result": None if h is None else h.reason,
                    "drained": drain[0] if drain else None,
                    "drained_at": drain[1].isoformat() if drain else None,
                    "quarantined": len(listed_on) >= pool.quarantine.listed_on_n,
                    "listed_on": list(listed_on),
                    "listed_detail": listed_detail or None,
                    "slow_start_share": None if h is None or not pool.slow_start else round(
                        slow_start_share(h.recovered_at, pool.slow_start, now), 4),
                    "warmup_share": None if node.warmup is None else round(warmup_share(node.warmup, now, paused), 4),
                    "warmup_next": None if nxt is None else {"at": nxt[0].isoformat(), "share": nxt[1]},
                    # Why a gated warm-up stands still (None when it runs), and for how long in all.
                    "warmup_paused": clock.reason if clock is not None and clock.paused_since else None,
                    "warmup_paused_seconds": round(paused) if clock is not None else 0,
                    "signals": [{"check": sig.name, "kind": sig.kind, "share": sig.share, "drain": sig.drain,
                                 "out": sig.out, "reason": sig.reason, "value": sig.value}
                                for sig in node_signals.signals],
                    "probes": latest,
                    # smtp `dane`: match | mismatch | none | unusable, its reason and the node's SPKI digest
                    "dane": (store.cached[(pool.name, node.id, "dane")][1]
                             if (pool.name, node.id, "dane") in store.cached else None),
                    "panic": bool(pplan and pplan.panic),
                    "fail_open": bool(pplan and pplan.fail_open),
                    "active": pplan.active if pplan else None,
                })
    watch = store.watch
    return {
        "generated_at": now.isoformat(),
        "hold": watch.hold,
        "zone_errors": {z: {"error": f.error, "since": f.since.isoformat()} for z, f in sorted(watch.failing.items())},
        "pools": pools,
        "nodes": rows,
        "history": [e.to_json() for e in reversed(store.events)],  # newest first
    }


def collect(ctl: Controller, history: int = HISTORY) -> dict[str, Any]:
    """`r53lb status`: Route 53 read now, beside the stored health; records nothing, not even first sight."""
    ctl.store = ctl.store.snapshot()  # type: ignore[union-attr]
    now = ctl.clock()
    records = ctl.read(ctl.cfg.pools)
    ctl.adopt(records, now)
    facts = read_store(ctl.store, history)
    plan = plan_now(ctl, records, ctl.health, facts, now)
    doc = document(ctl.cfg, records=records, health=ctl.health, plan=plan, store=facts, now=now)
    doc["fences"] = fences(ctl)
    return doc


def fences(ctl: Controller) -> list[dict[str, Any]]:
    """Each zone's fence as last read: who wrote it (epoch, seq, replica) and the drains it lists."""
    out = []
    fences = dict(ctl.fences)  # the daemon's reconcile threads replace entries: read a copy
    for zone in ctl.zones():
        zone_id = ctl._zone_ids.get(zone)
        seen = fences.get(zone_id) if zone_id else None
        if seen is not None:
            out.append({"zone": zone, **seen.to_json()})
    return out


def cluster_view(cfg: Any, store: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Replicas (heartbeat age), the lease holder and epoch; each row gains its votes.

    Which replicas count is the leader's word (it publishes whom it counted, judged on its own
    monotonic clock); ages come from the replicas' wall clocks and are only shown. Without a
    leader's heartbeat, an age under the staleness limit counts.
    """
    from datetime import datetime, timezone

    from .cluster import stale_after

    lease, beats = store.read_live()
    now = datetime.now(timezone.utc)
    stale = stale_after(cfg.cluster.heartbeat)
    judge = beats.get(lease.owner) if lease else None
    replicas = []
    counting = []
    for name, hb in sorted(beats.items()):
        age = None if hb.at is None else max(0.0, (now - hb.at).total_seconds())
        is_fresh = name in judge.counting if judge is not None and judge.counting else (age is not None and age < stale)
        replicas.append({"replica": name, "heartbeat_age_s": None if age is None else round(age, 1),
                         "fresh": is_fresh, "voting": hb.opinion.voting, "seq": hb.opinion.seq,
                         "sees_down": sorted(f"{p}/{n}" for p, n in hb.opinion.down)})
        if is_fresh and hb.opinion.voting:
            counting.append(hb.opinion)
    for row in rows:
        key = (row["pool"], row["node"])
        row["votes_down"] = sum(1 for o in counting if key in o.down)
        row["votes_up"] = len(counting) - row["votes_down"]
    return {
        "table": cfg.cluster.table,
        "leader": lease.owner if lease else None,
        "epoch": lease.epoch if lease else 0,
        "quorum": cfg.cluster.quorum,
        "replicas": replicas,
    }
