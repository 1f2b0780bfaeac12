"""Scale: `r53lb sync` over 10,000 nodes in 200 pools, all healthy: wall time and peak RSS.

The nodes are answered by the SMTP farm (its own process, 10,000 loopback addresses, the
real smtp check: greeting, EHLO, QUIT) and Route 53 by the strict moto server (its own
process too, so its memory is not counted). `r53lb sync` runs as an operator runs it, a
subprocess from the console script; its wall time (start-up included) and its peak RSS
(wait4's ru_maxrss) are measured. The first run meets every node for the first time (first
sight fills the state file); the second is the steady state the budget is about.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, aws_env, moto_server, raise_nofile, smtp_farm

R53LB = str(Path(PYTHON).parent / "r53lb")


@dataclass
class Run:
    label: str
    wall_s: float
    peak_rss_mb: float
    changes: int
    writes: int
    exit_code: int


@dataclass
class Result:
    nodes: int
    pools: int
    zones: int
    runs: list[Run]
    floor_s: float = 0.0  # a bare process probing the same nodes and reading the same zones, start-up included
    floor_uv_s: float = 0.0  # the same on uvloop, the loop r53lb runs on

    @property
    def vs_floor(self) -> float:
        return self.runs[-1].wall_s / self.floor_s if self.floor_s else float("inf")


def floor(addrs: int, block: int, port: int, concurrency: int, endpoint: str, zones: list[str],
          loop: str = "asyncio") -> float:
    """Wall time of a bare process (interpreter start-up included) probing every node once while
    it reads every record set of the zones from Route 53 (boto3, one thread per zone)."""
    started = time.perf_counter()
    p = subprocess.run([PYTHON, "-c", FLOOR, str(addrs), str(block), str(port), str(concurrency), endpoint, loop,
                        *zones], cwd=ROOT, env=aws_env(), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    ok, _, sets = p.stdout.strip().partition(" ")
    if p.returncode != 0 or int(ok or 0) != addrs or int(sets or 0) < addrs:
        raise RuntimeError(f"floor: exit {p.returncode}, {p.stdout.strip()} (ok, sets): {p.stderr[-2000:]}")
    return wall


# The floor as a program of its own: what a hand-written prober costs, start-up included. It probes
# every node (the bare dialogue, the same concurrency) and, overlapped with that, pages through the
# zones' record sets the plain boto3 way, as many pages as r53lb's reads need.
FLOOR = """
import asyncio, sys
from concurrent.futures import ThreadPoolExecutor
import boto3
from bench.common import addresses, raise_nofile
from bench.fanout import bare_cycle
n, block, port, conc = map(int, sys.argv[1:5])
endpoint, loop, zones = sys.argv[5], sys.argv[6], sys.argv[7:]
raise_nofile(n + 4096)
client = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")

def read(zone):
    zone_id = client.list_hosted_zones_by_name(DNSName=zone, MaxItems="1")["HostedZones"][0]["Id"]
    pages = client.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id)
    return sum(len(page["ResourceRecordSets"]) for page in pages)

with ThreadPoolExecutor(len(zones)) as pool:
    reads = [pool.submit(read, z) for z in zones]
    probe = bare_cycle(addresses(n, block), port, conc)
    if loop == "uvloop":
        import uvloop
        ok = uvloop.run(probe)
    else:
        ok = asyncio.run(probe)
    sets = sum(r.result() for r in reads)
print(ok, sets)
"""


def sync(config: Path) -> tuple[float, float, int, dict[str, Any]]:
    """One `r53lb sync --json`: (wall seconds, peak RSS MB, exit code, its JSON)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([R53LB, "-c", str(config), "sync", "--json"], stdout=out, stderr=err,
                                cwd=ROOT, env=aws_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read()
        if not text.strip():
            raise RuntimeError(f"r53lb sync exited {proc.returncode} without output: {err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, proc.returncode, json.loads(text)


def run(nodes: int = 10_000, pools: int = 200, zones: int = 10, concurrency: int = 512, repeat: int = 3) -> Result:
    import yaml

    from moto_fixtures.spec import build

    per_pool = nodes // pools
    raise_nofile(nodes + 4096)
    runs = []
    with smtp_farm(nodes, 100, 0.0) as (addrs, port), moto_server() as moto, \
            tempfile.TemporaryDirectory(prefix="r53lb-bench-") as tmp:
        spec: dict[str, Any] = {}
        pool_docs = []
        for p in range(pools):
            zone = f"zone{p % zones}.example.com"
            record = f"mx{p}.{zone}"
            members = [{"id": f"n{i}", "address": addrs[p * per_pool + i], "weight": 10} for i in range(per_pool)]
            spec.setdefault(zone, {})[record] = {"type": "A", "sets": {m["id"]: (m["address"], 10) for m in members}}
            pool_docs.append({"name": f"pool{p}", "zone": zone, "record": record, "nodes": members})
        build(moto.client, spec)
        config = Path(tmp) / "r53lb.yaml"
        config.write_text(yaml.safe_dump({
            "aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
            "state": {"path": str(Path(tmp) / "state.db")},
            "defaults": {"helo": "probe.r53lb.test", "concurrency": concurrency},
            "pools": [{**d, "checks": [{"smtp": {"port": port}}]} for d in pool_docs],
        }))
        # The steady state is the median of `repeat` runs, and so is each floor: one process's wall
        # time on two shared cores varies by a tenth from run to run.
        steady: list[Run] = []
        for label in ["first run (first sight)"] + ["steady state"] * repeat:
            moto.reset_counts()
            wall, rss, code, doc = sync(config)
            writes = moto.counts().get("ChangeResourceRecordSets", 0)
            (runs if not runs else steady).append(Run(label, wall, rss, len(doc.get("changes", [])), writes, code))
            print(f"  scale {label}: {wall:.2f}s, peak RSS {rss:.0f} MB, {len(doc.get('changes', []))} changes, "
                  f"{writes} writes, exit {code}", flush=True)
        runs.append(sorted(steady, key=lambda r: r.wall_s)[len(steady) // 2])
        if repeat > 1:
            runs[-1].label = f"steady state (median of {repeat}: {', '.join(f'{r.wall_s:.2f}' for r in steady)} s)"
        names = sorted(spec)
        floors = sorted(floor(nodes, 100, port, concurrency, moto.endpoint_url, names) for _ in range(repeat))
        floors_uv = sorted(floor(nodes, 100, port, concurrency, moto.endpoint_url, names, "uvloop")
                           for _ in range(repeat))
        floor_s, floor_uv_s = floors[len(floors) // 2], floors_uv[len(floors_uv) // 2]
        print(f"  scale floor (bare process: probes and reads): {', '.join(f'{f:.2f}' for f in floors)}s, "
              f"on uvloop {', '.join(f'{f:.2f}' for f in floors_uv)}s; sync {runs[-1].wall_s / floor_s:.2f}x", flush=True)
    return Result(nodes, pools, zones, runs, floor_s, floor_uv_s)
