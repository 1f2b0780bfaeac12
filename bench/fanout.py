"""Probe fan-out: r53lb's probe cycle vs a sequential smtplib loop vs a bare asyncio floor.

Each side runs in a fresh worker process (`python -m bench.fanout MODE ...`) that first
probes one node untimed (imports, the event loop's first use: the process's start-up,
taken off) and then times whole cycles over N nodes with perf_counter, printing JSON.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench.common import addresses, median, raise_nofile, run_worker, smtp_farm

HELO = "probe.r53lb.test"
TIMEOUT = 10.0


# --- the three clients, as they would be written -----------------------------------------


async def bare_dialogue(addr: str, port: int) -> bool:
    """The floor: greeting, EHLO, QUIT on raw asyncio streams, no parsing beyond the reply code,
    then the server's close read before closing, as r53lb closes (and as a polite client does:
    the side that closes first keeps the connection in TIME_WAIT, and tens of thousands of
    those on the client's side crowd its ephemeral ports and slow every later connect())."""
    reader, writer = await asyncio.open_connection(addr, port)
    try:
        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if not line or line[3:4] != b"-":
                    return line

        ok = (await reply()).startswith(b"220")
        writer.write(f"EHLO {HELO}\r\n".encode())
        ok = (await reply()).startswith(b"250") and ok
        writer.write(b"QUIT\r\n")
        ok = (await reply()).startswith(b"221") and ok
        while await reader.read(4096):
            pass
        return ok
    finally:
        writer.close()


async def _bare_one(addr: str, port: int, sem: asyncio.Semaphore) -> bool:
    async with sem:
        return await bare_dialogue(addr, port)


async def bare_cycle(addrs: list[str], port: int, concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    results = await asyncio.gather(*(_bare_one(a, port, sem) for a in addrs), return_exceptions=True)
    return sum(r is True for r in results)


def smtplib_cycle(addrs: list[str], port: int) -> int:
    """What an operator's cron script does: one node after the other."""
    ok = 0
    for addr in addrs:
        try:
            with smtplib.SMTP(addr, port, local_hostname=HELO, timeout=TIMEOUT) as s:
                code, _ = s.ehlo()
                ok += code == 250
        except (OSError, smtplib.SMTPException):
            pass
    return ok


def r53lb_controller(addrs: list[str], port: int, concurrency: int) -> Any:
    """A Controller over a real config: one pool of N nodes with an smtp check."""
    import yaml

    from r53lb.config import loads
    from r53lb.engine.cycle import Controller

    doc = {
        "defaults": {"helo": HELO, "concurrency": concurrency, "timeout": f"{TIMEOUT:g}s"},
        "pools": [{
            "name": "fan", "zone": "example.com", "record": "mx.example.com",
            "checks": [{"smtp": {"port": port}}],
            "nodes": [{"id": f"n{i}", "address": a} for i, a in enumerate(addrs)],
        }],
    }
    return Controller(loads(yaml.safe_dump(doc)), None, None)


async def r53lb_cycle(ctl: Any) -> int:
    nodes = [(p, n) for p in ctl.cfg.pools for n in p.nodes]
    results = await ctl.probe(nodes)
    bad = [r.detail for r in results if not r.ok]
    if bad:
        print(f"r53lb: {len(bad)} failed, e.g. {bad[0]}", file=sys.stderr)
    return len(results) - len(bad)


def worker(mode: str, n: int, port: int, block: int, concurrency: int, repeat: int) -> dict[str, Any]:
    raise_nofile(concurrency * 2 + 1024)
    addrs = addresses(n, block)

    def once(sub: list[str]) -> tuple[float, int]:
        started = time.perf_counter()
        if mode == "smtplib":
            ok = smtplib_cycle(sub, port)
        elif mode == "bare":
            ok = asyncio.run(bare_cycle(sub, port, concurrency))
        else:
            ctl = r53lb_controller(sub, port, concurrency)  # config built outside the clock
            started = time.perf_counter()
            ok = asyncio.run(r53lb_cycle(ctl))
        return time.perf_counter() - started, ok

    one, _ = once(addrs[:1])  # the start-up, taken off
    runs = [once(addrs) for _ in range(repeat)]
    return {"mode": mode, "n": n, "one_node_s": one, "seconds": [s for s, _ in runs],
            "ok": min(ok for _, ok in runs)}


# --- the section ---------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    delay_ms: float
    r53lb_s: float
    bare_s: float
    smtplib_s: float  # scaled to n from `smtplib_n` nodes
    smtplib_n: int
    ok: bool

    @property
    def vs_floor(self) -> float:
        return self.r53lb_s / self.bare_s

    @property
    def vs_sequential(self) -> float:
        return self.smtplib_s / self.r53lb_s


def measure(n: int, delay: float, concurrency: int, repeat: int, seq_n: int, block: int) -> Row:
    with smtp_farm(n, block, delay) as (_, port):
        args = [str(n), str(port), str(block), str(concurrency), str(repeat)]
        # Alternate the two asyncio sides so that drift on the machine hits both alike.
        r53, bare = [], []
        for _ in range(repeat):
            r53.append(run_worker("bench.fanout", "r53lb", *args[:-1], "1"))
            bare.append(run_worker("bench.fanout", "bare", *args[:-1], "1"))
        seq = run_worker("bench.fanout", "smtplib", str(seq_n), str(port), str(block), "1", "1")
    ok = all(w["ok"] == n for w in r53 + bare) and seq["ok"] == seq_n
    return Row(
        n=n, delay_ms=delay * 1000,
        r53lb_s=median([w["seconds"][0] for w in r53]),
        bare_s=median([w["seconds"][0] for w in bare]),
        smtplib_s=seq["seconds"][0] * n / seq_n, smtplib_n=seq_n, ok=ok,
    )


def run(sizes: list[int], delays: list[float], concurrency: int, repeat: int, seq_n: int) -> list[Row]:
    rows = []
    for delay in delays:
        for n in sizes:
            row = measure(n, delay, concurrency, repeat, min(seq_n, n), block=77)
            print(f"  fan-out n={n} delay={delay * 1000:.0f}ms: r53lb {row.r53lb_s:.3f}s, floor {row.bare_s:.3f}s, "
                  f"smtplib {row.smtplib_s:.1f}s (scaled), ok={row.ok}", flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    mode, n, port, block, conc, repeat = sys.argv[1], *map(int, sys.argv[2:7])
    print(json.dumps(worker(mode, n, port, block, conc, repeat)))
