"""Lease arithmetic for the cluster's one writer. Pure: times are the caller's boot-clock seconds.

The approach of the DynamoDB lock client: nobody trusts another machine's clock. The
holder renews the lease item with a new revision (`rev`) every heartbeat; a replica that
sees the *same* revision for a whole lease period, measured on its own monotonic clock from
the moment it first read it, may take the lease with a conditional write on that revision.
The holder counts its lease from the moment it *first sent* the renewal that succeeded (an
answer can be lost and the request retried: the first attempt may be the one that landed),
which is before any other replica can have read it, so its deadline always ends before anyone
else's takeover. Wall clocks (and their skew) play no part. The caller's clock must count
suspend (Linux CLOCK_BOOTTIME): a VM resumed after a suspend must not believe it still holds
a lease that ran out while it slept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DRIFT", "Held", "LeaseRecord", "Observed", "held_from", "may_take", "may_write", "observe",
           "takeover_at", "write_margin"]

# Monotonic clocks of two machines may run at slightly different rates (NTP slews by at most
# 500 ppm); the holder gives up this share of the lease to cover that.
DRIFT = 0.001
RELEASED = ""  # the owner of a lease its holder gave up on the way out (SIGTERM): free at once


@dataclass(frozen=True)
class LeaseRecord:
    """The lease item as read from the table."""

    owner: str
    epoch: int  # grows by one on every change of owner: the fencing token
    rev: str  # changes on every renewal


@dataclass(frozen=True)
class Observed:
    """The lease record a replica last read, and when (its own clock) it first saw it."""

    record: LeaseRecord | None
    since: float


@dataclass(frozen=True)
class Held:
    """This replica holds the lease: `epoch`, the revision it wrote, and its own deadline."""

    epoch: int
    rev: str
    deadline: float


def observe(prev: Observed | None, record: LeaseRecord | None, now: float) -> Observed:
    """Fold one read of the lease item: the clock restarts only when the revision changed."""
    if prev is not None and prev.record == record:
        return prev
    return Observed(record, now)


def may_take(obs: Observed, now: float, lease: float) -> bool:
    """The lease is free (never taken, or released by a holder that stopped), or its holder has
    not renewed it for a whole lease on our own clock."""
    return obs.record is None or obs.record.owner == RELEASED or now >= takeover_at(obs, lease)


def takeover_at(obs: Observed, lease: float) -> float:
    """When (our clock) the lease we see may be taken if nobody renews it."""
    return obs.since + lease


def held_from(epoch: int, rev: str, sent_at: float, lease: float) -> Held:
    """The lease is ours until `sent_at` plus the lease, less drift. `sent_at`: when the *first*
    attempt of the winning write left (any attempt of it may be the one that landed)."""
    return Held(epoch, rev, sent_at + lease * (1.0 - DRIFT))


def write_margin(lease: float) -> float:
    """Time that must be left on the lease before a Route 53 write starts (the write's own duration)."""
    return lease / 3.0


def may_write(held: Held | None, now: float, lease: float) -> str | None:
    """None when a Route 53 write may start now; otherwise the reason not to write."""
    if held is None:
        return "not the lease holder"
    left = held.deadline - now
    if left < write_margin(lease):
        return f"lease ends in {max(left, 0.0):.1f}s, under the {write_margin(lease):.1f}s a write needs"
    return None
