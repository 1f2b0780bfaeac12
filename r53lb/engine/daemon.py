"""`r53lb run`: the long-running controller around the one engine (engine/cycle.py).

The daemon keeps only scheduling, signals, reload and /healthz; every decision is the
engine's (health, plan, write) or the watcher's (alerts).

- Probing: one asyncio task per node, a loop that probes, folds the result and sleeps out
  `interval` (±10% jitter, counted from the probe's start) or `fastinter` while a change
  of result is being confirmed. A
  loop cannot end while its node is configured: a probe is bounded by its deadline, an
  exception is logged and the loop goes on, a reload replaces the loops. (Chains of
  APScheduler one-shot jobs, the first design, ended for good when a job fell due while
  the previous one still ran.)
- Periodic jobs (APScheduler): a resync of each zone, the health snapshot, the canaries,
  the re-check of a vantage hold.
- Writing: a health change asks for a reconcile of the node's zone; one task per zone runs
  `Controller.reconcile_zone` in a thread (boto3 blocks), requests that arrive meanwhile
  are coalesced into the next pass. In `run` a cycle of `max_drain_per_cycle` is one
  `interval` of the pool.

Signals: SIGTERM/SIGINT finish the write in flight and exit 0; SIGHUP reloads the config (an
invalid one is refused with a log line and the running config stays; one that arrives during
start-up is held until the daemon runs).

Cluster: the heartbeat and the lease run on a thread of their own (never behind Route 53
retries or probes in asyncio's default pool); on the way out the heartbeat ends, and a beat in
flight is waited for, before the lease is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import eventloop
from ..config import Config, ConfigError, Node, Pool, load
from ..core.health import steady
from ..core.planner import Change, Plan
from ..core.records import RecordKey, RecordSet
from ..core.weights import warmup_share
from ..notify import Notifier
from ..probes.base import ProbeResult
from ..probes.runner import Job, run_one
from . import sdnotify, signals
from .cluster import Cluster, Heartbeat, open_cluster
from .cycle import DUE_SLACK, LIVENESS, Controller, NodeKey, ZoneOutcome, health_reason, utcnow
from .metrics import Metrics, MetricsServer
from ..state.base import StateError

if TYPE_CHECKING:
    from ..aws.route53 import Route53
    from ..probes.workers import ProbeWorkers
    from ..state.sqlite import StateStore

__all__ = ["Daemon", "run"]

log = logging.getLogger("r53lb.daemon")

JITTER = 0.10  # ±10% on `interval`, so a fleet's probes do not fall into step
RESYNC_SECONDS = 30.0  # a zone is re-read this often anyway: drains, slow start, out-of-band edits
SNAPSHOT_SECONDS = 10.0  # health counters are written this often (transitions at once)
VANTAGE_SAMPLE = 20  # other nodes that are up, re-probed before a node is taken down, to rule out our own network
STOP_GRACE = 90.0  # how long SIGTERM waits for a write in flight (Route 53 retries are bounded at 60 s)
ZONE_FAILING_UNHEALTHY = 60.0  # /healthz turns 503 when a zone fails for max(this, 3 x shortest interval)
RETRY_FAILED_ZONE = 5.0  # a zone whose reconcile failed is tried again this soon
# Test-only (never documented for production): this replica's probes of the listed node ids fail,
# as if its network were cut from them. The cluster tests make one replica blind with it.
TEST_BLIND_ENV = "R53LB_TEST_BLIND_NODES"
TEST_SKEW_ENV = "R53LB_TEST_CLOCK_SKEW"  # test-only: seconds added to this process's wall clock


@dataclass
class _Zone:
    """Per hosted zone (by its name in the config): one reconcile task, requests coalesced."""

    name: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = False
    task: asyncio.Task[None] | None = None
    ready: bool = False  # adopted: Route 53 was read once, every node has a state
    failing_since: float | None = None  # monotonic; the first failure of the current streak
    read_at: float | None = None  # monotonic; a follower's last read of the zone
    error_class: str | None = None


@dataclass
class _Hold:
    """A vantage hold and what must answer again for it to end."""

    source: str  # "sweep" | "canary"
    reason: str
    sample: tuple[NodeKey, ...] = ()  # the nodes whose failure started it


@dataclass(frozen=True)
class _NodePlan:
    """What every probe of one node needs besides the probe, worked out once per node loop."""

    key: NodeKey
    jobs: list[Job]
    signals_every: float | None  # the shortest interval of its signal checks; None: it has none
    dane: bool  # its pool has `dane` (its TLSA sets are refreshed after its probes)


def _scheduled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A job of the scheduler: the scheduler cancels the ones still running when `run` stops,
    and would log that cancel as an error with its traceback. On the way out it is a stop."""
    @functools.wraps(fn)
    async def job(self: Daemon, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except asyncio.CancelledError:
            if self._stopping:
                return None
            raise
    return job


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
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.allowed_hosts = tuple(allowed_hosts)  # besides the config's status_page.hosts
        self.cfg: Config = load(config_path)  # a broken config fails here, before anything starts
        self.metrics_addr = metrics_addr
        self.route53_factory = route53_factory
        self.resync = resync
        self.clock = clock
        self.metrics = Metrics(cluster=self.cfg.cluster is not None)  # a reload never changes `cluster`
        self.metrics_server: MetricsServer | None = None
        self.store: StateStore | None = None
        self.notifier: Notifier | None = None
        self.scheduler: Any = None
        self.generation = 0
        self.latest: dict[NodeKey, list[ProbeResult]] = {}
        self.records: dict[str, dict[RecordKey, RecordSet]] = {}  # pool -> its sets as last read or written
        self.last_probe: dict[NodeKey, float] = {}  # monotonic time of each node's last completed probe
        self.zones: dict[str, _Zone] = {}
        self.holds: dict[str, _Hold] = {}
        self._ctl: Controller | None = None
        self._node_tasks: dict[NodeKey, asyncio.Task[None]] = {}
        self._probed: set[NodeKey] = set()
        self._round_left: set[NodeKey] = set()
        self._signals_due: dict[NodeKey, float] = {}
        self._sem: asyncio.Semaphore | None = None
        self._stop: asyncio.Event | None = None  # created on the loop in run()
        self._stopping = False
        self._reload_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.cluster: Cluster | None = None  # with `cluster:`: the lease and the quorum view
        self._beat_now: asyncio.Event | None = None
        # The lease and heartbeat run on threads of their own: never queued behind Route 53
        # retries or probe work in asyncio's default pool (which every zone's reconcile uses).
        self._lease_pool: ThreadPoolExecutor | None = None  # beats, takes, the release
        self._table_pool: ThreadPoolExecutor | None = None  # the writer's view and events after a quorum decision
        self.heartbeat: Heartbeat | None = None  # a cluster's heartbeat loop (engine/cluster.py)
        self._blind = frozenset(n for n in os.environ.get(TEST_BLIND_ENV, "").split(",") if n)
        self.probers: ProbeWorkers | None = None  # worker processes, when the fleet needs more than one core
        self._shard: dict[NodeKey, int] = {}  # node -> the process probing it (0: this one)

    @property
    def ctl(self) -> Controller:
        if self._ctl is None:
            raise RuntimeError("the daemon is not running")
        return self._ctl

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        from ..state.sqlite import StateStore

        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(self.cfg.defaults.concurrency)
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self.request_stop, name)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

        with contextlib.ExitStack() as stack:
            if self.cfg.cluster is not None:
                self.cluster = open_cluster(self.cfg, self.metrics)
                self.store = self.cluster.store  # type: ignore[assignment]
                self._lease_pool = ThreadPoolExecutor(1, thread_name_prefix="r53lb-lease")
                self._table_pool = ThreadPoolExecutor(1, thread_name_prefix="r53lb-table")
                self.heartbeat = Heartbeat(self.cluster, self, self._voting, self._lease_pool, self._table_pool)
                stack.callback(self._lease_pool.shutdown, wait=False, cancel_futures=True)
                stack.callback(self._table_pool.shutdown, wait=False, cancel_futures=True)
            else:
                self.store = StateStore.open(self.cfg.state.resolved_path())
            stack.callback(self.store.close)
            if self.store.rebuilt:
                log.error("%s", self.store.rebuilt)
            # One reconciling process per state file: a `sync` from cron waits, then gives up.
            # (In a cluster the lease decides who writes, checked before every write.)
            if self.cluster is None:
                stack.enter_context(self.store.exclusive(wait=30.0))
            if self.metrics_addr is not None:
                from .web import daemon_document

                self.metrics_server = MetricsServer(
                    self.metrics, self.healthz, *self.metrics_addr, status=lambda: daemon_document(self),
                    allowed_hosts=(*self.cfg.status_page.hosts, *self.allowed_hosts)).start()
                stack.callback(self.metrics_server.stop)
            self.notifier = Notifier(self.cfg.notify, self.cfg.aws, self.metrics).start()
            self._ctl = self._controller(self.cfg, self._route53(self.cfg))
            self._reset_progress(self.cfg)
            self.scheduler = AsyncIOScheduler(
                timezone=timezone.utc,
                job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            )
            self.scheduler.start()
            await self._adopt_zones(self.ctl)
            await self._start_probers(self.cfg)
            self._schedule(self.cfg)
            if self.heartbeat is not None:
                self._beat_now = self.heartbeat.start(self._spawn)
            nodes = sum(len(p.nodes) for p in self.cfg.pools)
            log.info("running: %d pool(s), %d node(s), %d zone(s)", len(self.cfg.pools), nodes, len(self.zones))
            # `r53lb run` holds SIGHUP from its start (cli.py) until now: a reload asked during
            # start-up is done now instead of killing the process (SIGHUP's default).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            sdnotify.notify(f"READY=1\nSTATUS=probing {nodes} node(s)")
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
        sdnotify.notify("STOPPING=1")
        self._stopping = True
        if self.cluster is not None:
            self.cluster.closed = True  # a replica on its way out renews a lease it holds, takes none
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.remove_all_jobs()
            self.scheduler.shutdown(wait=False)
        tasks = list(self._node_tasks.values())
        for t in tasks:
            t.cancel()  # probes only read; nothing is lost
        inflight = [z.task for z in self.zones.values() if z.task is not None and not z.task.done()]
        if inflight:
            log.info("waiting for %d reconcile(s) in flight", len(inflight))
            done, pending = await asyncio.wait(inflight, timeout=STOP_GRACE)
            if pending:
                log.error("%d reconcile(s) still running after %gs; exiting anyway", len(pending), STOP_GRACE)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.probers is not None:
            await self.probers.close()
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                self._ctl.save_health()
        if self.cluster is not None:
            if self.heartbeat is not None:
                await self.heartbeat.stop(STOP_GRACE)
            # No write can follow now, and no beat is in flight that could take the released lease back.
            await asyncio.get_running_loop().run_in_executor(self._lease_pool, self.cluster.release, self.clock())
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

        ctl = Controller(cfg, self.store, r53, clock=self.clock, notify=notify)
        if self.cluster is not None:  # the writer records signal changes and plans with the quorum's say
            ctl.records, ctl.signal_quorum = self.cluster.is_leader, self.cluster.out_view
        return ctl

    def _reset_progress(self, cfg: Config) -> None:
        now = time.monotonic()
        keys = {(p.name, n.id) for p in cfg.pools for n in p.nodes}
        # A node never probed counts from now: /healthz turns 503 only if it stays unprobed.
        self.last_probe = {k: self.last_probe.get(k, now) for k in keys}
        self.latest = {k: v for k, v in self.latest.items() if k in keys}
        self._probed = set()
        self._round_left = set(keys)
        self._signals_due = {}  # intervals may have changed: the engine knows from the stored times
        zones = {p.zone for p in cfg.pools}
        self.zones = {z: self.zones.get(z) or _Zone(z) for z in zones}

    async def _adopt_zones(self, ctl: Controller) -> None:
        """First sight needs Route 53's weights: each zone is adopted on its own; one that cannot
        be read is retried (backing off) while the others run."""
        for name, z in self.zones.items():
            if not z.ready:
                ok = await self._adopt_zone(ctl, name)
                if not ok:
                    self._spawn(self._adopt_later(ctl, name))

    async def _adopt_zone(self, ctl: Controller, zone: str) -> bool:
        from ..aws.route53 import Route53Error

        pools = ctl.zones().get(zone, [])
        try:
            records = await asyncio.to_thread(ctl.read, pools)
        except Route53Error as e:
            self._zone_failed(self.zones[zone], str(e), e.code)
            return False
        ctl.adopt(records, self.clock())
        self._observe_records(records)
        for pool in pools:
            for node in pool.nodes:
                h = ctl.health.get((pool.name, node.id))
                if h is not None:
                    self.metrics.node_up.labels(pool.name, node.id).set(1 if h.up else 0)
        z = self.zones[zone]
        z.ready = True
        if z.failing_since is not None:
            self._zone_ok(z)
        return True

    async def _adopt_later(self, ctl: Controller, zone: str) -> None:
        delay = 1.0
        while not self._stopping and ctl is self._ctl:
            await asyncio.sleep(delay)
            if await self._adopt_zone(ctl, zone):
                log.info("zone %s: Route 53 answers; its nodes are adopted", zone)
                return
            delay = min(delay * 2, 30.0)

    # --- scheduling -----------------------------------------------------------------------

    async def _start_probers(self, cfg: Config) -> None:
        """Worker processes when `defaults.probe_workers` (or `auto` for this fleet) asks for more than one."""
        from ..probes.workers import ProbeWorkers, processes_for

        rate = sum(len(p.nodes) / p.tuning.interval for p in cfg.pools)
        want = processes_for(cfg.defaults.probe_workers, rate)
        old = self.probers
        if old is not None and old.processes == want:
            old.reset()  # the old jobs are gone; the workers stay
        else:
            if old is not None:
                await old.close()
            self.probers = None
            if want > 1:
                self.probers = await ProbeWorkers(want, on_restart=self.metrics.probe_worker_restarts.inc).start()
        self.metrics.probe_processes.set(want)
        self._shard = {}
        if self.probers is not None:
            keys = [(p.name, n.id) for p in cfg.pools for n in p.nodes]
            self._shard = {k: self.probers.shard_of(i) for i, k in enumerate(keys)}
            log.info("probing on %d processes: this one and worker(s) %s (%.0f probes/s asked)", want,
                     ", ".join(f"pid {pid}" for pid in self.probers.pids), rate)

    def _schedule(self, cfg: Config) -> None:
        gen = self.generation
        for pool in cfg.pools:
            for node in pool.nodes:
                # Spread the first round over one interval: no burst of a whole fleet at start.
                delay = random.uniform(0, min(pool.tuning.interval, 5.0))
                self._node_tasks[(pool.name, node.id)] = asyncio.get_running_loop().create_task(
                    self._node_loop(pool, node, gen, delay), name=f"probe:{pool.name}/{node.id}")
        for zone in self.zones:
            self.scheduler.add_job(self._resync, "interval", seconds=self.resync, args=[zone],
                                   id=f"resync:{zone}", replace_existing=True, jitter=self.resync * JITTER)
        self.scheduler.add_job(self._snapshot, "interval", seconds=SNAPSHOT_SECONDS, id="snapshot",
                               replace_existing=True)
        every = min(p.tuning.interval for p in cfg.pools)
        if cfg.vantage.canaries:
            self.scheduler.add_job(self._probe_canaries, "interval", seconds=every, id="canaries",
                                   replace_existing=True, next_run_time=datetime.now(timezone.utc))
        self.scheduler.add_job(self._recheck_hold, "interval", seconds=every, id="hold-recheck",
                               replace_existing=True)
        watchdog = sdnotify.watchdog_interval()
        if watchdog:
            # systemd restarts a controller that stops feeding it: fed only while probes run on time.
            self.scheduler.add_job(self._watchdog, "interval", seconds=watchdog / 2, id="watchdog",
                                   replace_existing=True, next_run_time=datetime.now(timezone.utc))

    @_scheduled
    async def _watchdog(self) -> None:
        late = self._late_node()
        if late is None:
            sdnotify.notify("WATCHDOG=1")
        else:
            log.error("watchdog not fed: %s", late)

    @_scheduled
    async def _resync(self, zone: str) -> None:
        # A coroutine on purpose: APScheduler runs a plain function in a worker thread.
        self.request_reconcile(zone)

    @_scheduled
    async def _snapshot(self) -> None:
        if self._ctl is not None and not self._stopping:
            try:
                await asyncio.to_thread(self._ctl.save_health)
            except Exception as e:
                log.error("health snapshot not written: %s", e)

    def _next_delay(self, pool: Pool, key: NodeKey) -> float:
        h = self.ctl.health.get(key)
        if h is not None and h.pending:
            return pool.tuning.fastinter  # confirm a change of result quickly (rise/fall)
        return pool.tuning.interval * random.uniform(1 - JITTER, 1 + JITTER)

    async def _node_loop(self, pool: Pool, node: Node, generation: int, delay: float) -> None:
        """Probe one node for as long as it is configured: nothing but a reload or a stop ends this."""
        key = (pool.name, node.id)
        jobs = self.ctl.jobs(pool, node)
        # What a probe of this node needs besides the probe, worked out once per config, not per probe.
        plan = _NodePlan(key, jobs, self._signals_every(pool, node), self.ctl.dane.refresh_of(pool) is not None)
        # No deadline of its own here: every await below is a probe (or a vantage re-probe, a
        # signal check) run by probes.runner.run_one under its check's deadline plus a backstop.
        loop = asyncio.get_running_loop()
        while not self._stopping and generation == self.generation:
            await asyncio.sleep(delay)
            # `interval` runs from one probe's start to the next: the probe's own time (and the
            # wait for the server's close) is taken off the sleep, so the schedule is kept.
            started = loop.time()
            delay = pool.tuning.interval
            try:
                await self._probe_node(pool, node, plan, generation)
                delay = self._next_delay(pool, key)
            except asyncio.CancelledError:
                raise
            except StateError as e:  # one line: the state file's trouble (full, unwritable) is no code fault
                self._store_error(f"{key[0]}/{key[1]}", e)
                self._progress(key, pool)  # the node was probed: /healthz and the watchdog tell probing
            except Exception:  # one node's bad luck never stops its own probing, nor the others'
                log.exception("%s/%s: probe failed", *key)
            delay = max(delay * 0.1, delay - (loop.time() - started))  # never back to back

    # --- probing --------------------------------------------------------------------------

    async def _probe_node(self, pool: Pool, node: Node, plan: _NodePlan, generation: int) -> None:
        assert self._sem is not None
        key, jobs = plan.key, plan.jobs
        async with self._sem:
            if node.id in self._blind:
                results = [ProbeResult(pool.name, node.id, j.check.kind, "fail", 0.0,
                                       f"{TEST_BLIND_ENV}: this replica is blind to the node (test only)")
                           for j in jobs]
            elif len(jobs) == 1:
                results = [await self._run_job(jobs[0], key)]
            else:
                results = list(await asyncio.gather(*(self._run_job(j, key) for j in jobs)))
        for r in results:
            self.metrics.observe_probe(r)
        if generation != self.generation or self._stopping:
            return  # a reload replaced this node's loop while it was being probed
        if self.zones[pool.zone].ready:
            if plan.dane:
                await self.ctl.dane.refresh(self.ctl, [pool])  # at most one small read per `refresh`
            await self._decide(pool, key, results)
        if plan.signals_every is not None:
            await self._signals(pool, node, key, plan.signals_every)
        self._progress(key, pool)

    def _run_job(self, job: Job, key: NodeKey) -> Any:
        """The probe, here or in the worker process owning the node's shard."""
        if self.probers is None:
            return run_one(job)
        return self.probers.run(job, self._shard.get(key, 0))

    async def _decide(self, pool: Pool, key: NodeKey, results: list[ProbeResult]) -> None:
        ctl = self.ctl
        ok = all(r.ok for r in results if r.check in LIVENESS)
        self.latest[key] = results
        h = ctl.health.get(key)
        if h is None:
            return
        if ok and len(results) == 1 and not results[0].tls_chain:
            # The usual probe of a healthy node: when folding it would change nothing, skip the fold.
            if results[0].check in LIVENESS and steady(h, True, health_reason(results), pool.tuning.rise,
                                                        pool.tuning.fall):
                self.metrics.set_node_up(key, True)
                return
        if not ok and h.up and h.failures + 1 >= pool.tuning.fall:
            # This result would take the node down: first make sure it is not our own network.
            if not self.holds:
                hold = await self._vantage_sweep(key, results)
                if hold is not None:
                    self._set_hold(hold)
            if self.holds:
                log.info("%s/%s: failure not counted during the hold: %s", key[0], key[1],
                         "; ".join(r.detail for r in results if not r.ok))
                return
        transitions = ctl.fold(results, self.clock(), persist_all=False)
        self.metrics.set_node_up(key, ctl.health[key].up)
        if transitions and self.cluster is not None and self._beat_now is not None:
            self._beat_now.set()  # publish the change of opinion now; the writer decides on a quorum
        elif transitions:
            self.request_reconcile(pool.zone)

    async def _vantage_sweep(self, key: NodeKey, results: list[ProbeResult]) -> _Hold | None:
        """Is it our own network? Re-probe up to VANTAGE_SAMPLE other nodes that are up (and the
        canaries): if every one fails too, suspect ourselves, as `sync` does when every node fails."""
        ctl = self.ctl
        up = [(p, n) for p in self.cfg.pools for n in p.nodes
              if ctl.health.get((p.name, n.id)) is not None and ctl.health[(p.name, n.id)].up]
        others = [(p, n) for p, n in up if (p.name, n.id) != key]
        sample = random.sample(others, min(VANTAGE_SAMPLE, len(others)))
        if not sample and not self.cfg.vantage.canaries:
            return None
        fresh = await ctl.probe(sample)
        canaries = await ctl.probe_canaries()
        for r in fresh + canaries:
            self.metrics.observe_probe(r)
        reason = ctl.vantage(list(results) + fresh, canaries)
        if reason is None:
            return None
        return _Hold("sweep", reason, (key,) + tuple((p.name, n.id) for p, n in sample))

    @_scheduled
    async def _recheck_hold(self) -> None:
        """A hold ends when the check that started it passes again: every canary answers and most
        of the sampled nodes do (not merely the first node that answers, so a network that comes
        back gradually does not drain the nodes it reaches last; not all of them, since one may
        have died for real meanwhile)."""
        hold = self.holds.get("sweep")
        if hold is None or self._stopping:
            return
        nodes = [(p, p.node(n)) for p, n in ((self.cfg.pool(k[0]), k[1]) for k in hold.sample)
                 if p is not None and p.node(n) is not None]
        fresh = await self.ctl.probe(nodes)  # type: ignore[arg-type]
        canaries = await self.ctl.probe_canaries()
        ok: dict[NodeKey, bool] = {}
        for r in fresh:
            if r.check in LIVENESS:
                ok[(r.pool, r.node)] = ok.get((r.pool, r.node), True) and r.ok
        failing = sorted({f"{p}/{n}" for (p, n), good in ok.items() if not good}
                         | {r.node for r in canaries if not r.ok})
        answering = sum(ok.values())
        if all(r.ok for r in canaries) and answering * 2 > len(ok):
            still = f" ({', '.join(failing)} still fail)" if failing else ""
            self._clear_hold("sweep", f"{answering} of the {len(ok)} sampled nodes answer again{still}")
            return
        log.info("hold stays: %s still fail", ", ".join(failing))

    @_scheduled
    async def _probe_canaries(self) -> None:
        if self._stopping or self._ctl is None:
            return
        results = await self.ctl.probe_canaries()
        for r in results:
            self.metrics.observe_probe(r)
        reason = self.ctl.vantage([], results)
        if reason:
            self._set_hold(_Hold("canary", reason))
        elif "canary" in self.holds:
            self._clear_hold("canary", "every vantage canary answers again")

    def _signals_every(self, pool: Pool, node: Node) -> float | None:
        """The shortest interval of the node's signal checks, or None when it has none."""
        every = [i for _, _, i in signals.signal_checks(pool, node)]
        if pool.mta_sts is not None:  # the pool's MTA-STS policy and this node's certificate, at its interval
            every.append(pool.mta_sts.interval)
        if node.warmup is not None and node.warmup.require is not None:  # FCrDNS and SPF, slowly
            every.append(node.warmup.require.interval)
        if pool.tlsrpt is not None:  # the reports' directory, at its interval
            every.append(pool.tlsrpt.interval)
        return min(every) if every else None

    async def _signals(self, pool: Pool, node: Node, key: NodeKey, every: float) -> None:
        """Signal checks (dnsbl, agent, prometheus, ...) run at their own intervals; a change asks for a reconcile."""
        now = time.monotonic()
        if self._signals_due.get(key, 0.0) > now:
            return
        # The engine decides which checks are due (from their stored times); this only spares
        # it a look at the state store after every probe of a node whose signals are not.
        self._signals_due[key] = now + every * (1 - DUE_SLACK)
        changed = await self.ctl.refresh_verdicts([(pool, node)], self.clock())
        self.metrics.observe_signals(key, self.ctl.last_signals.get(key))
        if changed:
            self.request_reconcile(pool.zone)

    def _progress(self, key: NodeKey, pool: Pool) -> None:
        self.last_probe[key] = time.monotonic()
        first = key not in self._probed
        self._probed.add(key)
        self._round_left.discard(key)
        if not self._round_left:
            self.metrics.last_round.set(time.time())
            self._round_left = set(self.last_probe)
        if first and self._zone_probed(pool.zone):
            self.request_reconcile(pool.zone)  # the first full look at a zone: bring it in line

    def _zone_probed(self, zone: str) -> bool:
        return all((p.name, n.id) in self._probed for p in self.cfg.pools if p.zone == zone for n in p.nodes)

    # --- holds ----------------------------------------------------------------------------

    def _set_hold(self, hold: _Hold) -> None:
        was = bool(self.holds)
        self.holds[hold.source] = hold
        if not was:
            self.metrics.hold.set(1)
            self.ctl.watch(self.clock(), hold=hold.reason)

    def _clear_hold(self, source: str, why: str) -> None:
        if self.holds.pop(source, None) is None or self.holds:
            return
        self.metrics.hold.set(0)
        self.ctl.watch(self.clock(), hold=None, cleared=why)
        for zone in self.zones:
            self.request_reconcile(zone)

    def _guard(self) -> str | None:
        """Asked by the engine right before it writes (from its thread)."""
        if self.cluster is not None:
            lost = self.cluster.guard()  # even while stopping: a lapsed lease never writes
            if lost:
                return lost
        if self._stopping and not self.holds:
            return None  # the write in flight finishes
        holds = list(self.holds.values())
        return "hold: " + "; ".join(h.reason for h in holds) if holds else None

    # --- reconciling ----------------------------------------------------------------------

    def request_reconcile(self, zone: str) -> None:
        """Ask for a pass over the zone; coalesced with any pass already running or queued."""
        if self._stopping:
            return
        z = self.zones.get(zone)
        if z is None:
            return
        z.dirty = True
        if z.task is None or z.task.done():
            z.task = asyncio.get_running_loop().create_task(self._reconcile_loop(z), name=f"reconcile:{zone}")

    async def _reconcile_loop(self, z: _Zone) -> None:
        async with z.lock:  # at most one write per zone at a time
            while z.dirty and not self._stopping:
                z.dirty = False
                try:
                    await self._reconcile(z)
                except StateError as e:  # _zone_failed logs it in one line: no traceback for a full disk
                    self._zone_failed(z, str(e), "StateError", store=True)
                except Exception as e:
                    log.exception("zone %s: reconcile failed", z.name)
                    self._zone_failed(z, f"{type(e).__name__}: {e}", type(e).__name__)

    async def _reconcile(self, z: _Zone) -> None:
        ctl = self.ctl
        if not z.ready or not self._zone_probed(z.name):
            return
        if self.holds:
            log.info("zone %s: hold in effect (%s); nothing written", z.name,
                     "; ".join(h.reason for h in self.holds.values()))
            return
        health, comment, epoch, replica, time_left = dict(ctl.health), "r53lb", 0, None, None
        if self.cluster is not None:
            if not self.cluster.is_leader():
                await self._follow(z, ctl)  # followers probe, publish and read; only the lease holder writes
                return
            health, comment = self.cluster.planning_health(health), self.cluster.comment()
            ctl.signal_quorum = self.cluster.out_view
            epoch = self.cluster.epoch  # into the zone's fence: a newer leader's fence stops this one
            replica = self.cluster.replica
            time_left = self.cluster.time_left  # Route 53 retries never outlive the lease
        started = time.monotonic()
        out: ZoneOutcome = await asyncio.to_thread(
            ctl.reconcile_zone, z.name, interval_cycles=True, guard=self._guard, health=health, comment=comment,
            epoch=epoch, replica=replica, time_left=time_left)
        if out.superseded is not None and self._beat_now is not None:
            self._beat_now.set()  # a newer leader's fence: learn from the table now that the lease is gone
        if ctl is not self._ctl:
            return  # a reload replaced the engine meanwhile
        self.metrics.reconcile_duration.labels(z.name).observe(time.monotonic() - started)
        self._observe_records(out.records, out.applied)
        self._observe_plan(out.plan)
        ctl.watch(self.clock(), plan=out.plan, zone=z.name, error=out.error)
        if out.error:
            self._zone_failed(z, out.error, out.error_class or "Error", told=True)
        elif z.failing_since is not None:
            self._zone_ok(z)
        if any(pp.deferred for pp in out.plan.pools):
            # The rest of the drains wait for the next cycle: one interval of the pool.
            wait = min(p.tuning.interval for p in self.cfg.pools if p.zone == z.name) + 0.05
            asyncio.get_running_loop().call_later(wait, self.request_reconcile, z.name)

    async def _follow(self, z: _Zone, ctl: Controller) -> None:
        """A follower writes nothing but re-reads the zone at its resync, so its page and
        r53lb_node_weight show what the leader wrote (at most one read per half a resync)."""
        from ..aws.route53 import Route53Error

        now = time.monotonic()
        if z.read_at is not None and now - z.read_at < self.resync / 2:
            return
        z.read_at = now
        try:
            records = await asyncio.to_thread(ctl.read, ctl.zones().get(z.name, []))
        except Route53Error as e:  # the writer's trouble is the writer's to tell; a follower only notes it
            log.warning("zone %s: not read (the page shows the weights read before): %s", z.name, e)
            return
        if ctl is self._ctl:
            self._observe_records(records)
            if z.failing_since is not None:
                self._zone_ok(z)  # a writer's failure this replica saw before it stepped down

    def _zone_failed(self, z: _Zone, error: str, error_class: str, told: bool = False, store: bool = False) -> None:
        self.metrics.reconcile_errors.labels(z.name).inc()
        if store:
            # The state store's trouble: told once by the store's own line, and not a zone failing
            # (/healthz tells probing and Route 53; a restart would not mend the store).
            self._store_error(f"zone {z.name}: reconcile failed", error)
        else:
            log.error("zone %s: reconcile failed: %s", z.name, error)
            if z.failing_since is None:
                z.failing_since = time.monotonic()
            z.error_class = error_class
        if not told and not store and self._ctl is not None:
            try:
                self._ctl.watch(self.clock(), zone=z.name, error=error)
            except StateError as e:  # the watcher keeps its state in the store
                self._store_error(f"zone {z.name}: alert state not stored", e)
        # Try again soon, not only at the next resync (bounded by Route 53 retries inside).
        asyncio.get_running_loop().call_later(min(self.resync, RETRY_FAILED_ZONE), self.request_reconcile, z.name)

    def _zone_ok(self, z: _Zone) -> None:
        took = time.monotonic() - (z.failing_since or time.monotonic())
        z.failing_since, z.error_class = None, None
        log.info("zone %s: Route 53 works again (after %.0fs of failures)", z.name, took)

    def _observe_records(self, records: dict[str, dict[RecordKey, RecordSet]], applied: Sequence[Change] = ()) -> None:
        """Metrics and the status page's copy of the record sets, with the weights just written."""
        fresh = {p: dict(recs) for p, recs in records.items()}
        for c in applied:
            rec = fresh.get(c.pool, {}).get((c.record, c.type, c.set_identifier))
            if rec is not None:
                fresh[c.pool][rec.key] = dataclasses.replace(rec, weight=c.to_weight)
        self.records = {**self.records, **fresh}  # one assignment: the HTTP thread reads a whole dict
        for pool_name, recs in fresh.items():
            by_node: dict[str, int] = {}
            for r in recs.values():
                by_node[r.set_identifier] = max(by_node.get(r.set_identifier, 0), r.weight)
            for node_id, w in by_node.items():
                self.metrics.node_weight.labels(pool_name, node_id).set(w)
        for c in applied:  # a set just created was not in the records read
            self.metrics.node_weight.labels(c.pool, c.node).set(c.to_weight)

    def _observe_plan(self, plan: Plan) -> None:
        now = self.clock()
        cached = self.ctl.checks_cached() if plan.pools and self.ctl.store is not None else {}
        verdicts = self.ctl.verdicts(cached) if plan.pools else {}
        clocks = self.ctl.warmup_clocks(cached) if plan.pools else {}
        for pp in plan.pools:
            pool = self.cfg.pool(pp.pool)
            for node_id, d in pp.decisions.items():
                self.metrics.node_desired_weight.labels(pp.pool, node_id).set(d.weight)
                node = pool.node(node_id) if pool is not None else None
                if node is not None:
                    rep = verdicts.get((pp.pool, node_id))
                    self.metrics.node_listed.labels(pp.pool, node_id).set(len(rep.listed_on) if rep else 0)
                    clock = clocks.get((pp.pool, node_id))
                    paused = clock.paused(now) if clock is not None else 0.0
                    self.metrics.node_warmup_share.labels(pp.pool, node_id).set(warmup_share(node.warmup, now, paused))
            self.metrics.pool_panic.labels(pp.pool).set(1 if pp.panic else 0)

    # --- reload ---------------------------------------------------------------------------

    async def _reload(self) -> None:
        assert self._reload_lock is not None
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
            if new.cluster != old.cluster:
                self.metrics.config_reloads.labels("refused").inc()
                log.error("config reload refused, the running config stays: `cluster` changed; "
                          "restart r53lb to change it")
                return
            if new == old:
                log.info("config unchanged")
                self.metrics.config_reloads.labels("unchanged").inc()
                return
            old_ctl = self.ctl
            r53 = old_ctl.route53 if new.aws == old.aws else self._route53(new)
            assert r53 is not None
            ctl = self._controller(new, r53)
            ctl.health.update({k: h for k, h in old_ctl.health.items() if k not in ctl.health})
            ctl.fences.update(old_ctl.fences)  # the zones' fences as read (when first seen: the drains' ages)
            ctl.watch_state = old_ctl.watch_state
            if self._stopping:
                return
            if new.notify != old.notify:
                old_notifier, self.notifier = self.notifier, Notifier(new.notify, new.aws, self.metrics).start()
                if old_notifier is not None:
                    self._spawn(old_notifier.close(timeout=30.0))
            self.generation += 1
            for t in self._node_tasks.values():
                t.cancel()  # each loop is replaced below; a probe in flight only reads
            self._node_tasks = {}
            self.cfg, self._ctl = new, ctl
            if self.cluster is not None:  # the heartbeat's config identity and node order follow
                from ..state.dynamodb import config_digest, node_order

                self.cluster.store.digest, self.cluster.store.order = config_digest(new), node_order(new)
            self._sem = asyncio.Semaphore(new.defaults.concurrency)
            if self.scheduler is not None:
                self.scheduler.remove_all_jobs()
            self._reset_progress(new)
            for z in self.zones.values():
                z.ready = False
            await self._adopt_zones(ctl)  # new nodes start from what Route 53 shows
            await self._start_probers(new)
            keep = {(p.name, n.id) for p in new.pools for n in p.nodes}
            self.metrics.forget_nodes(keep, {p.name for p in new.pools})
            self._schedule(new)
            self.metrics.config_reloads.labels("ok").inc()
            log.info("config reloaded: %d pool(s), %d node(s)", len(new.pools), len(keep))

    # --- cluster ----------------------------------------------------------------------------

    def _voting(self) -> bool:
        """This replica has an opinion worth counting: every zone read, every node probed once."""
        return all(z.ready for z in self.zones.values()) and all(
            (p.name, n.id) in self._probed for p in self.cfg.pools for n in p.nodes)

    def _store_error(self, what: str, e: BaseException | str) -> None:
        """A state store error away from the heartbeat: one line (in a cluster, once per outage)."""
        if self.heartbeat is None:
            log.error("%s: %s", what, e)
        else:
            self.heartbeat.store_error(what, e)

    # --- health of the controller itself ----------------------------------------------------

    def _late_node(self) -> str | None:
        """The node whose probe is most overdue (past ~3 of its intervals), or None when all are on time."""
        now = time.monotonic()
        worst: tuple[float, str] | None = None
        for pool in self.cfg.pools:
            limit = 3 * pool.tuning.interval + pool.tuning.timeout
            for node in pool.nodes:
                seen = self.last_probe.get((pool.name, node.id))
                if seen is None:
                    continue
                late = now - seen - limit
                if late > 0 and (worst is None or late > worst[0]):
                    worst = (late, f"{pool.name}/{node.id} not probed for {now - seen:.0f}s (limit {limit:g}s)")
        return None if worst is None else worst[1]

    def healthz(self) -> tuple[bool, str]:
        """Making progress: every node probed within ~3 of its intervals, no zone failing for long.

        The text names an error's class and zone only: account ids and role ARNs stay in the log.
        """
        if self._stopping:
            return False, "stopping"
        late = self._late_node()
        if late is not None:
            return False, late
        cfg, now = self.cfg, time.monotonic()
        shortest = min(p.tuning.interval for p in cfg.pools)
        for z in list(self.zones.values()):
            if z.failing_since is not None and now - z.failing_since > max(ZONE_FAILING_UNHEALTHY, 3 * shortest):
                return False, f"zone {z.name}: reconcile failing for {now - z.failing_since:.0f}s: {z.error_class}"
        held = "; hold: " + "; ".join(h.reason for h in self.holds.values()) if self.holds else ""
        # The store's trouble is said, never a failure of /healthz: a restart would not bring DynamoDB
        # back, and the probes (and the alerts) go on.
        failing = self.heartbeat.table_failing if self.heartbeat is not None else None
        if failing is not None:
            held += f"; cluster: DynamoDB failing for {now - failing[0]:.0f}s (no writes)"
        return True, f"{len(self.last_probe)} node(s) probed on time{held}"


def run(config_path: str | Path | None, metrics_addr: tuple[str, int] | None, resync: float = RESYNC_SECONDS,
        allowed_hosts: Sequence[str] = ()) -> int:
    """Entry point for the CLI: build the daemon (a broken config raises ConfigError) and run it."""
    from datetime import timedelta

    skew = timedelta(seconds=float(os.environ.get(TEST_SKEW_ENV) or 0.0))

    def clock() -> datetime:
        return utcnow() + skew  # the wall clock only: the lease and the quorum run on monotonic time

    daemon = Daemon(config_path, metrics_addr=metrics_addr, resync=resync, clock=clock if skew else utcnow,
                    allowed_hosts=allowed_hosts)
    return eventloop.run(daemon.run())
