"""Route 53 calls per cycle: r53lb's reads and writes vs one UPSERT per changed record.

Weighted pools in several zones on the strict moto server (its own process, counting
requests per operation). Each cycle is one `r53lb sync`: a fresh Controller over the same
state file. The probes are replaced by a fixed health map (the nodes listed as down fail,
every other node passes) because this section counts Route 53 calls, not probes; rise/fall
run as configured, their confirmations without waiting (`fastinter` sleeps are skipped).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import moto_server

PAGE = 300  # ListResourceRecordSets' largest page


@dataclass
class Cycle:
    label: str
    changed: int  # record sets whose weight changed (what a one-UPSERT-per-record script writes)
    reads: int  # ListResourceRecordSets
    pages_needed: int  # one page per pool name (each name read on its own)
    pages_min: int  # names side by side: ceil(sets / 300) per zone
    zone_lookups: int  # ListHostedZonesByName
    writes: int  # ChangeResourceRecordSets
    other: dict[str, int]


@dataclass
class Result:
    records: int
    zones: int
    pools: int
    cycles: list[Cycle]


def _layout(zones: int, pools_per_zone: int, nodes_per_pool: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(moto_fixtures spec, the config's pools) for the fleet."""
    spec: dict[str, Any] = {}
    pools = []
    for z in range(zones):
        zone = f"zone{z}.example.com"
        spec[zone] = {}
        for p in range(pools_per_zone):
            record = f"mx{p}.{zone}"
            nodes = [{"id": f"n{i}", "address": f"192.0.2.{i + 1}", "weight": 10} for i in range(nodes_per_pool)]
            spec[zone][record] = {"type": "A", "sets": {n["id"]: (n["address"], n["weight"]) for n in nodes}}
            pools.append({"name": f"z{z}p{p}", "zone": zone, "record": record,
                          "checks": [{"tcp": {"port": 25}}], "nodes": nodes})
    return spec, pools


def _controller(cfg: Any, state: Path, down: set[tuple[str, str]]) -> Any:
    from r53lb.engine.cycle import Controller
    from r53lb.probes.base import ProbeResult
    from r53lb.aws.route53 import Route53
    from r53lb.state.sqlite import StateStore

    class FixedHealth(Controller):
        async def probe(self, nodes: list[Any]) -> list[ProbeResult]:
            return [ProbeResult(p.name, n.id, "tcp", "fail" if (p.name, n.id) in down else "ok", 0.1,
                                "connect to port 25: connection refused" if (p.name, n.id) in down else "tcp ok")
                    for p, n in nodes]

    async def no_wait(_: float) -> None:
        return None

    return FixedHealth(cfg, StateStore.open(state), Route53(cfg.aws), sleep=no_wait)


def run(zones: int = 10, pools_per_zone: int = 5, nodes_per_pool: int = 20, flip: float = 0.05) -> Result:
    import yaml

    from r53lb.config import loads
    from moto_fixtures.spec import build

    spec, pool_docs = _layout(zones, pools_per_zone, nodes_per_pool)
    records = zones * pools_per_zone * nodes_per_pool
    flips_per_pool = max(1, round(flip * nodes_per_pool))
    pages = sum(math.ceil(nodes_per_pool / PAGE) for _ in pool_docs)  # one name per pool
    pages_min = zones * math.ceil(pools_per_zone * nodes_per_pool / PAGE)
    cycles: list[Cycle] = []
    with moto_server() as moto, tempfile.TemporaryDirectory(prefix="r53lb-bench-") as tmp:
        build(moto.client, spec)
        cfg = loads(yaml.safe_dump({"aws": {"endpoint_url": moto.endpoint_url, "region": "us-east-1"},
                                    "state": {"path": str(Path(tmp) / "state.db")}, "pools": pool_docs}))

        def flipped(start: int) -> set[tuple[str, str]]:
            return {(p["name"], f"n{i}") for p in pool_docs for i in range(start, start + flips_per_pool)}

        def snapshot() -> dict[tuple[str, str], int]:
            from moto_fixtures.spec import weights

            ids = {z: hz["Id"].rsplit("/", 1)[-1] for hz in moto.client.list_hosted_zones()["HostedZones"]
                   for z in [hz["Name"].rstrip(".")]}
            return {(p["name"], sid): w for p in pool_docs
                    for sid, w in weights(moto.client, ids[p["zone"]], p["record"]).items()}

        plan = [
            ("first run, all healthy (first sight)", set()),
            (f"{flip:.0%} of nodes go down", flipped(0)),
            (f"those come back, another {flip:.0%} go down", flipped(flips_per_pool)),
            ("steady state (nothing changes)", flipped(flips_per_pool)),
        ]
        for label, down in plan:
            before = snapshot()
            moto.reset_counts()
            ctl = _controller(cfg, Path(tmp) / "state.db", down)
            result = asyncio.run(ctl.cycle())
            ctl.store.conn.close()
            counts = moto.counts()
            assert result.apply_error is None and not result.plan.errors, (result.apply_error, result.plan.errors)
            after = snapshot()
            changed = sum(before[k] != after[k] for k in before)
            known = ("ListResourceRecordSets", "ChangeResourceRecordSets", "ListHostedZonesByName")
            cycles.append(Cycle(label, changed, counts.get("ListResourceRecordSets", 0), pages, pages_min,
                                counts.get("ListHostedZonesByName", 0), counts.get("ChangeResourceRecordSets", 0),
                                {k: v for k, v in counts.items() if k not in known}))
            c = cycles[-1]
            print(f"  route53 {label}: {changed} changed, {c.reads} reads, {c.writes} writes, "
                  f"{c.zone_lookups} zone lookups {c.other or ''}", flush=True)
    return Result(records, zones, len(pool_docs), cycles)
