"""Signals as values: what a node's agent and metric rules say, folded; the warm-up gates. Pure: no I/O.

A signal is not liveness: it steers a healthy node's weight (a share, a drain) or takes it
out (the agent's `maint`/`down`, a metric out of bounds). A signal that cannot be read is
*unknown* and never changes a weight: `fold_agent` and `fold_metric` keep the previous state
for it, here and nowhere else (as `reputation.fold` does for blocklists).

The agent's state follows HAProxy: a word left out keeps its previous value (`merge_agent`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal, Mapping

__all__ = ["AgentReply", "AgentState", "merge_agent", "fold_agent", "MetricVerdict", "fold_metric",
           "Signal", "NodeSignals", "NO_SIGNALS", "agent_signal", "metric_signal", "REPUTATION_GATE"]

AgentWord = Literal["ready", "drain", "maint", "up", "down"]  # as probes/base.py spells it
Status = Literal["ok", "fail", "unknown"]


AdminState = Literal["ready", "drain", "maint"]
HealthWord = Literal["up", "down", "fail", "stopped"]

_HEALTH: dict[str, HealthWord] = {"up": "up", "down": "down", "fail": "fail", "failed": "fail",
                                  "stopped": "stopped"}
_ADMIN: tuple[AdminState, ...] = ("ready", "drain", "maint")


@dataclass(frozen=True)
class AgentReply:
    """One agent line, parsed. A field is None when the line did not say it."""

    share: float | None = None  # 0.0-1.0; an agent's 150% is capped at 1.0
    admin: AdminState | None = None
    health: HealthWord | None = None
    description: str = ""  # the text after '#'
    ignored: tuple[str, ...] = ()  # understood, not used: maxconn:N
    unknown: tuple[str, ...] = ()  # words outside the grammar
    capped: bool = False  # the agent asked for more than 100%

    @property
    def says_anything(self) -> bool:
        return self.share is not None or self.admin is not None or self.health is not None

    @property
    def word(self) -> AgentWord | None:
        """The state this line puts the node in, in one word (the gravest first)."""
        if self.admin == "maint":
            return "maint"
        if self.health in ("down", "fail", "stopped"):
            return "down"
        if self.admin is not None:
            return self.admin
        return "up" if self.health == "up" else None


@dataclass(frozen=True)
class AgentState:
    """What the agent has said so far, every word folded in (HAProxy's server state as the agent sets it)."""

    share: float = 1.0
    admin: AdminState = "ready"
    health: HealthWord = "up"
    description: str = ""

    @property
    def down(self) -> bool:
        return self.health != "up"

    @property
    def status(self) -> Status:
        """fail: out (maint, down, fail, stopped); ok otherwise, drain included (it is not a death)."""
        return "fail" if self.admin == "maint" or self.down else "ok"

    @property
    def weight_share(self) -> float:
        """The share of weight the agent allows while the node is healthy: 0 in drain."""
        return 0.0 if self.admin != "ready" else self.share

    @property
    def word(self) -> AgentWord:
        if self.admin == "maint":
            return "maint"
        if self.down:
            return "down"
        return "drain" if self.admin == "drain" else "ready"

    def to_json(self) -> dict[str, Any]:
        """For the state store: the engine keeps this between replies (and restarts)."""
        return {"share": self.share, "admin": self.admin, "health": self.health, "description": self.description}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "AgentState":
        """Tolerant: a field that is missing or not understood takes its default (ready, up, 100%)."""
        data = data or {}
        share = data.get("share")
        ok_share = isinstance(share, (int, float)) and not isinstance(share, bool) and 0.0 <= share <= 1.0
        admin, health = data.get("admin"), data.get("health")
        return cls(
            share=float(share) if ok_share else 1.0,
            admin=admin if admin in _ADMIN else "ready",
            health=health if health in _HEALTH.values() else "up",
            description=str(data.get("description") or ""),
        )

    @property
    def reason(self) -> str:
        """One line for logs, history and status: 'agent: down (disk full)', 'agent: 40%'."""
        if self.admin == "maint" or self.down:
            what = "maint" if self.admin == "maint" else self.health
        elif self.admin == "drain":
            what = "drain"
        else:
            what = f"{self.share * 100:g}%"
        return f"agent: {what}" + (f" ({self.description})" if self.description else "")



def merge_agent(previous: AgentState | None, reply: AgentReply | None) -> AgentState:
    """Fold one reply into the agent's state: a word left out keeps its previous value (HAProxy).

    `previous` None is an agent never heard from (ready, up, 100%); `reply` None (the check
    was unknown: no answer, garbage) changes nothing. The description belongs to the state
    words: a reply with an administrative or operational word replaces it, a bare share keeps it.
    """
    state = previous or AgentState()
    if reply is None or not reply.says_anything:
        return state
    states_said = reply.admin is not None or reply.health is not None
    return AgentState(
        share=state.share if reply.share is None else reply.share,
        admin=state.admin if reply.admin is None else reply.admin,
        health=state.health if reply.health is None else reply.health,
        description=reply.description if states_said else state.description,
    )



def fold_agent(previous: AgentState | None, status: str, reply: AgentReply | None) -> AgentState:
    """The agent's state after one check: unknown (no answer, garbage) keeps the previous state."""
    if status == "unknown" or reply is None:
        return previous or AgentState()
    return merge_agent(previous, reply)


# --- metric rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricVerdict:
    """The last known verdict of one prometheus check of one node (unknown: never read yet)."""

    status: Status = "unknown"
    value: float | None = None
    share: float | None = None  # the rule's `scale`, when it has one
    detail: str = ""  # the rule and the value: 'deferral 0.083 > 0.05'
    last_unknown: str = ""  # the latest unknown answer, kept for status and logs

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "value": self.value, "share": self.share, "detail": self.detail,
                "last_unknown": self.last_unknown}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "MetricVerdict":
        """Tolerant: anything not understood reads as never known (which changes nothing)."""
        data = data or {}
        status = data.get("status")
        if status not in ("ok", "fail"):
            return cls(last_unknown=str(data.get("last_unknown") or ""))
        value, share = data.get("value"), data.get("share")
        return cls(
            status=status,
            value=float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
            share=(float(share) if isinstance(share, (int, float)) and not isinstance(share, bool)
                   and 0.0 <= share <= 1.0 else None),
            detail=str(data.get("detail") or ""),
            last_unknown=str(data.get("last_unknown") or ""),
        )


def fold_metric(previous: MetricVerdict | None, status: str, value: float | None, share: float | None,
                detail: str) -> MetricVerdict:
    """The verdict after one query: unknown (no data, an error, Prometheus down) keeps the previous one."""
    if status not in ("ok", "fail"):
        return replace(previous or MetricVerdict(), last_unknown=detail)
    return MetricVerdict(status, value, share, detail)  # type: ignore[arg-type]


# --- what the planner sees -------------------------------------------------------------------

REPUTATION_GATE = "reputation"  # the warm-up gate closed by any blocklist listing


@dataclass(frozen=True)
class Signal:
    """One signal check's say on one node, as the planner needs it."""

    name: str  # the check's `name` (how gates refer to it), else its slot: agent:2, prom:3
    kind: Literal["agent", "prometheus", "mta_sts", "sending", "tlsrpt"]
    share: float = 1.0  # of the node's weight while it serves
    drain: bool = False  # healthy, weight 0 (the agent said drain or 0%)
    out: str | None = None  # taken out, with this reason (maint/down, a metric out of bounds)
    reason: str = ""  # for decisions and status: 'agent: 50%', 'queue 10500 -> 55%'
    value: float | None = None  # a metric's value

    @property
    def failing(self) -> bool:
        """A warm-up gate on this check is closed."""
        return self.out is not None


def agent_signal(name: str, state: AgentState) -> Signal:
    if state.status == "fail":
        return Signal(name, "agent", out=state.reason, reason=state.reason)
    # An agent's 0% is a drain, as in HAProxy (weight 0 keeps the server up, takes no traffic).
    drain = state.weight_share <= 0.0
    return Signal(name, "agent", share=state.weight_share, drain=drain, reason=state.reason)


def metric_signal(name: str, verdict: MetricVerdict) -> Signal:
    if verdict.status == "fail":
        return Signal(name, "prometheus", out=f"quarantined by metric: {verdict.detail}",
                      reason=verdict.detail, value=verdict.value)
    share = verdict.share if verdict.status == "ok" and verdict.share is not None else 1.0
    reason = verdict.detail if verdict.status == "ok" else ""
    return Signal(name, "prometheus", share=share, drain=share <= 0.0, reason=reason, value=verdict.value)


@dataclass(frozen=True)
class NodeSignals:
    """Every signal of one node: out if any says out, drained if any says drain, the lowest share wins."""

    signals: tuple[Signal, ...] = ()

    @property
    def out(self) -> str | None:
        reasons = [s.out for s in self.signals if s.out is not None]
        return "; ".join(reasons) if reasons else None

    @property
    def drain(self) -> str | None:
        reasons = [s.reason or "drain" for s in self.signals if s.drain and s.out is None]
        return "; ".join(reasons) if reasons else None

    def lowest(self) -> Signal | None:
        """The signal with the lowest share below 100%, or None."""
        return min((s for s in self.signals if s.out is None and s.share < 1.0), key=lambda s: s.share, default=None)

    @property
    def share(self) -> float:
        low = self.lowest()
        return 1.0 if low is None else low.share

    def closed_gates(self, gates: Iterable[str], listed_on: Iterable[str] = ()) -> list[str]:
        """Why each of `gates` is closed now: a blocklist listing for `reputation`, a failing named check."""
        listed = tuple(listed_on)
        out = []
        for gate in gates:
            if gate == REPUTATION_GATE:
                if listed:
                    out.append(f"listed on {', '.join(listed)}")
                continue
            for s in self.signals:
                if s.name == gate and s.failing:
                    out.append(f"{gate}: {s.reason}")
        return out


NO_SIGNALS = NodeSignals()
