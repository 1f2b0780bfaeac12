"""From base weight to effective weight: slow start and warm-up (and its gates). Pure: `now` passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from ..config import Warmup

SLOW_START_FLOOR = 0.10  # a recovered node starts at 10% of its weight


def slow_start_share(recovered_at: datetime | None, slow_start: float, now: datetime) -> float:
    """Linear ramp from 10% to 100% over `slow_start` seconds after a recovery."""
    if slow_start <= 0 or recovered_at is None:
        return 1.0
    elapsed = (now - recovered_at).total_seconds()
    if elapsed >= slow_start:
        return 1.0
    return SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * max(0.0, elapsed) / slow_start


@dataclass(frozen=True)
class WarmupClock:
    """How long a gated warm-up has stood still: its schedule runs on `now - start - paused`.

    While a gate is closed the day counter stops and the node keeps the share it had when
    the gate closed (it does not drop back a step): see docs/configuration.md, `hold_when`.
    """

    paused_seconds: float = 0.0  # the pauses that have ended, added up
    paused_since: datetime | None = None  # the pause in progress, if any
    reason: str = ""  # why it is paused now

    def paused(self, now: datetime) -> float:
        """Seconds the schedule has stood still by `now`."""
        running = max(0.0, (now - self.paused_since).total_seconds()) if self.paused_since else 0.0
        return self.paused_seconds + running

    def to_json(self) -> dict[str, Any]:
        return {"paused_seconds": self.paused_seconds,
                "paused_since": self.paused_since.isoformat() if self.paused_since else None,
                "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "WarmupClock":
        data = data or {}
        seconds = data.get("paused_seconds")
        since = data.get("paused_since")
        try:
            at = datetime.fromisoformat(since) if isinstance(since, str) else None
        except ValueError:
            at = None
        ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0
        return cls(float(seconds) if ok else 0.0, at, str(data.get("reason") or "") if at else "")


def step_warmup_clock(clock: WarmupClock | None, closed: list[str], warmup: Warmup, now: datetime) -> WarmupClock:
    """The clock after looking at the gates `now`: `closed` holds why each closed gate is closed."""
    c = clock or WarmupClock()
    if closed:
        # A gate closed before the warm-up starts pauses from its start, not before.
        since = c.paused_since or max(now, warmup.start)
        return WarmupClock(c.paused_seconds, since, "; ".join(closed))
    if c.paused_since is not None:
        return WarmupClock(c.paused(now), None, "")
    return c


def warmup_share(warmup: Warmup | None, now: datetime, paused: float = 0.0) -> float:
    """The share of a new sending IP's weight in force `now`: linear between schedule points.

    `paused` seconds (a gated warm-up standing still) are taken off the time since `start`.
    """
    if warmup is None:
        return 1.0
    t = (now - warmup.start).total_seconds()
    if t >= 0:
        t = max(0.0, t - paused)
    if t < 0:
        return 0.0  # not started yet: the IP takes no traffic
    points = warmup.schedule
    if t <= points[0][0]:
        return points[0][1]
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if t <= t1:
            return s0 + (s1 - s0) * (t - t0) / (t1 - t0) if t1 > t0 else s1
    return points[-1][1]


def warmup_next_step(warmup: Warmup | None, now: datetime, paused: float = 0.0) -> tuple[datetime, float] | None:
    """The next schedule point after `now` and its share, or None when warm-up is complete.

    With a pause the dates move later by the time stood still (as if no gate closes again).
    """
    if warmup is None:
        return None
    for offset, share in warmup.schedule:
        at = warmup.start + timedelta(seconds=offset + paused)
        if at > now:
            return at, share
    return None


def effective_weight(base: int, share: float) -> int:
    """base x share, rounded; a share above 0 never rounds to weight 0."""
    if base <= 0 or share <= 0:
        return 0
    return min(base, max(1, round(base * min(share, 1.0))))
