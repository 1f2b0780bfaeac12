"""MTA-STS in the engine: a pool's policy, its `mx:` match, and each node's certificate, as signals.

Run by `Controller.refresh_verdicts` beside the other signal checks (sync and run alike),
at the pool's `mta_sts.interval`. The policy and each node's verdict live in the state
store (slots `mta-sts` on node `-`, and `mta-sts` per node), so cron runs share them and a
cluster's replicas read them the way they read agent and metric verdicts.

- The policy: the TXT id is read every interval; the policy is fetched again when the id
  changed or it is older than its `max_age` (as senders cache it). A fetch that cannot
  tell (timeout, network) keeps the policy known; a bad policy is reported, and the one
  known stays in use until its `max_age` runs out, as a sender's cache does.
- The pool's record matches no `mx:` pattern: one alert (the whole pool is affected), no drain.
- A node whose certificate is not PKIX-valid for the record name: out when the policy is
  `enforce`, a warning when `testing`. A check that could not tell keeps the last verdict.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from ..config import Node, Pool
from ..core.mta_sts import Policy
from ..core.signals import MetricVerdict, Signal, fold_metric
from ..probes.base import Failure
from .checkstate import Cached, Engine

__all__ = ["SLOT", "POOL_NODE", "refresh", "node_signal"]

log = logging.getLogger("r53lb")

SLOT = "mta-sts"
POOL_NODE = "-"  # the policy is the pool's: kept under this node id
NAME = "mta-sts"  # the signal's name (a warm-up gate can refer to it)


def _policy(raw: tuple[datetime, dict[str, Any]] | None) -> tuple[datetime | None, dict[str, Any]]:
    return (raw[0], raw[1]) if raw else (None, {})


def _usable(state: dict[str, Any], now: datetime) -> Policy | None:
    """The policy in force: fetched, and not older than its max_age."""
    if not state.get("mode"):
        return None
    fetched = state.get("fetched_at")
    try:
        age = (now - datetime.fromisoformat(fetched)).total_seconds() if fetched else None
    except ValueError:
        return None
    if age is None or age > int(state.get("max_age", 0)):
        return None
    return Policy(state["mode"], tuple(state.get("mx", ())), int(state.get("max_age", 0)))


def node_signal(pool: Pool, node: Node, cached: "Cached") -> Signal | None:
    """The node's MTA-STS say: out in `enforce` when its certificate fails, a warning in `testing`."""
    if pool.mta_sts is None:
        return None
    raw = cached.get((pool.name, node.id, SLOT))
    verdict = MetricVerdict.from_json(raw[1] if raw else None)
    mode = _policy(cached.get((pool.name, POOL_NODE, SLOT)))[1].get("mode")
    if verdict.status != "fail" or mode in (None, "none"):
        return Signal(NAME, "mta_sts", reason=verdict.detail if verdict.status == "ok" else "")  # type: ignore[arg-type]
    if mode == "enforce":
        why = f"MTA-STS enforce: {verdict.detail}"
        return Signal(NAME, "mta_sts", out=why, reason=why)  # type: ignore[arg-type]
    return Signal(NAME, "mta_sts", reason=f"MTA-STS testing (warning only): {verdict.detail}")  # type: ignore[arg-type]


async def refresh(ctl: "Engine", nodes: list[tuple[Pool, Node]], now: datetime, force: bool = False) -> bool:
    """The policies and node checks that are due; True when something that steers a weight changed."""
    assert ctl.store is not None
    pools = {p.name: p for p, _ in nodes if p.mta_sts is not None}
    if not pools:
        return False
    from ..probes.mtasts import check_node, fetch_policy  # httpx: only for a fleet that has MTA-STS

    cached = ctl.checks_cached()
    changed = False
    for pool in pools.values():
        spec = pool.mta_sts
        assert spec is not None
        timeout = spec.timeout or pool.tuning.timeout
        at, state = _policy(cached.get((pool.name, POOL_NODE, SLOT)))
        if force or at is None or (now - at).total_seconds() >= spec.interval * 0.9:
            state = await _refresh_policy(ctl, pool, state, now, timeout, fetch_policy)
            cached[(pool.name, POOL_NODE, SLOT)] = (now, state)
    due = []
    for pool, node in nodes:
        spec = pool.mta_sts
        if spec is None:
            continue
        prev = cached.get((pool.name, node.id, SLOT))
        if force or prev is None or (now - prev[0]).total_seconds() >= spec.interval * 0.9:
            due.append((pool, node))
    if not due:
        return False
    sem = asyncio.Semaphore(max(1, ctl.cfg.defaults.concurrency))

    async def one(pool: Pool, node: Node) -> Any:
        assert pool.mta_sts is not None
        async with sem:
            return await check_node(ctl.target(pool, node), pool.mta_sts, pool.record,
                                    pool.mta_sts.timeout or pool.tuning.timeout)

    results = await asyncio.gather(*(one(p, n) for p, n in due))
    with ctl.store.transaction():
        for (pool, node), r in zip(due, results):
            key = (pool.name, node.id, SLOT)
            prev = MetricVerdict.from_json(cached[key][1] if key in cached else None)
            if r.ok:
                status, detail = "ok", f"certificate valid for {pool.record}"
            elif r.failure in (Failure.CERTIFICATE, Failure.TLS):
                status, detail = "fail", r.detail.removeprefix("tls: ")
            else:  # not reachable: liveness says so; MTA-STS cannot tell
                status, detail = "unknown", r.detail
            verdict = fold_metric(prev, status, None, None, detail)
            if verdict.status != prev.status and (prev.status, verdict.status) != ("unknown", "ok"):
                mode = _policy(cached.get((pool.name, POOL_NODE, SLOT)))[1].get("mode") or "none"
                reason = f"MTA-STS ({mode}): {verdict.detail}"
                ctl.store.add_event(now, pool.name, node.id, "mta-sts", prev.status, verdict.status, reason)
                log.warning("%s/%s: mta-sts %s -> %s: %s", pool.name, node.id, prev.status, verdict.status, reason)
                if mode == "enforce":
                    changed = True
                    ctl.notify("alert", f"{pool.name}/{node.id}: {reason}",
                               {"pool": pool.name, "node": node.id, "reason": reason})
            cached[key] = (now, verdict.to_json())
            ctl.keep_check(pool.name, node.id, SLOT, now, verdict.to_json())
    return changed


async def _refresh_policy(ctl: "Engine", pool: Pool, state: dict[str, Any], now: datetime, timeout: float,
                          fetch: Any) -> dict[str, Any]:
    """Fetch the pool's policy when its id changed or it expired; tell a change of mx match once."""
    from ..probes.mtasts import read_id

    assert ctl.store is not None and pool.mta_sts is not None
    spec = pool.mta_sts
    known = _usable(state, now)
    got = await read_id(spec, timeout)
    if not got.error and known is not None and got.policy_id == state.get("id"):
        new = dict(state, error="")
    else:
        got = await fetch(spec, timeout) if not got.error else got
        if got.policy is not None:
            p = got.policy
            new = {"id": got.policy_id, "mode": p.mode, "mx": list(p.mx), "max_age": p.max_age,
                   "fetched_at": now.isoformat(), "error": ""}
        else:
            new = dict(state, error=got.error)  # unknown or bad: the known policy stays until its max_age
            if got.error != state.get("error"):
                log.warning("%s: MTA-STS policy of %s: %s%s", pool.name, spec.domain, got.error,
                            "; the known policy stays in use until its max_age" if known else "")
    with ctl.store.transaction():
        _record_policy(ctl, pool, state, new, now)
    return new


def _record_policy(ctl: "Engine", pool: Pool, state: dict[str, Any], new: dict[str, Any], now: datetime) -> None:
    assert ctl.store is not None and pool.mta_sts is not None
    spec = pool.mta_sts
    if new.get("error") and new["error"] != state.get("error"):
        ctl.store.add_event(now, pool.name, POOL_NODE, "mta-sts", None, "error", new["error"])
    policy = _usable(new, now)
    mx_ok = None if policy is None or policy.mode == "none" else policy.matches(pool.record)
    new["mx_ok"] = mx_ok
    if mx_ok is False and state.get("mx_ok") is not False:
        msg = (f"pool {pool.name}: {pool.record} matches no mx pattern of {spec.domain}'s MTA-STS policy "
               f"({', '.join(policy.mx) if policy else ''}; mode {policy.mode if policy else '?'}): senders in enforce "
               "mode will not deliver to any node of the pool; no node is drained for it")
        log.error("%s", msg)
        ctl.store.add_event(now, pool.name, POOL_NODE, "mta-sts", "mx match", "no mx match", msg)
        ctl.notify("alert", msg, {"pool": pool.name, "reason": msg})
    elif mx_ok is True and state.get("mx_ok") is False:
        log.info("pool %s: %s matches the MTA-STS policy's mx patterns again", pool.name, pool.record)
        ctl.store.add_event(now, pool.name, POOL_NODE, "mta-sts", "no mx match", "mx match", "")
    ctl.keep_check(pool.name, POOL_NODE, SLOT, now, new)
