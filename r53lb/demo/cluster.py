"""`r53lb demo --replicas 3`: several controllers, one writer, and the writer killed mid-story.

An embedded moto server (DynamoDB and a strict Route 53) in this process, three loopback
SMTP balancers, and N real `r53lb run` replicas as subprocesses sharing one DynamoDB table
(short lease: 3 s, heartbeat 500 ms). The story, each step asserted in Route 53 within a
deadline (a step that does not happen is DemoFailed, a non-zero exit):

1. one replica holds the lease; nothing is written while every node is healthy;
2. a balancer dies: the replicas vote, the leader drains it in one change batch;
3. the leader is killed (SIGKILL): another replica holds the lease within lease + 2 s;
4. a second balancer dies: the new leader drains it, under the next epoch;
5. both come back: the new leader restores them.

Every change batch's Comment names its writer and epoch; the summary lists them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .fleet import DemoFailed, _fake_aws_env, _free_port
from .process import stop_process

__all__ = ["run"]

RECORD = "mx.example.com"
NODES = {"hlb-1": "127.0.0.11", "hlb-2": "127.0.0.12", "hlb-3": "127.0.0.13"}
LEASE, HEARTBEAT = 3.0, 0.5
COMMENT = re.compile(r"r53lb replica=(\S+) epoch=(\d+)")


class _Replica:
    def __init__(self, name: str, config: Path, log: Path, port: int) -> None:
        self.name, self.url = name, f"http://127.0.0.1:{port}"
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "r53lb", "-c", str(config), "run", "--resync", "1s",
                 "--metrics-addr", f"127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.log = log

    def sample(self, name: str) -> float | None:
        if self.proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None

    def leader(self) -> bool:
        return self.sample("r53lb_leader") == 1.0

    def stop(self) -> None:
        stop_process(self.proc, 15)


def _until(what: str, ok: Callable[[], Any], deadline: float) -> tuple[Any, float]:
    start = time.monotonic()
    while True:
        got = ok()
        if got:
            return got, time.monotonic() - start
        if time.monotonic() - start > deadline:
            raise DemoFailed(f"{what}: not seen within {deadline:.0f}s")
        time.sleep(0.05)


def run(replicas: int = 3, verbose: int = 0) -> dict[str, Any]:
    """Run the cluster story; DemoFailed when a step does not happen in time."""
    import boto3
    import yaml

    try:
        from moto_fixtures.server import start as start_moto
        from moto_fixtures.spec import build, weights
    except ImportError as e:
        raise DemoFailed(f"the demo needs moto[server] and aiosmtpd: pip install 'r53lb[demo]' ({e})") from None
    from .loopback import SmtpServer

    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {text}", flush=True)

    budget = 1.0 + 0.5 + 1.0 + 1.0  # interval + (fall - 1) x fastinter + timeout + 1 s
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="r53lb-demo-cluster-")))
        _fake_aws_env(tmp)
        moto = start_moto(strict=True)
        stack.callback(moto.reset)
        stack.callback(moto.stop)
        port = _free_port(list(NODES.values()))
        smtp = {k: SmtpServer(v, port, hostname=RECORD).start() for k, v in NODES.items()}
        for s in smtp.values():
            stack.callback(s.stop)
        client = boto3.client("route53", endpoint_url=moto.endpoint_url, region_name="us-east-1")
        zone = build(client, {"example.com": {RECORD: {"type": "A", "sets": {k: (v, 50) for k, v in NODES.items()}}}})[
            "example.com"]

        def now_weights() -> dict[str, int]:
            return weights(client, zone, RECORD, "A")

        doc = {
            "aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
            "cluster": {"table": "r53lb-demo", "lease": f"{LEASE:g}s", "heartbeat": f"{HEARTBEAT * 1000:.0f}ms"},
            "defaults": {"interval": "1s", "fastinter": "500ms", "timeout": "1s", "rise": 2, "fall": 2,
                         "helo": "r53lb-demo.example.com"},
            "pools": [{"name": "smtp-inbound", "zone": "example.com", "record": RECORD,
                       "checks": [{"smtp": {"port": port}}],
                       "nodes": [{"id": k, "address": v, "weight": 50} for k, v in NODES.items()]}],
        }
        names = [f"ctl-{i + 1}" for i in range(replicas)]
        configs = {}
        for name in names:
            configs[name] = tmp / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump({**doc, "cluster": {**doc["cluster"], "replica": name}}))
        init = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(configs[names[0]]), "cluster", "init"],
                              capture_output=True, text=True, timeout=60)
        if init.returncode != 0:
            raise DemoFailed(f"r53lb cluster init: {init.stderr.strip()}")
        say(f"embedded DynamoDB + Route 53 at {moto.endpoint_url}; table r53lb-demo; "
            f"3 SMTP balancers on {', '.join(NODES.values())}")
        reps: list[_Replica] = []
        for name in names:
            reps.append(_Replica(name, configs[name], tmp / f"{name}.log", _free_port(["127.0.0.1"])))
            stack.callback(reps[-1].stop)
        say(f"{replicas} replicas of `r53lb run` started ({', '.join(names)}); lease {LEASE:g}s, "
            f"heartbeat {HEARTBEAT * 1000:.0f}ms, quorum majority")

        def alive_leaders() -> list[_Replica]:
            for r in reps:
                if r.proc.poll() is not None and r.proc.returncode not in (-signal.SIGKILL,):
                    raise DemoFailed(f"{r.name} exited {r.proc.returncode}: {r.log.read_text()[-1500:]}")
            return [r for r in reps if r.leader()]

        def settled() -> bool:
            return len(alive_leaders()) == 1 and all(
                (r.sample("r53lb_last_probe_round_timestamp_seconds") or 0) > 0
                and r.sample("r53lb_replicas_fresh") == replicas for r in reps)

        _until("every replica probing and one leader", settled, 30)
        leader = alive_leaders()[0]
        epoch = int(leader.sample("r53lb_lease_epoch") or 0)
        say(f"== {leader.name} holds the lease (epoch {epoch}); the others probe and vote")
        if moto.counts["ChangeResourceRecordSets"] != 1:  # the zone's own creation
            raise DemoFailed("a replica wrote to Route 53 while every node was healthy")

        say("== kill hlb-2: its SMTP server stops listening")
        smtp["hlb-2"].set_mode("refuse")
        _, took = _until("hlb-2 drained", lambda: now_weights().get("hlb-2") == 0, budget + 5)
        say(f"hlb-2 weight 0 after {took:.1f}s, written by {leader.name}: {now_weights()}")

        say(f"== kill the leader {leader.name} (SIGKILL) mid-story")
        leader.proc.kill()
        killed = time.monotonic()
        survivors = [r for r in reps if r is not leader]
        new, _ = _until("a new leader", lambda: next((r for r in survivors if r.leader()), None), LEASE + 5)
        handover = time.monotonic() - killed
        new_epoch = int(new.sample("r53lb_lease_epoch") or 0)
        say(f"{new.name} holds the lease after {handover:.1f}s (lease {LEASE:g}s), epoch {new_epoch}")
        if handover > LEASE + 2 or new_epoch != epoch + 1:
            raise DemoFailed(f"hand-over took {handover:.1f}s (epoch {new_epoch})")

        say("== kill hlb-3 too: the new leader drains it")
        smtp["hlb-3"].set_mode("refuse")
        _, took = _until("hlb-3 drained", lambda: now_weights().get("hlb-3") == 0, LEASE + budget + 5)
        say(f"hlb-3 weight 0 after {took:.1f}s: {now_weights()}")

        say("== bring hlb-2 and hlb-3 back")
        smtp["hlb-2"].set_mode("ok")
        smtp["hlb-3"].set_mode("ok")
        _, took = _until("hlb-2 and hlb-3 restored", lambda: now_weights() == {k: 50 for k in NODES}, budget + 8)
        say(f"restored after {took:.1f}s: {now_weights()}")

        writes = [(m.group(1), int(m.group(2))) for c in moto.controls.comments if (m := COMMENT.search(c or ""))]
        if not writes or writes[0] != (leader.name, epoch) or any(w != (new.name, new_epoch) for w in writes[1:]):
            raise DemoFailed(f"change batches by unexpected writers: {writes}")
        ddb = dict(moto.dynamodb.counts)
        took = time.monotonic() - started
        summary = {"handover_s": round(handover, 2), "writes": writes, "dynamodb_requests": ddb}
        say(f"demo ok in {took:.1f}s: hand-over {handover:.1f}s; {len(writes)} change batches, each by the "
            f"leader of its time: " + ", ".join(f"{r} epoch {e}" for r, e in writes))
        say(f"DynamoDB requests of the whole story: {json.dumps(ddb, sort_keys=True)}")
        return summary
