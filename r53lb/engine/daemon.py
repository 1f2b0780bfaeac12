"""`r53lb run`: the long-running controller.

APScheduler (asyncio) probes each node at its pool's `interval` (±10% jitter), at `fastinter`
while the node's latest result disagrees with its state, and folds every result into health
at once. A health change asks for a reconcile of the node's zone: one task per zone reads the
zone's record sets, plans and writes by compare-and-swap, so there is at most one write per
zone at a time and requests that arrive meanwhile are coalesced into the next pass. Route 53
and SNS calls (boto3, blocking) run in a thread; the event loop only probes and decides.

Signals: SIGTERM/SIGINT finish the write in flight and exit 0; SIGHUP reloads the config (an
invalid one is refused with a log line and the running config stays).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, ConfigError, Node, Pool, load
from .cycle import LIVENESS, MAX_CONFLICT_RETRIES, Controller, NodeKey, utcnow
from .metrics import Metrics, MetricsServer
from ..notify import Notifier
from ..probes.base import ProbeResult
from ..probes.runner import run_all

if TYPE_CHECKING:
    from ..core.planner import Change, Plan
    from ..core.records import RecordKey, RecordSet
    from ..aws.route53 import Route53
    from ..state.sqlite import StateStore

__all__ = ["Daemon", "run"]

log = logging.getLogger("r53lb.engine.daemon")

JITTER = 0.10  # ±10% on `interval`, so a fleet's probes do not fall into step
RESYNC_SECONDS = 30.0  # a zone is re-read this often anyway: drains, slow start, out-of-band edits
VANTAGE_SAMPLE = 3  # other healthy nodes re-probed before a node is taken down, to rule out our own network
STOP_GRACE = 90.0  # how long SIGTERM waits for a write in flight (Route 53 retries are bounded at 60 s)
APPLY_FAILED_RENOTIFY = 600.0  # while a zone keeps failing, remind at most this often
ZONE_FAILING_UNHEALTHY = 60.0  # /healthz turns 503 when a zone fails for max(this, 3 x shortest interval)


@dataclass
class _Zone:
    """Per hosted zone (by its name in the config): one reconcile task, requests coalesced."""

    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = False
    task: asyncio.Task[None] | None = None
    failing_since: float | None = None  # monotonic; the first failure of the current streak
    notified_at: float = 0.0
    error: str | None = None


class Daemon:
    """The long-running controller. `await Daemon(path).run()` returns the exit code."""

    def __init__(
        self,
        config_path: str | Path | None,
        *,
        metrics_addr: tuple[str, int] | None = ("127.0.0.1", 9464),
        route53_factory: Callable[..., "Route53"] | None = None,
        resync: float = RESYNC_SECONDS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config_path = config_path
        self.cfg: Config = load(config_path)  # a broken config fails here, before anything starts
        self.metrics_addr = metrics_addr
        self.route53_factory = route53_factory
        self.resync = resync
        self.clock = clock
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self.store: StateStore | None = None
        self.ctl: Controller | None = None
        self.notifier: Notifier | None = None
        self.scheduler: Any = None
        self.generation = 0
        self.latest: dict[NodeKey, list[ProbeResult]] = {}
        self.last_probe: dict[NodeKey, float] = {}  # monotonic time of each node's last completed probe
        self._probed: set[NodeKey] = set()  # probed at least once under the current config
        self._round_left: set[NodeKey] = set()
        self.zones: dict[str, _Zone] = {}
        self.holds: dict[str, str] = {}  # source ("canary", "sweep") -> reason
        self.panic: dict[str, bool] = {}
        self.fail_open: dict[str, bool] = {}
        self._errors_seen: dict[str, set[str]] = {}  # pool -> drift/missing-set errors of its last plan
        self._probe_tasks: set[asyncio.Task[Any]] = set()
        self._stop: asyncio.Event | None = None  # created on the loop in run()
        self._stopping = False
        self._reload_lock: asyncio.Lock | None = None
        self._started = time.monotonic()
        self._background: set[asyncio.Task[Any]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from ..state.sqlite import StateStore

        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self.request_stop, name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

        with contextlib.ExitStack() as stack:
            self.store = StateStore.open(self.cfg.state.resolved_path())
            stack.callback(self.store.close)
            if self.store.rebuilt:
                log.error("%s", self.store.rebuilt)
            # One reconciling process per state file: a `sync` from cron waits, then gives up.
            stack.enter_context(self.store.exclusive(wait=30.0))
            if self.metrics_addr is not None:
                self.metrics_server = MetricsServer(self.metrics, self.healthz, *self.metrics_addr).start()
                stack.callback(self.metrics_server.stop)
            self.notifier = Notifier(self.cfg.notify, self.cfg.aws, self.metrics).start()
            self.ctl = self._controller(self.cfg, self._route53(self.cfg))
            self._reset_progress(self.cfg)

            if not await self._adopt_until_ready(self.ctl, self.cfg):
                await self._shutdown()
                return 0
            self.scheduler = AsyncIOScheduler(
                timezone=timezone.utc,
                job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            )
            self.scheduler.start()
            self._schedule(self.cfg, first=True)
            nodes = sum(len(p.nodes) for p in self.cfg.pools)
            log.info("running: %d pool(s), %d node(s), %d zone(s)", len(self.cfg.pools), nodes,
                     len({p.zone for p in self.cfg.pools}))
            await self._stop.wait()
            await self._shutdown()
        log.info("stopped")
        return 0

    def request_stop(self, why: str = "stop") -> None:
        if self._stopping:
            log.info("%s: already stopping (finishing the write in flight)", why)
            return
        log.info("%s: stopping after the write in flight", why)
        self._stopping = True
        if self._stop is not None:
            self._stop.set()

    def request_reload(self) -> None:
        log.info("SIGHUP: reloading %s", self.config_path or "the config")
        self._spawn(self._reload())

    async def _shutdown(self) -> None:
        self._stopping = True
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.remove_all_jobs()
            self.scheduler.shutdown(wait=False)
        for t in list(self._probe_tasks):
            t.cancel()  # probes only read; nothing is lost
        inflight = [z.task for z in self.zones.values() if z.task is not None and not z.task.done()]
        if inflight:
            log.info("waiting for %d reconcile(s) in flight", len(inflight))
            done, pending = await asyncio.wait(inflight, timeout=STOP_GRACE)
            if pending:
                log.error("%d reconcile(s) still running after %gs; exiting anyway", len(pending), STOP_GRACE)
        await asyncio.gather(*self._probe_tasks, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.close(timeout=5.0)
        for t in list(self._background):
            t.cancel()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- wiring -------------------------------------------------------------------------

    def _route53(self, cfg: Config) -> "Route53":
        if self.route53_factory is not None:
            return self.route53_factory(cfg.aws, on_request=self.metrics.route53_request)
        from ..aws.route53 import Route53

        return Route53(cfg.aws, on_request=self.metrics.route53_request)

    def _controller(self, cfg: Config, r53: "Route53") -> Controller:
        assert self.store is not None

        def notify(kind: str, message: str, details: dict[str, Any]) -> None:
            if self.notifier is not None:
                self.notifier(kind, message, details)

        return Controller(cfg, self.store, r53, clock=self.clock, notify=notify)

    def _reset_progress(self, cfg: Config) -> None:
        now = time.monotonic()
        keys = {(p.name, n.id) for p in cfg.pools for n in p.nodes}
        # A node never probed counts from now: /healthz turns 503 only if it stays unprobed.
        self.last_probe = {k: self.last_probe.get(k, now) for k in keys}
        self.latest = {k: v for k, v in self.latest.items() if k in keys}
        self._probed = set()
        self._round_left = set(keys)
        for p in cfg.pools:
            self.zones.setdefault(p.zone, _Zone(p.zone))

    async def _adopt_until_ready(self, ctl: Controller, cfg: Config) -> bool:
        """First sight needs Route 53's weights: keep trying (backing off) until it answers or we stop."""
        delay = 1.0
        while not self._stopping:
            try:
                await self._adopt(ctl, cfg.pools)
                return True
            except Exception as e:
                log.error("cannot read Route 53 to start (retrying in %gs): %s", delay, e)
                with contextlib.suppress(asyncio.TimeoutError):
                    assert self._stop is not None
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 30.0)
        return False

    async def _adopt(self, ctl: Controller, pools: Any) -> None:
        records = await _in_thread(ctl.read, list(pools))
        ctl.adopt(records, self.clock())
        self._observe_records(records)
        for key, h in ctl.health.items():
            self.metrics.node_up.labels(*key).set(1 if h.up else 0)

    # --- scheduling -----------------------------------------------------------------------

    def _schedule(self, cfg: Config, first: bool) -> None:
        for pool in cfg.pools:
            for node in pool.nodes:
                # Spread the first round over one interval: no burst of a whole fleet at start.
                delay = random.uniform(0, min(pool.tuning.interval, 5.0)) if first else 0.0
                self._schedule_probe(pool, node, delay)
        for zone in {p.zone for p in cfg.pools}:
            self.scheduler.add_job(self._resync, "interval", seconds=self.resync, args=[zone],
                                   id=f"resync:{zone}", replace_existing=True,
                                   jitter=self.resync * JITTER)
        if cfg.vantage.canaries:
            every = min(p.tuning.interval for p in cfg.pools)
            self.scheduler.add_job(self._probe_canaries, "interval", seconds=every, id="canaries",
                                   replace_existing=True, next_run_time=datetime.now(timezone.utc))

    async def _resync(self, zone: str) -> None:
        # A coroutine on purpose: APScheduler runs a plain function in a worker thread, where
        # request_reconcile finds no running loop (and would touch the zone state off the loop).
        self.request_reconcile(zone)

    def _schedule_probe(self, pool: Pool, node: Node, delay: float) -> None:
        if self._stopping or self.scheduler is None:
            return
        self.scheduler.add_job(
            self._probe_node, "date", run_date=datetime.now(timezone.utc) + timedelta(seconds=delay),
            args=[pool.name, node.id, self.generation], id=f"probe:{pool.name}/{node.id}",
            replace_existing=True,
        )

    def _next_delay(self, pool: Pool, key: NodeKey) -> float:
        assert self.ctl is not None
        t = pool.tuning
        if self.ctl.health[key].pending:
            return t.fastinter  # confirm a change of result quickly (rise/fall)
        return t.interval * random.uniform(1 - JITTER, 1 + JITTER)

    # --- probing --------------------------------------------------------------------------

    async def _probe_node(self, pool_name: str, node_id: str, generation: int) -> None:
        if self._stopping or generation != self.generation:
            return
        task = asyncio.current_task()
        assert task is not None and self.ctl is not None
        self._probe_tasks.add(task)
        ctl, cfg = self.ctl, self.cfg
        pool = cfg.pool(pool_name)
        node = pool.node(node_id) if pool else None
        if pool is None or node is None:
            return
        key = (pool_name, node_id)
        try:
            results = await ctl.probe([(pool, node)])
            for r in results:
                self.metrics.observe_probe(r)
            if generation != self.generation or self._stopping:
                return  # a reload replaced this node's schedule while it was being probed
            await self._decide(pool, node, key, results)
            await self._dnsbl(pool, node)
            self._progress(key, pool)
        except asyncio.CancelledError:
            raise
        except Exception:  # one node's bad luck never stops the others
            log.exception("%s/%s: probe job failed", pool_name, node_id)
        finally:
            self._probe_tasks.discard(task)
            if generation == self.generation and not self._stopping:
                self._schedule_probe(pool, node, self._next_delay(pool, key))

    async def _decide(self, pool: Pool, node: Node, key: NodeKey, results: list[ProbeResult]) -> None:
        assert self.ctl is not None
        ctl = self.ctl
        ok = all(r.ok for r in results if r.check in LIVENESS)
        self.latest[key] = results
        if ok:
            if "sweep" in self.holds:  # something answers: our own network works again
                self._clear_hold("sweep", f"{key[0]}/{key[1]} answers")
        else:
            h = ctl.health[key]
            if h.up and h.failures + 1 >= pool.tuning.fall:
                # This result would take the node down: first make sure it is not our own network.
                hold = self.holds.get("canary") or self.holds.get("sweep")
                if hold is None:
                    hold = await self._vantage_sweep(key, results)
                    if hold:
                        self._set_hold("sweep", hold)
                if hold:
                    log.info("%s/%s: failure not counted during the hold: %s", key[0], key[1],
                                "; ".join(r.detail for r in results if not r.ok))
                    return
        transitions = ctl.fold(results, self.clock())
        self.metrics.node_up.labels(*key).set(1 if ctl.health[key].up else 0)
        if transitions:
            self.request_reconcile(pool.zone)

    async def _vantage_sweep(self, key: NodeKey, results: list[ProbeResult]) -> str | None:
        """Re-probe a few other healthy nodes (and the canaries): if all fail too, suspect ourselves."""
        assert self.ctl is not None
        ctl = self.ctl
        others = [
            (p, n) for p in self.cfg.pools for n in p.nodes
            if (p.name, n.id) != key and ctl.health.get((p.name, n.id)) is not None
            and ctl.health[(p.name, n.id)].up
        ]
        sample = random.sample(others, min(VANTAGE_SAMPLE, len(others)))
        if not sample and not self.cfg.vantage.canaries:
            return None
        fresh = await ctl.probe(sample, with_canaries=True)
        by_node: dict[NodeKey, list[ProbeResult]] = {}
        for r in fresh:
            self.metrics.observe_probe(r)
            if r.pool != "vantage":
                by_node.setdefault((r.pool, r.node), []).append(r)
        self.latest.update(by_node)
        return ctl.vantage(list(results) + fresh)

    async def _probe_canaries(self) -> None:
        if self._stopping or self.ctl is None:
            return
        results = await run_all(self.ctl.canary_jobs(), concurrency=self.cfg.defaults.concurrency)
        for r in results:
            self.metrics.observe_probe(r)
        hold = self.ctl.vantage(results)
        if hold:
            self._set_hold("canary", hold)
        elif "canary" in self.holds:
            self._clear_hold("canary", "every vantage canary answers again")

    async def _dnsbl(self, pool: Pool, node: Node) -> None:
        """Blocklist checks run at their own interval; a changed verdict asks for a reconcile."""
        assert self.ctl is not None
        if not any(c.kind == "dnsbl" for c in pool.checks_for(node)):
            return
        before = self.ctl.reputation(pool, node)[0]
        await self.ctl.probe_dnsbl([(pool, node)], self.clock())
        if self.ctl.reputation(pool, node)[0] != before:
            self.request_reconcile(pool.zone)

    def _progress(self, key: NodeKey, pool: Pool) -> None:
        self.last_probe[key] = time.monotonic()
        first = key not in self._probed
        self._probed.add(key)
        self._round_left.discard(key)
        if not self._round_left:
            self.metrics.last_round.set(time.time())
            self._round_left = set(self.last_probe)
        if first and self._zone_ready(pool.zone):
            self.request_reconcile(pool.zone)  # the first full look at a zone: bring it in line

    def _zone_ready(self, zone: str) -> bool:
        return all((p.name, n.id) in self._probed for p in self.cfg.pools if p.zone == zone for n in p.nodes)

    # --- holds ----------------------------------------------------------------------------

    def _set_hold(self, source: str, reason: str) -> None:
        was = bool(self.holds)
        self.holds[source] = reason
        if not was:
            self.metrics.hold.set(1)
            log.error("hold: %s; nothing is written until it clears", reason)
            if self.store is not None:
                with self.store.transaction():
                    self.store.add_event(self.clock(), "-", "-", "hold", None, "hold", reason)
            self._notify("hold", f"hold: {reason}; nothing is written", {"reason": reason})

    def _clear_hold(self, source: str, why: str) -> None:
        if self.holds.pop(source, None) is None or self.holds:
            return
        self.metrics.hold.set(0)
        log.info("hold cleared: %s", why)
        if self.store is not None:
            with self.store.transaction():
                self.store.add_event(self.clock(), "-", "-", "hold", "hold", None, f"cleared: {why}")
        self._notify("recovery", f"hold cleared: {why}", {"reason": why})
        for zone in {p.zone for p in self.cfg.pools}:
            self.request_reconcile(zone)

    # --- reconciling ----------------------------------------------------------------------

    def request_reconcile(self, zone: str) -> None:
        """Ask for a pass over the zone; coalesced with any pass already running or queued."""
        if self._stopping:
            return
        z = self.zones.setdefault(zone, _Zone(zone))
        z.dirty = True
        if z.task is None or z.task.done():
            z.task = asyncio.get_running_loop().create_task(self._reconcile_loop(z), name=f"reconcile:{zone}")

    async def _reconcile_loop(self, z: _Zone) -> None:
        async with z.lock:  # at most one write per zone at a time
            while z.dirty and not self._stopping:
                z.dirty = False
                try:
                    await self._reconcile(z)
                except Exception as e:
                    log.exception("zone %s: reconcile failed", z.name)
                    self._zone_failed(z, f"{type(e).__name__}: {e}")

    async def _reconcile(self, z: _Zone) -> None:
        from ..aws.route53 import ConflictError, Route53Error

        ctl, cfg = self.ctl, self.cfg
        assert ctl is not None and ctl.route53 is not None
        pools = [p for p in cfg.pools if p.zone == z.name]
        if not pools or not self._zone_ready(z.name):
            return
        if self.holds:
            log.info("zone %s: hold in effect (%s); nothing written", z.name, "; ".join(self.holds.values()))
            return
        started = time.monotonic()
        try:
            records = await _in_thread(ctl.read, pools)
        except Route53Error as e:
            self._zone_failed(z, str(e))
            return
        self._observe_records(records)
        now = self.clock()
        plan = ctl.plan(records, now, pools=pools)
        self._observe_plan(plan)
        zone_id = ctl.zone_id(pools[0])
        error = None
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            changes = plan.changes
            if not changes or self.holds:
                break
            try:
                await _in_thread(ctl.route53.apply, zone_id, [c.record_change for c in changes])
            except ConflictError as e:
                log.warning("zone %s: batch refused, a record changed since it was read (%s); re-planning",
                            z.name, e)
                if attempt == MAX_CONFLICT_RETRIES:
                    error = f"records kept changing under r53lb; gave up after {attempt + 1} tries: {e}"
                    break
                try:
                    records = await _in_thread(ctl.read, pools)
                except Route53Error as e2:
                    error = str(e2)
                    break
                self._observe_records(records)
                now = self.clock()
                plan = ctl.plan(records, now, pools=pools)
                self._observe_plan(plan)
                continue
            except Route53Error as e:
                error = str(e)
                break
            self._record_applied(changes, now)
            break
        self.metrics.reconcile_duration.labels(z.name).observe(time.monotonic() - started)
        if error:
            self._zone_failed(z, error)
        elif z.failing_since is not None:
            took = time.monotonic() - z.failing_since
            z.failing_since, z.error = None, None
            log.info("zone %s: Route 53 writes work again (after %.0fs of failures)", z.name, took)
            self._notify("recovery", f"zone {z.name}: Route 53 reconcile works again after {took:.0f}s",
                         {"zone": z.name})

    def _record_applied(self, changes: list["Change"], now: datetime) -> None:
        assert self.ctl is not None
        self.ctl.record_applied(changes, now)
        for c in changes:
            self.metrics.node_weight.labels(c.pool, c.node).set(c.to_weight)

    def _zone_failed(self, z: _Zone, error: str) -> None:
        self.metrics.reconcile_errors.labels(z.name).inc()
        now = time.monotonic()
        log.error("zone %s: reconcile failed: %s", z.name, error)
        first = z.failing_since is None
        if first:
            z.failing_since = now
        z.error = error
        if first or now - z.notified_at >= APPLY_FAILED_RENOTIFY:
            z.notified_at = now
            lasting = "" if first else f" (failing for {now - z.failing_since:.0f}s)"
            self._notify("apply_failed", f"zone {z.name}: apply failed{lasting}: {error}",
                         {"zone": z.name, "error": error})
        # Try again soon, not only at the next resync (bounded by Route 53 retries inside).
        loop = asyncio.get_running_loop()
        loop.call_later(min(self.resync, 5.0), self.request_reconcile, z.name)

    def _observe_records(self, records: dict[str, dict["RecordKey", "RecordSet"]]) -> None:
        for pool_name, recs in records.items():
            by_node: dict[str, int] = {}
            for r in recs.values():
                by_node[r.set_identifier] = max(by_node.get(r.set_identifier, 0), r.weight)
            for node_id, w in by_node.items():
                self.metrics.node_weight.labels(pool_name, node_id).set(w)

    def _observe_plan(self, plan: "Plan") -> None:
        from ..core.weights import warmup_share

        assert self.ctl is not None
        now = self.clock()
        for pp in plan.pools:
            pool = self.ctl.cfg.pool(pp.pool)
            for node_id, d in pp.decisions.items():
                self.metrics.node_desired_weight.labels(pp.pool, node_id).set(d.weight)
                node = pool.node(node_id) if pool is not None else None
                if node is not None:
                    listed_on, _ = self.ctl.reputation(pool, node)
                    self.metrics.node_listed.labels(pp.pool, node_id).set(len(listed_on))
                    self.metrics.node_warmup_share.labels(pp.pool, node_id).set(warmup_share(node.warmup, now))
            self.metrics.pool_panic.labels(pp.pool).set(1 if pp.panic else 0)
            alerts = "; ".join(pp.alerts)
            if pp.panic != self.panic.get(pp.pool, False):
                self.panic[pp.pool] = pp.panic
                if pp.panic:
                    log.error("%s", alerts)
                    self._notify("panic", alerts, {"pool": pp.pool})
                else:
                    log.info("pool %s: out of panic", pp.pool)
                    self._notify("recovery", f"pool {pp.pool}: out of panic", {"pool": pp.pool})
            if pp.fail_open != self.fail_open.get(pp.pool, False):
                self.fail_open[pp.pool] = pp.fail_open
                if pp.fail_open:
                    log.error("%s", alerts)
                    self._notify("alert", alerts, {"pool": pp.pool})
                else:
                    log.info("pool %s: healthy nodes again, no longer failing open", pp.pool)
                    self._notify("recovery", f"pool {pp.pool}: healthy nodes again, no longer failing open",
                                 {"pool": pp.pool})
            # Drift, missing sets: when one appears, not every pass; one fixed and back again is new.
            seen = self._errors_seen.get(pp.pool, set())
            for err in pp.errors:
                if err not in seen:
                    log.error("%s", err)
                    self._notify("alert", err, {"pool": pp.pool})
            for err in seen.difference(pp.errors):
                log.info("cleared: %s", err)
            self._errors_seen[pp.pool] = set(pp.errors)

    def _notify(self, kind: str, message: str, details: dict[str, Any]) -> None:
        if self.notifier is not None:
            self.notifier(kind, message, details)

    # --- reload ---------------------------------------------------------------------------

    async def _reload(self) -> None:
        assert self._reload_lock is not None and self.ctl is not None
        async with self._reload_lock:
            try:
                new = load(self.config_path)
            except ConfigError as e:
                self.metrics.config_reloads.labels("refused").inc()
                log.error("config reload refused, the running config stays: %s", e)
                return
            old = self.cfg
            if new.state.resolved_path() != old.state.resolved_path():
                self.metrics.config_reloads.labels("refused").inc()
                log.error("config reload refused, the running config stays: state.path changed "
                          "(%s -> %s); restart r53lb to move the state", old.state.resolved_path(),
                          new.state.resolved_path())
                return
            if new == old:
                log.info("config unchanged")
                self.metrics.config_reloads.labels("unchanged").inc()
                return
            r53 = self.ctl.route53 if new.aws == old.aws else self._route53(new)
            assert r53 is not None
            ctl = self._controller(new, r53)
            try:
                await self._adopt(ctl, new.pools)  # new nodes start from what Route 53 shows
            except Exception as e:
                self.metrics.config_reloads.labels("refused").inc()
                log.error("config reload refused, the running config stays: cannot read Route 53: %s", e)
                return
            if self._stopping:
                return
            if new.notify != old.notify:
                old_notifier, self.notifier = self.notifier, Notifier(new.notify, new.aws, self.metrics).start()
                if old_notifier is not None:
                    self._spawn(old_notifier.close(timeout=30.0))
            self.generation += 1
            self.cfg, self.ctl = new, ctl
            if self.scheduler is not None:
                self.scheduler.remove_all_jobs()
            self._reset_progress(new)
            keep = {(p.name, n.id) for p in new.pools for n in p.nodes}
            self.metrics.forget_nodes(keep, {p.name for p in new.pools})
            for per_pool in (self.panic, self.fail_open, self._errors_seen):
                for name in [n for n in per_pool if new.pool(n) is None]:
                    per_pool.pop(name)
            self._schedule(new, first=True)
            self.metrics.config_reloads.labels("ok").inc()
            log.info("config reloaded: %d pool(s), %d node(s)", len(new.pools), len(keep))

    # --- health of the controller itself ----------------------------------------------------

    def healthz(self) -> tuple[bool, str]:
        """Making progress: every node probed within ~3 of its intervals, no zone failing for long."""
        if self._stopping:
            return False, "stopping"
        cfg, last = self.cfg, self.last_probe
        now = time.monotonic()
        worst: tuple[float, str] | None = None
        for pool in cfg.pools:
            limit = 3 * pool.tuning.interval + pool.tuning.timeout
            for node in pool.nodes:
                seen = last.get((pool.name, node.id))
                if seen is None:
                    continue
                late = now - seen - limit
                if late > 0 and (worst is None or late > worst[0]):
                    worst = (late, f"{pool.name}/{node.id} not probed for {now - seen:.0f}s (limit {limit:g}s)")
        if worst is not None:
            return False, worst[1]
        shortest = min(p.tuning.interval for p in cfg.pools)
        for z in list(self.zones.values()):
            if z.failing_since is not None and now - z.failing_since > max(ZONE_FAILING_UNHEALTHY, 3 * shortest):
                return False, f"zone {z.name}: reconcile failing for {now - z.failing_since:.0f}s: {z.error}"
        held = "; hold: " + "; ".join(self.holds.values()) if self.holds else ""
        nodes = len(last)
        return True, f"{nodes} node(s) probed on time{held}"


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking boto3 calls run beside the loop, never on it."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def run(config_path: str | Path | None, metrics_addr: tuple[str, int] | None) -> int:
    """Entry point for the CLI: build the daemon (a broken config raises ConfigError) and run it."""
    daemon = Daemon(config_path, metrics_addr=metrics_addr)
    return asyncio.run(daemon.run())
