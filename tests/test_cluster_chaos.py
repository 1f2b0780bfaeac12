"""Chaos: three `r53lb run` replicas, two pools of loopback SMTP nodes, a seeded random schedule
of faults, and the cluster's promises checked all along (docs/operations.md, "Running several
controllers", "What is guaranteed").

The schedule (seeded: the seed is printed, `R53LB_CHAOS_SEED=N` replays it; `R53LB_CHAOS_SECONDS`
makes the chaos longer than the default 75 s) mixes node deaths and recoveries (sometimes
several of a pool at once, sometimes the whole pool), replica SIGKILL, SIGSTOP then SIGCONT and
restarts (SIGTERM, then a new process of the same name), lost Route 53 answers (the batch is
applied, the client gets a 500), refused batches (503, throttling) and operator drains and
enables through the CLI. Every Route 53 batch that is *applied* is recorded inside the moto
server, with its time and the pool weights it leaves, and a sampler reads the record sets through
the API every 200 ms. Checked:

- never a pool at all-zero weights: r53lb fails open when every node it may use is down, and
  the schedule never drains every node of a pool by hand, so Route 53 never serves an all-zero
  pool, not even for one batch;
- at most `max_drain_per_cycle` (1) newly drained-for-health nodes per pool `interval`: two
  0-transitions of a pool by health are at least one interval apart by the applied times
  (operator drains excluded: a node whose drain was asked and not yet enabled);
- every applied batch was written by the replica that took that epoch (its log line `holds
  the lease, epoch N`; each epoch has one owner) and no batch of an older epoch lands after one
  of a newer epoch in the same zone (the fence). A batch that lands while the lease item already
  names the next epoch is allowed by the docs (planned before the hand-over, no write since)
  and is counted and printed;
- operator drains are never lost: once a drained node is at 0 it stays at 0 until its enable;
- convergence: once the faults stop, within 60 s every live node carries its weight, every
  dead one 0 (or, when every node of the pool the operator left in is dead, the base weight:
  fail open) and every drained node 0. When the whole fleet is dead the leader holds instead
  (nothing written), and a leader whose hold waits only for nodes dead for good holds for good
  (the documented rule: a hold ends when most of its sample answers); then, with the whole
  fleet back, every hold clears and Route 53 converges again;
- the history: every weight event names a replica and epoch that wrote an applied batch.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from moto.route53.models import Route53Backend

from moto_fixtures import strict
from moto_fixtures.pytest_plugin import FAKE_ENV
from moto_fixtures.spec import build, weights
from r53lb.core.fence import Fence
from r53lb.demo.loopback import SmtpServer
from test_cluster import Replica
from test_daemon import Daemon, free_port, wait_until

SECONDS = float(os.environ.get("R53LB_CHAOS_SECONDS", "75"))
pytestmark = [pytest.mark.timeout(int(SECONDS) + 240), pytest.mark.slow]

LEASE, HEARTBEAT = 3.0, 0.5
INTERVAL, FASTINTER, FALL, RISE, TIMEOUT = 2.0, 0.5, 2, 2, 1.0
WEIGHT = 50
TABLE = "r53lb-chaos"
POOLS = {  # pool -> (zone, record, {node: address})
    "a": ("example.com", "mx.example.com", {f"a{i}": f"127.0.4.{10 + i}" for i in range(1, 6)}),
    "b": ("example.net", "mx.example.net", {f"b{i}": f"127.0.4.{20 + i}" for i in range(1, 6)}),
}
REPLICAS = ("ctl-a", "ctl-b", "ctl-c")
HOLDS = re.compile(r"cluster: (\S+) holds the lease, epoch (\d+)")
CONVERGE = 60.0  # seconds after the faults stop


@dataclass
class Applied:
    """One change batch Route 53 applied: when, where, the fence it wrote, the weights it left."""

    at: float
    zone: str
    fence: Fence | None
    weights: dict[str, dict[str, int]]  # pool -> node -> weight, right after the batch
    lease: tuple[str, int] | None  # the lease item's (owner, epoch) when it was applied


@dataclass
class OpDrain:
    pool: str
    node: str
    asked: float  # the drain command started
    enabled: float | None = None  # the enable command started
    enabled_done: float | None = None  # the enable command ended (it is in the table by then)
    ok: bool = False


@dataclass
class World:
    tmp: Path
    server: Any
    seed: int
    doc: dict[str, Any]
    zone_ids: dict[str, str]
    smtp: dict[str, SmtpServer]
    applied: list[Applied] = field(default_factory=list)
    samples: list[tuple[float, dict[str, dict[str, int]]]] = field(default_factory=list)
    replicas: dict[str, Replica] = field(default_factory=dict)
    every: list[Replica] = field(default_factory=list)  # every process started, for the logs
    dead: set[str] = field(default_factory=set)
    drains: list[OpDrain] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    cli_threads: list[threading.Thread] = field(default_factory=list)

    def say(self, what: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:7.2f}s {what}")

    @property
    def client(self) -> Any:
        return boto3.client("route53", endpoint_url=self.server.endpoint_url, region_name="us-east-1")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R53LB_"))}
        env.update(FAKE_ENV, PYTHONUNBUFFERED="1")
        return env

    def config_for(self, name: str) -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(dict(self.doc, cluster=dict(self.doc["cluster"], replica=name))))
        return path

    def start(self, name: str) -> Replica:
        port = free_port()
        log_path = self.tmp / f"{name}.{len(self.every)}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "r53lb", "-c", str(self.config_for(name)), "run", "--resync", "2s",
                 "--metrics-addr", f"127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env())
        r = Replica(name, Daemon(proc, f"http://127.0.0.1:{port}", log_path))
        self.replicas[name] = r
        self.every.append(r)
        return r

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "r53lb", "-c", str(self.tmp / "ops.yaml"), *args],
                              capture_output=True, text=True, env=self.env(), timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {r.name} ({r.daemon.log_path.name})\n{r.daemon.log()[-6000:]}" for r in self.every)

    def read_weights(self) -> dict[str, dict[str, int]]:
        return {pool: weights(self.client, self.zone_ids[zone], record, "A")
                for pool, (zone, record, _) in POOLS.items()}

    def operator_drained(self, pool: str, node: str, at: float) -> bool:
        """Maybe drained by hand at `at`: the drain command had started and its enable had not
        ended (a leader may still apply the drain until the enable is in the table)."""
        return any(d.pool == pool and d.node == node and d.asked <= at
                   and (d.enabled_done is None or d.enabled_done > at) for d in self.drains)


def _lease_item(server: Any) -> tuple[str, int] | None:
    """The lease as DynamoDB holds it now (read inside the moto server's process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    try:
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(TABLE)
        for item in table.all_items():
            d = item.to_json()["Attributes"]
            if d.get("pk", {}).get("S") == "live" and d.get("sk", {}).get("S", "").startswith("lease"):
                owner = d.get("owner", {}).get("S", "")
                return owner, int(d.get("epoch", {}).get("N", "0"))
    except Exception:
        return None
    return None


@pytest.fixture
def world(tmp_path: Path, moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    seed = int(os.environ.get("R53LB_CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))
    print(f"\nchaos seed {seed} (R53LB_CHAOS_SEED={seed} replays it), {SECONDS:g}s of chaos")
    port = free_port()
    zones = build(boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1"), {
        zone: {record: {"type": "A", "sets": {k: (v, WEIGHT) for k, v in nodes.items()}}}
        for zone, record, nodes in POOLS.values()})
    smtp = {n: SmtpServer(addr, port).start() for _, _, nodes in POOLS.values() for n, addr in nodes.items()}
    doc = {
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "cluster": {"table": TABLE, "region": "us-east-1", "lease": f"{LEASE:g}s",
                    "heartbeat": f"{HEARTBEAT * 1000:.0f}ms"},
        "defaults": {"interval": f"{INTERVAL:g}s", "fastinter": f"{FASTINTER * 1000:.0f}ms",
                     "timeout": f"{TIMEOUT:g}s", "rise": RISE, "fall": FALL, "helo": "probe.r53lb.test"},
        "pools": [{"name": pool, "zone": zone, "record": record, "checks": [{"smtp": {"port": port}}],
                   "max_drain_per_cycle": 1, "min_in_service": 1,
                   "nodes": [{"id": k, "address": v, "weight": WEIGHT} for k, v in nodes.items()]}
                  for pool, (zone, record, nodes) in POOLS.items()],
    }
    w = World(tmp_path, moto_server, seed, doc, {z: zones[z] for z, _, _ in POOLS.values()}, smtp)
    w.config_for("ops")
    init = w.cli("cluster", "init")
    assert init.returncode == 0, init.stderr

    by_zone_id = {zid: zone for zone, zid in w.zone_ids.items()}
    inner = Route53Backend.change_resource_record_sets

    def recorded(self: Route53Backend, zoneid: str, change_list: list[dict[str, Any]]) -> None:
        with strict._commit_lock:  # the batch and the weights it leaves, as one step
            inner(self, zoneid, change_list)
            zone = self.get_hosted_zone(zoneid)
            now = time.monotonic()
            fence = None
            for c in change_list:
                rs = c["ResourceRecordSet"]
                if c["Action"] == "CREATE" and rs["Type"] == "TXT" and rs["Name"].startswith("_r53lb."):
                    fence = Fence.parse(rr["Value"] for rr in rs["ResourceRecords"])
            left: dict[str, dict[str, int]] = {}
            for pool, (_, record, nodes) in POOLS.items():
                sets = {o.set_identifier: int(o.weight) for o in zone.rrsets
                        if o.name.rstrip(".") == record and o.type == "A" and o.set_identifier in nodes}
                if sets:
                    left[pool] = sets
            w.applied.append(Applied(now, by_zone_id.get(zoneid, zoneid), fence, left, _lease_item(moto_server)))

    monkeypatch.setattr(Route53Backend, "change_resource_record_sets", recorded)
    try:
        yield w
    finally:
        for t in w.cli_threads:
            t.join(60)
        for r in w.every:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGCONT)
                r.proc.send_signal(signal.SIGTERM)
        for r in w.every:
            try:
                r.proc.wait(15)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(5)
        for s in smtp.values():
            s.stop()


def clear_route53_faults(server: Any) -> None:
    c = server.controls
    with c._lock:
        c._faults.clear()
        c._lost.clear()


def settled(w: World, timeout: float = 60) -> None:
    def ready() -> bool:
        rs = list(w.replicas.values())
        for r in rs:
            assert r.proc.poll() is None, f"{r.name} exited {r.proc.returncode}:\n{r.daemon.log()}"
        return all((r.daemon.sample("r53lb_last_probe_round_timestamp_seconds") or 0) > 0
                   and r.daemon.sample("r53lb_replicas_fresh") == len(rs) for r in rs) \
            and sum(1 for r in rs if r.leader()) == 1
    wait_until("three replicas with a full probe round and one leader", ready, timeout=timeout, every=0.25)


def run_schedule(w: World, rng: random.Random, seconds: float) -> None:
    """The seeded faults, for `seconds`; then every fault undone that is not a node's death."""
    due: list[tuple[float, str, str]] = []  # (when, action, replica)
    out: dict[str, str] = {}  # replica -> "kill" | "stop" | "term": disrupted, back at its due time

    def node_cli(args: tuple[str, ...], d: OpDrain | None) -> None:
        p = w.cli(*args)
        if d is not None and args[0] == "drain":
            d.ok = p.returncode == 0
        elif d is not None:
            d.enabled_done = time.monotonic()
        w.say(f"{' '.join(args)}: exit {p.returncode} {(p.stderr or p.stdout).strip()[:160]}")

    def background(args: tuple[str, ...], d: OpDrain | None = None) -> None:
        t = threading.Thread(target=node_cli, args=(args, d), daemon=True)
        w.cli_threads.append(t)
        t.start()

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.monotonic()
        for item in [d for d in due if d[0] <= now]:
            due.remove(item)
            _, action, name = item
            r = w.replicas[name]
            if action == "cont":
                r.proc.send_signal(signal.SIGCONT)
            elif action == "start":
                w.start(name)
            out.pop(name, None)
            w.say(f"{action} {name}")
        roll = rng.random()
        pool = rng.choice(sorted(POOLS))
        nodes = sorted(POOLS[pool][2])
        if roll < 0.30:  # deaths: one, several (more than max_drain), now and then the whole pool
            alive = [n for n in nodes if n not in w.dead]
            k = min(len(alive), rng.choice([1, 1, 2, 3, len(nodes)]))
            for n in rng.sample(alive, k):
                w.smtp[n].set_mode(rng.choice(["refuse", "hang", "421"]))
                w.dead.add(n)
            w.say(f"{pool}: dead now {sorted(n for n in nodes if n in w.dead)}")
        elif roll < 0.50:  # recoveries
            down = [n for n in nodes if n in w.dead]
            for n in rng.sample(down, min(len(down), rng.choice([1, 1, 2, len(nodes)]))):
                w.smtp[n].set_mode("ok")
                w.dead.discard(n)
            w.say(f"{pool}: dead now {sorted(n for n in nodes if n in w.dead)}")
        elif roll < 0.65 and len(out) < 2:  # a replica: SIGKILL, SIGSTOP, or a restart
            up = [n for n in REPLICAS if n not in out]
            leading = [n for n in up if w.replicas[n].leader()]  # the leader half of the time
            name = leading[0] if leading and rng.random() < 0.5 else rng.choice(up)
            r = w.replicas[name]
            kind = rng.choice(["kill", "stop", "term"])
            back = now + rng.uniform(1.0, 2.5 * LEASE)
            if kind == "kill":
                r.proc.kill()
                due.append((back, "start", name))
            elif kind == "stop":
                r.proc.send_signal(signal.SIGSTOP)
                due.append((back, "cont", name))
            else:
                r.proc.send_signal(signal.SIGTERM)
                due.append((now + rng.uniform(0.2, 2.0), "start", name))
            out[name] = kind
            w.say(f"{kind} {name}{' (the leader)' if name in leading else ''}")
        elif roll < 0.80:  # Route 53: an answer lost after the batch was applied, or batches refused
            c = rng.choice(["lose", "fail", "throttle"])
            n = rng.randint(1, 3)
            if c == "lose":
                w.server.lose_answer("ChangeResourceRecordSets", n)
            elif c == "fail":
                w.server.fail("ChangeResourceRecordSets", n)
            else:
                w.server.throttle("ChangeResourceRecordSets", n)
            w.say(f"route53: {c} x{n}")
        else:  # an operator drain, or the enable of one
            open_ = [d for d in w.drains if d.enabled is None]
            mine = [d for d in open_ if d.pool == pool]
            if mine and (rng.random() < 0.6 or len(open_) >= 2):
                d = mine[0]
                d.enabled = time.monotonic()
                background(("enable", f"{pool}/{d.node}"), d)
            elif not mine:
                d = OpDrain(pool, rng.choice(nodes), time.monotonic())
                w.drains.append(d)
                background(("drain", f"{pool}/{d.node}", "--reason", f"chaos {w.seed}"), d)
        time.sleep(rng.uniform(0.3, 2.0))
    # The faults stop: stopped replicas go on, killed ones come back, Route 53 answers.
    for _, action, name in due:
        if action == "cont":
            w.replicas[name].proc.send_signal(signal.SIGCONT)
        else:
            w.start(name)
        w.say(f"{action} {name} (end)")
    clear_route53_faults(w.server)
    for t in w.cli_threads:
        t.join(60)
    w.say("faults stopped")


def sampler(w: World, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            w.samples.append((time.monotonic(), w.read_weights()))
        except Exception:
            pass
        stop.wait(0.2)


def expected(w: World) -> dict[str, dict[str, int]]:
    """What Route 53 should hold once everything settled, from the schedule."""
    out: dict[str, dict[str, int]] = {}
    for pool, (_, _, nodes) in POOLS.items():
        drained = {d.node for d in w.drains if d.pool == pool and d.ok and d.enabled is None}
        live = [n for n in nodes if n not in w.dead and n not in drained]
        fail_open = not live and len(drained) < len(nodes)
        out[pool] = {n: 0 if n in drained else WEIGHT if n not in w.dead or fail_open else 0 for n in nodes}
    return out


def check(w: World) -> list[str]:
    """Every invariant over the applied batches and the samples; the list of violations."""
    bad: list[str] = []
    t0 = w.started

    # Never an all-zero pool (the schedule never drains a whole pool by hand).
    for a in w.applied:
        for pool, ws in a.weights.items():
            if len(ws) == len(POOLS[pool][2]) and not any(ws.values()):
                bad.append(f"{a.at - t0:.2f}s: a batch of epoch {a.fence and a.fence.epoch} left pool {pool} "
                           f"all zero: {ws}")
    for at, s in w.samples:
        for pool, ws in s.items():
            if ws and not any(ws.values()):
                bad.append(f"{at - t0:.2f}s: Route 53 served pool {pool} all zero: {ws}")

    # The blast radius: drains for health of one pool at least one interval apart.
    last: dict[str, dict[str, int]] = {p: {n: WEIGHT for n in nodes} for p, (_, _, nodes) in POOLS.items()}
    health_drains: dict[str, list[tuple[float, str]]] = {p: [] for p in POOLS}
    for a in w.applied:
        for pool, ws in a.weights.items():
            for n, v in ws.items():
                if v == 0 and last[pool].get(n, 0) > 0 and not w.operator_drained(pool, n, a.at):
                    health_drains[pool].append((a.at, n))
            last[pool].update(ws)
    for pool, ds in health_drains.items():
        for (t1, n1), (t2, n2) in zip(ds, ds[1:]):
            if t2 - t1 < INTERVAL - 0.02:
                bad.append(f"pool {pool}: {n1} drained at {t1 - t0:.2f}s and {n2} at {t2 - t0:.2f}s: "
                           f"more than max_drain_per_cycle 1 within the interval ({INTERVAL:g}s)")

    # Writers: the replica that took the epoch, and never an older epoch after a newer one.
    owners: dict[int, set[str]] = {}
    for r in w.every:
        for name, epoch in HOLDS.findall(r.daemon.log()):
            owners.setdefault(int(epoch), set()).add(name)
    for epoch, names in owners.items():
        if len(names) > 1:
            bad.append(f"epoch {epoch} taken by {sorted(names)}")
    newest: dict[str, int] = {}
    for a in w.applied:
        if a.fence is None:
            bad.append(f"{a.at - t0:.2f}s: a batch in {a.zone} without the fence")
            continue
        if a.fence.replica not in owners.get(a.fence.epoch, set()):
            bad.append(f"{a.at - t0:.2f}s: {a.fence.label} written by a replica that never took epoch "
                       f"{a.fence.epoch} (owners: {sorted(owners.get(a.fence.epoch, set()))})")
        if a.fence.epoch < newest.get(a.zone, 0):
            bad.append(f"{a.at - t0:.2f}s: {a.fence.label} landed in {a.zone} after epoch {newest[a.zone]}")
        newest[a.zone] = max(newest.get(a.zone, 0), a.fence.epoch)

    # Operator drains: once at 0, at 0 until the enable.
    for d in w.drains:
        if not d.ok:
            continue
        reached = None
        for a in w.applied:
            v = a.weights.get(d.pool, {}).get(d.node)
            if v is None or a.at < d.asked or (d.enabled is not None and a.at >= d.enabled):
                continue
            if v == 0 and reached is None:
                reached = a.at
            elif v > 0 and reached is not None:
                bad.append(f"{a.at - t0:.2f}s: operator drain of {d.pool}/{d.node} lost (weight {v}, "
                           f"drained at {reached - t0:.2f}s, enable {'none' if d.enabled is None else f'{d.enabled - t0:.2f}s'})")
                break
    w.say("health drains: " + ", ".join(f"{p} {[f'{n}@{t - t0:.1f}s' for t, n in ds]}" for p, ds in health_drains.items()))
    return bad


def converge(w: World, bad: list[str]) -> float | None:
    """Wait for Route 53 to hold what the schedule says; the seconds it took, or None (and why in `bad`).

    When every node of the fleet is dead every replica holds (its own network is the likelier
    cause): nothing is written, DNS keeps its weights; then only "never all zero" is expected."""
    quiet = time.monotonic()
    if all(n in w.dead for _, _, nodes in POOLS.values() for n in nodes):
        try:
            leaders = wait_until("a leader", lambda: [r for r in w.replicas.values() if r.proc.poll() is None
                                                      and r.leader()], timeout=CONVERGE)
            wait_until("the leader's hold", lambda: leaders[0].daemon.sample("r53lb_hold") == 1, timeout=CONVERGE)
        except AssertionError as e:
            bad.append(f"the whole fleet is dead: {e}")
            return None
        w.say("the whole fleet is dead: the leader holds")
        return time.monotonic() - quiet
    want = expected(w)
    got: dict[str, dict[str, int]] = {}
    while time.monotonic() < quiet + CONVERGE:
        got = w.read_weights()
        if got == want:
            w.say(f"converged: {want}")
            return time.monotonic() - quiet
        time.sleep(0.2)
    holds = [line for r in w.every if r.proc.poll() is None
             for line in r.daemon.log().splitlines()[-400:] if "hold stays" in line][-3:]
    # A hold ends when most of the nodes sampled when it started answer again (docs/operations.md,
    # "Hold"): a leader whose sample is dead for good holds for good, and writes nothing. That is
    # the documented rule, not a lost convergence: accepted when the leader says so and every node
    # its hold still waits for is dead by the schedule (and no pool is all zero).
    leader = next((r for r in w.replicas.values() if r.proc.poll() is None and r.leader()), None)
    if leader is not None and leader.daemon.sample("r53lb_hold") == 1:
        stays = [line for line in leader.daemon.log().splitlines() if "hold stays: " in line]
        waits = re.findall(r"\w+/(\w+)", stays[-1].split("hold stays: ", 1)[1]) if stays else []
        if waits and all(n in w.dead for n in waits) and all(any(ws.values()) for ws in got.values()):
            w.say(f"the leader {leader.name} holds for good: its sample {waits} is dead ({stays[-1][-120:]})")
            return time.monotonic() - quiet
    bad.append(f"not converged {CONVERGE:g}s after {w.events[-1].split('s ', 1)[-1]}: Route 53 {got}, "
               f"expected {want}; dead {sorted(w.dead)}; last holds: {holds}")
    return None


def test_chaos_the_cluster_keeps_its_promises(world: World) -> None:
    w = world
    rng = random.Random(w.seed)
    for name in REPLICAS:
        w.start(name)
    settled(w)
    w.started = time.monotonic()
    stop = threading.Event()
    sampling = threading.Thread(target=sampler, args=(w, stop), daemon=True)
    sampling.start()
    converged_in = recovered_in = None
    bad_end: list[str] = []
    try:
        run_schedule(w, rng, SECONDS)
        converged_in = converge(w, bad_end)
        # Then the whole fleet comes back: every hold clears, every node carries its weight again
        # (but the ones still drained by hand).
        for n in sorted(w.dead):
            w.smtp[n].set_mode("ok")
        w.dead.clear()
        w.say("every node answers again")
        recovered_in = converge(w, bad_end)
    finally:
        stop.set()
        sampling.join(5)
    bad = check(w)
    stale = [a for a in w.applied if a.fence and a.lease and a.lease != (a.fence.replica, a.fence.epoch)]
    drains = [d for d in w.drains if d.ok]
    summary = (f"seed {w.seed}: {len(w.applied)} batches applied, {len(w.samples)} samples, "
               f"{len(drains)} operator drains, {len(stale)} of {sum(1 for a in w.applied if a.lease)} batch(es) "
               f"applied while the lease item named another holder, converged in {'-' if converged_in is None else f'{converged_in:.1f}s'}, "
               f"after the fleet came back in {'-' if recovered_in is None else f'{recovered_in:.1f}s'}")
    print(summary)
    print("\n".join(w.events))
    for a in stale:
        print(f"  {a.at - w.started:.2f}s {a.fence.label if a.fence else '?'} while the lease was {a.lease}")
    # The history: every weight it tells was written by an applied batch of that replica and epoch.
    hist = w.cli("history", "--json", "--limit", "1000")
    if hist.returncode != 0:
        bad.append(f"r53lb history: exit {hist.returncode}: {hist.stderr.strip()}")
    else:
        writers = {(a.fence.replica, a.fence.epoch) for a in w.applied if a.fence}
        told = [e for e in json.loads(hist.stdout)["events"] if e["kind"] == "weight"]
        for e in told:
            if (e.get("replica"), e.get("epoch")) not in writers:
                bad.append(f"history tells {e.get('pool')}/{e.get('node')} -> {e.get('to')} by {e.get('replica')} epoch "
                           f"{e.get('epoch')}, which wrote no batch Route 53 applied")
        if not told and w.applied:
            bad.append("history tells no weight change")
    bad += bad_end
    assert not bad, (f"chaos seed {w.seed} (replay: R53LB_CHAOS_SEED={w.seed}): " + "\n".join(bad[:20])
                     + "\n" + summary + "\n" + "\n".join(w.events) + "\n" + w.logs())
    assert "Traceback" not in "".join(r.daemon.log() for r in w.every), w.logs()
