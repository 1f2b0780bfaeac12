"""Rise/fall health per node, as in HAProxy. Pure: no I/O, `now` passed in."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime


@dataclass(frozen=True)
class NodeHealth:
    up: bool
    since: datetime  # when `up` last changed (or when the node was first seen)
    successes: int = 0  # consecutive successful probes
    failures: int = 0  # consecutive failed probes
    reason: str = ""  # the reason of the latest probe result
    recovered_at: datetime | None = None  # the last down -> up transition: slow start ramps from here

    @property
    def pending(self) -> bool:
        """The latest result disagrees with the state: confirm it at `fastinter`."""
        return (self.up and self.failures > 0) or (not self.up and self.successes > 0)


@dataclass(frozen=True)
class Transition:
    up: bool
    reason: str


def first_sight(carrying_weight: bool, now: datetime) -> NodeHealth:
    """A node with no stored state starts from what Route 53 shows, so a new controller changes nothing."""
    return NodeHealth(up=carrying_weight, since=now, reason="first sight: adopted from Route 53")


def steady(h: NodeHealth, ok: bool, reason: str, rise: int, fall: int) -> bool:
    """Would this result leave the state as it is? (Counters at their cap, same state, same reason.)"""
    cap = max(rise, fall)
    if ok:
        return h.up and h.failures == 0 and h.successes >= cap and h.reason == reason
    return not h.up and h.successes == 0 and h.failures >= cap and h.reason == reason


def observe(
    h: NodeHealth, ok: bool, reason: str, now: datetime, rise: int, fall: int
) -> tuple[NodeHealth, Transition | None]:
    """Fold one probe result into the state; return the transition when the state flips."""
    # Counters only matter up to rise/fall: capped, a steady node's state stops changing, so
    # nothing needs writing for it.
    cap = max(rise, fall)
    if steady(h, ok, reason, rise, fall):
        return h, None  # the same state as before
    if ok:
        h = replace(h, successes=min(h.successes + 1, cap), failures=0, reason=reason)
        if not h.up and h.successes >= rise:
            return replace(h, up=True, since=now, recovered_at=now), Transition(True, reason)
        return h, None
    h = replace(h, failures=min(h.failures + 1, cap), successes=0, reason=reason)
    if h.up and h.failures >= fall:
        return replace(h, up=False, since=now), Transition(False, reason)
    return h, None
