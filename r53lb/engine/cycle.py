"""One reconcile cycle: probe -> health -> plan -> apply -> record. The shell around the pure core."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from ..config import CHECK_KINDS, Config, Node, Pool, default_helo
from ..core.health import NodeHealth, Transition, first_sight, observe
from ..core.planner import Change, NodeFacts, Plan, PoolPlan, plan_pool, vantage_hold
from ..probes.base import ProbeResult, Target
from ..probes.runner import Job, run_all
from ..core.records import RecordKey, RecordSet

if TYPE_CHECKING:
    from ..aws.route53 import Route53
    from ..state.sqlite import StateStore

log = logging.getLogger("r53lb")

NodeKey = tuple[str, str]  # (pool, node)
Notify = Callable[[str, str, dict[str, Any]], None]  # (kind, message, details)
LIVENESS = ("smtp", "http", "tcp")
MAX_CONFLICT_RETRIES = 3


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class CycleResult:
    plan: Plan
    results: list[ProbeResult] = field(default_factory=list)
    transitions: list[tuple[NodeKey, Transition]] = field(default_factory=list)
    apply_error: str | None = None
    conflicts: int = 0
    insync_seconds: float | None = None

    @property
    def exit_code(self) -> int:
        if self.plan.hold:
            return 3
        if self.apply_error or self.plan.errors:
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        d = self.plan.to_json()
        d["apply_error"] = self.apply_error
        d["conflicts"] = self.conflicts
        if self.insync_seconds is not None:
            d["insync_seconds"] = round(self.insync_seconds, 3)
        return d


class Controller:
    def __init__(
        self,
        cfg: Config,
        store: "StateStore | None",
        route53: "Route53 | None",
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        notify: Notify | None = None,
    ):
        self.cfg = cfg
        self.store = store
        self.route53 = route53
        self.clock = clock
        self.sleep = sleep
        self.notify = notify or (lambda kind, msg, details: None)
        self.helo = cfg.defaults.helo or default_helo()
        self.health: dict[NodeKey, NodeHealth] = store.health() if store is not None else {}
        self._zone_ids: dict[str, str] = {}

    # --- probing --------------------------------------------------------------------------

    def target(self, pool: Pool, node: Node) -> Target:
        return Target(pool.name, node.id, node.target, tuple(node.address), pool.tuning.helo or self.helo)

    def jobs(self, pool: Pool, node: Node, kinds: Iterable[str] = LIVENESS) -> list[Job]:
        t = self.target(pool, node)
        return [Job(t, c, pool.tuning.timeout) for c in pool.checks_for(node) if c.kind in kinds]

    def canary_jobs(self) -> list[Job]:
        out = []
        for i, canary in enumerate(self.cfg.vantage.canaries):
            t = Target("vantage", f"canary-{i}", canary.address, (canary.address,), self.helo)
            out.extend(Job(t, c, self.cfg.defaults.timeout) for c in canary.checks)
        return out

    async def probe(self, nodes: list[tuple[Pool, Node]], with_canaries: bool = False) -> list[ProbeResult]:
        jobs = [j for pool, node in nodes for j in self.jobs(pool, node)]
        if with_canaries:
            jobs += self.canary_jobs()
        return await run_all(jobs, concurrency=self.cfg.defaults.concurrency)

    async def probe_dnsbl(self, nodes: list[tuple[Pool, Node]], now: datetime, force: bool = False) -> None:
        """Run the dnsbl checks that are due (each at its own interval) and remember their verdicts."""
        cached = self.store.check_results()
        due: list[tuple[str, Job]] = []
        for pool, node in nodes:
            for i, check in enumerate(pool.checks_for(node)):
                if check.kind != "dnsbl":
                    continue
                slot = f"dnsbl:{i}"
                prev = cached.get((pool.name, node.id, slot))
                if force or prev is None or (now - prev[0]).total_seconds() >= check.dnsbl.interval:
                    due.append((slot, Job(self.target(pool, node), check, pool.tuning.timeout)))
        if not due:
            return
        results = await run_all([j for _, j in due], concurrency=self.cfg.defaults.concurrency)
        with self.store.transaction():
            for (slot, _), r in zip(due, results):
                prev = cached.get((r.pool, r.node, slot))
                verdict = {"status": r.status, "listed_on": list(r.listed_on), "detail": r.detail}
                if r.status == "unknown":
                    # An unknown answer never changes a weight: keep the last verdict.
                    keep = prev[1] if prev else {"status": "unknown", "listed_on": [], "detail": ""}
                    verdict = {**keep, "last_unknown": r.detail}
                    log.warning("%s/%s: dnsbl unknown, weight untouched: %s", r.pool, r.node, r.detail)
                was = sorted(prev[1].get("listed_on", [])) if prev else []
                if sorted(verdict["listed_on"]) != was:
                    listed = bool(verdict["listed_on"])
                    reason = verdict["detail"] if listed else f"delisted: {r.detail}"
                    self.store.add_event(now, r.pool, r.node, "reputation",
                                         ", ".join(was) or "clean", ", ".join(verdict["listed_on"]) or "clean", reason)
                    log.info("%s/%s: %s", r.pool, r.node, reason)
                    self.notify("reputation", f"{r.pool}/{r.node}: {reason}",
                                {"pool": r.pool, "node": r.node, "listed_on": verdict["listed_on"], "reason": reason})
                self.store.put_check_result(r.pool, r.node, slot, now, verdict)

    def reputation(self, pool: Pool, node: Node) -> tuple[tuple[str, ...], str]:
        listed: list[str] = []
        details: list[str] = []
        for (p, n, slot), (_, v) in self.store.check_results().items():
            if p == pool.name and n == node.id and slot.startswith("dnsbl:") and v.get("listed_on"):
                listed.extend(v["listed_on"])
                details.append(v.get("detail", ""))
        return tuple(dict.fromkeys(listed)), "; ".join(d for d in details if d)

    # --- health ---------------------------------------------------------------------------

    def fold(self, results: list[ProbeResult], now: datetime) -> list[tuple[NodeKey, Transition]]:
        """Fold one round of liveness results into health; persist; return the transitions."""
        by_node: dict[NodeKey, list[ProbeResult]] = defaultdict(list)
        for r in results:
            if r.check in LIVENESS and r.pool != "vantage":
                by_node[(r.pool, r.node)].append(r)
        transitions = []
        with self.store.transaction():
            for key, rs in by_node.items():
                pool = self.cfg.pool(key[0])
                assert pool is not None
                failed = [r for r in rs if not r.ok]
                ok = not failed
                reason = "; ".join(f"{r.check}: {r.detail}" for r in failed) if failed else "; ".join(
                    f"{r.check} ok" for r in rs)
                h, t = observe(self.health[key], ok, reason, now, pool.tuning.rise, pool.tuning.fall)
                self.health[key] = h
                self.store.put_health(key[0], key[1], h)
                if t:
                    transitions.append((key, t))
                    frm, to = ("down", "up") if t.up else ("up", "down")
                    self.store.add_event(now, key[0], key[1], "health", frm, to, t.reason)
                    log.info("%s/%s: %s -> %s: %s", key[0], key[1], frm, to, t.reason)
                    self.notify("health", f"{key[0]}/{key[1]} is {to}: {t.reason}",
                                {"pool": key[0], "node": key[1], "from": frm, "to": to, "reason": t.reason})
        return transitions

    def adopt(self, records: dict[str, dict[RecordKey, RecordSet]], now: datetime) -> None:
        """First sight: a node with no stored state starts from what Route 53 shows."""
        fresh = []
        for pool in self.cfg.pools:
            recs = records.get(pool.name, {})
            for node in pool.nodes:
                key = (pool.name, node.id)
                if key in self.health:
                    continue
                weight = max((r.weight for r in recs.values() if r.set_identifier == node.id), default=0)
                self.health[key] = first_sight(weight > 0, now)
                fresh.append(key)
        if fresh:
            with self.store.transaction():
                for key in fresh:
                    self.store.put_health(key[0], key[1], self.health[key])

    # --- Route 53 -------------------------------------------------------------------------

    def zone_id(self, pool: Pool) -> str:
        if pool.zone not in self._zone_ids:
            assert self.route53 is not None
            self._zone_ids[pool.zone] = self.route53.zone_id(pool.zone)
        return self._zone_ids[pool.zone]

    def read(self, pools: Iterable[Pool]) -> dict[str, dict[RecordKey, RecordSet]]:
        """Current record sets per pool, one targeted read per zone."""
        assert self.route53 is not None
        by_zone: dict[str, list[Pool]] = defaultdict(list)
        for pool in pools:
            by_zone[self.zone_id(pool)].append(pool)
        out: dict[str, dict[RecordKey, RecordSet]] = {}
        for zone_id, zpools in by_zone.items():
            wanted = {(p.record, t) for p in zpools for t in p.record_types()}
            recs = self.route53.read(zone_id, sorted(wanted))
            for p in zpools:
                # record_types() walks every node's addresses: once per pool, not once per record.
                ids, types = {n.id for n in p.nodes}, set(p.record_types())
                out[p.name] = {
                    k: r for k, r in recs.items()
                    if r.name == p.record and r.type in types and r.set_identifier in ids
                }
        return out

    # --- planning -------------------------------------------------------------------------

    def facts(self, pool: Pool, recs: dict[RecordKey, RecordSet], drains: dict[NodeKey, tuple[str, datetime]]) -> list[NodeFacts]:
        out = []
        for node in pool.nodes:
            key = (pool.name, node.id)
            listed_on, listed_detail = self.reputation(pool, node)
            out.append(NodeFacts(
                node=node,
                health=self.health[key],
                records={t: recs.get((pool.record, t, node.id)) for t in node.addresses_by_type()},
                drained=drains[key][0] if key in drains else None,
                listed_on=listed_on,
                listed_detail=listed_detail,
                quarantine_n=pool.quarantine.listed_on_n,
            ))
        return out

    def plan(self, records: dict[str, dict[RecordKey, RecordSet]], now: datetime,
             create_missing: bool = False, pools: Iterable[Pool] | None = None) -> Plan:
        drains = self.store.drains()
        plan = Plan()
        for pool in pools or self.cfg.pools:
            plan.pools.append(plan_pool(pool, self.zone_id(pool), self.facts(pool, records[pool.name], drains),
                                        now, create_missing=create_missing))
        return plan

    def apply(self, plan: Plan, now: datetime, create_missing: bool = False) -> tuple[Plan, str | None, int, list[str]]:
        """Write the plan, one compare-and-swap batch per zone; on a conflict re-read, re-plan, retry."""
        from ..aws.route53 import ConflictError, Route53Error

        assert self.route53 is not None
        conflicts = 0
        change_ids: list[str] = []
        pools_by_zone: dict[str, list[Pool]] = defaultdict(list)
        for pool in self.cfg.pools:
            pools_by_zone[self.zone_id(pool)].append(pool)
        final: dict[str, PoolPlan] = {p.pool: p for p in plan.pools}
        error = None
        for zone_id, zpools in pools_by_zone.items():
            zplan = Plan(pools=[final[p.name] for p in zpools])
            for attempt in range(MAX_CONFLICT_RETRIES + 1):
                changes = zplan.changes
                if not changes:
                    break
                try:
                    cid = self.route53.apply(zone_id, [c.record_change for c in changes])
                except ConflictError as e:
                    conflicts += 1
                    log.warning("zone %s: batch refused, a record changed since it was read (%s); re-planning",
                                zone_id, e)
                    if attempt == MAX_CONFLICT_RETRIES:
                        error = f"zone {zone_id}: records kept changing under r53lb; gave up after {attempt + 1} tries: {e}"
                        break
                    zplan = self.plan(self.read(zpools), now, create_missing, pools=zpools)
                    for p in zplan.pools:
                        final[p.pool] = p
                    continue
                except Route53Error as e:
                    error = f"zone {zone_id}: {e}"
                    break
                if cid:
                    change_ids.append(cid)
                self.record_applied(changes, now)
                break
            if error:
                log.error("apply failed: %s", error)
                self.notify("apply_failed", f"apply failed: {error}", {"zone": zone_id, "error": error})
        new_plan = Plan(pools=[final[p.name] for p in self.cfg.pools], hold=plan.hold, applied=error is None)
        return new_plan, error, conflicts, change_ids

    def record_applied(self, changes: list[Change], now: datetime) -> None:
        """Each written weight goes into the history and gets one log line, with its reason."""
        with self.store.transaction():
            for c in changes:
                self.store.add_event(now, c.pool, c.node, "weight",
                                     None if c.from_weight is None else str(c.from_weight),
                                     str(c.to_weight), f"{c.type}: {c.reason}")
        for c in changes:
            log.info("%s/%s %s weight %s -> %s: %s", c.pool, c.node, c.type, c.from_weight, c.to_weight, c.reason)

    # --- the cycle ------------------------------------------------------------------------

    async def cycle(self, *, dry_run: bool = False, create_missing: bool = False, wait: bool = False,
                    confirm: bool = True) -> CycleResult:
        """One reconcile, as `r53lb sync` runs it from cron."""
        now = self.clock()
        nodes = [(p, n) for p in self.cfg.pools for n in p.nodes]
        records = self.read(self.cfg.pools)
        self.adopt(records, now)

        results = await self.probe(nodes, with_canaries=True)
        await self.probe_dnsbl(nodes, now)
        hold = self.vantage(results)
        if hold:
            log.error("hold: %s; nothing written", hold)
            with self.store.transaction():
                self.store.add_event(now, "-", "-", "hold", None, None, hold)
            self.notify("hold", f"hold: {hold}", {"reason": hold})
            plan = self.plan(records, now, create_missing)
            plan.hold = hold
            return CycleResult(plan=plan, results=results)

        all_results = list(results)
        transitions = self.fold(results, now)
        if confirm:
            transitions += await self.confirm(nodes, all_results)
        now = self.clock()
        plan = self.plan(records, now, create_missing)
        for alert in plan.alerts:
            log.warning("%s", alert)
            self.notify("alert", alert, {})
        for err in plan.errors:
            log.error("%s", err)
        result = CycleResult(plan=plan, results=all_results, transitions=transitions)
        if dry_run or not plan.changes:
            plan.applied = not plan.changes and not dry_run
            return result
        result.plan, result.apply_error, result.conflicts, change_ids = self.apply(plan, now, create_missing)
        if wait and change_ids and self.route53 is not None:
            result.insync_seconds = max(self.route53.wait_insync(cid) for cid in change_ids)
        return result

    def vantage(self, results: list[ProbeResult]) -> str | None:
        node_ok: dict[NodeKey, bool] = {}
        canaries_failed = []
        for r in results:
            if r.pool == "vantage":
                if not r.ok:
                    canaries_failed.append(f"{r.node} {r.check}: {r.detail}")
                continue
            if r.check in LIVENESS:
                node_ok[(r.pool, r.node)] = node_ok.get((r.pool, r.node), False) or r.ok
        return vantage_hold(node_ok, canaries_failed)

    async def confirm(self, nodes: list[tuple[Pool, Node]], all_results: list[ProbeResult]) -> list[tuple[NodeKey, Transition]]:
        """Re-probe nodes whose latest result disagrees with their state, at fastinter, until settled."""
        transitions = []
        rounds = 0
        limit = max(max(p.tuning.rise, p.tuning.fall) for p, _ in nodes) if nodes else 0
        while rounds < limit:
            pending = [(p, n) for p, n in nodes if self.health[(p.name, n.id)].pending]
            if not pending:
                break
            rounds += 1
            await self.sleep(min(p.tuning.fastinter for p, _ in pending))
            results = await self.probe(pending)
            all_results.extend(results)
            transitions += self.fold(results, self.clock())
        return transitions
