"""Where the daemon's CPU goes in steady state: py-spy samples of `r53lb run` against the farm.

    python -m bench.profile [NODES] [INTERVAL] [WINDOW]      # default 2000 nodes every 1 s, 10 s

Runs the daemon as bench/daemon.py does, attaches py-spy (sampling, from outside the process:
the daemon runs unmodified) for WINDOW seconds and sorts each sampled stack into one share,
by the innermost frame that says what the work was for. Prints one JSON object with the
shares (fractions of the samples of the busy threads) and the CPU per probe in the window.
py-spy is a development tool, not a dependency: `pip install py-spy` into the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import PYTHON
from bench.daemon import Profile, _probes, cpu_seconds, running

# (share, substrings of a frame "function (file:line)"): the first that matches from the leaf wins.
SHARES: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("/logging/",)),
    ("metrics", ("prometheus_client/", "engine/metrics.py")),
    ("TLS", ("/ssl.py", "sslproto.py")),
    ("SMTP parsing (aiosmtplib)", ("aiosmtplib/",)),
    ("state store (SQLite)", ("r53lb/state/", "sqlite3")),
    ("folding results (engine)", ("r53lb/core/", "engine/cycle.py", "_decide (", "_progress (", "_signals (",
                                  "_next_delay (")),
    ("SMTP dialogue (probe, runner, result)", ("r53lb/probes/", "engine/daemon.py", "<string>", "dataclasses.py")),
    ("timers and deadlines", ("asyncio/timeouts.py", "call_at (", "call_later (", "TimerHandle", "heapq",
                              "asyncio/tasks.py:sleep", "sleep (")),
    ("sockets and transports", ("selector_events.py", "socket.py", "create_connection (", "_ensure_resolved",
                                "getaddrinfo", "sock_connect")),
    ("event loop and sockets (uvloop)", ("uvloop/", "r53lb/eventloop.py", "Runner.run (", "run_forever (",
                                         "run_until_complete (")),
    ("scheduling (event loop, tasks, futures)", ("asyncio/",)),
    ("other threads (HTTP server, scheduler)", ("socketserver.py", "wsgiref", "apscheduler", "threading.py")),
]


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for share, needles in SHARES:
            if any(n in frame for n in needles):
                return share
    return "other"


def available() -> bool:
    return bool(shutil.which("py-spy")) or (Path(PYTHON).parent / "py-spy").exists()


def profile(nodes: int = 2000, interval: float = 1.0, window: float = 10.0, rate: int = 200) -> dict[str, object]:
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    p = Profile(f"{nodes:,} nodes every {interval:g} s", nodes, interval, window)
    with running(p) as (proc, url, _port), tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        made0, cpu0 = _probes(url), cpu_seconds(proc.pid)
        subprocess.run([spy, "record", "--pid", str(proc.pid), "--duration", f"{window:g}", "--rate", str(rate),
                        "--format", "raw", "--output", str(raw), "--nonblocking"],
                       check=True, capture_output=True, timeout=window + 60)
        made1, cpu1 = _probes(url), cpu_seconds(proc.pid)
        counts: Counter[str] = Counter()
        top: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            counts[classify(stack)] += int(n)
            top[stack.split(";")[-1]] += int(n)
        if os.environ.get("R53LB_PROFILE_RAW"):
            shutil.copy(raw, os.environ["R53LB_PROFILE_RAW"])
    total = sum(counts.values()) or 1
    made = made1 - made0
    return {
        "nodes": nodes, "interval": interval, "window": window, "probes": made,
        "cpu_per_probe_us": round((cpu1 - cpu0) / max(made, 1) * 1e6),
        "samples": total,
        "shares": {k: round(v / total, 3) for k, v in counts.most_common()},
        "top_leaf_frames": {k: round(v / total, 3) for k, v in top.most_common(15)},
    }


if __name__ == "__main__":
    from bench.common import FAKE_AWS_ENV

    os.environ.update(FAKE_AWS_ENV)
    args = [float(a) for a in sys.argv[1:4]]
    out = profile(int(args[0]) if args else 2000, args[1] if len(args) > 1 else 1.0, args[2] if len(args) > 2 else 10.0)
    print(json.dumps(out, indent=1, ensure_ascii=False))
    time.sleep(0)
