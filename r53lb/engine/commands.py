"""What the CLI asks of the engine, one thin function per thing it does to AWS or the probes.

cli.py imports neither aws/ nor probes/: it calls these, so the same engine (its guards, its
fences, its errors) answers whoever asks. Each returns plain values for render.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import eventloop
from ..config import Config, Pool
from ..core.verify import Tolerance, Verdict
from ..nameservers import NameServer, NameServerError, delegation, parse_nameserver, verify_pool
from .cycle import CHECK_KINDS, Controller

if TYPE_CHECKING:
    from ..state.base import Store

__all__ = ["INTERACTIVE_ROUTE53", "NameServerError", "ProbeReport", "cluster_init", "make_controller", "name_servers",
           "probe_once", "verify_served"]

# A command someone waits for at a terminal (status, verify) reads Route 53 with short bounds:
# a black-holed endpoint fails it in seconds (two connect timeouts), not after a cron job's retries.
INTERACTIVE_ROUTE53 = {"attempts": 2, "botocore_attempts": 1, "connect_timeout": 3.0, "read_timeout": 10.0,
                       "retry_deadline": 10.0, "backoff_max": 1.0}


def make_controller(cfg: Config, store: "Store | None", with_route53: bool = True,
                    interactive: bool = False) -> Controller:
    """The engine `plan`, `sync`, `status` and `drain --wait` run (with its Route 53 client)."""
    r53 = None
    if with_route53:
        from ..aws.route53 import Route53  # boto3 only for commands that talk to Route 53

        r53 = Route53(cfg.aws, **(INTERACTIVE_ROUTE53 if interactive else {}))  # type: ignore[arg-type]
    return Controller(cfg, store, r53)


@dataclass(frozen=True)
class ProbeReport:
    """`r53lb probe`'s answer: every check's result as JSON, and the rows of its table."""

    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]  # pool, node, check, status, latency_ms, detail
    failed: bool  # some check failed (unknown, a signal not read, is no failure)


def probe_once(cfg: Config) -> ProbeReport:
    """Run every check of every node once; touch neither the state nor Route 53."""
    from ..probes.runner import run_all

    ctl = Controller(cfg, store=None, route53=None)
    jobs = [j for pool in cfg.pools for node in pool.nodes for j in ctl.jobs(pool, node, CHECK_KINDS)]
    results = eventloop.run(run_all(jobs, concurrency=cfg.defaults.concurrency))
    rows = [{"pool": r.pool, "node": r.node, "check": r.check, "status": r.status, "latency_ms": r.latency_ms,
             "detail": r.detail} for r in results]
    return ProbeReport([r.to_json() for r in results], rows, any(r.status == "fail" for r in results))


def cluster_init(cfg: Config) -> tuple[bool, list[str]]:
    """Create the cluster's table when it does not exist: (created, what an existing one lacks)."""
    from ..aws.dynamodb import DynamoDB, check_table, create_table

    assert cfg.cluster is not None
    db = DynamoDB(cfg.aws, cfg.cluster.region or cfg.aws.region)
    created = create_table(db, cfg.cluster.table)
    return created, ([] if created else check_table(db, cfg.cluster.table))


def name_servers(ctl: Controller, pool: Pool, given: tuple[str, ...]) -> list[NameServer]:
    """--nameserver as given, else the zone's delegation set resolved with dnspython (NameServerError)."""
    if given:
        return [parse_nameserver(ns) for ns in given]
    assert ctl.route53 is not None
    return delegation(ctl.route53, ctl.zone_id(pool))


def verify_served(ctl: Controller, pool: Pool, servers: list[NameServer], samples: int, tolerance: Tolerance,
                  deadline: float | None = None) -> list[Verdict]:
    """What the servers hand out for a pool, judged against its weights in Route 53."""
    assert ctl.route53 is not None
    return verify_pool(ctl.route53, ctl.zone_id(pool), pool, servers, samples, tolerance, deadline=deadline)
