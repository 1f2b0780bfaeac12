"""Several controllers: three `r53lb run` replicas on one moto server (DynamoDB + Route 53).

Short profile: lease 3 s, heartbeat 500 ms; probes as in test_daemon.py (interval 1 s,
fastinter 500 ms, fall 2, rise 2, timeout 1 s: a node's death reaches DNS within 3.5 s on one
controller). Each replica is a real subprocess with its own config (its replica name) and
metrics port; the test reads their `r53lb_leader` gauges and Route 53's change batches, whose
Comment names the writer and its epoch.

Test-only knobs of the daemon (engine/daemon.py): R53LB_TEST_BLIND_NODES makes one replica's
probes of the listed nodes fail (its network cut from them); R53LB_TEST_CLOCK_SKEW shifts its
wall clock.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from moto_fixtures.pytest_plugin import FAKE_ENV
from moto_fixtures.spec import build, weights
from r53lb.demo.loopback import SmtpServer
from test_daemon import BUDGET, FALL, FASTINTER, INTERVAL, RISE, TIMEOUT, Daemon, free_port, wait_until
from test_notify import WebhookReceiver

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

LEASE, HEARTBEAT = 3.0, 0.5
NODES = {"hlb-1": "127.0.0.71", "hlb-2": "127.0.0.72", "hlb-3": "127.0.0.73"}
RECORD = "mx.example.com"
TABLE = "r53lb-test"
COMMENT = re.compile(r"r53lb replica=(\S+) epoch=(\d+)")


@dataclass
class Replica:
    name: str
    daemon: Daemon

    @property
    def proc(self) -> subprocess.Popen[str]:
        return self.daemon.proc

    def leader(self) -> bool:
        return self.daemon.sample("r53lb_leader") == 1

    def epoch(self) -> float | None:
        return self.daemon.sample("r53lb_lease_epoch")


@dataclass
class Cluster:
    tmp: Path
    endpoint: str
    zone_id: str
    server: Any
    smtp: dict[str, SmtpServer]
    doc: dict[str, Any]
    replicas: list[Replica] = field(default_factory=list)

    @property
    def client(self) -> Any:
        return boto3.client("route53", endpoint_url=self.endpoint, region_name="us-east-1")

    def weights(self) -> dict[str, int]:
        return weights(self.client, self.zone_id, RECORD, "A")

    def config_for(self, name: str) -> Path:
        path = self.tmp / f"{name}.yaml"
        doc = dict(self.doc, cluster=dict(self.doc["cluster"], replica=name))
        path.write_text(yaml.safe_dump(doc))
        return path

    def start(self, name: str, **env_extra: str) -> Replica:
        port = free_port()
        log_path = self.tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "R53LB_TEST_"))}
        env.update(FAKE_ENV, PYTHONUNBUFFERED="1", **env_extra)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "r53lb", "-c", str(self.config_for(name)), "run", "--resync", "1s",
                 "--metrics-addr", f"127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        r = Replica(name, Daemon(proc, f"http://127.0.0.1:{port}", log_path))
        self.replicas.append(r)
        return r

    def settled(self) -> None:
        """Every replica running, every node probed by each, one of them holding the lease."""
        def ready() -> bool:
            for r in self.replicas:
                assert r.proc.poll() is None, f"{r.name} exited {r.proc.returncode}:\n{r.daemon.log()}"
            return all((r.daemon.sample("r53lb_last_probe_round_timestamp_seconds") or 0) > 0
                       and r.daemon.sample("r53lb_replicas_fresh") == len(self.replicas)
                       for r in self.replicas) and len(self.leaders()) == 1
        wait_until("three replicas with a full probe round and one leader", ready, timeout=30)

    def leaders(self, among: list[Replica] | None = None) -> list[Replica]:
        return [r for r in (among or self.replicas) if r.proc.poll() is None and r.leader()]

    def writes(self) -> list[tuple[str, int]]:
        """(replica, epoch) of every Route 53 change batch r53lb made, in order."""
        out = []
        for c in list(self.server.controls.comments):
            m = COMMENT.search(c or "")
            if m:
                out.append((m.group(1), int(m.group(2))))
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.daemon.log()}" for r in self.replicas)


@pytest.fixture
def cluster(tmp_path: Path, moto_server: Any) -> Iterator[Cluster]:
    port = free_port()
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zones = build(client, {"example.com": {RECORD: {"type": "A", "sets": {k: (v, 50) for k, v in NODES.items()}}}})
    smtp = {k: SmtpServer(v, port).start() for k, v in NODES.items()}
    doc = {
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "cluster": {"table": TABLE, "region": "us-east-1", "lease": f"{LEASE:g}s",
                    "heartbeat": f"{HEARTBEAT * 1000:.0f}ms"},
        "defaults": {"interval": f"{INTERVAL}s", "fastinter": f"{FASTINTER * 1000:.0f}ms", "timeout": f"{TIMEOUT}s",
                     "rise": RISE, "fall": FALL, "helo": "probe.r53lb.test"},
        "pools": [{
            "name": "mx", "zone": "example.com", "record": RECORD, "checks": [{"smtp": {"port": port}}],
            "nodes": [{"id": k, "address": v, "weight": 50} for k, v in NODES.items()],
        }],
    }
    c = Cluster(tmp_path, moto_server.endpoint_url, zones["example.com"], moto_server, smtp, doc)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_ENV)
    init = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(c.config_for("init")), "cluster", "init"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert init.returncode == 0 and "created" in init.stdout, init.stderr
    try:
        yield c
    finally:
        for r in c.replicas:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGCONT)
                r.proc.send_signal(signal.SIGTERM)
        for r in c.replicas:
            try:
                r.proc.wait(15)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(5)
        for s in smtp.values():
            s.stop()


def wait_resyncs(r: Replica, n: int = 2) -> None:
    """Let the leader reconcile `n` more times (--resync 1s): time for any extra write to show."""
    key = ("r53lb_reconcile_duration_seconds_count", (("zone", "example.com"),))
    start = r.daemon.metrics().get(key, 0)
    wait_until(f"{n} more reconciles on {r.name}", lambda: r.daemon.metrics().get(key, 0) >= start + n, timeout=10)


def test_one_leader_one_write_per_death_whatever_the_clocks(cluster: Cluster) -> None:
    # Wall clocks 2 s apart either way change nothing: the lease runs on each replica's monotonic clock.
    cluster.start("ctl-a", R53LB_TEST_CLOCK_SKEW="2")
    cluster.start("ctl-b")
    cluster.start("ctl-c", R53LB_TEST_CLOCK_SKEW="-2")
    cluster.settled()
    for _ in range(5):  # and it stays one over a few heartbeats
        assert len(cluster.leaders()) == 1
        time.sleep(HEARTBEAT / 2)
    leader = cluster.leaders()[0]
    assert cluster.server.counts["ChangeResourceRecordSets"] == 1  # the fixture's own: first sight writes nothing

    cluster.smtp["hlb-2"].set_mode("refuse")
    started = time.monotonic()
    wait_until("hlb-2 drained", lambda: cluster.weights().get("hlb-2") == 0, timeout=BUDGET + 5, every=0.02)
    took = time.monotonic() - started
    print(f"\ntime to DNS with three replicas: {took:.2f}s (one controller's budget {BUDGET:.1f}s)")
    assert took <= BUDGET + 2 * HEARTBEAT + 0.5
    wait_until("all three see it down", lambda: leader.daemon.sample(
        "r53lb_node_votes_down", pool="mx", node="hlb-2") == 3, timeout=BUDGET + 5)
    wait_resyncs(leader)
    assert cluster.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50}
    assert cluster.server.counts["ChangeResourceRecordSets"] == 2, cluster.writes()  # one batch, not one per replica
    assert cluster.writes() == [(leader.name, int(leader.epoch() or 0))]

    # `r53lb status` shows the replicas, the leader and the votes; `history` who wrote what.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_ENV)
    cfg = str(cluster.config_for("ops"))
    st = subprocess.run([sys.executable, "-m", "r53lb", "-c", cfg, "status", "--json"],
                        capture_output=True, text=True, env=env, timeout=30)
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["cluster"]["leader"] == leader.name and data["cluster"]["epoch"] >= 1
    assert sorted(r["replica"] for r in data["cluster"]["replicas"]) == ["ctl-a", "ctl-b", "ctl-c"]
    assert all(r["fresh"] for r in data["cluster"]["replicas"])
    row = next(r for r in data["nodes"] if r["node"] == "hlb-2")
    assert row["votes_down"] == 3 and row["health"] == "down" and row["weight"] == 0
    hist = subprocess.run([sys.executable, "-m", "r53lb", "-c", cfg, "history", "--json"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert hist.returncode == 0, hist.stderr
    events = json.loads(hist.stdout)["events"]
    weight = [e for e in events if e["kind"] == "weight"]
    assert [(e["node"], e["to"], e["replica"], e["epoch"]) for e in weight] == [
        ("hlb-2", "0", leader.name, int(leader.epoch() or 0))]
    assert any(e["kind"] == "quorum" and e["node"] == "hlb-2" and re.match(r"[23] of 3 replicas see it down", e["reason"])
               and e["replica"] == leader.name for e in events)

    # Each replica's status page says the same about the cluster.
    page = httpx.get(f"{cluster.replicas[1].daemon.metrics_url}/api/status", timeout=10).json()
    assert page["cluster"]["leader"] == leader.name
    assert next(r for r in page["nodes"] if r["node"] == "hlb-2")["votes_down"] == 3
    assert httpx.get(f"{cluster.replicas[1].daemon.metrics_url}/", timeout=10).status_code == 200

    # A drain made from any host with the config reaches the leader through the table.
    def r53lb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "r53lb", "-c", cfg, *args], capture_output=True, text=True,
                              env=env, timeout=30)

    # --wait does not write itself (it would be a second writer): it waits for the leader's write.
    drained = r53lb("drain", "mx/hlb-3", "--reason", "kernel upgrade", "--wait", "--timeout", "6s",
                    "--nameserver", "127.0.0.1:1", "--samples", "1")
    assert cluster.weights().get("hlb-3") == 0, drained.stdout + drained.stderr
    assert "written by the r53lb process" in drained.stdout + drained.stderr, drained.stdout + drained.stderr
    assert drained.returncode == 1 and "step dns did not finish" in drained.stderr  # no name server here
    assert r53lb("enable", "mx/hlb-3").returncode == 0
    wait_until("hlb-3 enabled", lambda: cluster.weights().get("hlb-3") == 50, timeout=10)
    assert {w for w in cluster.writes()} == {(leader.name, int(leader.epoch() or 0))}
    # Only the replicas write: `sync` refuses in one line; `plan` reads.
    sync = r53lb("sync")
    assert sync.returncode == 2 and sync.stderr.count("\n") == 1 and "the lease holder alone" in sync.stderr
    plan = r53lb("plan", "--json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["changes"] == [], plan.stderr
    assert "Traceback" not in cluster.logs()


def test_leader_killed_another_takes_over_and_drains(cluster: Cluster) -> None:
    for name in ("ctl-a", "ctl-b", "ctl-c"):
        cluster.start(name)
    cluster.settled()
    old = cluster.leaders()[0]
    old_epoch = int(old.epoch() or 0)
    old.proc.kill()
    killed = time.monotonic()
    others = [r for r in cluster.replicas if r is not old]
    new = wait_until("a new leader", lambda: (ls := cluster.leaders(others)) and ls[0], timeout=LEASE + 5,
                     every=0.05)
    handover = time.monotonic() - killed
    print(f"\nhand-over after SIGKILL: {handover:.2f}s (lease {LEASE:g}s)")
    assert handover <= LEASE + 2
    assert int(new.epoch() or 0) == old_epoch + 1
    assert len(cluster.leaders(others)) == 1

    cluster.smtp["hlb-3"].set_mode("refuse")
    started = time.monotonic()
    wait_until("hlb-3 drained", lambda: cluster.weights().get("hlb-3") == 0, timeout=LEASE + BUDGET + 5, every=0.02)
    print(f"time to DNS after the hand-over: {time.monotonic() - started:.2f}s")
    assert time.monotonic() - started <= LEASE + BUDGET
    assert cluster.writes() == [(new.name, old_epoch + 1)]

    # A leader stopped by SIGTERM frees the lease on its way out: the last replica takes it at once.
    last = next(r for r in others if r is not new)
    new.proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    wait_until("the last replica to lead", last.leader, timeout=LEASE + 5, every=0.05)
    print(f"hand-over after SIGTERM: {time.monotonic() - stopped:.2f}s")
    assert time.monotonic() - stopped < LEASE
    assert new.proc.wait(15) == 0 and "released the lease" in new.daemon.log()
    assert int(last.epoch() or 0) == old_epoch + 2


def test_paused_leader_writes_nothing_and_steps_down(cluster: Cluster) -> None:
    for name in ("ctl-a", "ctl-b", "ctl-c"):
        cluster.start(name)
    cluster.settled()
    old = cluster.leaders()[0]
    old_epoch = int(old.epoch() or 0)
    others = [r for r in cluster.replicas if r is not old]
    old.proc.send_signal(signal.SIGSTOP)
    try:
        new = wait_until("a new leader", lambda: (ls := cluster.leaders(others)) and ls[0], timeout=LEASE + 5)
        # The new leader writes while the old one sleeps ...
        cluster.smtp["hlb-1"].set_mode("refuse")
        wait_until("hlb-1 drained", lambda: cluster.weights().get("hlb-1") == 0, timeout=BUDGET + 5)
        # ... and the old one saw the same death before it stopped? No: it was stopped. It resumes now.
    finally:
        old.proc.send_signal(signal.SIGCONT)
    # Its lease deadline passed while it slept: it says so at once, and steps down at its next beat.
    assert old.daemon.sample("r53lb_leader") == 0
    wait_until("the old leader to step down", lambda: "steps down" in old.daemon.log(), timeout=5)
    cluster.smtp["hlb-1"].set_mode("ok")
    wait_until("hlb-1 restored", lambda: cluster.weights().get("hlb-1") == 50, timeout=BUDGET + 5)
    wait_resyncs(new)
    writes = cluster.writes()
    assert writes and all(w == (new.name, old_epoch + 1) for w in writes), writes
    assert len(cluster.leaders()) == 1 and cluster.leaders()[0] is new
    assert old.proc.poll() is None  # it carries on, as a follower


def test_quorum_one_blind_replica_drains_nothing_two_do(cluster: Cluster) -> None:
    # ctl-b cannot reach hlb-2; ctl-c reaches neither hlb-2 nor hlb-3. hlb-2: 2 of 3 see it down
    # -> drained. hlb-3: 1 of 3 -> stays. Whoever leads, the votes decide.
    cluster.start("ctl-a")
    cluster.start("ctl-b", R53LB_TEST_BLIND_NODES="hlb-2")
    cluster.start("ctl-c", R53LB_TEST_BLIND_NODES="hlb-2,hlb-3")
    wait_until("hlb-2 drained", lambda: cluster.weights().get("hlb-2") == 0, timeout=30)
    leader = wait_until("one leader", lambda: (ls := cluster.leaders()) and len(ls) == 1 and ls[0], timeout=10)
    wait_until("hlb-3 seen down by ctl-c", lambda: leader.daemon.sample(
        "r53lb_node_votes_down", pool="mx", node="hlb-3") == 1, timeout=10)
    wait_resyncs(leader, 3)
    assert cluster.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50}
    assert leader.daemon.sample("r53lb_node_votes_down", pool="mx", node="hlb-2") == 2
    assert cluster.server.counts["ChangeResourceRecordSets"] == 2


def test_dynamodb_unreachable_stops_the_writes_and_alerts(cluster: Cluster) -> None:
    hook = WebhookReceiver()
    try:
        cluster.doc["notify"] = {"webhooks": [{"url": hook.url}]}
        for name in ("ctl-a", "ctl-b", "ctl-c"):
            cluster.start(name)
        cluster.settled()
        ddb = cluster.server.dynamodb
        for op in ("PutItem", "TransactWriteItems", "Query", "UpdateItem"):
            ddb.fail(op, 100_000)  # every request answers 500: DynamoDB is away
        wait_until("no leader", lambda: not cluster.leaders(), timeout=LEASE + 5)
        cluster.smtp["hlb-1"].set_mode("refuse")
        # (The changes of health are notified too, during the outage: only the alerts are counted here.)
        alerts = wait_until("one alert per replica", lambda: (a := [b for b in list(hook.bodies) if b["kind"] == "alert"])
                            and len(a) >= 3 and a, timeout=LEASE + 10)
        assert len(alerts) == 3 and all("Route 53 writes stop and DNS keeps its weights" in a["text"] for a in alerts)
        assert cluster.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}  # nobody may write
        ddb.reset()
        wait_until("hlb-1 drained once DynamoDB is back", lambda: cluster.weights().get("hlb-1") == 0, timeout=LEASE + 10)
        assert len(cluster.leaders()) == 1
        assert any(b["kind"] == "recovery" and "DynamoDB answers" in b["text"] for b in hook.wait_for(6))
    finally:
        hook.stop()


def test_dynamodb_throttling_is_retried_and_never_leaves_two_writers(cluster: Cluster) -> None:
    for name in ("ctl-a", "ctl-b", "ctl-c"):
        cluster.start(name)
    cluster.settled()
    leader = cluster.leaders()[0]
    epoch = int(leader.epoch() or 0)
    ddb = cluster.server.dynamodb
    # A few throttled answers of every kind: retried inside the heartbeat, nobody loses the lease.
    for op in ("TransactWriteItems", "PutItem", "Query"):
        ddb.throttle(op, 3)
    wait_until("the throttles to be used", lambda: not any(ddb._faults.values()), timeout=10)
    wait_resyncs(leader)
    assert cluster.leaders() == [leader] and int(leader.epoch() or 0) == epoch
    throttled = leader.daemon.metrics()
    assert sum(v for (name, labels), v in throttled.items()
               if name == "r53lb_dynamodb_requests_total" and ("outcome", "throttled") in labels) >= 1

    # The leader's renewals throttled for longer than a lease: it stops writing before anyone
    # else may start; another replica takes over; a death is then written once, by the new epoch.
    ddb.throttle("TransactWriteItems", 10_000)
    others = [r for r in cluster.replicas if r is not leader]
    new = wait_until("a new leader", lambda: (ls := cluster.leaders(others)) and ls[0], timeout=LEASE + 10)
    ddb.reset()  # the new leader renews normally
    assert not leader.leader()
    cluster.smtp["hlb-2"].set_mode("refuse")
    wait_until("hlb-2 drained", lambda: cluster.weights().get("hlb-2") == 0, timeout=BUDGET + 10)
    wait_resyncs(new)
    epochs = [e for _, e in cluster.writes()]
    assert epochs == sorted(epochs) and len({r for r, _ in cluster.writes()}) == 1, cluster.writes()
    assert sum(1 for r in cluster.replicas if r.leader()) <= 1


# --- the lease and the heartbeat against Route 53 and the store (issue 18) ----------------------


def test_route53_throttled_in_eight_zones_never_starves_the_heartbeat(cluster: Cluster) -> None:
    # Every zone's reconcile retries a throttled Route 53 read for many seconds on a worker thread:
    # eight of them fill asyncio's default pool. The heartbeat has a thread of its own.
    sets = {k: (v, 50) for k, v in NODES.items()}
    build(cluster.client, {f"z{i}.example.net": {f"mx.z{i}.example.net": {"type": "A", "sets": sets}}
                           for i in range(2, 9)})
    pool = cluster.doc["pools"][0]
    cluster.doc["pools"] = [pool] + [dict(pool, name=f"mx{i}", zone=f"z{i}.example.net",
                                          record=f"mx.z{i}.example.net") for i in range(2, 9)]
    r = cluster.start("ctl-a")
    cluster.settled()
    epoch = r.epoch()
    cluster.server.throttle("ListResourceRecordSets", 1_000_000)
    wait_until("the zones' re-reads to be throttled",
               lambda: cluster.server.counts["ListResourceRecordSets"] >= 16, timeout=10)
    ddb = cluster.server.dynamodb
    beats, started = ddb.counts["TransactWriteItems"], time.monotonic()
    while time.monotonic() - started < 6.0:
        assert r.leader(), f"the leader lost its lease while only Route 53 was slow:\n{r.daemon.log()}"
        time.sleep(0.2)
    rate = (ddb.counts["TransactWriteItems"] - beats) / (time.monotonic() - started)
    print(f"\nheartbeats with 8 zones throttled: {rate:.2f}/s (one per {HEARTBEAT:g}s expected)")
    assert rate >= 0.7 / HEARTBEAT
    assert r.epoch() == epoch
    cluster.server.reset()


def test_a_follower_shows_the_weights_the_leader_wrote(cluster: Cluster) -> None:
    for name in ("ctl-a", "ctl-b", "ctl-c"):
        cluster.start(name)
    cluster.settled()
    leader = cluster.leaders()[0]
    followers = [r for r in cluster.replicas if r is not leader]
    cluster.smtp["hlb-2"].set_mode("refuse")
    wait_until("hlb-2 drained", lambda: cluster.weights().get("hlb-2") == 0, timeout=BUDGET + 10)
    for f in followers:  # their resync (1 s here) re-reads the zone: page and metrics are true
        wait_until(f"{f.name}'s r53lb_node_weight", lambda f=f: f.daemon.sample(
            "r53lb_node_weight", pool="mx", node="hlb-2") == 0, timeout=10)
        page = httpx.get(f"{f.daemon.metrics_url}/api/status", timeout=10).json()
        assert next(n for n in page["nodes"] if n["node"] == "hlb-2")["weight"] == 0
    assert {w for w, _ in cluster.writes()} == {leader.name}  # they read, they never write


def test_dynamodb_outage_is_told_once_and_probing_goes_on(cluster: Cluster) -> None:
    import socket
    import threading

    hook = WebhookReceiver()
    address = f"\0r53lb-test-watchdog-{os.getpid()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(address)
    rx.settimeout(0.2)
    fed: list[float] = []

    def listen() -> None:
        while not stop.is_set():
            try:
                if b"WATCHDOG=1" in rx.recv(4096):
                    fed.append(time.monotonic())
            except OSError:
                pass

    stop = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        cluster.doc["notify"] = {"webhooks": [{"url": hook.url}]}
        # A signal check reads the store after every probe: a store outage must not look like no probing.
        cluster.doc["pools"][0]["checks"].append({"agent": {"port": free_port()}})
        a = cluster.start("ctl-a", NOTIFY_SOCKET="@" + address[1:], WATCHDOG_USEC="2000000")
        cluster.start("ctl-b")
        cluster.settled()
        ddb = cluster.server.dynamodb
        for op in ("PutItem", "TransactWriteItems", "Query", "UpdateItem", "DeleteItem", "GetItem"):
            ddb.fail(op, 100_000, code="AccessDeniedException", message="not authorized (a broken role)")
        out = time.monotonic()
        cluster.smtp["hlb-1"].set_mode("refuse")  # a change of health during the outage
        while time.monotonic() - out < 3 * 1.0 + 1.0 + 4.0:  # well past /healthz's limit for a node not probed
            h = a.daemon.healthz()
            assert h.status_code == 200 and "probed on time" in h.text, h.text
            time.sleep(0.25)
        assert len([t for t in fed if t > out + 4.0]) >= 2, "the watchdog was not fed while probes ran"
        assert "mx/hlb-1: up -> down" in a.daemon.log()
        wait_until("the change of health notified", lambda: any(
            b["kind"] == "health" and "hlb-1" in b["text"] for b in hook.bodies), timeout=10)
        ddb.reset()
        wait_until("DynamoDB answers again", lambda: "DynamoDB answers ctl-a again" in a.daemon.log(), timeout=10)
        log = a.daemon.log()
        assert log.count("cannot use DynamoDB: ") == 1, log  # one line when it fails ...
        assert log.count("DynamoDB answers ctl-a again") == 1  # ... one when it is back
        assert log.count("AccessDeniedException") <= 2, log  # the first line and the lease alert: no flood
    finally:
        stop.set()
        listener.join(2)
        rx.close()
        hook.stop()


def test_a_rolling_stop_never_takes_the_released_lease_back(cluster: Cluster) -> None:
    for name in ("ctl-a", "ctl-b", "ctl-c"):
        cluster.start(name)
    cluster.settled()
    ddb = cluster.server.dynamodb
    for n in range(2):  # two leaders stopped in turn, as a rolling deploy does
        leader = cluster.leaders()[0]
        epoch = int(leader.epoch() or 0)
        others = [r for r in cluster.replicas if r is not leader and r.proc.poll() is None]
        # SIGTERM while a renewal is in flight (its answer slow, then lost: it is retried).
        renewals = ddb.counts["TransactWriteItems"]
        ddb.lose_answer("TransactWriteItems", 1, delay=0.25)
        wait_until("a renewal in flight", lambda: ddb.counts["TransactWriteItems"] > renewals, timeout=5, every=0.002)
        leader.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        new = wait_until("another replica to lead", lambda: (ls := cluster.leaders(others)) and ls[0],
                         timeout=LEASE + 5, every=0.05)
        took = time.monotonic() - stopped
        print(f"\nhand-over after SIGTERM #{n + 1}: {took:.2f}s (lease {LEASE:g}s)")
        assert leader.proc.wait(15) == 0
        log = leader.daemon.log()
        released = log.index("released the lease")
        assert "holds the lease" not in log[released:], log  # it never took its own lease back
        assert took < LEASE * 0.75  # the renewal in flight, then the others' next beat: well under a lease
        assert int(new.epoch() or 0) == epoch + 1
        cluster.replicas.append(cluster.replicas.pop(cluster.replicas.index(leader)))  # keep it for the logs
        cluster.start(leader.name + f"-{n}")  # the deploy brings a new one up
        cluster.replicas = [r for r in cluster.replicas if r.proc.poll() is None]
        cluster.settled()


def test_an_early_sighup_does_not_kill_run(cluster: Cluster) -> None:
    r = cluster.start("ctl-a")
    # Once the config's library is loaded the process is past Python's start-up and still well
    # before its daemon's signal handlers: the window a SIGHUP used to kill it in.
    maps = Path(f"/proc/{r.proc.pid}/maps")
    wait_until("the config library loaded", lambda: r.proc.poll() is not None or "pydantic_core" in maps.read_text(),
               timeout=20, every=0.002)
    r.proc.send_signal(signal.SIGHUP)
    cluster.settled()
    assert r.proc.poll() is None
    wait_until("the held SIGHUP to reload", lambda: "SIGHUP: reloading" in r.daemon.log(), timeout=10)
    r.proc.send_signal(signal.SIGHUP)  # and later ones reload as ever
    wait_until("a second reload", lambda: r.daemon.log().count("SIGHUP: reloading") == 2, timeout=10)
    assert r.proc.poll() is None
