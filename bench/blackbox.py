"""r53lb beside Prometheus's blackbox_exporter, the operator's alternative for "probe my MTAs".

In one run, against the same loopback SMTP farm, at the same rate (N nodes, R probes/s):
- blackbox_exporter (Debian's `prometheus-blackbox-exporter`) with a `tcp` module whose
  `query_response` does greeting, EHLO, QUIT, driven by a separate process that asks
  `/probe?module=smtp&target=...` R times a second over keep-alive connections, as a
  Prometheus scraping every node at that rate would. Counted: the exporter's CPU (utime +
  stime from /proc) and RSS, the probes that succeeded. The driver is not counted.
- `r53lb run`, the whole daemon (probe, decide, metrics), each node every N/R seconds.
- the floor: the bare asyncio dialogue on the same schedule.

    python -m bench.blackbox driver HOST:PORT BLOCK N FARM_PORT RATE WINDOW   # the driver
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import PYTHON, ROOT, addresses, free_port, raise_nofile, smtp_farm, wait_until
from bench.daemon import HELO, Profile, _floor_run, _probes, children, cpu_seconds, rss_mb, running, tree_cpu
from r53lb.demo.process import stop_process

EXPORTER = "prometheus-blackbox-exporter"
MODULE = f"""modules:
  smtp:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - expect: "^220"
        - send: "EHLO {HELO}"
        - expect: "^250 "
        - send: "QUIT"
        - expect: "^221"
"""


@dataclass
class Result:
    nodes: int
    rate: float
    window: float
    exporter_version: str
    bb_made: int
    bb_cpu_s: float
    bb_rss_mb: float
    r53lb_made: int
    r53lb_cpu_s: float
    r53lb_rss_mb: float
    floor_made: int
    floor_cpu_s: float
    floor_uv_made: int = 0  # the same bare dialogue on uvloop, the loop r53lb runs on
    floor_uv_cpu_s: float = 0.0
    rounds: str = ""  # each round's CPU per probe, for the report
    n_rounds: int = 1

    @property
    def floor_uv_us(self) -> float:
        return self._us(self.floor_uv_cpu_s, self.floor_uv_made)

    @staticmethod
    def _us(cpu: float, made: int) -> float:
        return cpu / max(made, 1) * 1e6

    @property
    def bb_us(self) -> float:
        return self._us(self.bb_cpu_s, self.bb_made)

    @property
    def r53lb_us(self) -> float:
        return self._us(self.r53lb_cpu_s, self.r53lb_made)

    @property
    def floor_us(self) -> float:
        return self._us(self.floor_cpu_s, self.floor_made)

    @property
    def vs_blackbox(self) -> float:
        return self.r53lb_us / self.bb_us if self.bb_us else float("inf")


# --- the driver (its own process, not counted) ------------------------------------------------


async def _drive(exporter: str, targets: list[str], rate: float, window: float, conns: int = 32) -> dict[str, int]:
    host, _, port = exporter.rpartition(":")
    queue: asyncio.Queue[str] = asyncio.Queue()
    ok = failed = 0

    async def conn() -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            target = await queue.get()
            writer.write(f"GET /probe?module=smtp&target={target} HTTP/1.1\r\nHost: {exporter}\r\n\r\n".encode())
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            if b"\nprobe_success 1" in body:
                ok += 1
            else:
                failed += 1

    workers = [asyncio.ensure_future(conn()) for _ in range(conns)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while (now := loop.time()) - start < window:
        due = int((now - start) * rate)
        while sent < due:
            queue.put_nowait(targets[sent % len(targets)])
            sent += 1
        await asyncio.sleep(0.005)
    await asyncio.sleep(1.0)  # the last answers
    for w in workers:
        w.cancel()
    return {"sent": sent, "ok": ok, "failed": failed, "backlog": queue.qsize()}


def driver(exporter: str, block: int, n: int, farm_port: int, rate: float, window: float) -> None:
    raise_nofile(4096)
    targets = [f"{a}:{farm_port}" for a in addresses(n, block)]
    print(json.dumps(asyncio.run(_drive(exporter, targets, rate, window))), flush=True)


# --- the comparison ----------------------------------------------------------------------------


def available() -> str | None:
    return shutil.which(EXPORTER)


def _version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def _blackbox(n: int, block: int, farm_port: int, rate: float, window: float) -> tuple[int, float, float]:
    binary = available()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="r53lb-bench-bb-") as tmp:
        cfg = Path(tmp) / "blackbox.yml"
        cfg.write_text(MODULE)
        port = free_port()
        proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}",
                                 "--log.level=error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
        try:
            import urllib.request

            def up() -> bool:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
                    return True
                except OSError:
                    return False

            wait_until("blackbox_exporter", up, timeout=30)
            # A short warm-up at the same rate (Go's runtime, connection pools), then the measured window.
            subprocess.run([PYTHON, "-m", "bench.blackbox", "driver", f"127.0.0.1:{port}", str(block), str(n),
                            str(farm_port), str(rate), "2"], cwd=ROOT, capture_output=True, timeout=120, check=True)
            drv = subprocess.Popen([PYTHON, "-m", "bench.blackbox", "driver", f"127.0.0.1:{port}", str(block), str(n),
                                    str(farm_port), str(rate), str(window)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            cpu0 = cpu_seconds(proc.pid)
            out, _ = drv.communicate(timeout=window + 120)
            cpu1 = cpu_seconds(proc.pid)
            rss = rss_mb(proc.pid)
            counts = json.loads(out.strip().splitlines()[-1])
        finally:
            stop_process(proc, 10)
    return counts["ok"], cpu1 - cpu0, rss


def run(nodes: int = 1000, rate: float = 500.0, window: float = 10.0, block: int = 121, rounds: int = 3) -> Result | None:
    """Each side measured `rounds` times (windows of `window` seconds); the median round of each counts."""
    binary = available()
    if binary is None:
        print(f"  blackbox: {EXPORTER} is not installed (scripts/system-packages.txt): skipped", flush=True)
        return None
    raise_nofile(nodes + 4096)
    interval = nodes / rate
    p = Profile(f"{nodes:,} nodes every {interval:g} s", nodes, interval, window)
    r53: list[tuple[int, float]] = []
    with running(p, block) as (proc, url, farm_port):
        pids = [proc.pid, *children(proc.pid)]
        made, cpu = _probes(url), sum(tree_cpu(pids))
        for _ in range(rounds):
            time.sleep(window)
            made1, cpu1 = _probes(url), sum(tree_cpu(pids))
            r53.append((made1 - made, cpu1 - cpu))
            made, cpu = made1, cpu1
        rss = sum(rss_mb(pid) for pid in pids)
        stop_process(proc, 30)  # each side runs alone against the farm
        bbs = [_blackbox(nodes, block, farm_port, rate, window) for _ in range(rounds)]
        floors = [_floor_run(p, block, farm_port) for _ in range(rounds)]
        floors_uv = [_floor_run(p, block, farm_port, "uvloop") for _ in range(rounds)]
    r53_made, r53_cpu = _median(r53)
    bb_made, bb_cpu = _median([(m, c) for m, c, _ in bbs])
    floor_made, floor_cpu = _median([(f["made"], f["cpu_s"]) for f in floors])
    floor_uv_made, floor_uv_cpu = _median([(f["made"], f["cpu_s"]) for f in floors_uv])
    each = (f"r53lb {_each(r53)}; blackbox_exporter {_each([(m, c) for m, c, _ in bbs])}; "
            f"floor {_each([(f['made'], f['cpu_s']) for f in floors])}; "
            f"floor on uvloop {_each([(f['made'], f['cpu_s']) for f in floors_uv])}")
    res = Result(nodes, rate, window, _version(binary), bb_made, bb_cpu, max(r for _, _, r in bbs),
                 r53_made, r53_cpu, rss, floor_made, floor_cpu, floor_uv_made, floor_uv_cpu, each, rounds)
    print(f"  blackbox: r53lb {res.r53lb_us:.0f} µs/probe ({res.r53lb_made} probes, RSS {res.r53lb_rss_mb:.0f} MB), "
          f"blackbox_exporter {res.bb_us:.0f} µs/probe ({res.bb_made} probes, RSS {res.bb_rss_mb:.0f} MB), "
          f"floor {res.floor_us:.0f} µs, on uvloop {res.floor_uv_us:.0f} µs; r53lb ÷ blackbox {res.vs_blackbox:.2f}× "
          f"(rounds, µs/probe: {each})", flush=True)
    return res


def _median(rounds: list[tuple[int, float]]) -> tuple[int, float]:
    """The round whose CPU per probe is the median."""
    ranked = sorted(rounds, key=lambda mc: mc[1] / max(mc[0], 1))
    return ranked[len(ranked) // 2]


def _each(rounds: list[tuple[int, float]]) -> str:
    return "/".join(f"{c / max(m, 1) * 1e6:.0f}" for m, c in rounds)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "driver":
        driver(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), float(sys.argv[7]))
    else:
        from bench.common import FAKE_AWS_ENV
        import os

        os.environ.update(FAKE_AWS_ENV)
        print(run())
