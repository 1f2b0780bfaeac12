"""Helpers shared by the benchmark sections: addresses, processes, timing, machine facts."""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from r53lb.demo.process import stop_process

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Fake credentials: every Route 53 call of the benchmarks goes to a local moto server.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/r53lb-bench/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/r53lb-bench/credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def aws_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_AWS_ENV)
    return env


def addresses(n: int, block: int) -> list[str]:
    """n loopback addresses 127.<block>.x.y (y in 1..250), one per node."""
    return [f"127.{block}.{i // 250}.{1 + i % 250}" for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(want: int) -> int:
    """Raise this process's open-files limit towards `want` (never past the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def wait_until(what: str, fn: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def time_wait() -> int:
    """Connections from 127.0.0.1's ephemeral ports that the kernel holds in TIME_WAIT: the ones
    a client closed first (a server's TIME_WAIT takes no port from the clients)."""
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split(None, 4)
            if fields[3] == "06" and fields[1].startswith("0100007F:") and low <= int(fields[1][9:], 16) <= high:
                n += 1
    return n


def settle_tcp(limit: int = 2000, timeout: float = 75.0) -> float:
    """Wait (at most `timeout`) until the connections of the previous row have left TIME_WAIT.

    A row that probes thousands of loopback nodes a second leaves tens of thousands of them for a
    minute; they crowd 127.0.0.1's ephemeral ports, and the next row's connect() then costs more
    in the kernel, sometimes enough to tip a 4,000-probes/s row past what two cores do. Each row
    starts from a quiet kernel instead. Returns the seconds waited."""
    started = time.monotonic()
    while time_wait() > limit and time.monotonic() - started < timeout:
        time.sleep(0.5)
    return time.monotonic() - started


class Proc:
    """A helper process of ours that prints one JSON line when ready; stopped by its own pid."""

    def __init__(self, args: list[str], what: str, ready_timeout: float = 120.0, env: dict[str, str] | None = None):
        self.what = what
        self.proc = subprocess.Popen(
            [PYTHON, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=env or aws_env(),
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""  # blocks until ready (or exit)
        if not line:
            self.proc.wait(10)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"{what} did not start (exit {self.proc.returncode}): {err[-2000:]}")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def smtp_farm(n: int, block: int, delay: float, lifetime: float = 900.0,
              agent_port: int = 0) -> Iterator[tuple[list[str], int]]:
    """A separate process answering minimal SMTP on n loopback addresses (and HAProxy's agent
    check on `agent_port` when given); yields (addresses, port)."""
    port = free_port()
    with Proc(["-m", "bench.smtp_farm", str(n), str(block), str(port), str(delay), str(lifetime), str(agent_port)],
              f"SMTP farm ({n} addresses)") as p:
        assert p.info["ready"] == n
        yield addresses(n, block), port


@contextmanager
def moto_server(lifetime: float = 1800.0) -> Iterator["MotoClient"]:
    """The strict moto server in its own process, with its per-operation request counters."""
    with Proc(["-m", "bench.moto_proc", str(lifetime)], "moto server") as p:
        yield MotoClient(p.info["endpoint_url"], p.info["control_url"])


@dataclass
class MotoClient:
    endpoint_url: str
    control_url: str
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("route53", endpoint_url=self.endpoint_url, region_name="us-east-1",
                                        config=Config(retries={"mode": "standard"}))
        return self._client

    def counts(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(self.control_url + "/counts", timeout=10) as r:
            return json.loads(r.read())

    def reset_counts(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(self.control_url + "/reset-counts", method="POST"), timeout=10).read()


def run_worker(module: str, *args: str, timeout: float = 600.0) -> dict[str, Any]:
    """Run `python -m module args` and return the JSON object it prints last."""
    p = subprocess.run([PYTHON, "-m", module, *args], capture_output=True, text=True, cwd=ROOT,
                       env=aws_env(), timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def machine() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
