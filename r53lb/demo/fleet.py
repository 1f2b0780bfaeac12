"""The demo's fleet: its pools and nodes, the timeline, and the world they run in (moto, loopback servers)."""

from __future__ import annotations

import os
import socket
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import R53lbError

if TYPE_CHECKING:
    from ..config import Config
    from .loopback import AgentServer, HttpServer, PromApiServer, SmtpServer


ZONE = "example.com"
AGENT_POOL = "smtp-inbound"  # each balancer runs an HAProxy agent (deploy/agent/ has one for Postfix)
METRIC_POOL = "injection-api"  # each API node's MTA deferral rate is judged by a prometheus rule
DANE_POOL = "smtp-inbound"  # its nodes' keys are published as TLSA `3 1 1` at _25._tcp.mx.example.com
DEFERRAL_LIMIT = 0.05


class DemoFailed(R53lbError):
    """A scripted step did not produce its expected outcome in time."""


@dataclass(frozen=True)
class DemoNode:
    pool: str
    node: str
    address: str
    weight: int


@dataclass(frozen=True)
class DemoPool:
    name: str
    record: str
    kind: str  # smtp | http
    mode: str
    nodes: tuple[DemoNode, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def _pool(name: str, record: str, kind: str, mode: str, nodes: list[tuple[str, str, int]], **extra: Any) -> DemoPool:
    return DemoPool(name, record, kind, mode, tuple(DemoNode(name, n, a, w) for n, a, w in nodes), extra)


# The example fleet (as terraform/examples/mail-fleet), each node on its own loopback address.
FLEET: tuple[DemoPool, ...] = (
    _pool("smtp-inbound", "mx.example.com", "smtp", "weighted",
          [("hlb-1", "127.0.0.11", 100), ("hlb-2", "127.0.0.12", 100), ("hlb-3", "127.0.0.13", 50)],
          min_in_service=2, max_drain_per_cycle=1),
    _pool("injection-api", "api.example.com", "http", "weighted",
          [("api-1", "127.0.0.21", 50), ("api-2", "127.0.0.22", 50)]),
    _pool("tracking", "click.example.com", "http", "weighted",
          [("click-1", "127.0.0.31", 50), ("click-2", "127.0.0.32", 50)]),
    _pool("mta-ha", "smtp.example.com", "smtp", "failover",
          [("primary", "127.0.0.41", 1), ("standby", "127.0.0.42", 1)]),
)


@dataclass(frozen=True)
class Timeline:
    """The demo's pace, scaled from its total duration (seconds)."""

    duration: float

    interval: float = 1.0  # between cycles
    fastinter: float = 0.5
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2

    @property
    def slow_start(self) -> float:
        return round(min(60.0, max(3.0, self.duration * 0.2)), 1)

    @property
    def preempt_delay(self) -> float:
        return round(min(30.0, max(1.0, self.duration * 0.08)), 1)

    @property
    def dwell(self) -> float:
        """How long a steady situation is watched before the next step."""
        return min(30.0, max(1.0, self.duration * 0.08))

    @property
    def detect(self) -> float:
        """Deadline for a health change to reach Route 53 (a generous bound on a few cycles)."""
        return self.interval + max(self.rise, self.fall) * (self.fastinter + self.timeout) + 8.0


def at_rest(p: DemoPool) -> list[tuple[DemoNode, int]]:
    """Each node's weight with everything healthy: a failover pool's standbys carry 0."""
    return [(n, n.weight if p.mode == "weighted" or i == 0 else 0) for i, n in enumerate(p.nodes)]


# --- the embedded world -------------------------------------------------------------------


def _fake_aws_env(tmp: Path) -> None:
    """Credentials for moto only, in this process: nothing from ~/.aws, no instance metadata."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_ROUTE_53"):
        os.environ.pop(var, None)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    })


def _free_port(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (each node binds its own loopback address)."""
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        socks = []
        try:
            for h in hosts:
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise DemoFailed("no TCP port is free on every demo loopback address")


def _config_yaml(t: Timeline, smtp_port: int, http_port: int, ca_file: Path, endpoint: str, state: Path,
                 agent_port: int, prom_url: str) -> str:
    import yaml

    pools = []
    for p in FLEET:
        if p.kind == "smtp":
            check: dict[str, Any] = {"smtp": {"port": smtp_port, "starttls": True, "ca_file": str(ca_file)}}
            if p.name == DANE_POOL:
                check["smtp"]["dane"] = {"refresh": f"{t.interval}s"}
        else:
            check = {"http": {"url": f"https://{{address}}:{http_port}/health", "host": p.record,
                              "ca_file": str(ca_file), "expect_status": [200]}}
        pool: dict[str, Any] = {
            "name": p.name, "zone": ZONE, "record": p.record, "mode": p.mode, "ttl": 60,
            "checks": [check] + _signal_checks(p, t, agent_port, prom_url),
            "nodes": [{"id": n.node, "address": n.address, "weight": n.weight} for n in p.nodes],
            **p.extra,
        }
        if p.mode == "weighted":
            pool["slow_start"] = f"{t.slow_start}s"
        else:
            pool["preempt"] = True
            pool["preempt_delay"] = f"{t.preempt_delay}s"
        pools.append(pool)
    doc = {
        "aws": {"region": "us-east-1", "endpoint_url": endpoint},
        "state": {"path": str(state)},
        "defaults": {
            "interval": f"{t.interval}s", "fastinter": f"{t.fastinter}s", "timeout": f"{t.timeout}s",
            "rise": t.rise, "fall": t.fall, "helo": "r53lb-demo.example.com",
        },
        "pools": pools,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _signal_checks(p: DemoPool, t: Timeline, agent_port: int, prom_url: str) -> list[dict[str, Any]]:
    if p.name == AGENT_POOL:
        return [{"agent": {"port": agent_port}}]  # asked at the pool's interval
    if p.name == METRIC_POOL:
        return [{"prometheus": {"url": prom_url, "name": "deferral", "query": 'mail_deferral_rate{node="{id}"}',
                                "quarantine_above": DEFERRAL_LIMIT, "interval": f"{t.interval}s"}}]
    return []


class World:
    """Route 53 (moto server), the zone and records, and a server per node; `close()` undoes it all."""

    def __init__(self, t: Timeline) -> None:
        self.t = t
        self.stack = ExitStack()
        self.tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="r53lb-demo-")))
        self.servers: dict[tuple[str, str], "SmtpServer | HttpServer"] = {}
        self.server_up: dict[tuple[str, str], bool] = {}
        self.agents: dict[str, "AgentServer"] = {}  # AGENT_POOL's node -> its agent
        self.prom: "PromApiServer | None" = None
        self.route53: Any = None  # a boto3 Route 53 client on the moto server

    def close(self) -> None:
        self.stack.close()

    def start(self) -> "Config":
        try:
            from moto_fixtures.server import start as start_route53
            from moto_fixtures.spec import build
        except ImportError as e:  # moto[server], aiosmtpd and trustme are the `demo` extra
            raise DemoFailed(f"the demo needs moto[server], aiosmtpd and trustme: pip install 'r53lb[demo]' ({e})") from None

        from ..config import load
        from .loopback import AgentServer, Certs, HttpServer, PromApiServer, SmtpServer

        _fake_aws_env(self.tmp)
        # Strict: Route 53's own rules (exact DELETE, no duplicate CREATE, weight 0-255).
        route53 = start_route53(strict=True)
        self.stack.callback(route53.reset)  # stopped below first (LIFO), then emptied
        self.stack.callback(route53.stop)
        endpoint = route53.endpoint_url

        certs = Certs(names=("localhost", *(p.record for p in FLEET)))
        self.stack.callback(certs._dir.cleanup)
        addresses = [n.address for p in FLEET for n in p.nodes]
        smtp_port = _free_port(addresses)
        http_port = _free_port(addresses)
        for p in FLEET:
            for n in p.nodes:
                srv: SmtpServer | HttpServer
                if p.kind == "smtp":
                    srv = SmtpServer(n.address, smtp_port, hostname=p.record, tls="starttls", certs=certs)
                else:
                    srv = HttpServer(n.address, http_port, tls=True, certs=certs)
                self.stack.callback(srv.stop)
                srv.start()
                self.servers[(p.name, n.node)] = srv
                self.server_up[(p.name, n.node)] = True
        agent_nodes = [n for p in FLEET if p.name == AGENT_POOL for n in p.nodes]
        agent_port = _free_port([n.address for n in agent_nodes])
        for n in agent_nodes:
            agent = AgentServer(n.address, agent_port, "ready up 100%")
            self.stack.callback(agent.stop)
            self.agents[n.node] = agent.start()
        self.prom = PromApiServer("127.0.0.1", 0)
        self.stack.callback(self.prom.stop)
        self.prom.start()
        for p in FLEET:
            if p.name == METRIC_POOL:
                self.prom.values.update({n.node: 0.01 for n in p.nodes})

        cfg_path = self.tmp / "r53lb.yaml"
        cfg_path.write_text(_config_yaml(self.t, smtp_port, http_port, certs.ca_file, endpoint,
                                         self.tmp / "state.db", agent_port, self.prom.url))
        cfg = load(cfg_path)

        import boto3

        client = boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1")
        spec: dict[str, Any] = {}
        for p in FLEET:
            spec[p.record] = {"type": "A", "ttl": 60, "sets": {n.node: (n.address, w) for n, w in at_rest(p)}}
        build(client, {ZONE: spec})
        self.route53 = client
        self.publish_tlsa()
        return cfg

    def publish_tlsa(self, leave_out: tuple[str, ...] = ()) -> None:
        """The DANE pool's TLSA set: `3 1 1` of each node's current key, but those of `leave_out`."""
        from ..core.dane import spki_sha256, tlsa_name

        p = next(p for p in FLEET if p.name == DANE_POOL)
        values = [f"3 1 1 {spki_sha256(self.servers[(p.name, n.node)].cert_der)}"  # type: ignore[union-attr]
                  for n in p.nodes if n.node not in leave_out]
        zone_id = next(z["Id"] for z in self.route53.list_hosted_zones()["HostedZones"] if z["Name"] == ZONE + ".")
        rrset = {"Name": tlsa_name(p.record), "Type": "TLSA", "TTL": 300,
                 "ResourceRecords": [{"Value": v} for v in values]}
        self.route53.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]})

    def set_server(self, pool: str, node: str, mode: str) -> None:
        """'ok', 'refuse' (nothing listening), or a status code the server answers with."""
        self.servers[(pool, node)].set_mode(mode)
        self.server_up[(pool, node)] = mode == "ok"
