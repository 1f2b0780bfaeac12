"""The demo's story: kill, restore, fail over, drain, quarantine, each step asserted in Route 53 in time."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .fleet import AGENT_POOL, DEFERRAL_LIMIT, DemoFailed, FLEET, METRIC_POOL, Timeline, World, ZONE, at_rest
from .screen import Reporter

if TYPE_CHECKING:
    from ..aws.route53 import Route53
    from ..config import Config
    from ..engine.cycle import Controller, CycleResult


_AT_REST = ("healthy", "active (first healthy node)", "standing by; primary is active")


def _shape(reason: str) -> str:
    return re.sub(r"\d+(\.\d+)?", "#", reason)


@dataclass
class Stats:
    cycles: int = 0
    detect_seconds: float | None = None
    ramp: list[int] = field(default_factory=list)
    ramp_seconds: float | None = None
    failover_seconds: float | None = None
    failback_seconds: float | None = None
    signals_seconds: float | None = None
    steady_cycles: int = 0
    dane_seconds: float = 0.0
    steady_writes: int = 0


class Demo:
    def __init__(self, world: World, cfg: "Config", ctl: "Controller", r53: "Route53", out: Reporter, t: Timeline):
        self.world, self.cfg, self.ctl, self.r53, self.out, self.t = world, cfg, ctl, r53, out, t
        self.stats = Stats()
        self.weights: dict[tuple[str, str], tuple[int | None, str]] = {}
        # What the status page shows: Route 53 as read after each cycle, each node's latest probes.
        self.records: dict[str, Any] = {}
        self.latest: dict[tuple[str, str], list[Any]] = {}
        self._next_cycle = time.monotonic()
        from ..engine.metrics import Metrics

        self.metrics = Metrics()  # what the page's /metrics link shows: this fleet's series

    @property
    def writes(self) -> int:
        return self.r53.request_counts["ChangeResourceRecordSets"]

    async def cycle(self) -> "CycleResult":
        """One reconcile at the demo's pace, then Route 53 read back for the table and the checks."""
        delay = self._next_cycle - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next_cycle = time.monotonic() + self.t.interval
        result = await self.ctl.cycle()
        self.stats.cycles += 1
        for key, tr in result.transitions:
            self.out.line(f"{key[0]}/{key[1]} health {'down -> up' if tr.up else 'up -> down'}: {tr.reason}",
                          "green" if tr.up else "red")
        if result.plan.hold:
            self.out.line(f"hold: {result.plan.hold}; nothing written", "bold red")
        for c in result.plan.changes:
            applied = "" if result.plan.applied else " (NOT applied)"
            self.out.line(f"{c.pool}/{c.node} weight {c.from_weight} -> {c.to_weight}: {c.reason}{applied}",
                          "red" if c.to_weight == 0 else "yellow")
        if result.apply_error:
            self.out.line(f"apply failed: {result.apply_error}", "bold red")
        for err in result.plan.errors:
            self.out.line(f"error: {err}", "bold red")
        reasons = {(p.pool, n): d.reason for p in result.plan.pools for n, d in p.decisions.items()}
        changed = {(c.pool, c.node) for c in result.plan.changes}
        for key, why in reasons.items():
            # A reason that changes with no write (waiting out preempt_delay) is worth a line;
            # a counter ticking inside it ("healthy for 2s") or a return to rest is not.
            before = self.weights.get(key)
            if (before is not None and key not in changed and why not in _AT_REST
                    and _shape(before[1]) != _shape(why)):
                self.out.line(f"{key[0]}/{key[1]} weight {before[0]} kept: {why}")
        records = self.ctl.read(self.cfg.pools)
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for r in result.results:  # confirmation rounds come later in the list: the last one wins
            if r.pool:
                latest.setdefault((r.pool, r.node), {})[r.check] = r
        self.records = records
        self.latest = {**self.latest, **{k: list(v.values()) for k, v in latest.items()}}
        self.weights = {}
        for pool in self.cfg.pools:
            for node in pool.nodes:
                rec = records[pool.name].get((pool.record, "A", node.id))
                self.weights[(pool.name, node.id)] = (None if rec is None else rec.weight,
                                                      reasons.get((pool.name, node.id), ""))
        self.out.update(self.weights, {k: h.up for k, h in self.ctl.health.items()})
        self._observe(result)
        return result

    def _observe(self, result: "CycleResult") -> None:
        """The daemon's main series, fed from one cycle of the demo's controller."""
        m = self.metrics
        for r in result.results:
            if r.pool:
                m.observe_probe(r)
        for (pool, node), h in self.ctl.health.items():
            m.node_up.labels(pool, node).set(1 if h.up else 0)
        for (pool, node), (w, _) in self.weights.items():
            if w is not None:
                m.node_weight.labels(pool, node).set(w)
        for pp in result.plan.pools:
            m.pool_panic.labels(pp.pool).set(1 if pp.panic else 0)
            for node, d in pp.decisions.items():
                m.node_desired_weight.labels(pp.pool, node).set(d.weight)
        m.hold.set(1 if result.plan.hold else 0)
        m.last_round.set(time.time())

    def weight(self, pool: str, node: str) -> int | None:
        return self.weights.get((pool, node), (None, ""))[0]

    def reason(self, pool: str, node: str) -> str:
        return self.weights.get((pool, node), (None, ""))[1]

    async def until(self, what: str, ok: Callable[[], bool], deadline: float,
                    each: Callable[[], None] | None = None) -> float:
        """Run cycles until `ok()` holds in Route 53; seconds taken. DemoFailed past the deadline."""
        start = time.monotonic()
        while True:
            await self.cycle()
            if each is not None:
                each()
            if ok():
                return time.monotonic() - start
            if time.monotonic() - start > deadline:
                named = [k for k in self.weights if f"{k[0]}/{k[1]}" in what] or \
                    [k for k in self.weights if k[0] in what]
                shown = ", ".join(f"{p}/{n}={self.weights[(p, n)][0]} ({self.weights[(p, n)][1]})" for p, n in named)
                raise DemoFailed(f"{what}: not seen within {deadline:.0f}s; Route 53 shows {shown or self.weights}")

    async def watch(self, seconds: float) -> int:
        """Cycles for `seconds` with nothing changing; returns the writes they made."""
        before = self.writes
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.cycle()
        return self.writes - before

    async def run(self, deadline_total: float) -> Stats:
        t, out, s = self.t, self.out, self.stats
        mx, trk, ha = "smtp-inbound", "tracking", "mta-ha"
        base = {(p.name, n.node): w for p in FLEET for n, w in at_rest(p)}

        out.step("steady: every node healthy, Route 53 already right")
        out.line("first sight: each node starts from what Route 53 shows, so the standby (weight 0) "
                 f"starts as down until {t.rise} good probes")
        await self.cycle()
        for key, w in base.items():
            if self.weight(*key) != w:
                raise DemoFailed(f"{key[0]}/{key[1]}: expected weight {w} at the start, Route 53 shows {self.weight(*key)}")
        writes = self.writes
        await self.cycle()
        if self.writes != writes:
            raise DemoFailed("a second cycle with no change of health wrote to Route 53 (idempotence)")
        out.line(f"{s.cycles} cycles, 0 writes: nothing to change")

        # 1. A balancer dies, and a tracking server starts failing its health check.
        out.step("kill hlb-2 (mx.example.com): its SMTP server stops listening; click-1 answers 503")
        self.world.set_server(mx, "hlb-2", "refuse")
        self.world.set_server(trk, "click-1", "503")
        s.detect_seconds = await self.until(
            "smtp-inbound/hlb-2 and tracking/click-1 weight 0",
            lambda: self.weight(mx, "hlb-2") == 0 and self.weight(trk, "click-1") == 0, t.detect)
        for (pool, node), kind in (((mx, "hlb-2"), "smtp"), ((trk, "click-1"), "http")):
            why = self.reason(pool, node)
            if not why.startswith(f"down: {kind}:"):
                raise DemoFailed(f"{pool}/{node} went to 0 for an unexpected reason: {why!r}")
            out.line(f"{node} out of {self.cfg.pool(pool).record} after {s.detect_seconds:.1f}s; reason: {why}",  # type: ignore[union-attr]
                     "bold")
        if await self.watch(t.dwell):
            raise DemoFailed("cycles with hlb-2 still down wrote to Route 53 again")

        # 2. They come back: slow start.
        out.step(f"bring hlb-2 and click-1 back: slow start ramps them over {t.slow_start:g}s")
        self.world.set_server(mx, "hlb-2", "ok")
        self.world.set_server(trk, "click-1", "ok")
        ramp: list[int] = []

        def note() -> None:
            w = self.weight(mx, "hlb-2")
            if w and (not ramp or ramp[-1] != w):
                ramp.append(w)

        await self.until("smtp-inbound/hlb-2 back in slow start",
                         lambda: bool(self.weight(mx, "hlb-2")), t.detect, note)
        first = self.reason(mx, "hlb-2")
        if not first.startswith("slow start"):
            raise DemoFailed(f"smtp-inbound/hlb-2 came back without slow start: {first!r}")
        s.ramp_seconds = await self.until(
            "smtp-inbound/hlb-2 weight 100 and tracking/click-1 weight 50",
            lambda: self.weight(mx, "hlb-2") == base[(mx, "hlb-2")]
            and self.weight(trk, "click-1") == base[(trk, "click-1")],
            t.slow_start + t.detect, note)
        s.ramp = ramp
        if len(ramp) < 3:
            raise DemoFailed(f"smtp-inbound/hlb-2 ramp too coarse: {ramp}")
        out.line(f"hlb-2 ramp: {' -> '.join(map(str, ramp))} (first step: {first})", "bold")

        # 3. The HA pair fails over ...
        out.step("kill primary (smtp.example.com): the standby takes over")
        self.world.set_server(ha, "primary", "refuse")
        s.failover_seconds = await self.until(
            "mta-ha failover to standby",
            lambda: self.weight(ha, "primary") == 0 and self.weight(ha, "standby") == 1, t.detect)
        out.line(f"failover after {s.failover_seconds:.1f}s: primary {self.reason(ha, 'primary')!r}, "
                 f"standby {self.reason(ha, 'standby')!r}", "bold")
        await self.watch(t.dwell)

        # 4. ... and back, once the primary has been healthy for preempt_delay.
        out.step(f"bring primary back: fail-back after preempt_delay {t.preempt_delay:g}s")
        self.world.set_server(ha, "primary", "ok")
        s.failback_seconds = await self.until(
            "mta-ha fail-back to primary",
            lambda: self.weight(ha, "primary") == 1 and self.weight(ha, "standby") == 0,
            t.preempt_delay + t.detect)
        standby_why = self.reason(ha, "standby")
        if not standby_why.startswith("standing by; primary is active"):
            raise DemoFailed(f"mta-ha/standby reason after fail-back: {standby_why!r}")
        out.line(f"fail-back after {s.failback_seconds:.1f}s: standby {standby_why!r}", "bold")

        # 5. Signals that are not liveness: the node's own agent, a metric rule.
        api = METRIC_POOL
        out.step("hlb-3's agent answers `drain`; api-2's MTA defers 8% of its mail "
                 f"(rule: deferral above {DEFERRAL_LIMIT:g}; read from a loopback stand-in for Prometheus's query API)")
        self.world.agents["hlb-3"].set_line("drain # postfix queue above 20000")
        assert self.world.prom is not None
        self.world.prom.values["api-2"] = 0.08
        s.signals_seconds = await self.until(
            "smtp-inbound/hlb-3 and injection-api/api-2 weight 0",
            lambda: self.weight(mx, "hlb-3") == 0 and self.weight(api, "api-2") == 0, t.detect)
        for (pool, node), want in (((mx, "hlb-3"), "agent: drain"), ((api, "api-2"), "quarantined by metric")):
            why = self.reason(pool, node)
            if not why.startswith(want):
                raise DemoFailed(f"{pool}/{node} went to 0 for an unexpected reason: {why!r}")
            out.line(f"{node} out after {s.signals_seconds:.1f}s, still healthy; reason: {why}", "bold")
        out.step("the agent answers `ready` and the deferral rate falls to 1%: both carry weight again")
        self.world.agents["hlb-3"].set_line("ready")
        self.world.prom.values["api-2"] = 0.01
        await self.until("smtp-inbound/hlb-3 and injection-api/api-2 back",
                         lambda: self.weight(mx, "hlb-3") == base[(mx, "hlb-3")]
                         and self.weight(api, "api-2") == base[(api, "api-2")], t.detect)

        # 6. DANE: a key rolled on one node before its TLSA record was published.
        out.step("hlb-1 rolls its key before its TLSA record is published: DANE senders would defer its mail")
        srv = self.world.servers[(mx, "hlb-1")]
        srv.rekey()  # type: ignore[union-attr]
        s.dane_seconds = await self.until("smtp-inbound/hlb-1 weight 0", lambda: self.weight(mx, "hlb-1") == 0, t.detect)
        why = self.reason(mx, "hlb-1")
        if not why.startswith("down: smtp: dane: no TLSA record of _25._tcp.mx.example.com matches"):
            raise DemoFailed(f"{mx}/hlb-1 went to 0 for an unexpected reason: {why!r}")
        out.line(f"hlb-1 out after {s.dane_seconds:.1f}s; reason: {why}", "bold")
        out.step("the new key's TLSA record is published: hlb-1 comes back (slow start)")
        self.world.publish_tlsa()
        await self.until("smtp-inbound/hlb-1 back", lambda: self.weight(mx, "hlb-1") == base[(mx, "hlb-1")],
                         t.detect + t.slow_start)

        # 7. Steady again until the time is up: no change of health, no write.
        out.step("steady: every node healthy again; no write while nothing changes")
        cycles = s.cycles
        s.steady_writes = await self.watch(max(t.interval, deadline_total - out.elapsed()))
        s.steady_cycles = s.cycles - cycles
        for key, w in base.items():
            if self.weight(*key) != w:
                raise DemoFailed(f"{key[0]}/{key[1]}: expected weight {w} at the end, Route 53 shows {self.weight(*key)}")
        if s.steady_writes:
            raise DemoFailed(f"{s.steady_writes} write(s) while nothing changed (idempotence)")
        return s


def _serve_page(world: World, demo: "Demo", host: str, port: int) -> str:
    """The status page of `r53lb run`, showing the demo's fleet; returns its URL."""
    from ..engine.metrics import MetricsError, MetricsServer
    from ..engine.web import live_document

    def status() -> dict[str, Any]:
        return live_document(cfg=demo.cfg, ctl=demo.ctl, records=demo.records, probes=demo.latest,
                             state_path=demo.cfg.state.resolved_path(), now=demo.ctl.clock())

    try:
        server = MetricsServer(demo.metrics, lambda: (True, "demo"), host, port, status=status).start()
    except MetricsError as e:
        raise DemoFailed(f"status page: {str(e).split(': ', 1)[1].split(' (')[0]} (--page-addr)") from None
    world.stack.callback(server.stop)
    return f"http://{host}:{server.port}/"


async def _keep_serving(demo: "Demo", url: str) -> None:
    demo.out.step(f"status page: {url} (serving the demo fleet until Ctrl-C)")
    while True:
        await demo.cycle()


def run(duration: float = 35.0, live: bool | None = None, verbose: int = 0, serve: bool = False,
        page_addr: tuple[str, int] = ("127.0.0.1", 0)) -> "Stats":
    """Run the demonstration; DemoFailed when a step does not happen in time.

    The status page of `r53lb run` shows the fleet while the demo runs (its URL is printed at
    the start and the end); with `serve` the demo keeps the fleet and the page up after the
    story, until Ctrl-C (then it returns normally).
    """
    import logging

    from ..engine.cycle import Controller
    from ..aws.route53 import Route53
    from ..state.sqlite import StateStore

    t = Timeline(duration=duration)
    if live is None:
        live = sys.stdout.isatty()
    if not verbose:
        # The demo prints every decision itself; the controller's own log lines would repeat them.
        logging.getLogger("r53lb").setLevel(logging.ERROR)
    started = time.monotonic()
    world = World(t)
    try:
        cfg = world.start()
        store = StateStore.open(cfg.state.resolved_path())
        world.stack.callback(store.close)
        r53 = Route53(cfg.aws, attempts=3, backoff=0.1, retry_deadline=10.0)
        out = Reporter(world, live, started)
        alerts: list[str] = []

        def notify(kind: str, message: str, details: dict[str, Any]) -> None:
            if kind != "health":  # health changes are printed from the cycle's transitions
                alerts.append(message)
                out.line(f"alert ({kind}): {message}", "bold yellow")

        ctl = Controller(cfg, store, r53, notify=notify)
        nodes = sum(len(p.nodes) for p in FLEET)
        out.line(f"embedded Route 53 at {cfg.aws.endpoint_url}, zone {ZONE}: "
                 f"{len(FLEET)} pools, {nodes} weighted records")
        out.line(f"{nodes} loopback servers (SMTP with STARTTLS, HTTPS) on 127.0.0.11-127.0.0.42, an HAProxy agent "
                 f"on each {AGENT_POOL} node, and a loopback stand-in for Prometheus's query API "
                 f"({cfg.pool(METRIC_POOL).checks[-1].prometheus.url}) for {METRIC_POOL}'s deferral rule; "  # type: ignore[union-attr]
                 "the tests run these rules against a real Prometheus")
        out.line(f"profile: interval {t.interval:g}s, fastinter {t.fastinter:g}s, rise {t.rise}, fall {t.fall}, "
                 f"timeout {t.timeout:g}s, slow_start {t.slow_start:g}s, preempt_delay {t.preempt_delay:g}s")
        demo = Demo(world, cfg, ctl, r53, out, t)
        url = _serve_page(world, demo, *page_addr)
        out.line(f"status page: {url} (live while the demo runs{'' if serve else '; --serve keeps it up after'})")
        with out:
            stats = asyncio.run(demo.run(duration))
        took = time.monotonic() - started
        counts = r53.request_counts
        summary = [
            f"demo ok in {took:.1f}s: {stats.cycles} cycles, {counts['ChangeResourceRecordSets']} writes "
            f"(ChangeResourceRecordSets), {counts['ListResourceRecordSets']} reads (ListResourceRecordSets)",
            f"  kill hlb-2, click-1 503 -> weight 0 in Route 53 after {stats.detect_seconds:.1f}s",
            f"  both back               -> hlb-2 slow start {' -> '.join(map(str, stats.ramp))} over {stats.ramp_seconds:.1f}s",
            f"  kill primary            -> standby active after {stats.failover_seconds:.1f}s",
            f"  primary back            -> fail-back after {stats.failback_seconds:.1f}s (preempt_delay {t.preempt_delay:g}s)",
            f"  agent drain, metric rule -> hlb-3 and api-2 weight 0 after {stats.signals_seconds:.1f}s",
            f"  DANE key not published  -> hlb-1 weight 0 after {stats.dane_seconds:.1f}s",
            f"  steady                  -> {stats.steady_writes} writes in {stats.steady_cycles} cycles while nothing changed",
            f"  alerts raised           -> {len(alerts)}",
        ]
        summary.append(f"  status page             -> {url}" + ("" if serve else " (gone now; r53lb demo --serve keeps it up)"))
        for text in summary:
            out.line(text, "bold green" if text.startswith("demo ok") else "")
        if serve:
            try:
                with out:
                    asyncio.run(_keep_serving(demo, url))
            except KeyboardInterrupt:
                out.line("stopped serving")
        return stats
    finally:
        world.close()
