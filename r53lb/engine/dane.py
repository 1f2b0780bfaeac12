"""DANE in the engine: the TLSA sets read from Route 53, and each node's chain judged against them.

The smtp probe hands over the chain the server presented (`ProbeResult.tls_chain`);
core/dane.py judges it. Here: the TLSA set of `_25._tcp.<pool record>` is read from the
hosted zone (the source of truth, no DNSSEC in between) at most once per `refresh`, and
`judge` turns a mismatch into a failed smtp result before health is folded. So a mismatch
takes a node out through rise/fall, never-all-zero, the floor and the blast radius, in
`sync` and `run` alike (Controller.fold is their one door), and in a cluster through the
replicas' health opinions and the writer's quorum.

With `dane.resolver`, the set is read through that validating resolver instead and counts
only with the AD bit (probes/tlsa.py): an unvalidated set is unusable, as for a sender.

A TLSA set that cannot be read keeps the last one read (a read error is unknown, and
unknown never changes a weight); before the first good read the node is judged on
liveness alone. Each node's DANE state goes into the state store (slot `dane`), for
`status` and the page, and every change of it into the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Iterable

from ..config import DaneOptions, Node, Pool
from ..core.dane import DaneVerdict, evaluate, tlsa_name
from ..probes.base import Failure, ProbeResult
from .checkstate import Engine

__all__ = ["SLOT", "Dane", "dane_options"]

log = logging.getLogger("r53lb")

SLOT = "dane"  # the state store's check-result slot of a node's DANE state


def dane_options(pool: Pool, node: Node) -> DaneOptions | None:
    """The `dane` options of the node's first smtp check that has them."""
    for c in pool.checks_for(node):
        if c.kind == "smtp" and c.smtp.dane is not None:
            return c.smtp.dane
    return None


@dataclass
class _Set:
    values: tuple[str, ...] | None = None  # None: never read
    read_at: float = float("-inf")  # monotonic
    error: str = ""
    validated: bool = True  # read from the zone itself, or a resolver's answer with the AD bit


class Dane:
    """The TLSA sets in use and each node's last DANE verdict."""

    def __init__(self) -> None:
        self.sets: dict[str, _Set] = {}  # TLSA owner name -> its set
        self.verdicts: dict[tuple[str, str], DaneVerdict] = {}
        # Per pool object: its shortest `refresh`, or None without `dane` (run asks on every probe).
        self._refresh: dict[int, tuple[Pool, float | None]] = {}

    def refresh_of(self, pool: Pool) -> float | None:
        got = self._refresh.get(id(pool))
        if got is None or got[0] is not pool:
            opts = [o.refresh for n in pool.nodes if (o := dane_options(pool, n)) is not None]
            got = self._refresh[id(pool)] = (pool, min(opts) if opts else None)
        return got[1]

    def pools(self, pools: Iterable[Pool]) -> list[Pool]:
        return [p for p in pools if self.refresh_of(p) is not None]

    async def refresh(self, ctl: "Engine", pools: Iterable[Pool], force: bool = False) -> None:
        """Read the TLSA sets of these pools that are due, each in one small Route 53 read (or one DNS query)."""
        due: list[tuple[Pool, str]] = []
        for pool in pools:
            refresh = self.refresh_of(pool)
            if refresh is None:
                continue
            name = tlsa_name(pool.record)
            s = self.sets.setdefault(name, _Set())
            if force or time.monotonic() - s.read_at >= refresh:
                due.append((pool, name))
        if not due:
            return
        from ..aws.route53 import Route53Error
        from ..probes.tlsa import TlsaError, read_tlsa  # dnspython: only for a fleet that has DANE

        for pool, name in due:
            s = self.sets[name]
            resolver = next((o.resolver for n in pool.nodes if (o := dane_options(pool, n)) is not None and o.resolver), [])
            try:
                if resolver:
                    values, validated = await read_tlsa(name, resolver, pool.tuning.timeout)
                elif ctl.route53 is not None:
                    zone_id = ctl.zone_id(pool)
                    values, validated = await asyncio.to_thread(ctl.route53.read_values, zone_id, name, "TLSA"), True
                else:
                    continue
            except (Route53Error, TlsaError) as e:
                if s.error != str(e):
                    log.warning("%s: cannot read TLSA %s, the last set read stays in use: %s", pool.name, name, e)
                s.error, s.read_at = str(e), time.monotonic()
                continue
            if s.values is not None and set(values) != set(s.values):
                log.info("%s: TLSA %s changed: %s", pool.name, name, ", ".join(values) or "none")
            s.values, s.read_at, s.error, s.validated = values, time.monotonic(), "", validated

    def judge(self, ctl: "Engine", results: list[ProbeResult], now: datetime) -> list[ProbeResult]:
        """The smtp results with a chain, judged against their pool's TLSA set: a mismatch fails the result."""
        out = []
        changed: list[tuple[ProbeResult, DaneVerdict, DaneVerdict | None]] = []
        for r in results:
            if r.check != "smtp" or not r.tls_chain or not r.ok:
                out.append(r)
                continue
            pool = ctl.cfg.pool(r.pool)
            node = pool.node(r.node) if pool is not None else None
            opts = dane_options(pool, node) if pool is not None and node is not None else None
            if pool is None or node is None or opts is None:
                out.append(r)
                continue
            name = tlsa_name(pool.record)
            s = self.sets.get(name)
            if s is None or s.values is None:
                verdict = DaneVerdict("unknown", f"TLSA {name} not read yet" + (f": {s.error}" if s and s.error else ""))
            elif s.values and not s.validated:
                verdict = DaneVerdict("unusable", f"TLSA {name} is not DNSSEC-validated (the resolver set no AD bit): "
                                                  "DANE senders ignore it")
            else:
                verdict = evaluate(r.tls_chain, s.values, (pool.record,), name, now)
            key = (r.pool, r.node)
            prev = self.verdicts.get(key)
            if verdict.state != "unknown":
                self.verdicts[key] = verdict
                if prev is None or (prev.state, prev.spki_sha256) != (verdict.state, verdict.spki_sha256):
                    changed.append((r, verdict, prev))
            if verdict.state == "mismatch" and opts.on_mismatch == "out":
                out.append(replace(r, status="fail", detail=verdict.detail, failure=Failure.CERTIFICATE))
            else:
                out.append(replace(r, detail=f"{r.detail}, {_short(verdict)}"))
        if changed:
            self._record(ctl, changed, now)
        return out

    def _record(self, ctl: "Engine", changed: list[tuple[ProbeResult, DaneVerdict, DaneVerdict | None]],
                now: datetime) -> None:
        for r, v, prev in changed:
            level = log.warning if v.state == "mismatch" else log.info
            level("%s/%s: dane %s -> %s: %s", r.pool, r.node, prev.state if prev else "unknown", v.state, v.detail)
        if ctl.store is None:
            return
        with ctl.store.transaction():
            for r, v, prev in changed:
                ctl.store.put_check_result(r.pool, r.node, SLOT, now, to_json(v))
                if prev is not None or v.state == "mismatch":
                    ctl.store.add_event(now, r.pool, r.node, "dane", prev.state if prev else "unknown", v.state, v.detail)


def _short(v: DaneVerdict) -> str:
    return {"match": "dane ok", "none": "dane: no TLSA published", "unusable": "dane: no usable TLSA",
            "unknown": "dane unknown"}.get(v.state, "dane mismatch (warn)")


def to_json(v: DaneVerdict) -> dict[str, Any]:
    return {"state": v.state, "detail": v.detail, "spki_sha256": v.spki_sha256}
