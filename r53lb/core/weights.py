"""From base weight to effective weight: slow start and warm-up. Pure: `now` passed in."""

from __future__ import annotations

from datetime import datetime, timedelta

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


def warmup_share(warmup: Warmup | None, now: datetime) -> float:
    """The share of a new sending IP's weight in force `now`: linear between schedule points."""
    if warmup is None:
        return 1.0
    t = (now - warmup.start).total_seconds()
    if t < 0:
        return 0.0  # not started yet: the IP takes no traffic
    points = warmup.schedule
    if t <= points[0][0]:
        return points[0][1]
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if t <= t1:
            return s0 + (s1 - s0) * (t - t0) / (t1 - t0) if t1 > t0 else s1
    return points[-1][1]


def warmup_next_step(warmup: Warmup | None, now: datetime) -> tuple[datetime, float] | None:
    """The next schedule point after `now` and its share, or None when warm-up is complete."""
    if warmup is None:
        return None
    for offset, share in warmup.schedule:
        at = warmup.start + timedelta(seconds=offset)
        if at > now:
            return at, share
    return None


def effective_weight(base: int, share: float) -> int:
    """base x share, rounded; a share above 0 never rounds to weight 0."""
    if base <= 0 or share <= 0:
        return 0
    return min(base, max(1, round(base * min(share, 1.0))))
