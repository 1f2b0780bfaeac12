"""`r53lb drain/enable --wait`: apply the change now, then return once DNS serves it.

A drained node is only drained when the authoritative servers no longer hand it out and the
record's TTL has passed since (resolvers may cache the last answer that long): the moment an
operator may take the box down. Four steps, each timed, under one deadline:

  apply   one reconcile of the node's zone (read -> plan -> compare-and-swap apply), or, when
          another r53lb process holds the state file (`r53lb run`), Route 53 showing its write
  insync  GetChange reports the change INSYNC
  dns     every authoritative server hands the node out as Route 53 holds it (verify.py)
  ttl     the record's TTL has passed since the servers were seen to agree
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import R53lbError
from ..core.verify import Tolerance, Verdict

if TYPE_CHECKING:
    from ..config import Node, Pool
    from ..core.health import NodeHealth
    from .cycle import Controller
    from ..nameservers import NameServer
    from .cycle import ZoneOutcome

__all__ = ["Step", "WaitFailed", "apply_and_wait", "last_healthy", "reconcile_zone_once"]

STEPS = ("apply", "insync", "dns", "ttl")
LOCK_TRY = 2.0  # seconds to wait for the state file before assuming a running daemon holds it
POLL = 0.5  # seconds between two looks at Route 53 or the name servers
# A cluster's writer sees a new drain at its next heartbeat read (a second or two) and writes
# it: `--wait` looks at Route 53 this seldom meanwhile (the account's request rate is shared).
CLUSTER_POLL = 3.0


@dataclass(frozen=True)
class Step:
    name: str  # one of STEPS
    seconds: float
    detail: str


class WaitFailed(R53lbError):
    """A step did not finish (deadline, or a state that cannot lead to the goal)."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


def last_healthy(pool: "Pool", node_id: str, health: Mapping[tuple[str, str], "NodeHealth"],
                 drains: Mapping[tuple[str, str], object]) -> str | None:
    """Why draining this node would leave its pool with no healthy node while another is down, or None.

    With no healthy node left the planner fails open (never all zero): every node gets its
    weight back, the dead ones included, so the drain would send mail to a dead server.
    """
    me = health.get((pool.name, node_id))
    if me is not None and not me.up:
        return None  # draining a node that is down takes nothing healthy away
    others = [n for n in pool.nodes if n.id != node_id and n.weight > 0]
    down = [n.id for n in others if (h := health.get((pool.name, n.id))) is not None and not h.up]
    serving = [n.id for n in others if (pool.name, n.id) not in drains and n.id not in down]
    if serving or not down:
        return None  # another node carries the pool; or none is known to be down (only drained ones)
    drained = [n.id for n in others if (pool.name, n.id) in drains and n.id not in down]
    why = f"{', '.join(down)} {'is' if len(down) == 1 else 'are'} down"
    if drained:
        why += f", {', '.join(drained)} drained"
    return (f"{pool.name}/{node_id} is the last healthy node of pool {pool.name} ({why}): drained, the pool has "
            f"no healthy node and fails open, handing mail to {', '.join(down)} again")


def reconcile_zone_once(ctl: "Controller", zone: str) -> "ZoneOutcome":
    """One reconcile of one zone (as the config names it) from stored health and drains, no probing.

    As `sync` does for each zone: the engine's reconcile, then the watcher (alerts, their state).
    """
    out = ctl.reconcile_zone(zone)
    ctl.watch(ctl.clock(), plan=out.plan, zone=zone, error=out.error)
    return out


@dataclass
class _Clock:
    deadline: float
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def left(self) -> float:
        return self.deadline - self.now()

    def nap(self, step: str, detail: str, seconds: float = POLL) -> None:
        """Sleep before the next look, or fail the step when the deadline has passed."""
        left = self.left()
        if left <= 0:
            raise WaitFailed(step, detail)
        self.sleep(min(seconds, left))


def _node_weights(ctl: "Controller", pool: "Pool", node: "Node") -> dict[str, tuple[int, int | None]]:
    """record type -> (weight, TTL) of the node's record sets as Route 53 holds them now."""
    recs = ctl.read([pool])[pool.name]
    return {t: (r.weight, r.ttl) for (_n, t, sid), r in recs.items() if sid == node.id}


def _apply(ctl: "Controller", pool: "Pool", node: "Node", drained: bool, clock: _Clock) -> tuple[list[str], str]:
    from ..state.sqlite import StateError

    want = "weight 0" if drained else "a weight above 0"
    while True:
        try:
            with ctl.store.exclusive(wait=max(0.0, min(LOCK_TRY, clock.left()))):
                ctl.health = ctl.store.health()  # what the last run stored, not what we read at start
                out = reconcile_zone_once(ctl, pool.zone)
            break
        except StateError:
            # `r53lb run` holds the state file for its life and reads drains from it every
            # cycle: its next reconcile writes the change; wait for Route 53 to show it.
            weights = _node_weights(ctl, pool, node)
            if weights and all((w == 0) == drained for w, _ in weights.values()):
                return [], "written by the r53lb process that holds the state file (r53lb run?)"
            if ctl.cfg.cluster is not None:
                clock.nap("apply", f"the cluster's lease holder has not written {want} for {pool.name}/{node.id} "
                                   "to Route 53 yet", CLUSTER_POLL)
                continue
            clock.nap("apply", f"another r53lb process holds the state file and Route 53 does not show "
                               f"{want} for {pool.name}/{node.id} yet")
    if out.error:
        raise WaitFailed("apply", out.error)
    if out.held:
        raise WaitFailed("apply", f"not written: {out.held}")
    plan, change_ids = out.plan, out.change_ids
    pplan = next(p for p in plan.pools if p.pool == pool.name)
    decision = pplan.decisions.get(node.id)
    if decision is not None and (decision.weight == 0) != drained:
        raise WaitFailed("apply", f"{pool.name}/{node.id} stays at weight {decision.weight}: {decision.reason}")
    for err in plan.errors:
        if err.startswith(f"{pool.name}/{node.id} "):  # drift or a missing set: nothing written for it
            raise WaitFailed("apply", err)
    mine = [c for c in out.applied if c.pool == pool.name and c.node == node.id]
    others = len(out.applied) - len(mine)
    if mine:
        detail = ", ".join(f"{c.type} weight {c.from_weight} -> {c.to_weight}" for c in mine)
    else:
        detail = "Route 53 already holds " + ("weight 0" if drained else f"weight {decision.weight if decision else '?'}")
    if others:
        detail += f" (and {others} other change{'s' if others > 1 else ''} the zone's plan had pending)"
    return change_ids, detail


def apply_and_wait(ctl: "Controller", pool: "Pool", node: "Node", *, drained: bool,
                   servers: Sequence["NameServer"], samples: int, tolerance: Tolerance, timeout: float,
                   on_step: Callable[[Step], None] = lambda s: None,
                   now: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> list[Step]:
    """Apply the node's drain (or enable) and wait until DNS serves it; raises WaitFailed."""
    from ..nameservers import verify_pool
    from ..aws.route53 import Route53Error

    assert ctl.route53 is not None and ctl.store is not None
    clock = _Clock(now() + timeout, now, sleep)
    steps: list[Step] = []

    def done(name: str, started: float, detail: str) -> float:
        t = now()
        step = Step(name, t - started, detail)
        steps.append(step)
        on_step(step)
        return t

    t = now()
    change_ids, detail = _apply(ctl, pool, node, drained, clock)
    weights = _node_weights(ctl, pool, node)
    if not weights:
        raise WaitFailed("apply", f"Route 53 holds no record set for {pool.name}/{node.id} at {pool.record}")
    if not all((w == 0) == drained for w, _ in weights.values()):
        held = ", ".join(f"{k} {w}" for k, (w, _) in sorted(weights.items()))
        raise WaitFailed("apply", f"Route 53 holds {held} for {pool.name}/{node.id}, not "
                                  + ("0" if drained else "a weight above 0"))
    t = done("apply", t, detail)
    if drained:
        # Route 53 answers a group whose weights are all 0 with every set equally: the node
        # would never leave DNS, so say so now instead of waiting for the deadline.
        group = ctl.route53.read(ctl.zone_id(pool), [(pool.record, rtype) for rtype in weights])
        for rtype in sorted(weights):
            sets = [r for r in group.values() if r.name == pool.record and r.type == rtype]
            if sets and all(r.weight == 0 for r in sets):
                raise WaitFailed("dns", f"every {rtype} record set of {pool.record} is at weight 0: Route 53 then "
                                        f"hands all of them out equally, {node.id} included; enable another node first")

    for cid in change_ids:
        left = clock.left()
        try:
            if left <= 0:
                raise Route53Error(f"Route 53 change {cid} not INSYNC yet")
            ctl.route53.wait_insync(cid, timeout=left)
        except Route53Error as e:
            raise WaitFailed("insync", str(e)) from None
    t = done("insync", t, "Route 53 reports INSYNC" if change_ids else "nothing written by this command")

    types = sorted(weights)
    zone_id = ctl.zone_id(pool)
    rounds = 0
    last_wrong = ""
    while True:
        rounds += 1
        verdicts = verify_pool(ctl.route53, zone_id, pool, servers, samples, tolerance, types=types,
                               deadline=clock.deadline if now is time.monotonic else None)
        wrong = _disagreement(verdicts, node.id, drained)
        if wrong is None:
            break
        if clock.left() <= 0 and last_wrong and any(v.silent for v in verdicts):
            wrong = last_wrong  # the deadline cut this round short: the last full round says why
        last_wrong = wrong
        clock.nap("dns", wrong)
    what = f"no longer hand out {node.id}" if drained else f"hand out {node.id} at its share"
    t_agreed = t = done("dns", t, f"{len(servers)} name server{'s' if len(servers) != 1 else ''} {what} "
                                  f"({samples} answers each, {rounds} round{'s' if rounds != 1 else ''})")

    ttl = max((tt or 0) for _, tt in weights.values())
    wait = t_agreed + ttl - now()
    if wait > 0:
        if wait > clock.left():
            raise WaitFailed("ttl", f"the record's TTL ({ttl} s) passes {wait - clock.left():.1f} s after "
                                    f"the deadline; resolvers may still hold the old answer")
        sleep(wait)
    done("ttl", t, f"TTL {ttl} s passed since the name servers agreed")
    return steps


def _disagreement(verdicts: Sequence[Verdict], node: str, drained: bool) -> str | None:
    """Why DNS does not serve the node as wanted yet (None: it does, on every server).

    A server seen handing out a drained node is named first: another one's queries cut short
    by the deadline say less than that.
    """
    for v in verdicts:
        if drained and v.count(node):
            return f"{v.server} still hands out {node} ({v.count(node)} of {v.samples} answers)"
    for v in verdicts:
        if v.silent:
            return f"{v.server} {v.problems[0]}"
        if drained and v.count(node):
            return f"{v.server} still hands out {node} ({v.count(node)} of {v.samples} answers)"
        if not drained and not v.count(node):
            return f"{v.server} does not hand out {node} ({v.samples} answers)"
        if not v.ok:
            return f"{v.server}: {v.problems[0]}"
    return None
