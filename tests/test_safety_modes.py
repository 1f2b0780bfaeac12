"""Safety rules with odd inputs, each run through BOTH modes: `r53lb sync` and `r53lb run`.

A real CLI subprocess against the strict moto server and loopback SMTP servers. Each
scenario states what Route 53 must hold once the controller has seen the failure; in
`sync` mode that is after a few cron-style runs, in `run` mode once the daemon has probed
the failure and reconciled (its metrics say when).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from moto_fixtures.pytest_plugin import FAKE_ENV
from moto_fixtures.spec import build, weights
from r53lb.demo.loopback import SmtpServer
from test_daemon import Daemon, free_port, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ZONE = "example.com"


class World:
    """One zone in moto, SMTP servers on loopback, a config; driven by `sync` or by `run`."""

    def __init__(self, tmp: Path, moto: Any, mode: str) -> None:
        self.tmp, self.moto, self.mode = tmp, moto, mode
        self.port = free_port()
        self.smtp: dict[str, SmtpServer] = {}
        self.zone_ids: dict[str, str] = {}
        self.daemon: Daemon | None = None
        self.config = tmp / "r53lb.yaml"
        self.doc: dict[str, Any] = {
            "aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
            "state": {"path": str(tmp / "state.db")},
            "defaults": {"interval": "1s", "fastinter": "200ms", "timeout": "1s", "rise": 2, "fall": 2,
                         "helo": "probe.r53lb.test"},
            "pools": [],
        }

    @property
    def client(self) -> Any:
        return boto3.client("route53", endpoint_url=self.moto.endpoint_url, region_name="us-east-1")

    def zone(self, spec: dict[str, Any], zone: str = ZONE) -> str:
        self.zone_ids.update(build(self.client, {zone: spec}))
        return self.zone_ids[zone]

    def serve(self, *addresses: str) -> None:
        for a in addresses:
            self.smtp[a] = SmtpServer(a, self.port).start()

    def pool(self, name: str, record: str, nodes: dict[str, Any], weight: int = 50, zone: str = ZONE,
             **kw: Any) -> None:
        self.doc["pools"].append({
            "name": name, "zone": zone, "record": record, "checks": [{"smtp": {"port": self.port}}],
            "nodes": [{"id": k, "address": v, "weight": weight} for k, v in nodes.items()], **kw})

    def weights(self, record: str, rtype: str = "A", zone: str = ZONE) -> dict[str, int]:
        return weights(self.client, self.zone_ids[zone], record, rtype)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(FAKE_ENV)
        return subprocess.run([sys.executable, "-m", "r53lb", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout, env=env)

    def start(self) -> None:
        """Write the config; in run mode start the daemon and wait for its first full round."""
        self.config.write_text(yaml.safe_dump(self.doc))
        if self.mode == "run":
            port = free_port()
            log_path = self.tmp / "daemon.log"
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(FAKE_ENV, PYTHONUNBUFFERED="1")
            with open(log_path, "w") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "r53lb", "-c", str(self.config), "run", "--resync", "1s",
                     "--metrics-addr", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
            self.daemon = Daemon(proc, f"http://127.0.0.1:{port}", log_path)
            wait_until("the first full probe round", lambda: self._alive() and
                       (self.daemon.sample("r53lb_last_probe_round_timestamp_seconds") or 0) > 0, timeout=20)

    def _alive(self) -> bool:
        assert self.daemon is not None
        assert self.daemon.proc.poll() is None, f"r53lb run exited {self.daemon.proc.returncode}:\n{self.daemon.log()}"
        return True

    def observe(self, pool: str, node: str, up: bool, runs: int = 2) -> list[subprocess.CompletedProcess[str]]:
        """Let the controller see `pool/node` as up/down and reconcile after it.

        sync: `runs` cron runs (fall/rise are confirmed inside one). run: the daemon's metric
        for the node flips, then its zone is reconciled at least twice more.
        """
        if self.mode == "sync":
            return [self.cli("sync", "--json") for _ in range(runs)]
        assert self.daemon is not None
        d = self.daemon
        wait_until(f"{pool}/{node} {'up' if up else 'down'}", lambda: self._alive() and
                   d.sample("r53lb_node_up", pool=pool, node=node) == (1 if up else 0), timeout=20)
        self.passes(2)
        return []

    def passes(self, n: int, zone: str = ZONE) -> None:
        """run mode: wait for n more reconciles of the zone (a resync or a health change asks for one)."""
        assert self.daemon is not None
        d = self.daemon
        count = lambda: d.sample("r53lb_reconcile_duration_seconds_count", zone=zone) or 0  # noqa: E731
        target = count() + n
        wait_until(f"{n} more reconcile(s) of {zone}", lambda: self._alive() and count() >= target, timeout=40)

    def stop(self) -> None:
        if self.daemon is not None:
            code = self.daemon.stop()
            assert code == 0, self.daemon.log()
            self.daemon = None


@pytest.fixture(params=["sync", "run"])
def world(request: pytest.FixtureRequest, tmp_path: Path, moto_server: Any) -> Iterator[World]:
    w = World(tmp_path, moto_server, request.param)
    try:
        yield w
    finally:
        if w.daemon is not None and w.daemon.proc.poll() is None:
            w.daemon.proc.kill()
            w.daemon.proc.wait(5)
        for s in w.smtp.values():
            s.stop()


# --- 1. a node that cannot be written counts at the weight Route 53 holds ---------------------


def test_drifted_node_at_zero_never_lets_the_pool_go_all_zero(world: World) -> None:
    # a's set holds another address (drift) at weight 0; b carries the pool. b dies.
    world.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.0.99", 0), "b": ("127.0.1.12", 50)}}})
    world.serve("127.0.1.11", "127.0.1.12")
    world.pool("mx", "mx.example.com", {"a": "127.0.1.11", "b": "127.0.1.12"})
    world.start()
    world.smtp["127.0.1.12"].set_mode("refuse")
    runs = world.observe("mx", "b", up=False)
    # Nobody that can carry weight is healthy: fail open keeps b at its base weight.
    assert world.weights("mx.example.com") == {"a": 0, "b": 50}
    for p in runs:
        assert p.returncode == 1, p.stderr  # the drift is an error for a
        out = json.loads(p.stdout)
        assert out["pools"]["mx"]["fail_open"] is True
        assert "drift" in p.stderr
    world.stop()


def test_failover_never_zeroes_the_standby_for_a_drifted_primary(world: World) -> None:
    world.zone({"smtp.example.com": {"type": "A", "sets": {"primary": ("127.0.0.98", 0),
                                                              "standby": ("127.0.1.22", 1)}}})
    world.serve("127.0.1.21", "127.0.1.22")
    world.pool("ha", "smtp.example.com", {"primary": "127.0.1.21", "standby": "127.0.1.22"}, weight=1,
               mode="failover")
    world.start()
    if world.mode == "sync":
        for p in [world.cli("sync", "--json") for _ in range(2)]:
            assert p.returncode == 1 and json.loads(p.stdout)["pools"]["ha"]["active"] == "standby", p.stdout
    else:
        world.passes(2)
    assert world.weights("smtp.example.com") == {"primary": 0, "standby": 1}
    world.stop()


def test_missing_set_counts_at_zero(world: World) -> None:
    world.zone({"mx.example.com": {"type": "A", "sets": {"b": ("127.0.1.32", 50)}}})  # a's set is missing
    world.serve("127.0.1.31", "127.0.1.32")
    world.pool("mx", "mx.example.com", {"a": "127.0.1.31", "b": "127.0.1.32"})
    world.start()
    world.smtp["127.0.1.32"].set_mode("refuse")
    world.observe("mx", "b", up=False)
    assert world.weights("mx.example.com") == {"b": 50}
    world.stop()


# --- 3. max_drain_per_cycle: in run a cycle is one interval -----------------------------------


def test_blast_radius_holds_in_both_modes(world: World) -> None:
    nodes = {f"n{i}": f"127.0.1.{40 + i}" for i in range(1, 7)}
    world.zone({"mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in nodes.items()}}})
    world.serve(*nodes.values())
    world.pool("mx", "mx.example.com", nodes, max_drain_per_cycle=1, interval="2s")
    world.start()
    for n in ("n1", "n2", "n3", "n4"):
        world.smtp[nodes[n]].set_mode("refuse")
    if world.mode == "sync":
        for i in range(1, 5):
            p = world.cli("sync", "--json")
            out = json.loads(p.stdout)
            assert [c["to_weight"] for c in out["changes"]] == [0], out
            assert sum(1 for w in world.weights("mx.example.com").values() if w == 0) == i
            if i < 4:
                assert any("max_drain_per_cycle" in a for a in out["alerts"])
    else:
        wait_until("four nodes drained", lambda: world._alive() and
                   sum(1 for w in world.weights("mx.example.com").values() if w == 0) == 4, timeout=60)
    events = json.loads(world.cli("history", "--json", "--limit", "100").stdout)["events"]
    drains = sorted(time_of(e) for e in events if e["kind"] == "weight" and e["to"] == "0")
    assert len(drains) == 4
    if world.mode == "run":
        gaps = [b - a for a, b in zip(drains, drains[1:])]
        assert min(gaps) >= 2.0 - 0.05, gaps  # at most one drain per pool interval (2 s)
    world.stop()


def time_of(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["at"]).timestamp()


# --- 7. IPv6 compared by value ---------------------------------------------------------------


def test_ipv6_spelled_differently_is_not_drift(world: World) -> None:
    world.zone({"dual.example.com": [
        {"type": "A", "sets": {"a": ("127.0.1.51", 30), "b": ("127.0.1.52", 30)}},
        {"type": "AAAA", "sets": {"a": ("2001:0DB8:0:0:0:0:0:51", 30), "b": ("2001:db8:0::52", 30)}},
    ]})
    world.serve("127.0.1.51", "127.0.1.52")
    world.doc["pools"].append({
        "name": "dual", "zone": ZONE, "record": "dual.example.com", "checks": [{"smtp": {"port": world.port}}],
        "nodes": [{"id": "a", "address": ["127.0.1.51", "2001:db8::51"], "probe_address": "127.0.1.51", "weight": 30},
                  {"id": "b", "address": ["127.0.1.52", "2001:db8::52"], "probe_address": "127.0.1.52", "weight": 30}]})
    world.start()
    world.smtp["127.0.1.51"].set_mode("refuse")
    runs = world.observe("dual", "a", up=False)
    assert world.weights("dual.example.com", "A") == {"a": 0, "b": 30}
    assert world.weights("dual.example.com", "AAAA") == {"a": 0, "b": 30}
    for p in runs:
        assert p.returncode == 0 and "drift" not in p.stderr, p.stderr
    world.stop()


# --- 8. zones are independent ----------------------------------------------------------------


def test_a_missing_zone_does_not_stop_another_zones_writes(world: World) -> None:
    world.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.1.61", 50), "b": ("127.0.1.62", 50)}}})
    world.serve("127.0.1.61", "127.0.1.62", "127.0.1.63")
    world.pool("gone", "mx.missing.example", {"x": "127.0.1.63"}, zone="missing.example")
    world.pool("mx", "mx.example.com", {"a": "127.0.1.61", "b": "127.0.1.62"})
    world.start()
    world.smtp["127.0.1.62"].set_mode("refuse")
    runs = world.observe("mx", "b", up=False)
    assert world.weights("mx.example.com") == {"a": 50, "b": 0}
    for p in runs:
        assert p.returncode == 1, p.stderr
        assert "missing.example" in p.stderr and "not found" in p.stderr
        assert json.loads(p.stdout)["zone_errors"].keys() == {"missing.example"}
    world.stop()


# --- 6 and 9. what a refused batch means ------------------------------------------------------


def test_refused_for_another_reason_is_one_write_and_route53s_reason(tmp_path: Path, moto_server: Any) -> None:
    w = World(tmp_path, moto_server, "sync")
    try:
        w.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.1.71", 50)}}})
        # A plain (not weighted) record of the name the new pool wants to create.
        w.client.change_resource_record_sets(HostedZoneId=w.zone_ids[ZONE], ChangeBatch={"Changes": [{
            "Action": "CREATE", "ResourceRecordSet": {"Name": "new.example.com", "Type": "A", "TTL": 60,
                                                      "ResourceRecords": [{"Value": "127.0.1.72"}]}}]})
        w.serve("127.0.1.71", "127.0.1.72")
        w.pool("new", "new.example.com", {"b": "127.0.1.72"})
        w.start()
        before = moto_server.counts["ChangeResourceRecordSets"]
        p = w.cli("sync", "--json", "--create-missing")
        assert p.returncode == 1
        assert moto_server.counts["ChangeResourceRecordSets"] - before == 1
        assert "non-weighted set exists" in p.stderr and "kept changing" not in p.stderr
        assert json.loads(p.stdout)["conflicts"] == 0
    finally:
        for s in w.smtp.values():
            s.stop()


def test_a_lost_answer_is_a_success(world: World, moto_server: Any) -> None:
    world.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.1.81", 50), "b": ("127.0.1.82", 50)}}})
    world.serve("127.0.1.81", "127.0.1.82")
    world.pool("mx", "mx.example.com", {"a": "127.0.1.81", "b": "127.0.1.82"})
    world.start()
    moto_server.lose_answer("ChangeResourceRecordSets")
    world.smtp["127.0.1.82"].set_mode("refuse")
    if world.mode == "sync":
        p = world.cli("sync", "--json")
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert [(c["node"], c["to_weight"]) for c in out["changes"]] == [("b", 0)]
        assert "another writer" not in p.stderr and "kept changing" not in p.stderr
    else:
        wait_until("b drained", lambda: world._alive() and world.weights("mx.example.com")["b"] == 0, timeout=20)
    assert world.weights("mx.example.com") == {"a": 50, "b": 0}
    wait_until("the weight event", lambda: any(
        e["kind"] == "weight" and e["to"] == "0"
        for e in json.loads(world.cli("history", "--json", "--node", "mx/b").stdout)["events"]), timeout=10)
    world.stop()


# --- sync records a hold once when it starts and once when it ends ----------------------------


def test_hold_is_recorded_once_across_cron_runs(tmp_path: Path, moto_server: Any) -> None:
    w = World(tmp_path, moto_server, "sync")
    try:
        w.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.1.91", 50), "b": ("127.0.1.92", 50)}}})
        w.serve("127.0.1.91", "127.0.1.92")
        w.pool("mx", "mx.example.com", {"a": "127.0.1.91", "b": "127.0.1.92"})
        w.start()
        for s in w.smtp.values():
            s.set_mode("refuse")
        for _ in range(3):
            assert w.cli("sync").returncode == 3
        for s in w.smtp.values():
            s.set_mode("ok")
        for _ in range(2):
            assert w.cli("sync").returncode == 0
        events = json.loads(w.cli("history", "--json").stdout)["events"]
        holds = [(e["from"], e["to"]) for e in events if e["kind"] == "hold"]
        assert holds == [(None, "hold"), ("hold", None)]
        assert w.weights("mx.example.com") == {"a": 50, "b": 50}
    finally:
        for s in w.smtp.values():
            s.stop()


# --- 2. run never stops probing a node ---------------------------------------------------------


def test_run_keeps_probing_through_hangs_and_reloads(tmp_path: Path, moto_server: Any) -> None:
    w = World(tmp_path, moto_server, "run")
    try:
        w.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.1.101", 50), "b": ("127.0.1.102", 50),
                                                          "c": ("127.0.1.103", 50)}}})
        w.serve("127.0.1.101", "127.0.1.102", "127.0.1.103")
        w.pool("mx", "mx.example.com", {"a": "127.0.1.101", "b": "127.0.1.102", "c": "127.0.1.103"})
        w.start()
        assert w.daemon is not None
        # b hangs (accepts, never greets): each probe costs its whole timeout, longer than fastinter.
        w.smtp["127.0.1.102"].set_mode("hang")
        # SIGHUP while b's probe hangs, three times.
        for i in range(3):
            time.sleep(0)  # let the loop run
            w.doc["defaults"]["rise"] = 3 if i % 2 == 0 else 2
            w.config.write_text(yaml.safe_dump(w.doc))
            w.daemon.proc.send_signal(1)
            wait_until("the reload", lambda: w.daemon.log().count("config reloaded") >= i + 1, timeout=10)
        wait_until("b drained", lambda: w._alive() and w.weights("mx.example.com")["b"] == 0, timeout=20)
        # b keeps being probed: it comes back.
        w.smtp["127.0.1.102"].set_mode("ok")
        wait_until("b back", lambda: w._alive() and w.weights("mx.example.com")["b"] > 0, timeout=20)
        assert httpx.get(f"{w.daemon.metrics_url}/healthz", timeout=5).status_code == 200
        w.stop()
    finally:
        for s in w.smtp.values():
            s.stop()


# --- 12. /healthz names the error's class, not the account -------------------------------------


def test_healthz_shows_the_error_class_not_the_arn(tmp_path: Path, moto_server: Any) -> None:
    import r53lb.engine.daemon as daemon_module

    d = daemon_module.Daemon.__new__(daemon_module.Daemon)
    d._stopping = False
    d.cfg = type("C", (), {"pools": []})()  # no node is late
    d.last_probe = {}
    d.holds = {}
    z = daemon_module._Zone("example.com")
    z.failing_since = time.monotonic() - 3600
    z.error_class = "AccessDenied"
    d.zones = {"example.com": z}
    d.cfg.pools = [type("P", (), {"tuning": type("T", (), {"interval": 10.0, "timeout": 1.0})(),
                                  "name": "mx", "nodes": []})()]
    ok, text = d.healthz()
    assert not ok and text.endswith(": AccessDenied") and "arn:" not in text


# --- one scenario, both modes: the same history and the same alerts ---------------------------


def _story(tmp: Path, moto_server: Any, mode: str) -> tuple[list[tuple[str, str, Any, Any]], list[tuple[str, str]]]:
    from test_notify import WebhookReceiver

    moto_server.reset()
    hook = WebhookReceiver()
    w = World(tmp / mode, moto_server, mode)
    (tmp / mode).mkdir()
    w.config = tmp / mode / "r53lb.yaml"
    nodes = {"a": "127.0.2.11", "b": "127.0.2.12", "c": "127.0.2.13"}
    try:
        w.zone({"mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in nodes.items()}}})
        w.serve(*nodes.values())
        w.pool("mx", "mx.example.com", nodes, min_in_service=2)
        w.doc["notify"] = {"webhooks": [{"url": hook.url}]}
        w.start()

        def step(expect: dict[str, int]) -> None:
            if mode == "sync":
                w.cli("sync")
                assert w.weights("mx.example.com") == expect
            else:
                wait_until(f"weights {expect}", lambda: w._alive() and w.weights("mx.example.com") == expect,
                           timeout=20)
                w.passes(2)

        step({"a": 50, "b": 50, "c": 50})
        w.smtp[nodes["b"]].set_mode("refuse")
        step({"a": 50, "b": 0, "c": 50})
        w.smtp[nodes["c"]].set_mode("refuse")  # the floor keeps c: panic
        step({"a": 50, "b": 0, "c": 50})
        w.smtp[nodes["b"]].set_mode("ok")  # b back: the floor holds without c, so c is drained now
        step({"a": 50, "b": 50, "c": 0})
        w.smtp[nodes["c"]].set_mode("ok")
        step({"a": 50, "b": 50, "c": 50})
        w.stop()
        wait_until("the last alert delivered", lambda: any(b["kind"] == "recovery" for b in hook.bodies), timeout=10)
        events = json.loads(w.cli("history", "--json", "--limit", "100").stdout)["events"]
        history = [(e["kind"], f"{e['pool']}/{e['node']}", e["from"], e["to"]) for e in events]
        alerts = [(b["kind"], b["message"].replace(str(w.port), "PORT")) for b in hook.bodies]
        return history, alerts
    finally:
        if w.daemon is not None and w.daemon.proc.poll() is None:
            w.daemon.proc.kill()
        for s in w.smtp.values():
            s.stop()
        hook.stop()


def test_sync_and_run_tell_the_same_story(tmp_path: Path, moto_server: Any) -> None:
    sync_history, sync_alerts = _story(tmp_path, moto_server, "sync")
    run_history, run_alerts = _story(tmp_path, moto_server, "run")
    assert sync_history == run_history
    assert ("weight", "mx/b", "50", "0") in sync_history
    assert sync_alerts == run_alerts
    watcher = lambda alerts: [a for a in alerts if a[0] != "health"]  # noqa: E731
    assert watcher(sync_alerts) == watcher(run_alerts) == [
        ("panic", "pool mx: panic: 1 healthy node(s), min_in_service is 2"),
        ("recovery", "pool mx: out of panic"),
    ]


# --- 14. the systemd watchdog is fed only while probes run on time -----------------------------


def test_run_tells_systemd_ready_watchdog_and_stopping(tmp_path: Path, moto_server: Any) -> None:
    import socket
    import tempfile

    w = World(tmp_path, moto_server, "run")
    short = Path(tempfile.mkdtemp(prefix="r53lb-", dir="/tmp"))
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(short / "notify"))
    rx.settimeout(10)
    try:
        w.zone({"mx.example.com": {"type": "A", "sets": {"a": ("127.0.2.41", 50), "b": ("127.0.2.42", 50)}}})
        w.serve("127.0.2.41", "127.0.2.42")
        w.pool("mx", "mx.example.com", {"a": "127.0.2.41", "b": "127.0.2.42"})
        w.config.write_text(yaml.safe_dump(w.doc))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(FAKE_ENV, NOTIFY_SOCKET=str(short / "notify"), WATCHDOG_USEC="1000000")
        proc = subprocess.Popen([sys.executable, "-m", "r53lb", "-c", str(w.config), "run", "--no-metrics"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            got: list[str] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (any(g.startswith("READY=1") for g in got)
                                                       and got.count("WATCHDOG=1") >= 2):
                got.append(rx.recv(4096).decode())
            assert got[0].startswith("READY=1"), got
            assert got.count("WATCHDOG=1") >= 2, got
            proc.send_signal(15)
            assert proc.wait(20) == 0
            rest = []
            rx.settimeout(2)
            try:
                while True:
                    rest.append(rx.recv(4096).decode())
            except socket.timeout:
                pass
            assert "STOPPING=1" in rest, rest
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    finally:
        rx.close()
        for s in w.smtp.values():
            s.stop()


def test_the_watchdog_goes_hungry_when_probes_are_late(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import r53lb.engine.daemon as daemon_module

    sent: list[str] = []
    monkeypatch.setattr(daemon_module.sdnotify, "notify", lambda state, env=None: sent.append(state) or True)
    d = daemon_module.Daemon.__new__(daemon_module.Daemon)
    tuning = type("T", (), {"interval": 1.0, "timeout": 1.0})()
    node = type("N", (), {"id": "a"})()
    d.cfg = type("C", (), {"pools": [type("P", (), {"tuning": tuning, "name": "mx", "nodes": [node]})()]})()
    d.last_probe = {("mx", "a"): time.monotonic()}
    asyncio.run(d._watchdog())
    assert sent == ["WATCHDOG=1"]
    d.last_probe = {("mx", "a"): time.monotonic() - 60}  # the loop has not probed it for a minute
    asyncio.run(d._watchdog())
    assert sent == ["WATCHDOG=1"]


# --- a vantage hold in run ends when the fleet answers, even if a sampled node died for real -----


def test_hold_ends_when_most_of_the_fleet_answers_again(tmp_path: Path, moto_server: Any) -> None:
    w = World(tmp_path, moto_server, "run")
    nodes = {"a": "127.0.2.51", "b": "127.0.2.52", "c": "127.0.2.53"}
    try:
        w.zone({"mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in nodes.items()}}})
        w.serve(*nodes.values())
        w.pool("mx", "mx.example.com", nodes)
        w.start()
        assert w.daemon is not None
        for s in w.smtp.values():
            s.set_mode("refuse")  # our own network, as far as r53lb can tell
        wait_until("the hold", lambda: w._alive() and w.daemon.sample("r53lb_hold") == 1, timeout=20)
        assert w.weights("mx.example.com") == {"a": 50, "b": 50, "c": 50}
        for n in ("b", "c"):
            w.smtp[nodes[n]].set_mode("ok")  # the network is back; a died for real meanwhile
        wait_until("the hold cleared", lambda: w._alive() and w.daemon.sample("r53lb_hold") == 0, timeout=20)
        wait_until("a drained", lambda: w._alive() and w.weights("mx.example.com") == {"a": 0, "b": 50, "c": 50},
                   timeout=20)
        events = json.loads(w.cli("history", "--json").stdout)["events"]
        assert [(e["from"], e["to"]) for e in events if e["kind"] == "hold"] == [(None, "hold"), ("hold", None)]
        w.stop()
    finally:
        for s in w.smtp.values():
            s.stop()
