"""`r53lb run` end to end: a subprocess against the strict moto server and loopback SMTP servers.

Short profile: interval 1s, fastinter 0.5s, fall 2, rise 2, timeout 1s. The time-to-DNS
budget (DESIGN.md) is interval + (fall - 1) x fastinter + timeout + 1 s = 3.5 s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from moto_fixtures.pytest_plugin import FAKE_ENV
from moto_fixtures.spec import build, record_sets, set_weight, weights
from r53lb.demo.loopback import SmtpServer
from test_notify import WebhookReceiver, sns_topic_with_queue, sqs_messages

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

INTERVAL, FASTINTER, FALL, RISE, TIMEOUT = 1.0, 0.5, 2, 2, 1.0
BUDGET = INTERVAL + (FALL - 1) * FASTINTER + TIMEOUT + 1.0
NODES = {"hlb-1": "127.0.0.61", "hlb-2": "127.0.0.62", "hlb-3": "127.0.0.63"}
RECORD = "mx.example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 15.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    metrics_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.metrics_url}/metrics", timeout=5).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def sample(self, name: str, **labels: str) -> float | None:
        try:
            return self.metrics().get((name, tuple(sorted(labels.items()))))
        except httpx.HTTPError:
            return None

    def healthz(self) -> httpx.Response:
        return httpx.get(f"{self.metrics_url}/healthz", timeout=5)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"r53lb run ignored SIGTERM for {timeout}s:\n{self.log()}")
        return self.proc.returncode


@dataclass
class Fleet:
    tmp: Path
    config: Path
    endpoint: str
    zone_id: str
    smtp: dict[str, SmtpServer]
    server: Any
    doc: dict[str, Any]
    daemons: list[Daemon]

    @property
    def client(self) -> Any:
        return boto3.client("route53", endpoint_url=self.endpoint, region_name="us-east-1")

    def weights(self) -> dict[str, int]:
        return weights(self.client, self.zone_id, RECORD, "A")

    def write_config(self, doc: dict[str, Any] | None = None) -> None:
        self.config.write_text(yaml.safe_dump(doc or self.doc))

    def start(self, *args: str) -> Daemon:
        port = free_port()
        log_path = self.tmp / f"daemon-{len(self.daemons)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(FAKE_ENV, PYTHONUNBUFFERED="1")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "r53lb", "-c", str(self.config), *args, "run",
                 "--metrics-addr", f"127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
            )
        d = Daemon(proc, f"http://127.0.0.1:{port}", log_path)
        self.daemons.append(d)
        return d

    def settled(self, d: Daemon) -> None:
        """Running, every node probed and up, the zone read."""
        def ready() -> bool:
            assert d.proc.poll() is None, f"r53lb run exited {d.proc.returncode}:\n{d.log()}"
            return (d.sample("r53lb_last_probe_round_timestamp_seconds") or 0) > 0 and all(
                d.sample("r53lb_node_up", pool="mx", node=n) == 1 for n in NODES)
        wait_until("the first full probe round", ready, timeout=20)


@pytest.fixture
def fleet(tmp_path: Path, moto_server: Any) -> Iterator[Fleet]:
    port = free_port()
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zones = build(client, {"example.com": {RECORD: {"type": "A", "sets": {k: (v, 50) for k, v in NODES.items()}}}})
    smtp = {k: SmtpServer(v, port).start() for k, v in NODES.items()}
    doc = {
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "state": {"path": str(tmp_path / "state.db")},
        "defaults": {"interval": f"{INTERVAL}s", "fastinter": f"{FASTINTER * 1000:.0f}ms", "timeout": f"{TIMEOUT}s",
                     "rise": RISE, "fall": FALL, "helo": "probe.r53lb.test"},
        "pools": [{
            "name": "mx", "zone": "example.com", "record": RECORD, "checks": [{"smtp": {"port": port}}],
            "nodes": [{"id": k, "address": v, "weight": 50} for k, v in NODES.items()],
        }],
    }
    f = Fleet(tmp_path, tmp_path / "r53lb.yaml", moto_server.endpoint_url, zones["example.com"], smtp,
              moto_server, doc, [])
    f.write_config()
    try:
        yield f
    finally:
        for d in f.daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGTERM)
                try:
                    d.proc.wait(15)
                except subprocess.TimeoutExpired:
                    d.proc.kill()
                    d.proc.wait(5)
        for s in smtp.values():
            s.stop()


def measure(fleet: Fleet, node: str, target: int, timeout: float) -> float:
    started = time.monotonic()
    wait_until(f"{node} weight {target}", lambda: fleet.weights().get(node) == target, timeout=timeout, every=0.02)
    return time.monotonic() - started


def test_kill_a_node_then_bring_it_back(fleet: Fleet) -> None:
    hook = WebhookReceiver()
    try:
        arn, queue = sns_topic_with_queue(fleet.endpoint)
        fleet.doc["notify"] = {"webhooks": [{"url": hook.url}], "sns": {"topic_arn": arn}}
        fleet.write_config()
        d = fleet.start()
        fleet.settled(d)
        writes = fleet.server.counts["ChangeResourceRecordSets"]  # the fixture's own CREATE
        assert writes == 1  # first sight changes nothing

        fleet.smtp["hlb-2"].set_mode("refuse")
        down = measure(fleet, "hlb-2", 0, timeout=BUDGET + 5)
        print(f"\ntime to DNS, node down: {down:.2f}s (budget {BUDGET:.1f}s)")
        assert down <= BUDGET
        assert fleet.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50}

        # Metrics tell the same story.
        # The weight gauge is set once the write is recorded, a moment after Route 53 shows it.
        m = wait_until("metrics of the dead node", lambda: (
            (mm := d.metrics()).get(("r53lb_node_up", (("node", "hlb-2"), ("pool", "mx")))) == 0
            and mm.get(("r53lb_node_weight", (("node", "hlb-2"), ("pool", "mx")))) == 0 and mm))
        key = lambda node: (("node", node), ("pool", "mx"))  # noqa: E731
        assert m[("r53lb_node_weight", key("hlb-2"))] == 0
        assert m[("r53lb_node_weight", key("hlb-1"))] == 50
        assert m[("r53lb_node_desired_weight", key("hlb-2"))] == 0
        assert m[("r53lb_node_desired_weight", key("hlb-3"))] == 50
        assert m[("r53lb_node_up", key("hlb-1"))] == 1
        assert m[("r53lb_probe_failures_total", (("check", "smtp"), ("reason", "refused")))] >= FALL
        assert m[("r53lb_probe_duration_seconds_count", (("check", "smtp"),))] >= 6
        assert m[("r53lb_route53_requests_total",
                  (("operation", "ChangeResourceRecordSets"), ("outcome", "ok")))] == 1
        assert m[("r53lb_route53_requests_total",
                  (("operation", "ListResourceRecordSets"), ("outcome", "ok")))] >= 2
        assert m[("r53lb_reconcile_duration_seconds_count", (("zone", "example.com"),))] >= 1
        assert m[("r53lb_pool_panic", (("pool", "mx"),))] == 0
        assert m[("r53lb_node_listed", key("hlb-1"))] == 0
        assert m[("r53lb_node_warmup_share", key("hlb-1"))] == 1
        assert m[("r53lb_hold", ())] == 0
        r = d.healthz()
        assert r.status_code == 200, r.text

        fleet.smtp["hlb-2"].set_mode("ok")
        up = measure(fleet, "hlb-2", 50, timeout=INTERVAL * 1.1 + (RISE - 1) * FASTINTER + TIMEOUT + 5)
        print(f"time to DNS, node back: {up:.2f}s")
        assert up <= INTERVAL * 1.1 + (RISE - 1) * FASTINTER + TIMEOUT + 1.0
        assert fleet.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}
        assert fleet.server.counts["ChangeResourceRecordSets"] == writes + 2  # one write per change, none else

        # One webhook message per transition, in order, with Slack's `text`.
        bodies = hook.wait_for(2)
        health = [b for b in bodies if b["kind"] == "health"]
        assert [(b["details"]["node"], b["details"]["to"]) for b in health] == [("hlb-2", "down"), ("hlb-2", "up")]
        assert "mx/hlb-2 is down" in health[0]["text"] and "refused" in health[0]["text"]
        assert len(bodies) == 2, bodies
        # And the same two land in SNS (read back through an SQS subscription in moto).
        got = sqs_messages(fleet.endpoint, queue, 2)
        assert [g["Subject"].split(":")[0] for g in got] == ["r53lb health", "r53lb health"]

        assert d.stop() == 0
        log = d.log()
        assert "mx/hlb-2: up -> down" in log and "weight 50 -> 0" in log and "Traceback" not in log
    finally:
        hook.stop()


def test_sigterm_during_a_write_finishes_it_and_exits_0(fleet: Fleet) -> None:
    d = fleet.start()
    fleet.settled(d)
    entered, release = threading.Event(), threading.Event()

    def hold_the_write() -> None:  # runs inside moto, just before the batch is applied
        entered.set()
        release.wait(20)

    fleet.server.before_change(hold_the_write)
    fleet.smtp["hlb-3"].set_mode("421")
    wait_until("the write to start", entered.is_set, timeout=BUDGET + 5)
    d.proc.send_signal(signal.SIGTERM)
    wait_until("the stop to be logged", lambda: "stopping after the write in flight" in d.log(), timeout=5)
    assert d.proc.poll() is None  # still waiting for the write
    release.set()
    assert d.proc.wait(20) == 0, d.log()
    # Route 53 is consistent: the write landed whole, every set exactly once.
    assert fleet.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 0}
    sets = [rs for rs in record_sets(fleet.client, fleet.zone_id, RECORD, "A")]
    assert sorted(rs["SetIdentifier"] for rs in sets) == ["hlb-1", "hlb-2", "hlb-3"]
    assert "weight 50 -> 0" in d.log()


def test_sighup_refuses_a_broken_config_and_applies_a_good_one(fleet: Fleet) -> None:
    d = fleet.start("--log-format", "json")
    fleet.settled(d)
    fleet.config.write_text("pools:\n  - name: mx\n    weight: [\n")
    d.proc.send_signal(signal.SIGHUP)
    wait_until("the refusal", lambda: "config reload refused" in d.log(), timeout=10)
    refused = [json.loads(line) for line in d.log().splitlines() if "config reload refused" in line]
    assert refused[0]["level"] == "error" and "not valid YAML" in refused[0]["msg"]
    # Still running on the old config: it still reacts to a dead node.
    assert d.proc.poll() is None and d.healthz().status_code == 200
    fleet.smtp["hlb-1"].set_mode("refuse")
    measure(fleet, "hlb-1", 0, timeout=BUDGET + 5)

    # A valid new config takes effect: hlb-3's base weight becomes 30.
    fleet.doc["pools"][0]["nodes"][2]["weight"] = 30
    fleet.write_config()
    d.proc.send_signal(signal.SIGHUP)
    wait_until("the reload", lambda: "config reloaded" in d.log(), timeout=10)
    measure(fleet, "hlb-3", 30, timeout=INTERVAL * 1.1 + TIMEOUT + 5)
    assert fleet.weights() == {"hlb-1": 0, "hlb-2": 50, "hlb-3": 30}
    assert d.stop() == 0


def test_run_refuses_a_broken_config_or_address(fleet: Fleet, tmp_path: Path) -> None:
    # A broken config at start: exit 2 with the key path, nothing started.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**fleet.doc, "pools": [{**fleet.doc["pools"][0], "mode": "random"}]}))
    p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(bad), "run", "--no-metrics"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "pools[0].mode" in p.stderr
    p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(fleet.config), "run", "--metrics-addr", "nope"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "HOST:PORT" in p.stderr


def test_every_node_failing_is_a_hold_not_a_drain(fleet: Fleet) -> None:
    hook = WebhookReceiver()
    try:
        fleet.doc["notify"] = {"webhooks": [{"url": hook.url}]}
        fleet.write_config()
        d = fleet.start()
        fleet.settled(d)
        writes = fleet.server.counts["ChangeResourceRecordSets"]
        for s in fleet.smtp.values():
            s.set_mode("refuse")  # as if the controller's own network went away
        wait_until("the hold", lambda: d.sample("r53lb_hold") == 1, timeout=BUDGET + 5)
        assert fleet.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}
        hold = hook.wait_for(1)[0]
        assert hold["kind"] == "hold" and "every check of every node failed" in hold["message"]
        r = d.healthz()
        assert r.status_code == 200 and "hold" in r.text  # the controller itself is fine

        for s in fleet.smtp.values():
            s.set_mode("ok")
        wait_until("the hold to clear", lambda: d.sample("r53lb_hold") == 0, timeout=INTERVAL * 2 + 5)
        assert [b["kind"] for b in hook.wait_for(2)] == ["hold", "recovery"]
        assert all(d.sample("r53lb_node_up", pool="mx", node=n) == 1 for n in NODES)
        assert fleet.server.counts["ChangeResourceRecordSets"] == writes  # nothing was ever written
        assert d.stop() == 0
    finally:
        hook.stop()


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_systemd_unit_is_hardened() -> None:
    unit: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "r53lb.service").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            unit.setdefault(k.strip(), []).append(v.strip())
    # A fixed user, as operators run `sudo -u r53lb r53lb drain ...` on the same state.
    assert "DynamicUser" not in unit
    for key, value in {"User": "r53lb", "Group": "r53lb", "ProtectSystem": "strict", "StateDirectory": "r53lb",
                       "NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "KillSignal": "SIGTERM"}.items():
        assert unit.get(key) == [value], key
    assert " run " in unit["ExecStart"][0] and unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["CapabilityBoundingSet"] == [""]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM "))]
    assert final.startswith("FROM python:3.11")
    assert any(line.startswith("ENTRYPOINT") and "r53lb" in line for line in lines)
    assert any(line.startswith("CMD") and '"run"' in line for line in lines)


def test_cron_example_runs_sync() -> None:
    jobs = [line for line in (DEPLOY / "cron" / "r53lb.cron").read_text().splitlines()
            if line and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(jobs) == 1 and jobs[0].split()[:5] == ["*"] * 5 and " sync" in jobs[0]


def test_busy_metrics_port_is_one_line(fleet: Fleet) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, **FAKE_ENV}
        p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(fleet.config), "run",
                            "--metrics-addr", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 1
    assert p.stderr.strip() == (f"r53lb: metrics: cannot listen on 127.0.0.1:{port}: address already in use "
                                "(--metrics-addr, or --no-metrics)")


def test_after_the_state_file_is_rebuilt_a_node_at_zero_stays_drained(fleet: Fleet) -> None:
    """`r53lb run` on a corrupt state file: it is rebuilt, and a node found at weight 0 is not restored
    because it answers probes (its drain was in the lost file), until `r53lb enable`."""
    set_weight(fleet.client, fleet.zone_id, RECORD, "A", "hlb-2", 0)
    (fleet.tmp / "state.db").write_bytes(b"\x00garbage" * 1000)
    d = fleet.start()
    fleet.settled(d)  # hlb-2 answers: up by health
    assert "mx/hlb-2: found at weight 0 after the state file was lost; held at 0 (state was lost)" in d.log()
    assert list(fleet.tmp.glob("state.db.corrupt-*"))
    fleet.smtp["hlb-1"].set_mode("refuse")  # a reconcile of the zone that must leave hlb-2 alone
    measure(fleet, "hlb-1", 0, timeout=BUDGET + 5)
    assert fleet.weights() == {"hlb-1": 0, "hlb-2": 0, "hlb-3": 50}
    assert d.sample("r53lb_node_desired_weight", pool="mx", node="hlb-2") == 0
    assert d.stop() == 0



def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_probe_workers_probe_their_shards_and_a_killed_worker_is_restarted_without_a_gap(fleet: Fleet) -> None:
    fleet.doc["defaults"]["probe_workers"] = 3  # this process probes hlb-1, two workers hlb-2 and hlb-3
    fleet.write_config()
    d = fleet.start()
    fleet.settled(d)
    workers = wait_until("two probe workers", lambda: len(w := _children(d.proc.pid)) == 2 and w)
    assert d.sample("r53lb_probe_processes") == 3

    fleet.smtp["hlb-3"].set_mode("refuse")  # a node of a worker's shard dies: drained as ever
    measure(fleet, "hlb-3", 0, timeout=BUDGET + 5)
    fleet.smtp["hlb-3"].set_mode("ok")
    measure(fleet, "hlb-3", 50, timeout=INTERVAL * 1.1 + (RISE - 1) * FASTINTER + TIMEOUT + 5)
    writes = fleet.server.counts["ChangeResourceRecordSets"]

    probes = d.sample("r53lb_probe_duration_seconds_count", check="smtp") or 0
    os.kill(workers[0], signal.SIGKILL)
    wait_until("the worker restarted", lambda: d.sample("r53lb_probe_worker_restarts_total") == 1
               and len(c := _children(d.proc.pid)) == 2 and workers[0] not in c)
    # Probing went on (every node, through the restart), and nothing was drained by it.
    wait_until("probes after the restart", lambda: (d.sample("r53lb_probe_duration_seconds_count", check="smtp") or 0)
               >= probes + 3 * 3)
    assert all(d.sample("r53lb_node_up", pool="mx", node=n) == 1 for n in NODES)
    assert fleet.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}
    assert fleet.server.counts["ChangeResourceRecordSets"] == writes
    assert d.healthz().status_code == 200

    children = _children(d.proc.pid)
    assert d.stop() == 0
    for pid in children:  # the workers end with the controller
        wait_until(f"worker {pid} gone", lambda: not Path(f"/proc/{pid}").exists() or
                   Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"), timeout=10)
    log = d.log()
    assert f"probe worker 1 (pid {workers[0]}) died (signal 9)" in log or \
        f"probe worker 2 (pid {workers[0]}) died (signal 9)" in log, log
    assert "probing on 3 processes" in log and "Traceback" not in log


def test_sigterm_while_a_scheduled_job_probes_is_a_quiet_stop(fleet: Fleet) -> None:
    # Every node hangs: a hold, and its re-check (a scheduled job, every interval) spends each
    # probe's whole timeout (3 s here), so a SIGTERM 2 s after a re-check ended finds the next one
    # in flight. The scheduler cancels it on the way out: that is a stop, not an error with a
    # traceback in the log.
    fleet.doc["defaults"]["timeout"] = "3s"
    fleet.write_config()
    d = fleet.start()
    fleet.settled(d)
    for s in fleet.smtp.values():
        s.set_mode("hang")
    wait_until("the hold", lambda: d.sample("r53lb_hold") == 1, timeout=30)
    seen = d.log().count("hold stays")
    wait_until("a re-check of the hold", lambda: d.log().count("hold stays") > seen, timeout=15)
    time.sleep(2.0)
    assert d.stop() == 0
    log = d.log()
    assert "Traceback" not in log and "raised an exception" not in log, log
