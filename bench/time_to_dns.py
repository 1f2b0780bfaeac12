"""Time to DNS: a node is killed (its SMTP server stops listening) -> its weight is 0 in Route 53.

`r53lb run` (a subprocess, as systemd runs it) against the strict moto server (its own
process) and aiosmtpd servers on loopback. Each run waits a random part of the interval
(the kill lands anywhere in the probe schedule, as in life), kills one more node and
polls Route 53 every 20 ms until that node's weight is 0. Killed nodes stay dead, so the
daemon is never restarted between runs; the pool keeps enough live nodes for the safety
rules (min_in_service, never all zero) to stay out of the way.

HAProxy, when installed, watches the same kind of kill with the same inter, fastinter,
fall and check timeout (`option smtpchk`); its time is to the server's DOWN state in its
stats socket: detection only, there is no DNS write behind it.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.common import PYTHON, ROOT, aws_env, free_port, median, moto_server, wait_until

RECORD = "mx.example.com"
HELO = "probe.r53lb.test"
POLL = 0.02


@dataclass(frozen=True)
class Profile:
    name: str
    interval: float
    fastinter: float
    timeout: float
    fall: int
    rise: int = 3

    @property
    def budget(self) -> float:
        """DESIGN.md: interval + (fall - 1) x fastinter + timeout + 1 s."""
        return self.interval + (self.fall - 1) * self.fastinter + self.timeout + 1.0

    @property
    def label(self) -> str:
        return (f"{self.name} (interval {self.interval:g}s, fastinter {self.fastinter:g}s, "
                f"timeout {self.timeout:g}s, fall {self.fall})")


DEFAULT = Profile("default", 10.0, 2.0, 10.0, 3)
FAST = Profile("fast", 2.0, 1.0, 2.0, 2, rise=2)


@dataclass
class Measured:
    profile: Profile
    tool: str
    seconds: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return median(self.seconds) if self.seconds else float("nan")


def _nodes(n: int, block: int, port: int) -> dict[str, Any]:
    from r53lb.demo.loopback import SmtpServer

    return {f"n{i}": SmtpServer(f"127.{block}.0.{i + 1}", port).start() for i in range(n)}


def _metric(url: str, name: str) -> list[float]:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return []
    return [float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)]


def _kill_and_time(nodes: dict[str, Any], runs: int, rng: random.Random, profile: Profile, label: str,
                   is_down: Callable[[str], bool]) -> list[float]:
    """Kill n0, n1, ... each at a random point of the probe schedule; seconds until `is_down(node)`."""
    seconds = []
    for i in range(runs):
        time.sleep(rng.uniform(0, profile.interval))
        node = f"n{i}"
        nodes[node].set_mode("refuse")
        started = time.monotonic()
        wait_until(f"{label}: {node} down", lambda: is_down(node), timeout=profile.budget + 30, every=POLL)
        seconds.append(time.monotonic() - started)
        print(f"  {label}: {seconds[-1]:.2f}s", flush=True)
    return seconds


def _stop(proc: subprocess.Popen[Any], grace: float) -> None:
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def r53lb_run(profile: Profile, runs: int, seed: int) -> Measured:
    import yaml

    from moto_fixtures.spec import build, weights

    rng = random.Random(seed)
    count = runs + 3
    port = free_port()
    out = Measured(profile, "r53lb run")
    nodes = _nodes(count, 78, port)
    try:
        with moto_server() as moto, tempfile.TemporaryDirectory(prefix="r53lb-bench-") as tmp:
            zid = build(moto.client, {"example.com": {RECORD: {"sets": {k: (s.host, 50) for k, s in nodes.items()}}}})[
                "example.com"]
            config = Path(tmp) / "r53lb.yaml"
            config.write_text(yaml.safe_dump({
                "aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
                "state": {"path": str(Path(tmp) / "state.db")},
                "defaults": {"interval": f"{profile.interval:g}s", "fastinter": f"{profile.fastinter:g}s",
                             "timeout": f"{profile.timeout:g}s", "fall": profile.fall, "rise": profile.rise,
                             "helo": HELO},
                "pools": [{"name": "mx", "zone": "example.com", "record": RECORD,
                           "checks": [{"smtp": {"port": port}}],
                           "nodes": [{"id": k, "address": s.host, "weight": 50} for k, s in nodes.items()]}],
            }))
            metrics = f"127.0.0.1:{free_port()}"
            with open(Path(tmp) / "daemon.log", "w") as log:
                daemon = subprocess.Popen([PYTHON, "-m", "r53lb", "-c", str(config), "run", "--metrics-addr", metrics],
                                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=aws_env())
            try:
                wait_until("r53lb run to probe every node", lambda: daemon.poll() is None and (
                    _metric(f"http://{metrics}", "r53lb_node_up").count(1.0) == count) or daemon.poll() is not None,
                    timeout=profile.interval * 3 + 30)
                if daemon.poll() is not None:
                    raise RuntimeError(f"r53lb run exited {daemon.returncode}: {(Path(tmp) / 'daemon.log').read_text()[-2000:]}")
                out.seconds += _kill_and_time(
                    nodes, runs, rng, profile, f"time to DNS, r53lb run, {profile.name}",
                    lambda node: weights(moto.client, zid, RECORD).get(node) == 0)
            finally:
                _stop(daemon, grace=30)
    finally:
        for s in nodes.values():
            s.stop()
    return out


HAPROXY_CFG = """\
global
    stats socket {sock} mode 600 level admin
defaults
    mode tcp
    timeout connect {timeout}s
    timeout client 30s
    timeout server 30s
    timeout check {timeout}s
listen mx
    bind 127.0.0.1:{listen}
    option smtpchk EHLO {helo}
{servers}
"""


def _haproxy_status(sock: str) -> dict[str, str]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        s.connect(sock)
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {r[1]: r[17] for r in rows if len(r) > 17 and r[0] == "mx" and r[1] not in ("FRONTEND", "BACKEND")}


def haproxy(profile: Profile, runs: int, seed: int) -> Measured:
    out = Measured(profile, "HAProxy (option smtpchk)")
    exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if exe is None:
        out.note = "not installed (apt-get install haproxy)"
        return out
    version = subprocess.run([exe, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    out.note = " ".join(version.split()[:3])
    rng = random.Random(seed)
    port = free_port()
    nodes = _nodes(runs + 1, 79, port)
    try:
        with tempfile.TemporaryDirectory(prefix="r53lb-bench-haproxy-") as tmp:
            sock = str(Path(tmp) / "haproxy.sock")
            servers = "\n".join(
                f"    server {k} {s.host}:{port} check inter {profile.interval:g}s fastinter {profile.fastinter:g}s "
                f"downinter {profile.interval:g}s fall {profile.fall} rise {profile.rise}" for k, s in nodes.items())
            cfg = Path(tmp) / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(sock=sock, timeout=f"{profile.timeout:g}", listen=free_port(), helo=HELO,
                                              servers=servers))
            proc = subprocess.Popen([exe, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
            try:
                def all_up() -> bool:
                    if proc.poll() is not None:
                        raise RuntimeError(f"haproxy exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
                    try:
                        st = _haproxy_status(sock)
                    except OSError:
                        return False
                    return len(st) == len(nodes) and all(v == "UP" for v in st.values())

                wait_until("HAProxy to see every server UP", all_up, timeout=profile.interval * 3 + 10)
                time.sleep(profile.interval)  # past the start-up's spread of first checks
                out.seconds += _kill_and_time(
                    nodes, runs, rng, profile, f"time to DOWN, HAProxy, {profile.name}",
                    lambda node: _haproxy_status(sock).get(node, "").startswith("DOWN"))
            finally:
                _stop(proc, grace=10)
    finally:
        for s in nodes.values():
            s.stop()
    return out


def run(profiles: list[tuple[Profile, int]], seed: int = 53) -> list[Measured]:
    results = []
    for profile, runs in profiles:
        results.append(r53lb_run(profile, runs, seed))
        results.append(haproxy(profile, runs, seed))
    return results
