"""The one reconcile engine: probe -> health -> plan -> compare-and-swap write -> history and alerts.

`r53lb sync` runs `Controller.cycle()` once; `r53lb run` (engine/daemon.py) probes each node
on its own schedule and calls the same `Controller.reconcile_zone()` per zone, in a thread.
Both record the same history events, log the same lines and raise alerts through the same
pure watcher (core/watcher.py), so a rule that holds for one holds for the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from ..config import CHECK_KINDS, Config, Node, Pool, default_helo
from ..core.fence import FENCE_TTL, Fence, FenceError, aged, carry, fence_name, first, fit, young
from ..core.health import NodeHealth, Transition, first_sight, observe
from ..core.planner import Change, NodeFacts, Plan, held_after_state_loss, plan_pool, vantage_hold
from ..core.records import RecordKey, RecordSet
from ..core.reputation import CLEAN, Reputation, reputations
from ..core.signals import NodeSignals
from ..core.weights import WarmupClock
from ..core.watcher import Alert, AlertKind, WatchState, step, step_hold
from ..probes.base import ProbeResult, Target
from ..probes.runner import Job, run_all
from ..state.base import STATE_LOST, StateError
from . import mtasts, sending, signals, tlsrpt
from .dane import Dane
from .checkstate import DUE_SLACK, Cached

if TYPE_CHECKING:
    from ..aws.route53 import Route53, TimeLeft
    from ..state.base import Store

__all__ = ["CHECK_KINDS", "DUE_SLACK", "LIVENESS", "Controller", "CycleResult", "FenceSeen", "ZoneOutcome", "utcnow"]

log = logging.getLogger("r53lb")
_LOG_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}  # not allowed in `extra`

NodeKey = tuple[str, str]  # (pool, node)
Notify = Callable[[str, str, dict[str, Any]], None]  # (kind, message, details)
Guard = Callable[[], "str | None"]  # a reason not to write now (a hold, a lost lease), or None
LIVENESS = ("smtp", "http", "tcp")
MAX_CONFLICT_RETRIES = 3
WATCH_KEY = "watcher"


def load_watch_state(store: "Store") -> WatchState:
    """What the alert watcher has already told, as the state store keeps it (sync, status)."""
    raw = store.get_meta(WATCH_KEY)
    try:
        return WatchState.from_json(json.loads(raw) if raw else None)
    except ValueError:
        return WatchState()  # an unreadable watcher state only costs a repeated alert


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class FenceSeen:
    """A zone's fence as this controller last read or wrote it."""

    name: str  # _r53lb.example.com
    raw: dict[str, Any] | None  # the TXT set exactly as Route 53 holds it (None: the zone has no fence yet)
    fence: Fence | None
    error: str | None  # the set holds something this r53lb cannot read: no write until it is fixed
    seen_at: float  # this controller's monotonic clock when it first read (or wrote) this version

    def same_version(self, raw: dict[str, Any] | None, fence: Fence | None) -> bool:
        """`raw` (parsed: `fence`) is this version, however Route 53 spells it (its token is unique)."""
        if self.fence is not None and fence is not None:
            return self.fence.token == fence.token
        return self.fence is None and fence is None and self.raw == raw

    def to_json(self) -> dict[str, Any]:
        """As the fence says it (drain ages as its writer measured them when it wrote): the same for every reader."""
        f = self.fence
        return {"name": self.name, "epoch": f.epoch if f else None, "seq": f.seq if f else None,
                "replica": f.replica if f else None, "error": self.error,
                "drains": {p: [a / 1000 for a in ages] for p, ages in f.drains.items()} if f else {}}


@dataclass(repr=False)  # asyncio reprs a finished task's result on the way out: keep that cheap
class ZoneOutcome:
    """What one reconcile of one hosted zone did."""

    zone: str
    plan: Plan
    records: dict[str, dict[RecordKey, RecordSet]] = field(default_factory=dict)  # pool -> its sets as last read
    applied: list[Change] = field(default_factory=list)
    error: str | None = None  # one line: the zone could not be read or written
    error_class: str | None = None  # the error's class alone (for /healthz: no account ids, no ARNs)
    conflicts: int = 0
    change_ids: list[str] = field(default_factory=list)
    held: str | None = None  # the write was not made: a hold or a lost lease came up
    superseded: int | None = None  # the fence holds this epoch, above the writer's: a newer leader writes

    def __repr__(self) -> str:
        return f"ZoneOutcome({self.zone!r}, {len(self.applied)} applied, error={self.error!r})"


@dataclass(repr=False)  # asyncio.run reprs the main task's result (10,000 results): keep that cheap
class CycleResult:
    plan: Plan
    results: list[ProbeResult] = field(default_factory=list)
    transitions: list[tuple[NodeKey, Transition]] = field(default_factory=list)
    zones: list[ZoneOutcome] = field(default_factory=list)
    insync_seconds: float | None = None

    def __repr__(self) -> str:
        return f"CycleResult({len(self.results)} results, {len(self.plan.changes)} changes, hold={self.plan.hold!r})"

    @property
    def apply_error(self) -> str | None:
        errors = [z.error for z in self.zones if z.error]
        return "; ".join(errors) if errors else None

    @property
    def conflicts(self) -> int:
        return sum(z.conflicts for z in self.zones)

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
        d["zone_errors"] = {z.zone: z.error for z in self.zones if z.error}
        d["conflicts"] = self.conflicts
        if self.insync_seconds is not None:
            d["insync_seconds"] = round(self.insync_seconds, 3)
        return d


def health_reason(results: list[ProbeResult]) -> str:
    """The reason one node's liveness results give its health: the failures, else what passed."""
    failed = [r for r in results if not r.ok]
    if failed:
        return "; ".join(f"{r.check}: {r.detail}" for r in failed)
    return "; ".join(f"{r.check} ok" for r in results)


class Controller:
    """The shell around the pure core, shared by `sync` and `run`."""

    def __init__(
        self,
        cfg: Config,
        store: "Store | None",
        route53: "Route53 | None",
        *,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        notify: Notify | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.cfg = cfg
        self.store = store
        self.route53 = route53
        self.clock = clock
        self.sleep = sleep
        self.notify = notify or (lambda kind, msg, details: None)
        self.monotonic = monotonic  # drain ages in the fence: immune to steps of the wall clock
        self.replica = cfg.cluster.replica if cfg.cluster is not None else (socket.gethostname() or "r53lb")
        self.helo = cfg.defaults.helo or default_helo()
        self.health: dict[NodeKey, NodeHealth] = store.health() if store is not None else {}
        self._saved: dict[NodeKey, NodeHealth] = dict(self.health)  # as last written (the snapshot writes the rest)
        self.watch_state = self._load_watch_state()
        # Each zone's fence as last read or written (by zone id): in `run` the drain budget of a
        # pool's interval comes from the drains it lists, whoever wrote them.
        self.fences: dict[str, FenceSeen] = {}
        self._zone_ids: dict[str, str] = {}
        # Each node's signals as the last refresh left them (run mode's metrics read these).
        self.last_signals: dict[NodeKey, NodeSignals] = {}
        # A cluster: the writer's quorum say on signals that take a node out (engine/cluster.py's
        # out_view), and whether this engine records signal changes (the lease holder only).
        self.signal_quorum: dict[NodeKey, str | None] | None = None
        self.records: Callable[[], bool] | None = None
        self.dane = Dane()  # TLSA sets read from the zones, each node's DANE verdict

    # --- probing --------------------------------------------------------------------------

    def target(self, pool: Pool, node: Node) -> Target:
        return Target(pool.name, node.id, node.target, tuple(node.address), pool.tuning.helo or self.helo)

    def jobs(self, pool: Pool, node: Node, kinds: Iterable[str] = LIVENESS) -> list[Job]:
        t = self.target(pool, node)
        return [Job(t, c, pool.tuning.timeout) for c in pool.checks_for(node) if c.kind in kinds]

    def canary_jobs(self) -> list[Job]:
        """Targets outside the fleet; their results never reach a node's health."""
        out = []
        for i, canary in enumerate(self.cfg.vantage.canaries):
            t = Target("", f"canary-{i}", canary.address, (canary.address,), self.helo)
            out.extend(Job(t, c, self.cfg.defaults.timeout) for c in canary.checks)
        return out

    async def probe(self, nodes: list[tuple[Pool, Node]]) -> list[ProbeResult]:
        jobs = [j for pool, node in nodes for j in self.jobs(pool, node)]
        return await run_all(jobs, concurrency=self.cfg.defaults.concurrency)

    async def probe_canaries(self) -> list[ProbeResult]:
        return await run_all(self.canary_jobs(), concurrency=self.cfg.defaults.concurrency)

    # --- signals: dnsbl, agent, prometheus (engine/signals.py) -----------------------------

    def verdicts(self, cached: Cached | None = None) -> dict[NodeKey, Reputation]:
        """Every node's reputation, read once (not once per node)."""
        assert self.store is not None
        return reputations(signals.cached(self) if cached is None else cached)

    def warmup_clocks(self, cached: Cached | None = None) -> dict[NodeKey, WarmupClock]:
        assert self.store is not None
        cached = signals.cached(self) if cached is None else cached
        clocks = ((p.name, n.id, signals.warmup_clock(p, n, cached)) for p in self.cfg.pools for n in p.nodes)
        return {(p, n): c for p, n, c in clocks if c is not None}

    def checks_cached(self) -> Cached:
        """The signal checks' state, read from the store once and kept in memory (engine/signals.py)."""
        return signals.cached(self)

    def keep_check(self, pool: str, node: str, slot: str, now: datetime, result: dict[str, Any]) -> None:
        """One check's new state: into memory, and into the store when it changed (engine/signals.py)."""
        signals.keep(self, (pool, node, slot), now, result)

    async def refresh_verdicts(self, nodes: list[tuple[Pool, Node]], now: datetime, force: bool = False) -> bool:
        """Run the signal checks that are due; True when something that steers a weight changed."""
        changed = await signals.refresh(self, nodes, now, force)
        changed = await mtasts.refresh(self, nodes, now, force) or changed
        changed = await sending.refresh(self, nodes, now, force) or changed
        return await tlsrpt.refresh(self, nodes, now, force) or changed

    # --- health ---------------------------------------------------------------------------

    def fold(self, results: list[ProbeResult], now: datetime, persist_all: bool = True) -> list[tuple[NodeKey, Transition]]:
        """Fold one round of liveness results into health; return the transitions.

        Transitions are persisted (with a history event) at once. `persist_all` also writes
        every folded node's counters: `sync` does, `run` leaves that to a periodic snapshot.
        """
        results = self.dane.judge(self, results, now)  # a DANE mismatch is a failed smtp result
        by_node: dict[NodeKey, list[ProbeResult]] = defaultdict(list)
        for r in results:
            if r.check in LIVENESS and r.pool:
                by_node[(r.pool, r.node)].append(r)
        transitions = []
        for key, rs in by_node.items():
            pool = self.cfg.pool(key[0])
            if pool is None or key not in self.health:
                continue  # not adopted yet (its zone could not be read): no state to fold into
            failed = [r for r in rs if not r.ok]
            h, t = observe(self.health[key], not failed, health_reason(rs), now, pool.tuning.rise, pool.tuning.fall)
            self.health[key] = h
            if t:
                transitions.append((key, t))
        write = [k for k in (by_node if persist_all else [k for k, _ in transitions])
                 if k in self.health and self._saved.get(k) is not self.health[k]]
        unstored: StateError | None = None
        if self.store is not None and (transitions or write):
            try:
                with self.store.transaction():
                    for key, t in transitions:
                        frm, to = ("down", "up") if t.up else ("up", "down")
                        self.store.add_event(now, key[0], key[1], "health", frm, to, t.reason)
                    for key in write:
                        self.store.put_health(key[0], key[1], self.health[key])
                self._saved.update((k, self.health[k]) for k in write)
            except StateError as e:  # raised after the changes are told: a failing store must not silence them
                unstored = e
        for key, t in transitions:
            frm, to = ("down", "up") if t.up else ("up", "down")
            log.info("%s/%s: %s -> %s: %s", key[0], key[1], frm, to, t.reason,
                     extra={"event": "health", "pool": key[0], "node": key[1], "from": frm, "to": to,
                            "reason": t.reason})
            self.notify("health", f"{key[0]}/{key[1]} is {to}: {t.reason}",
                        {"pool": key[0], "node": key[1], "from": frm, "to": to, "reason": t.reason})
        if unstored is not None:
            raise unstored
        return transitions

    def save_health(self) -> None:
        """A snapshot of every node's counters (run mode writes this periodically, not per probe)."""
        if self.store is None:
            return
        changed = {k: h for k, h in list(self.health.items()) if self._saved.get(k) is not h}
        if not changed:
            return
        with self.store.transaction():
            for key, h in changed.items():
                self.store.put_health(key[0], key[1], h)
        self._saved.update(changed)

    def adopt(self, records: dict[str, dict[RecordKey, RecordSet]], now: datetime) -> None:
        """First sight: a node with no stored state starts from what Route 53 shows.

        After the state store was rebuilt, a node found at weight 0 is held there (drained: state was
        lost) until `r53lb enable`: the lost store may have held its drain.
        """
        lost = self.store.state_lost() if self.store is not None else None
        fresh: list[NodeKey] = []
        kept: list[NodeKey] = []  # held at 0 because the state was lost
        for pool in self.cfg.pools:
            if pool.name not in records:
                continue  # its zone could not be read: adopt it once it can
            held: dict[str, int] = {}
            for r in records[pool.name].values():
                held[r.set_identifier] = max(held.get(r.set_identifier, 0), r.weight)
            keep = held_after_state_loss(pool, held, now) if lost else []
            for node in pool.nodes:
                key = (pool.name, node.id)
                if key in self.health:
                    continue
                self.health[key] = first_sight(held.get(node.id, 0) > 0, now)
                fresh.append(key)
                if node.id in keep:
                    kept.append(key)
        if (fresh or lost) and self.store is not None:
            with self.store.transaction():
                for key in fresh:
                    self.store.put_health(key[0], key[1], self.health[key])
                for key in kept:
                    self.store.drain(key[0], key[1], STATE_LOST, now)
                if lost and all((p.name, n.id) in self.health for p in self.cfg.pools for n in p.nodes):
                    self.store.clear_state_lost()  # every configured node has been seen once since
            self._saved.update((k, self.health[k]) for k in fresh)
        for pool_name, node_id in kept:
            msg = (f"{pool_name}/{node_id}: found at weight 0 after the state file was lost; held at 0 "
                   f"({STATE_LOST}); run `r53lb enable {pool_name}/{node_id}` when it should carry traffic")
            log.error("%s", msg)
            self.notify("alert", msg, {"pool": pool_name, "node": node_id, "reason": STATE_LOST})

    # --- Route 53 -------------------------------------------------------------------------

    def zone_id(self, pool: Pool) -> str:
        if pool.zone not in self._zone_ids:
            assert self.route53 is not None
            self._zone_ids[pool.zone] = self.route53.zone_id(pool.zone)
        return self._zone_ids[pool.zone]

    def zones(self) -> dict[str, list[Pool]]:
        """The config's pools by hosted zone (as the config names it), in config order."""
        out: dict[str, list[Pool]] = defaultdict(list)
        for pool in self.cfg.pools:
            out[pool.zone].append(pool)
        return dict(out)

    def read(self, pools: Iterable[Pool], time_left: "TimeLeft | None" = None) -> dict[str, dict[RecordKey, RecordSet]]:
        """Current record sets per pool, one targeted read per zone (an error raises); the zones' fences too."""
        assert self.route53 is not None
        by_zone: dict[str, list[Pool]] = defaultdict(list)
        for pool in pools:
            by_zone[self.zone_id(pool)].append(pool)
        out: dict[str, dict[RecordKey, RecordSet]] = {}
        for zone_id, zpools in by_zone.items():
            wanted = {(p.record, t) for p in zpools for t in p.record_types()}
            name = fence_name(self.route53.zone_name(zone_id))
            recs, raw = self.route53.read_fenced(zone_id, sorted(wanted), name, time_left=time_left)
            self._saw_fence(zone_id, name, raw)
            for p in zpools:
                # record_types() walks every node's addresses: once per pool, not once per record.
                ids, types = {n.id for n in p.nodes}, set(p.record_types())
                out[p.name] = {
                    k: r for k, r in recs.items()
                    if r.name == p.record and r.type in types and r.set_identifier in ids
                }
        return out

    def _saw_fence(self, zone_id: str, name: str, raw: dict[str, Any] | None) -> FenceSeen:
        """Keep the fence just read; a version seen before keeps the time it was first seen."""
        fence, error = None, None
        if raw is not None:
            try:
                fence = Fence.parse(rr.get("Value", "") for rr in raw.get("ResourceRecords") or ())
            except FenceError as e:
                error = (f"the fence {name} (TXT) holds a value this r53lb cannot read ({e}); not written: "
                         f"delete that record set if nothing else owns it, r53lb creates a new one")
        before = self.fences.get(zone_id)
        same = before is not None and before.same_version(raw, fence)
        # The same version keeps when it was first seen (its drains' ages), and takes the set as
        # Route 53 spells it now (the next DELETE must match it exactly).
        seen = FenceSeen(name, raw, fence, error, before.seen_at if same and before is not None else self.monotonic())
        self.fences[zone_id] = seen
        return seen

    def read_zones(self) -> tuple[dict[str, dict[RecordKey, RecordSet]], dict[str, tuple[str, str]]]:
        """Every zone's record sets; a zone that cannot be read is an error for it alone.

        Returns (records per pool, {zone: (error, error class)}).
        """
        from ..aws.route53 import Route53Error

        records: dict[str, dict[RecordKey, RecordSet]] = {}
        failed: dict[str, tuple[str, str]] = {}
        for zone, pools in self.zones().items():
            try:
                records.update(self.read(pools))
            except Route53Error as e:
                failed[zone] = (str(e), e.code)
                # The command reports it (sync, plan: its exit line); debug keeps it for -v.
                log.debug("zone %s: cannot read Route 53: %s", zone, e,
                          extra={"event": "zone_unreadable", "zone": zone, "error_class": e.code})
        return records, failed

    # --- planning -------------------------------------------------------------------------

    def facts(self, pool: Pool, recs: dict[RecordKey, RecordSet], drains: dict[NodeKey, tuple[str, datetime]],
              verdicts: dict[NodeKey, Reputation], health: dict[NodeKey, NodeHealth] | None = None,
              cached: Cached | None = None) -> list[NodeFacts]:
        health = self.health if health is None else health
        cached = {} if cached is None else cached
        out = []
        for node in pool.nodes:
            key = (pool.name, node.id)
            out.append(NodeFacts(
                node=node,
                health=health[key],
                records={t: recs.get((pool.record, t, node.id)) for t in node.addresses_by_type()},
                drained=drains[key][0] if key in drains else None,
                reputation=verdicts.get(key, CLEAN),
                quarantine_n=pool.quarantine.listed_on_n,
                signals=signals.quorum_signals(signals.node_signals(pool, node, cached), False if self.signal_quorum is None
                                               else self.signal_quorum.get(key, False)),
                warmup_clock=signals.warmup_clock(pool, node, cached),
            ))
        return out

    def drain_budget(self, pool: Pool, now: datetime, interval_cycles: bool) -> int:
        """How many nodes of the pool may still be newly drained in the cycle that `now` is in.

        `sync`: every reconcile is a cycle of its own. `run` (`interval_cycles`): a cycle is
        one `interval` of the pool, however many reconciles happen inside it, and the drains
        spent in it are those the zone's fence lists as younger than that (whoever wrote them:
        a restart or a new leader starts from the same budget; a wall-clock step changes nothing).
        """
        if not interval_cycles:
            return pool.max_drain()
        seen = self.fences.get(self.zone_id(pool))
        if seen is None:
            return pool.max_drain()
        ages = aged(seen.fence, self.monotonic() - seen.seen_at).get(fit(pool.name), [])
        return max(0, pool.max_drain() - young(ages, pool.tuning.interval))

    def plan(self, records: dict[str, dict[RecordKey, RecordSet]], now: datetime,
             create_missing: bool = False, pools: Iterable[Pool] | None = None,
             interval_cycles: bool = False, health: dict[NodeKey, NodeHealth] | None = None) -> Plan:
        assert self.store is not None
        drains = self.store.drains()
        cached = signals.cached(self)
        verdicts = self.verdicts(cached)
        health = self.health if health is None else health
        plan = Plan()
        for pool in pools or self.cfg.pools:
            if pool.name not in records or any((pool.name, n.id) not in health for n in pool.nodes):
                continue  # its zone could not be read
            plan.pools.append(plan_pool(
                pool, self.zone_id(pool), self.facts(pool, records[pool.name], drains, verdicts, health, cached), now,
                create_missing=create_missing, drain_budget=self.drain_budget(pool, now, interval_cycles),
            ))
        return plan

    # --- the per-zone reconcile (sync and run) -------------------------------------------

    def reconcile_zone(
        self,
        zone: str,
        *,
        create_missing: bool = False,
        dry_run: bool = False,
        interval_cycles: bool = False,
        guard: Guard | None = None,
        health: dict[NodeKey, NodeHealth] | None = None,
        records: dict[str, dict[RecordKey, RecordSet]] | None = None,
        comment: str = "r53lb",
        epoch: int = 0,
        replica: str | None = None,
        time_left: "TimeLeft | None" = None,
    ) -> ZoneOutcome:
        """Read -> plan -> fenced compare-and-swap write -> bounded re-read/re-plan -> history. Blocking.

        `guard` is asked right before each write; a reason it returns stops the write (a
        vantage hold that came up meanwhile, a lost lease). Every batch carries the zone's
        fence with `epoch` (the writer's lease epoch; 0 without a cluster) and `replica`; a
        fence with a higher epoch stops the write (`superseded`). `time_left` bounds every
        Route 53 call and its retries (a leader's lease time left).
        """
        from ..aws.route53 import ConflictError, FenceWrite, Progress, Route53Error, fence_set

        assert self.route53 is not None
        pools = self.zones().get(zone, [])
        empty = ZoneOutcome(zone, Plan())
        if not pools:
            return empty
        replica = replica or self.replica
        try:
            zone_id = self.zone_id(pools[0])
            if records is None or any(p.name not in records for p in pools) or zone_id not in self.fences:
                records = self.read(pools, time_left)  # the fence must come from the read the plan is made from
        except Route53Error as e:
            return ZoneOutcome(zone, Plan(), error=str(e), error_class=e.code)
        seen = self.fences[zone_id]
        now = self.clock()
        self.adopt(records, now)
        plan = self.plan(records, now, create_missing, pools=pools, interval_cycles=interval_cycles, health=health)
        out = ZoneOutcome(zone, plan, records=records)
        if dry_run:
            return out
        windows = {p.name: p.tuning.interval for p in pools}
        caps = {p.name: p.max_drain() for p in pools}
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            changes = plan.changes
            if not changes:
                break
            stop = _fence_stops(seen, epoch)
            if stop:
                out.error, out.error_class = stop
                if seen.fence is not None and seen.fence.epoch > epoch:
                    out.superseded = seen.fence.epoch
                log.error("zone %s: %s", zone, out.error)
                break
            held = guard() if guard is not None else None
            if held:
                out.held = held
                log.info("zone %s: not written: %s", zone, held)
                break
            written_at = self.monotonic()
            drains = carry(aged(seen.fence, written_at - seen.seen_at),
                           {pp.pool: len(pp.newly_drained) for pp in plan.pools}, windows, caps)
            tokens: list[str] = []
            versions: list[Fence] = []

            def version(k: int, seen: FenceSeen = seen, drains: dict[str, list[int]] = drains) -> dict[str, Any]:
                while len(versions) <= k:
                    tokens.append(secrets.token_hex(4))
                    prev = versions[-1] if versions else seen.fence
                    versions.append(first(epoch, replica, tokens[-1], drains) if prev is None
                                    else prev.next(epoch, replica, tokens[-1], drains))
                return fence_set(seen.name, versions[k].values(), FENCE_TTL)

            progress = Progress()
            try:
                last_id = self.route53.apply(zone_id, [c.record_change for c in changes], comment=comment,
                                             fence=FenceWrite(seen.raw, version), time_left=time_left,
                                             progress=progress)
                if last_id:
                    out.change_ids.append(last_id)
            except ConflictError as e:
                try:
                    fresh = self.read(pools, time_left)
                except Route53Error as e2:
                    self._applied(out, changes, progress, len(progress.change_ids), now)
                    out.error, out.error_class = str(e2), e2.code
                    break
                now_seen = self.fences[zone_id]
                ours = [k for k, v in enumerate(versions) if now_seen.fence is not None and v.token == now_seen.fence.token]
                done = max(len(progress.change_ids), ours[0] + 1 if ours else 0)
                self._applied(out, changes, progress, done, now)
                if done == len(progress.batches):
                    # The write went through and its answer was lost; the retry was refused. The
                    # fence holds exactly the version this batch created: nobody wrote since.
                    log.info("zone %s: Route 53 already holds the planned weights (a lost answer)", zone)
                    break
                moved = not seen.same_version(now_seen.raw, now_seen.fence)
                if not moved and not _changed_since(changes, fresh):
                    out.error, out.error_class = str(e), "InvalidChangeBatch"
                    break  # refused for another reason than a concurrent change: Route 53 says why
                out.conflicts += 1
                log.warning("zone %s: batch refused, %s since it was read (%s); re-planning", zone,
                            f"another writer ({now_seen.fence.label}) wrote the zone" if moved and now_seen.fence
                            else "a record changed", e)
                if attempt == MAX_CONFLICT_RETRIES:
                    out.error = f"records kept changing under r53lb; gave up after {attempt + 1} tries: {e}"
                    out.error_class = "Conflict"
                    break
                records = out.records = fresh
                seen = now_seen
                now = self.clock()
                plan = out.plan = self.plan(records, now, create_missing, pools=pools, interval_cycles=interval_cycles, health=health)
                continue
            except Route53Error as e:
                self._applied(out, changes, progress, len(progress.change_ids), now)
                out.error, out.error_class = str(e), e.code
                break
            self._applied(out, changes, progress, len(progress.batches), now)
            if versions:
                # Our own version: its drains are aged from now, after Route 53 took it (a lower bound).
                self.fences[zone_id] = FenceSeen(seen.name, version(len(progress.batches) - 1), versions[-1], None,
                                                 self.monotonic())
            break
        out.plan.applied = out.error is None and out.held is None
        return out

    def _applied(self, out: ZoneOutcome, changes: list[Change], progress: Any, batches: int, now: datetime) -> None:
        """The changes of the first `batches` batches went through: into the outcome and the history."""
        done = {i for b in progress.batches[:batches] for i in b}
        applied = [c for i, c in enumerate(changes) if i in done]
        if applied:
            out.applied = out.applied + applied
            self.record_applied(applied, now)

    def record_applied(self, changes: list[Change], now: datetime) -> None:
        """Each written weight goes into the history and gets one log line, with its reason."""
        if self.store is not None:
            with self.store.transaction():
                for c in changes:
                    self.store.add_event(now, c.pool, c.node, "weight",
                                         None if c.from_weight is None else str(c.from_weight),
                                         str(c.to_weight), f"{c.type}: {c.reason}")
        for c in changes:
            frm = "(none)" if c.from_weight is None else c.from_weight  # a record set created
            log.info("%s/%s %s weight %s -> %s: %s", c.pool, c.node, c.type, frm, c.to_weight, c.reason,
                     extra={"event": "weight", "pool": c.pool, "node": c.node, "type": c.type, "zone": c.zone,
                            "from_weight": c.from_weight, "to_weight": c.to_weight, "reason": c.reason})

    # --- alerts ---------------------------------------------------------------------------

    def _load_watch_state(self) -> WatchState:
        return WatchState() if self.store is None else load_watch_state(self.store)

    def watch(self, now: datetime, *, plan: Plan | None = None, zone: str | None = None,
              error: str | None = None, hold: str | None | bool = False, cleared: str = "") -> list[Alert]:
        """Step the watcher; tell what changed (log, notification, history for holds); keep its state."""
        state, alerts = self.watch_state, []
        if hold is not False:
            state, alerts = step_hold(state, hold or None, cleared)  # type: ignore[arg-type]
        if plan is not None or zone is not None:
            state, more = step(state, now, plan=plan, zone=zone, error=error)
            alerts += more
        changed = state != self.watch_state
        self.watch_state = state
        if self.store is not None and (changed or alerts):
            with self.store.transaction():
                for a in alerts:
                    if a.kind is AlertKind.HOLD:
                        self.store.add_event(now, "-", "-", "hold", None, "hold", a.details.get("reason", ""))
                    elif a.kind is AlertKind.HOLD_CLEARED:
                        self.store.add_event(now, "-", "-", "hold", "hold", None, f"cleared: {a.details.get('reason', '')}")
                self.store.put_meta(WATCH_KEY, json.dumps(state.to_json()))
        for a in alerts:
            fields = {k: v for k, v in a.details.items() if k not in _LOG_RESERVED}
            (log.error if a.kind.severe else log.info)("%s", a.message, extra={"event": a.kind.value, **fields})
            self.notify(a.kind.notify_kind, a.message, dict(a.details))
        return alerts

    # --- the cycle (sync) -----------------------------------------------------------------

    async def cycle(self, *, dry_run: bool = False, create_missing: bool = False, wait: bool = False,
                    confirm: bool = True) -> CycleResult:
        """One reconcile of every zone, as `r53lb sync` runs it from cron."""
        now = self.clock()
        # Route 53 is read while the fleet is probed: the probes do not need the weights, and
        # the read's wait (Route 53's latency, its throttling) hides behind the probing.
        reading = asyncio.ensure_future(asyncio.to_thread(self.read_zones))
        try:
            nodes = [(p, n) for p in self.cfg.pools for n in p.nodes]
            results = await self.probe(nodes)
            canaries = await self.probe_canaries()
        finally:
            records, failed = await reading
        self.adopt(records, now)  # first sight needs the weights: before any result is folded
        nodes = [(p, n) for p, n in nodes if (p.name, n.id) in self.health]
        await self.refresh_verdicts(nodes, now)
        hold = self.vantage(results, canaries)
        if hold:
            log.error("hold: %s; nothing written", hold, extra={"event": "hold", "reason": hold})
            plan = self.plan(records, now, create_missing)
            plan.hold = hold
            if not dry_run:
                self.watch(now, hold=hold)
            return CycleResult(plan=plan, results=results + canaries)
        if not dry_run and self.watch_state.hold:
            self.watch(now, hold=None, cleared="every node and canary answers again")

        await self.dane.refresh(self, self.cfg.pools)
        all_results = list(results)
        transitions = self.fold(results, now)
        if confirm:
            transitions += await self.confirm(nodes, all_results)
        result = CycleResult(plan=Plan(), results=all_results + canaries, transitions=transitions)
        for zone in self.zones():
            if zone in failed:
                error, code = failed[zone]
                result.zones.append(ZoneOutcome(zone, Plan(), error=error, error_class=code))
                if not dry_run:
                    self.watch(self.clock(), zone=zone, error=error)
                continue
            # The zone was read before probing: a change since makes the compare-and-swap refuse and re-plan.
            out = await asyncio.to_thread(self.reconcile_zone, zone, create_missing=create_missing,
                                          dry_run=dry_run, records=records)
            result.zones.append(out)
            result.plan.pools.extend(out.plan.pools)
            for err in out.plan.errors:
                log.error("%s", err, extra={"event": "plan_error", "zone": zone})
            if not dry_run:
                self.watch(self.clock(), plan=out.plan, zone=zone, error=out.error)
            elif out.plan.alerts:
                for a in out.plan.alerts:
                    log.warning("%s", a)
        order = {p.name: i for i, p in enumerate(self.cfg.pools)}
        result.plan.pools.sort(key=lambda pp: order.get(pp.pool, 0))
        result.plan.applied = not dry_run and all(z.error is None for z in result.zones)
        change_ids = [cid for z in result.zones for cid in z.change_ids]
        if wait and change_ids and self.route53 is not None:
            result.insync_seconds = max(self.route53.wait_insync(cid) for cid in change_ids)
        return result

    def vantage(self, results: list[ProbeResult], canaries: list[ProbeResult] = ()) -> str | None:  # type: ignore[assignment]
        node_ok: dict[NodeKey, bool] = {}
        for r in results:
            if r.check in LIVENESS and r.pool:
                node_ok[(r.pool, r.node)] = node_ok.get((r.pool, r.node), False) or r.ok
        canaries_failed = [f"{r.node} {r.check}: {r.detail}" for r in canaries if not r.ok]
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


def _fence_stops(seen: FenceSeen, epoch: int) -> tuple[str, str] | None:
    """(reason, error class) when this writer must not write the zone: an unreadable fence, a newer epoch."""
    if seen.error:
        return seen.error, "FenceUnreadable"
    f = seen.fence
    if f is not None and f.epoch > epoch:
        reason = (f"not written: the fence {seen.name} was written with epoch {f.epoch} (replica {f.replica}), "
                  f"above this writer's {epoch}: a newer leader writes this zone")
        if epoch == 0:
            reason += f" (if no cluster writes it any more, delete the TXT record {seen.name}; r53lb creates a new one)"
        return reason, "Superseded"
    return None


def _changed_since(changes: list[Change], records: dict[str, dict[RecordKey, RecordSet]]) -> bool:
    """Some record set the batch touches is no longer exactly what the batch expected."""
    for c in changes:
        rec = records.get(c.pool, {}).get((c.record, c.type, c.set_identifier))
        expected = c.record_change.current
        if expected is None:
            if rec is not None:
                return True  # a set to create appeared meanwhile
            continue
        if rec is None or rec.weight != expected.weight or rec.values != expected.values or rec.ttl != expected.ttl:
            return True
    return False
