"""Daemon cost: `r53lb run` in steady state against the loopback SMTP farm, beside a bare asyncio floor.

For each profile (N nodes probed every `interval` seconds), in one run:
- `r53lb run` probes the farm (greeting, EHLO, QUIT; all healthy) for a measured window after
  its first full round: its CPU seconds (utime + stime from /proc), the probes it made (the
  `r53lb_probe_duration_seconds_count` counters), its RSS (VmRSS);
- the floor: a bare asyncio process probing the same addresses on the same schedule (each
  node every interval, spread evenly) with raw streams, measured the same way.

Budgets (DESIGN.md): CPU per probe <= 2x the floor's; >= 95% of the probes asked for made
(2,000 nodes every 1 s); 10,000 nodes every 10 s under 40% of one core, RSS <= 250 MB.

    python -m bench.daemon floor N BLOCK PORT INTERVAL WINDOW   # the floor worker
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, aws_env, free_port, moto_server, raise_nofile, settle_tcp, smtp_farm, wait_until
from bench.fanout import bare_dialogue
from r53lb.demo.process import stop_process

R53LB = str(Path(PYTHON).parent / "r53lb")
HELO = "probe.r53lb.test"
CLK = os.sysconf("SC_CLK_TCK")


@dataclass
class Profile:
    label: str
    nodes: int
    interval: float
    window: float


@dataclass
class Row:
    label: str
    nodes: int
    interval: float
    window: float
    asked: int  # probes the schedule asks for in the window
    made: int  # probes r53lb made in the window
    cpu_s: float  # r53lb's CPU seconds in the window
    rss_mb: float
    floor_made: int
    floor_cpu_s: float
    processes: int = 1  # r53lb's probing processes (the main one and its probe workers)
    shares: tuple[float, ...] = ()  # each process's share of a core in the window
    floor_uv_made: int = 0  # the same floor on uvloop, the loop r53lb runs on
    floor_uv_cpu_s: float = 0.0

    @property
    def both_cores(self) -> bool:
        return len(self.shares) >= 2 and min(self.shares) >= 0.2

    @property
    def on_schedule(self) -> float:
        return self.made / self.asked if self.asked else 0.0

    @property
    def cpu_per_probe_us(self) -> float:
        return self.cpu_s / max(self.made, 1) * 1e6

    @property
    def floor_per_probe_us(self) -> float:
        return self.floor_cpu_s / max(self.floor_made, 1) * 1e6

    @property
    def vs_floor(self) -> float:
        return self.cpu_per_probe_us / self.floor_per_probe_us if self.floor_per_probe_us else float("inf")

    @property
    def floor_uv_per_probe_us(self) -> float:
        return self.floor_uv_cpu_s / max(self.floor_uv_made, 1) * 1e6

    @property
    def vs_floor_uv(self) -> float:
        return self.cpu_per_probe_us / self.floor_uv_per_probe_us if self.floor_uv_per_probe_us else float("inf")

    @property
    def core_share(self) -> float:
        return self.cpu_s / self.window


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            out.append(cpu_seconds(pid))
        except OSError:  # gone (a worker that died): its CPU is lost from the count
            out.append(0.0)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the floor -----------------------------------------------------------------------------


async def _floor(addrs: list[str], port: int, interval: float, window: float) -> int:
    """Each address probed every `interval`, starts spread evenly; returns probes completed in the window."""
    made = 0
    stop = time.monotonic() + window

    async def node(i: int, addr: str) -> None:
        nonlocal made
        await asyncio.sleep(interval * i / len(addrs))
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                if await bare_dialogue(addr, port):
                    made += 1
            except OSError:
                pass
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    try:
        # Bounded as a whole (no timer per probe: the floor stays bare): a farm that stops
        # answering under load ends the run with what was made, not a hung worker.
        async with asyncio.timeout(window + 30.0):
            await asyncio.gather(*(node(i, a) for i, a in enumerate(addrs)))
    except TimeoutError:
        pass
    return made


def floor_worker(n: int, block: int, port: int, interval: float, window: float, loop: str = "asyncio") -> None:
    from bench.common import addresses

    raise_nofile(n + 4096)
    t0 = time.process_time()
    coro = _floor(addresses(n, block), port, interval, window)
    if loop == "uvloop":
        import uvloop

        made = uvloop.run(coro)
    else:
        made = asyncio.run(coro)
    print(json.dumps({"made": made, "cpu_s": time.process_time() - t0}))


# --- r53lb run -------------------------------------------------------------------------------


def _scrape(metrics_url: str) -> list[Any]:
    """Every sample of the daemon's /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def _probes(metrics_url: str) -> int:
    return int(sum(s.value for s in _scrape(metrics_url) if s.name == "r53lb_probe_duration_seconds_count"))


@contextmanager
def running(p: Profile, block: int = 120, extra_defaults: dict[str, Any] | None = None,
            wrap: list[str] | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """`r53lb run` probing a farm of p.nodes, after its first full round and two intervals of
    steady state; yields (process, metrics URL, farm port). `wrap` runs it under another
    program (a profiler)."""
    import yaml

    from moto_fixtures.spec import build

    raise_nofile(p.nodes + 4096)
    settle_tcp()
    pools = max(1, p.nodes // 100)
    per_pool = p.nodes // pools
    with smtp_farm(p.nodes, block, 0.0, lifetime=p.window * 4 + 300) as (addrs, port), moto_server() as moto, \
            tempfile.TemporaryDirectory(prefix="r53lb-bench-") as tmp:
        spec: dict[str, Any] = {}
        docs = []
        for i in range(pools):
            record = f"mx{i}.example.com"
            members = [{"id": f"n{j}", "address": addrs[i * per_pool + j], "weight": 10} for j in range(per_pool)]
            spec.setdefault("example.com", {})[record] = {"type": "A", "sets": {m["id"]: (m["address"], 10) for m in members}}
            docs.append({"name": f"pool{i}", "zone": "example.com", "record": record, "nodes": members,
                         "checks": [{"smtp": {"port": port}}]})
        build(moto.client, spec)
        config = Path(tmp) / "r53lb.yaml"
        config.write_text(yaml.safe_dump({
            "aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
            "state": {"path": str(Path(tmp) / "state.db")},
            "defaults": {"helo": HELO, "interval": f"{p.interval:g}s", "timeout": "5s", "concurrency": 4096,
                         **(extra_defaults or {})},
            "pools": docs,
        }))
        mport = free_port()
        log = open(Path(tmp) / "r53lb.log", "w+")  # what it said, told when a row goes wrong
        proc = subprocess.Popen([*(wrap or []), R53LB, "-c", str(config), "run", "--metrics-addr", f"127.0.0.1:{mport}"],
                                stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, env=aws_env())
        proc.log = log  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{mport}/metrics"
        try:
            wait_until("the first full round", lambda: _safe_probes(url) >= p.nodes, timeout=120)
            time.sleep(p.interval * 2)  # steady state: the start-up spread is over
            yield proc, url, port
        finally:
            stop_process(proc, 30)


def measure(p: Profile, block: int = 120) -> Row:
    with running(p, block) as (proc, url, port):
        pids = [proc.pid, *children(proc.pid)]  # the probe workers, when r53lb started some
        made0, cpu0, t0 = *_sample(url, pids), time.monotonic()
        time.sleep(p.window)
        made1, cpu1, t1 = *_sample(url, pids), time.monotonic()
        rss = sum(rss_mb(pid) for pid in pids if Path(f"/proc/{pid}").exists())
        failed = _failures(url)
        stop_process(proc, 30)  # the floor runs alone
        if made1 - made0 < 0.95 * p.nodes * (t1 - t0) / p.interval:
            proc.log.seek(0)  # type: ignore[attr-defined]
            lines = proc.log.read().splitlines()  # type: ignore[attr-defined]
            print(f"  daemon {p.label}: off schedule; failures {failed or 'none'}; its last log lines:\n    "
                  + "\n    ".join(lines[-15:]), flush=True)
        floor = _floor_run(p, block, port)
        floor_uv = _floor_run(p, block, port, "uvloop")
    # The window as measured between the two samples (a scrape of thousands of series takes a while).
    window = t1 - t0
    asked = int(p.nodes * window / p.interval)
    shares = tuple((b - a) / window for a, b in zip(cpu0, cpu1))
    row = Row(p.label, p.nodes, p.interval, window, asked, made1 - made0, sum(cpu1) - sum(cpu0), rss,
              floor["made"], floor["cpu_s"], len(pids), shares, floor_uv["made"], floor_uv["cpu_s"])
    print(f"  daemon {p.label}: {row.made}/{row.asked} probes ({row.on_schedule:.1%}), "
          f"{row.cpu_per_probe_us:.0f} µs CPU/probe vs floor {row.floor_per_probe_us:.0f} µs ({row.vs_floor:.2f}×), "
          f"on uvloop {row.floor_uv_per_probe_us:.0f} µs ({row.vs_floor_uv:.2f}×), "
          f"{row.core_share:.0%} of a core on {row.processes} process(es) "
          f"({', '.join(f'{x:.0%}' for x in shares)}), RSS {row.rss_mb:.0f} MB; floor made {row.floor_made}", flush=True)
    return row


def _failures(url: str) -> dict[str, float]:
    """r53lb_probe_failures_total by reason class, and the worker restarts."""
    return {s.name + str(sorted(s.labels.values())): s.value for s in _scrape(url)
            if s.value and s.name in ("r53lb_probe_failures_total", "r53lb_probe_worker_restarts_total")}


def _sample(url: str, pids: list[int]) -> tuple[int, list[float]]:
    """The probes made (a scrape of the counters) and the CPU seconds spent, read one after the other."""
    return _probes(url), tree_cpu(pids)


def _safe_probes(url: str) -> int:
    try:
        return _probes(url)
    except OSError:
        return 0


def _floor_run(p: Profile, block: int, port: int, loop: str = "asyncio") -> dict[str, Any]:
    """The floor worker in its own process, on asyncio's own loop (DESIGN's floor) or on uvloop."""
    out = subprocess.run([PYTHON, "-m", "bench.daemon", "floor", str(p.nodes), str(block), str(port),
                          str(p.interval), str(p.window), loop], capture_output=True, text=True, cwd=ROOT,
                         timeout=p.window + 120)
    if out.returncode != 0:
        raise RuntimeError(f"floor worker exited {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(profiles: list[Profile]) -> list[Row]:
    return [measure(p) for p in profiles]


FULL = [Profile("2,000 nodes every 1 s", 2000, 1.0, 10.0), Profile("4,000 nodes every 1 s", 4000, 1.0, 10.0),
        Profile("10,000 nodes every 10 s", 10_000, 10.0, 30.0)]
SMOKE = [Profile("200 nodes every 1 s", 200, 1.0, 3.0)]


if __name__ == "__main__":
    from bench.common import FAKE_AWS_ENV

    os.environ.update(FAKE_AWS_ENV)
    if len(sys.argv) > 1 and sys.argv[1] == "floor":
        floor_worker(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]),
                     sys.argv[7] if len(sys.argv) > 7 else "asyncio")
    else:
        for row in run(SMOKE if "--smoke" in sys.argv else FULL):
            print(row)
