"""`r53lb demo`: the whole loop against an embedded Route 53 and mail servers on loopback.

It starts a moto server in this process (made strict, as Route 53 is), builds the example
fleet's zone and weighted records, starts a real SMTP (STARTTLS) or HTTPS server for every
node on its own 127.0.0.x address, and drives the real controller (`Controller.cycle()`,
the code path of `r53lb sync`) while it kills a balancer, brings it back, fails the HA
pair over and back, and lets a node's own agent (HAProxy's agent-check protocol) drain it
and a metric rule quarantine another. The metric comes from a loopback stand-in for
Prometheus's query API (a real Prometheus and its exporter would make the demo heavy; the
tests use the real server). Every step asserts its outcome in Route 53 within a deadline, so
`make demo` is an end-to-end check: a step that does not happen is a non-zero exit.

No AWS account, no network beyond loopback: fake credentials live in this process's
environment only, the state file and certificates in a temporary directory removed at
the end (Ctrl-C included).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import R53lbError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

    from ..config import Config
    from ..engine.cycle import Controller, CycleResult
    from .loopback import AgentServer, HttpServer, PromApiServer, SmtpServer
    from ..aws.route53 import Route53

__all__ = ["DemoFailed", "run", "FLEET", "Timeline"]

ZONE = "example.com"
AGENT_POOL = "smtp-inbound"  # each balancer runs an HAProxy agent (deploy/agent/ has one for Postfix)
METRIC_POOL = "injection-api"  # each API node's MTA deferral rate is judged by a prometheus rule
DEFERRAL_LIMIT = 0.05


class DemoFailed(R53lbError):
    """A scripted step did not produce its expected outcome in time."""


@dataclass(frozen=True)
class DemoNode:
    pool: str
    node: str
    address: str
    weight: int


@dataclass(frozen=True)
class DemoPool:
    name: str
    record: str
    kind: str  # smtp | http
    mode: str
    nodes: tuple[DemoNode, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def _pool(name: str, record: str, kind: str, mode: str, nodes: list[tuple[str, str, int]], **extra: Any) -> DemoPool:
    return DemoPool(name, record, kind, mode, tuple(DemoNode(name, n, a, w) for n, a, w in nodes), extra)


# The example fleet (as terraform/examples/mail-fleet), each node on its own loopback address.
FLEET: tuple[DemoPool, ...] = (
    _pool("smtp-inbound", "mx.example.com", "smtp", "weighted",
          [("hlb-1", "127.0.0.11", 100), ("hlb-2", "127.0.0.12", 100), ("hlb-3", "127.0.0.13", 50)],
          min_in_service=2, max_drain_per_cycle=1),
    _pool("injection-api", "api.example.com", "http", "weighted",
          [("api-1", "127.0.0.21", 50), ("api-2", "127.0.0.22", 50)]),
    _pool("tracking", "click.example.com", "http", "weighted",
          [("click-1", "127.0.0.31", 50), ("click-2", "127.0.0.32", 50)]),
    _pool("mta-ha", "smtp.example.com", "smtp", "failover",
          [("primary", "127.0.0.41", 1), ("standby", "127.0.0.42", 1)]),
)


@dataclass(frozen=True)
class Timeline:
    """The demo's pace, scaled from its total duration (seconds)."""

    duration: float

    interval: float = 1.0  # between cycles
    fastinter: float = 0.5
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2

    @property
    def slow_start(self) -> float:
        return round(min(60.0, max(3.0, self.duration * 0.2)), 1)

    @property
    def preempt_delay(self) -> float:
        return round(min(30.0, max(1.0, self.duration * 0.08)), 1)

    @property
    def dwell(self) -> float:
        """How long a steady situation is watched before the next step."""
        return min(30.0, max(1.0, self.duration * 0.08))

    @property
    def detect(self) -> float:
        """Deadline for a health change to reach Route 53 (a generous bound on a few cycles)."""
        return self.interval + max(self.rise, self.fall) * (self.fastinter + self.timeout) + 8.0


def at_rest(p: DemoPool) -> list[tuple[DemoNode, int]]:
    """Each node's weight with everything healthy: a failover pool's standbys carry 0."""
    return [(n, n.weight if p.mode == "weighted" or i == 0 else 0) for i, n in enumerate(p.nodes)]


# --- the embedded world -------------------------------------------------------------------


def _fake_aws_env(tmp: Path) -> None:
    """Credentials for moto only, in this process: nothing from ~/.aws, no instance metadata."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ROUTE_53"):
        os.environ.pop(var, None)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    })


def _free_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (each node binds its own loopback address)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise DemoFailed("no TCP port is free on every demo loopback address")


def _config_yaml(t: Timeline, smtp_port: int, http_port: int, ca_file: Path, endpoint: str, state: Path,
                 agent_port: int, prom_url: str) -> str:
    import yaml

    pools = []
    for p in FLEET:
        if p.kind == "smtp":
            check: dict[str, Any] = {"smtp": {"port": smtp_port, "starttls": True, "ca_file": str(ca_file)}}
        else:
            check = {"http": {"url": f"https://{{address}}:{http_port}/health", "host": p.record,
                              "ca_file": str(ca_file), "expect_status": [200]}}
        pool: dict[str, Any] = {
            "name": p.name, "zone": ZONE, "record": p.record, "mode": p.mode, "ttl": 60,
            "checks": [check] + _signal_checks(p, t, agent_port, prom_url),
            "nodes": [{"id": n.node, "address": n.address, "weight": n.weight} for n in p.nodes],
            **p.extra,
        }
        if p.mode == "weighted":
            pool["slow_start"] = f"{t.slow_start}s"
        else:
            pool["preempt"] = True
            pool["preempt_delay"] = f"{t.preempt_delay}s"
        pools.append(pool)
    doc = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint},
        "state": {"path": str(state)},
        "defaults": {
            "interval": f"{t.interval}s", "fastinter": f"{t.fastinter}s", "timeout": f"{t.timeout}s",
            "rise": t.rise, "fall": t.fall, "helo": "r53lb-demo.example.com",
        },
        "pools": pools,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _signal_checks(p: DemoPool, t: Timeline, agent_port: int, prom_url: str) -> list[dict[str, Any]]:
    if p.name == AGENT_POOL:
        return [{"agent": {"port": agent_port}}]  # asked at the pool's interval
    if p.name == METRIC_POOL:
        return [{"prometheus": {"url": prom_url, "name": "deferral", "query": 'mail_deferral_rate{node="{id}"}',
                                "quarantine_above": DEFERRAL_LIMIT, "interval": f"{t.interval}s"}}]
    return []


class World:
    """Route 53 (moto server), the zone and records, and a server per node; `close()` undoes it all."""

    def __init__(self, t: Timeline) -> None:
        self.t = t
        self.stack = ExitStack()
        self.tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="r53lb-demo-")))
        self.servers: dict[tuple[str, str], "SmtpServer | HttpServer"] = {}
        self.server_up: dict[tuple[str, str], bool] = {}
        self.agents: dict[str, "AgentServer"] = {}  # AGENT_POOL's node -> its agent
        self.prom: "PromApiServer | None" = None

    def close(self) -> None:
        self.stack.close()

    def start(self) -> "Config":
        try:
            from moto_fixtures.server import start as start_route53
            from moto_fixtures.spec import build
        except ImportError as e:  # moto[server], aiosmtpd and trustme are the `demo` extra
            raise DemoFailed(f"the demo needs moto[server], aiosmtpd and trustme: pip install 'r53lb[demo]' ({e})") from None

        from ..config import load
        from .loopback import AgentServer, Certs, HttpServer, PromApiServer, SmtpServer

        _fake_aws_env(self.tmp)
        # Strict: Route 53's own rules (exact DELETE, no duplicate CREATE, weight 0-255).
        route53 = start_route53(strict=True)
        self.stack.callback(route53.reset)  # stopped below first (LIFO), then emptied
        self.stack.callback(route53.stop)
        endpoint = route53.endpoint_url

        certs = Certs(names=("localhost", *(p.record for p in FLEET)))
        self.stack.callback(certs._dir.cleanup)
        addresses = [n.address for p in FLEET for n in p.nodes]
        smtp_port = _free_port(addresses)
        http_port = _free_port(addresses)
        for p in FLEET:
            for n in p.nodes:
                srv: SmtpServer | HttpServer
                if p.kind == "smtp":
                    srv = SmtpServer(n.address, smtp_port, hostname=p.record, tls="starttls", certs=certs)
                else:
                    srv = HttpServer(n.address, http_port, tls=True, certs=certs)
                self.stack.callback(srv.stop)
                srv.start()
                self.servers[(p.name, n.node)] = srv
                self.server_up[(p.name, n.node)] = True
        agent_nodes = [n for p in FLEET if p.name == AGENT_POOL for n in p.nodes]
        agent_port = _free_port([n.address for n in agent_nodes])
        for n in agent_nodes:
            agent = AgentServer(n.address, agent_port, "ready up 100%")
            self.stack.callback(agent.stop)
            self.agents[n.node] = agent.start()
        self.prom = PromApiServer("127.0.0.1", 0)
        self.stack.callback(self.prom.stop)
        self.prom.start()
        for p in FLEET:
            if p.name == METRIC_POOL:
                self.prom.values.update({n.node: 0.01 for n in p.nodes})

        cfg_path = self.tmp / "r53lb.yaml"
        cfg_path.write_text(_config_yaml(self.t, smtp_port, http_port, certs.ca_file, endpoint,
                                         self.tmp / "state.db", agent_port, self.prom.url))
        cfg = load(cfg_path)

        import boto3

        client = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
        spec: dict[str, Any] = {}
        for p in FLEET:
            spec[p.record] = {"type": "A", "ttl": 60, "sets": {n.node: (n.address, w) for n, w in at_rest(p)}}
        build(client, {ZONE: spec})
        return cfg

    def set_server(self, pool: str, node: str, mode: str) -> None:
        """'ok', 'refuse' (nothing listening), or a status code the server answers with."""
        self.servers[(pool, node)].set_mode(mode)
        self.server_up[(pool, node)] = mode == "ok"


# --- output -------------------------------------------------------------------------------


@dataclass
class Row:
    weight: int | None = None
    reason: str = ""
    health: str = "up"


class Reporter:
    """A live table on a terminal; plain progress lines otherwise. Events are lines in both."""

    def __init__(self, world: World, live: bool, started: float) -> None:
        self.world = world
        self.started = started
        self.rows: dict[tuple[str, str], Row] = {(p.name, n.node): Row() for p in FLEET for n in p.nodes}
        self.step_text = "starting"
        self.console: "Console | None" = None
        self._live: "Live | None" = None
        if live:
            from rich.console import Console
            from rich.live import Live

            self.console = Console(highlight=False)
            self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)

    def __enter__(self) -> "Reporter":
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str, style: str = "") -> None:
        stamp = f"[{self.elapsed():5.1f}s]"
        if self.console is not None:
            from rich.markup import escape

            self.console.print(f"[dim]{stamp}[/] " + (f"[{style}]{escape(text)}[/]" if style else escape(text)))
        else:
            print(f"{stamp} {text}", flush=True)

    def step(self, text: str) -> None:
        self.step_text = text
        self.line(f"== {text}", "bold cyan")
        self.refresh()

    def update(self, weights: dict[tuple[str, str], tuple[int | None, str]], health: dict[tuple[str, str], bool]) -> None:
        for key, row in self.rows.items():
            w, reason = weights.get(key, (None, ""))
            row.weight, row.reason = w, reason
            row.health = "up" if health.get(key, True) else "down"
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        t = Table(title=f"r53lb demo ({ZONE}) - {self.step_text}", title_justify="left", box=box.SIMPLE_HEAD)
        for col in ("record", "node", "server", "health", "weight", "reason"):
            t.add_column(col, justify="right" if col == "weight" else "left",
                         no_wrap=True, overflow="ellipsis" if col == "reason" else "fold")
        for p in FLEET:
            for n in p.nodes:
                key = (p.name, n.node)
                row = self.rows[key]
                server = "[green]running[/]" if self.world.server_up.get(key, True) else "[red]killed[/]"
                health = "[green]up[/]" if row.health == "up" else "[red]down[/]"
                w = "-" if row.weight is None else str(row.weight)
                wstyle = "red" if row.weight == 0 else ("yellow" if row.weight is not None and row.weight < n.weight else "")
                t.add_row(p.record.removesuffix("." + ZONE), f"{n.node} {n.address}", server, health,
                          f"[{wstyle}]{w}[/]" if wstyle else w, row.reason)
        return Group(t, Text(f"elapsed {self.elapsed():.1f}s", style="dim"))


# --- the story ----------------------------------------------------------------------------


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

        # 6. Steady again until the time is up: no change of health, no write.
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
