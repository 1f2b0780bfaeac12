"""r53lb itself as the interop tests run it: real CLI subprocesses against the strict moto server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

from moto_fixtures.pytest_plugin import FAKE_ENV
from moto_fixtures.spec import build, weights

from .servers import free_port, wait_for
from r53lb.demo.process import stop_process

HELO = "probe.interop.test"


@dataclass(frozen=True)
class Certs:
    """A trustme CA and one server certificate, as files Postfix, nginx and HAProxy can read."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    pem_file: Path  # certificate chain and key in one file (HAProxy)

    @classmethod
    def make(cls, root: Path, *names: str) -> "Certs":
        ca = trustme.CA()
        cert = ca.issue_cert(*names)
        root.mkdir(parents=True, exist_ok=True)
        c = cls(root / "ca.pem", root / "cert.pem", root / "key.pem", root / "both.pem")
        ca.cert_pem.write_to_path(str(c.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(c.cert_file))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(c.cert_file), append=True)
        cert.private_key_pem.write_to_path(str(c.key_file))
        c.pem_file.write_bytes(c.cert_file.read_bytes() + c.key_file.read_bytes())
        for p in (c.key_file, c.pem_file):
            p.chmod(0o644)  # the servers' own users read them; a throwaway test key
        return c


@dataclass
class Zone:
    """One pool in a moto-server hosted zone, and r53lb's config for it."""

    tmp: Path
    endpoint: str
    record: str
    zone_id: str
    doc: dict[str, Any]
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @classmethod
    def make(cls, tmp: Path, endpoint: str, record: str, nodes: dict[str, tuple[str, list[dict[str, Any]]]],
             weight: int = 50, defaults: dict[str, Any] | None = None, **pool: Any) -> "Zone":
        """nodes: id -> (address, checks)."""
        client = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
        zone = record.split(".", 1)[1]
        ids = build(client, {zone: {record: {"type": "A", "sets": {k: (a, weight) for k, (a, _) in nodes.items()}}}})
        doc = {
            "aws": {"endpoint_url": endpoint, "region": "us-east-1"},
            "state": {"path": str(tmp / f"{record}.db")},
            "defaults": {"interval": "1s", "fastinter": "100ms", "timeout": "3s", "rise": 2, "fall": 2,
                         "helo": HELO, **(defaults or {})},
            "pools": [{"name": record.split(".")[0], "zone": zone, "record": record, **pool,
                       "nodes": [{"id": k, "address": a, "weight": weight, "checks": checks}
                                 for k, (a, checks) in nodes.items()]}],
        }
        z = cls(tmp, endpoint, record, ids[zone], doc)
        z.config.write_text(yaml.safe_dump(doc))
        return z

    @classmethod
    def offline(cls, tmp: Path, record: str, nodes: dict[str, tuple[str, list[dict[str, Any]]]]) -> "Zone":
        """A config alone (no hosted zone), for `r53lb probe`."""
        doc = {
            "defaults": {"timeout": "3s", "helo": HELO},
            "pools": [{"name": record.split(".")[0], "zone": record.split(".", 1)[1], "record": record,
                       "nodes": [{"id": k, "address": a, "checks": c} for k, (a, c) in nodes.items()]}],
        }
        z = cls(tmp, "", record, "", doc)
        z.config.write_text(yaml.safe_dump(doc))
        return z

    @property
    def config(self) -> Path:
        return self.tmp / f"{self.record}.yaml"

    def weights(self) -> dict[str, int]:
        client = boto3.client("route53", endpoint_url=self.endpoint, region_name="us-east-1")
        return weights(client, self.zone_id, self.record, "A")

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(FAKE_ENV, PYTHONUNBUFFERED="1")
        return env

    def r53lb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "r53lb", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=60, env=self.env())

    def sync(self) -> tuple[int, dict[str, Any], str]:
        p = self.r53lb("sync", "--json")
        return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else {}), p.stderr

    def probe(self) -> tuple[int, dict[str, dict[str, Any]], str]:
        """Exit code, results by node, stderr."""
        p = self.r53lb("probe", "--json")
        results = json.loads(p.stdout)["results"] if p.stdout.strip() else []
        return p.returncode, {r["node"]: r for r in results if r["check"] != "dnsbl"}, p.stderr

    def run(self) -> "Daemon":
        port = free_port("127.0.0.1")
        log = self.tmp / f"run-{self.record}-{len(self.procs)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "r53lb", "-c", str(self.config), "run", "--metrics-addr", f"127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, text=True, env=self.env())
        self.procs.append(proc)
        return Daemon(proc, f"http://127.0.0.1:{port}", log)

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, 15)


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def up(self, pool: str, node: str) -> float | None:
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == "r53lb_node_up" and s.labels.get("pool") == pool and s.labels.get("node") == node:
                    return s.value
        return None

    def wait_up(self, pool: str, *nodes: str, deadline: float = 20) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"r53lb run exited {self.proc.returncode}:\n{self.log()}"
            return all(self.up(pool, n) == 1 for n in nodes)
        wait_for(f"r53lb run to see {', '.join(nodes)} up", ready, deadline=deadline, every=0.1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def time_until(what: str, ok: Any, deadline: float) -> float:
    """Seconds until `ok()` holds (polled), failing after `deadline`."""
    started = time.monotonic()
    wait_for(what, ok, deadline=deadline, every=0.1)
    return time.monotonic() - started
