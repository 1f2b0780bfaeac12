"""The quorum of observations: several replicas' opinions -> the health the writer plans with. Pure.

Each replica publishes the nodes it sees down (its own rise/fall health) with a heartbeat
sequence number. A replica counts while its heartbeat is fresh: its sequence moved within
`stale_after` on *our* monotonic clock (no other machine's clock is trusted). A node goes
down when a quorum of the counting replicas sees it down, up when a quorum sees it up;
otherwise it keeps its previous state, so one replica cut off from the fleet drains nothing.

Only replicas running the same config vote (`digest`, the loaded model's): a replica whose
config lacks node `x` would otherwise be an "up" vote for `x`. One whose config differs, or
whose heartbeat could not be read (another version), still counts towards the majority while
its heartbeat moves, but votes neither way. Signal verdicts that take a node out (an agent's
`down`/`maint`, a metric out of bounds) are quorum decisions too (`quorum_out`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from .health import NodeHealth, Transition

__all__ = ["Beat", "Opinion", "Votes", "fresh", "mismatched", "needed", "quorum_health", "quorum_out", "track"]

NodeKey = tuple[str, str]
Rule = Literal["majority"] | int


@dataclass(frozen=True)
class Opinion:
    """One replica's published view: the nodes it sees down (with its reason), as of heartbeat `seq`."""

    replica: str
    seq: int
    voting: bool  # it has probed every node once: before that it has no opinion to count
    down: Mapping[NodeKey, str]
    digest: str = ""  # of the config it runs ("" when its heartbeat could not be read)
    out: Mapping[NodeKey, str] = field(default_factory=dict)  # nodes its signal checks take out


@dataclass(frozen=True)
class Beat:
    """A replica's heartbeat as we follow it: its last sequence and when we first saw it."""

    seq: int
    since: float


@dataclass(frozen=True)
class Votes:
    down: int
    up: int
    voters: int
    needed: int


def track(prev: Mapping[str, Beat], opinions: Iterable[Opinion], now: float) -> dict[str, Beat]:
    """Fold one read of the heartbeats: a replica's clock restarts when its sequence moved."""
    out = {}
    for o in opinions:
        b = prev.get(o.replica)
        out[o.replica] = b if b is not None and b.seq == o.seq else Beat(o.seq, now)
    return out


def fresh(beats: Mapping[str, Beat], now: float, stale_after: float) -> set[str]:
    return {r for r, b in beats.items() if now - b.since < stale_after}


def mismatched(opinions: Iterable[Opinion], digest: str) -> list[str]:
    """The replicas whose config digest is not `digest` (an unreadable heartbeat has none)."""
    return sorted(o.replica for o in opinions if o.digest != digest)


def needed(rule: Rule, voters: int) -> int:
    """Votes needed: `majority` is more than half of the counting replicas; a number is itself."""
    return voters // 2 + 1 if rule == "majority" else int(rule)


def quorum_health(
    prev: Mapping[NodeKey, NodeHealth],
    opinions: Sequence[Opinion],
    rule: Rule,
    now: datetime,
) -> tuple[dict[NodeKey, NodeHealth], dict[NodeKey, Votes], list[tuple[NodeKey, Transition]]]:
    """The quorum view of every node in `prev` from the (fresh) opinions given; with the votes
    and the transitions. A node without a quorum either way keeps its previous state.

    Every fresh replica counts towards the majority; one that has not probed every node yet
    (not `voting`) votes neither way. So a replica that starts first cannot decide alone
    while the others are starting.
    """
    voters = [o for o in opinions if o.voting]
    need = needed(rule, len(opinions))
    view: dict[NodeKey, NodeHealth] = {}
    votes: dict[NodeKey, Votes] = {}
    transitions: list[tuple[NodeKey, Transition]] = []
    for key, h in prev.items():
        saw_down = [o for o in voters if key in o.down]
        down, up = len(saw_down), len(voters) - len(saw_down)
        votes[key] = Votes(down, up, len(opinions), need)
        if voters and h.up and down >= need:
            why = "; ".join(f"{o.replica}: {o.down[key]}" for o in saw_down)
            reason = f"{down} of {len(opinions)} replicas see it down ({why})"
            view[key] = replace(h, up=False, since=now, successes=0, failures=down, reason=reason)
            transitions.append((key, Transition(False, reason)))
        elif voters and not h.up and up >= need:
            reason = f"{up} of {len(opinions)} replicas see it up"
            view[key] = replace(h, up=True, since=now, recovered_at=now, successes=up, failures=0, reason=reason)
            transitions.append((key, Transition(True, reason)))
        else:
            view[key] = h
    return view, votes, transitions


def quorum_out(
    prev: Mapping[NodeKey, str | None],
    opinions: Sequence[Opinion],
    rule: Rule,
) -> dict[NodeKey, str | None]:
    """The quorum's say on the signal checks of every node in `prev`: the reason a quorum of
    replicas sees it taken out (agent `down`/`maint`, a metric out of bounds), or None when a
    quorum sees it in. Without a quorum either way a node keeps its previous say, as for health."""
    voters = [o for o in opinions if o.voting]
    need = needed(rule, len(opinions))
    view: dict[NodeKey, str | None] = {}
    for key, was in prev.items():
        saw = [o for o in voters if key in o.out]
        out, inn = len(saw), len(voters) - len(saw)
        if voters and out >= need:
            why = "; ".join(f"{o.replica}: {o.out[key]}" for o in saw)
            view[key] = was if was is not None else f"{out} of {len(opinions)} replicas: {why}"
        elif voters and inn >= need:
            view[key] = None
        else:
            view[key] = was
    return view
