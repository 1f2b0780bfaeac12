"""Several controllers: the hand-over time after the leader's death, and DynamoDB requests per hour.

Three `r53lb run` replicas (subprocesses) share one DynamoDB table on the strict moto server
(its own process) and probe an SMTP farm of N loopback nodes, each with an HAProxy agent check
(signal checks on: every node's agent asked every `interval`). In steady state each replica's
`r53lb_dynamodb_requests_total` is read over a window (requests per hour = the difference x
3600 / window); then the leader is SIGKILLed, again and again (the killed replica restarted
and settled in between), and the time until another replica reports `r53lb_leader 1` is
measured (polled every 20 ms on the survivors' metrics).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, aws_env, free_port, median, moto_server, smtp_farm, wait_until
from r53lb.demo.process import stop_process

RECORD = "mx.example.com"
TABLE = "r53lb-bench"
REPLICAS = ("ctl-a", "ctl-b", "ctl-c")


@dataclass
class Result:
    nodes: int
    lease: float
    heartbeat: float
    window_s: float
    requests_per_hour: dict[str, float] = field(default_factory=dict)  # operation -> all replicas, per hour
    writes_per_hour: float = 0.0
    reads_per_hour: float = 0.0
    handovers: list[float] = field(default_factory=list)
    agent_interval: float = 0.0  # every node's agent check (0: none)

    @property
    def handover_median(self) -> float:
        return median(self.handovers) if self.handovers else float("nan")

    @property
    def writes_per_replica_heartbeat(self) -> float:
        return self.writes_per_hour / len(REPLICAS) / (3600.0 / self.heartbeat)


WRITES = ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems")


def _metrics(url: str) -> str:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def _value(text: str, name: str) -> float | None:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _requests(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(r'^r53lb_dynamodb_requests_total\{operation="(\w+)",outcome="\w+"\} (\S+)$', text, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


class _Replica:
    def __init__(self, name: str, config: Path, tmp: Path) -> None:
        self.name, self.config, self.tmp = name, config, tmp
        self.proc: subprocess.Popen[Any] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.tmp / f"{self.name}.log", "a") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "r53lb", "-c", str(self.config), "run",
                                          "--metrics-addr", f"127.0.0.1:{port}"],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=aws_env())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def leader(self) -> bool:
        return self.alive() and _value(_metrics(self.url), "r53lb_leader") == 1.0

    def settled(self, replicas: int) -> bool:
        text = _metrics(self.url)
        return (_value(text, "r53lb_last_probe_round_timestamp_seconds") or 0) > 0 and \
            _value(text, "r53lb_replicas_fresh") == replicas

    def stop(self) -> None:
        stop_process(self.proc, 20)


def run(nodes: int, handovers: int, window: float, lease: float = 15.0, heartbeat: float = 1.0,
        interval: float = 10.0, agents: bool = True) -> Result:
    import yaml

    from moto_fixtures.spec import build

    out = Result(nodes, lease, heartbeat, window, agent_interval=interval if agents else 0.0)
    agent_port = free_port() if agents else 0
    with moto_server() as moto, smtp_farm(nodes, 91, 0.0, agent_port=agent_port) as (addrs, port), \
            tempfile.TemporaryDirectory(prefix="r53lb-bench-cluster-") as tmpdir:
        tmp = Path(tmpdir)
        ids = [f"n{i}" for i in range(nodes)]
        build(moto.client, {"example.com": {RECORD: {"sets": {k: (a, 50) for k, a in zip(ids, addrs)}}}})
        doc = {
            "aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
            "cluster": {"table": TABLE, "region": "us-east-1", "lease": f"{lease:g}s",
                        "heartbeat": f"{heartbeat * 1000:.0f}ms"},
            "defaults": {"interval": f"{interval:g}s", "fastinter": "1s", "timeout": "2s", "helo": "probe.r53lb.test"},
            "pools": [{"name": "mx", "zone": "example.com", "record": RECORD,
                       "checks": [{"smtp": {"port": port}}] + (
                           [{"agent": {"port": agent_port, "interval": f"{interval:g}s"}}] if agents else []),
                       "max_drain_per_cycle": 1,
                       "nodes": [{"id": k, "address": a, "weight": 50} for k, a in zip(ids, addrs)]}],
        }
        replicas = []
        for name in REPLICAS:
            config = tmp / f"{name}.yaml"
            config.write_text(yaml.safe_dump({**doc, "cluster": {**doc["cluster"], "replica": name}}))
            replicas.append(_Replica(name, config, tmp))
        init = subprocess.run([PYTHON, "-m", "r53lb", "-c", str(replicas[0].config), "cluster", "init"],
                              capture_output=True, text=True, cwd=ROOT, env=aws_env(), timeout=60)
        if init.returncode != 0:
            raise RuntimeError(f"r53lb cluster init: {init.stderr[-2000:]}")
        try:
            for r in replicas:
                r.start()

            def settled() -> bool:
                for r in replicas:
                    if not r.alive():
                        raise RuntimeError(f"{r.name} exited: {(tmp / f'{r.name}.log').read_text()[-2000:]}")
                return all(r.settled(len(replicas)) for r in replicas) and \
                    sum(r.leader() for r in replicas) == 1

            wait_until("three settled replicas and one leader", settled, timeout=interval * 3 + 60)
            # Steady state: what the table costs with nothing happening.
            before = [_requests(_metrics(r.url)) for r in replicas]
            time.sleep(window)
            after = [_requests(_metrics(r.url)) for r in replicas]
            for b, a in zip(before, after):
                for op, n in a.items():
                    out.requests_per_hour[op] = out.requests_per_hour.get(op, 0.0) + (n - b.get(op, 0.0)) * 3600 / window
            out.writes_per_hour = sum(v for op, v in out.requests_per_hour.items() if op in WRITES)
            out.reads_per_hour = sum(v for op, v in out.requests_per_hour.items() if op not in WRITES)
            print(f"  cluster: {nodes} nodes{' with agent checks' if agents else ''}, DynamoDB requests/hour "
                  f"{out.requests_per_hour}", flush=True)

            for i in range(handovers):
                leader = next(r for r in replicas if r.leader())
                survivors = [r for r in replicas if r is not leader]
                assert leader.proc is not None
                leader.proc.kill()
                killed = time.monotonic()
                wait_until("a new leader", lambda: any(r.leader() for r in survivors), timeout=lease + 30, every=0.02)
                out.handovers.append(time.monotonic() - killed)
                print(f"  cluster: hand-over {out.handovers[-1]:.2f}s (lease {lease:g}s)", flush=True)
                leader.proc.wait(5)
                if i + 1 < handovers:
                    leader.start()
                    wait_until("the killed replica back", settled, timeout=interval * 3 + 60)
        finally:
            for r in replicas:
                r.stop()
    return out
