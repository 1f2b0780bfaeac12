"""The alert watcher: which alerts a plan and its outcome raise, given what was already said.

Pure, h11-style: `step(previous, now, ...) -> (state, [Alert])`. Both `sync` (state kept in
the state store between cron runs) and `run` (state in memory) call it, so both alert on
*changes*: a hold, a panic, a fail open or a drift is told once when it starts and once
when it ends, not on every cycle; a failing zone is told once, then reminded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any, Mapping, Sequence

from .planner import Plan

APPLY_REMINDER_SECONDS = 600.0  # while a zone keeps failing, remind at most this often


class AlertKind(str, Enum):
    HOLD = "hold"
    HOLD_CLEARED = "hold_cleared"
    PANIC = "panic"
    PANIC_END = "panic_end"
    FAIL_OPEN = "fail_open"
    FAIL_OPEN_END = "fail_open_end"
    DRIFT = "drift"  # drift or a missing record set: that node is not written
    DRIFT_CLEARED = "drift_cleared"
    DRAIN_DEFERRED = "drain_deferred"
    APPLY_FAILED = "apply_failed"
    APPLY_REMINDER = "apply_reminder"
    APPLY_RECOVERED = "apply_recovered"

    @property
    def notify_kind(self) -> str:
        """The `kind` a notification carries (a contract of webhook and SNS payloads)."""
        return _NOTIFY_KIND[self]

    @property
    def severe(self) -> bool:
        return self in _SEVERE


_NOTIFY_KIND = {
    AlertKind.HOLD: "hold", AlertKind.HOLD_CLEARED: "recovery",
    AlertKind.PANIC: "panic", AlertKind.PANIC_END: "recovery",
    AlertKind.FAIL_OPEN: "alert", AlertKind.FAIL_OPEN_END: "recovery",
    AlertKind.DRIFT: "alert", AlertKind.DRIFT_CLEARED: "recovery",
    AlertKind.DRAIN_DEFERRED: "alert",
    AlertKind.APPLY_FAILED: "apply_failed", AlertKind.APPLY_REMINDER: "apply_failed",
    AlertKind.APPLY_RECOVERED: "recovery",
}
_SEVERE = frozenset({AlertKind.HOLD, AlertKind.PANIC, AlertKind.FAIL_OPEN, AlertKind.DRIFT,
                     AlertKind.APPLY_FAILED, AlertKind.APPLY_REMINDER, AlertKind.DRAIN_DEFERRED})


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failing:
    """A zone whose reconcile fails: since when, when it was last told, the latest error."""

    since: datetime
    notified_at: datetime
    error: str


@dataclass(frozen=True)
class WatchState:
    hold: str | None = None
    panic: frozenset[str] = frozenset()
    fail_open: frozenset[str] = frozenset()
    deferred: frozenset[str] = frozenset()
    errors: Mapping[str, frozenset[str]] = field(default_factory=dict)  # pool -> drift / missing-set errors
    failing: Mapping[str, Failing] = field(default_factory=dict)  # zone -> failure streak

    def to_json(self) -> dict[str, Any]:
        return {
            "hold": self.hold, "panic": sorted(self.panic), "fail_open": sorted(self.fail_open),
            "deferred": sorted(self.deferred),
            "errors": {p: sorted(e) for p, e in self.errors.items() if e},
            "failing": {z: {"since": f.since.isoformat(), "notified_at": f.notified_at.isoformat(), "error": f.error}
                        for z, f in self.failing.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "WatchState":
        if not data:
            return cls()
        try:
            return cls(
                hold=data.get("hold"),
                panic=frozenset(data.get("panic", ())), fail_open=frozenset(data.get("fail_open", ())),
                deferred=frozenset(data.get("deferred", ())),
                errors={p: frozenset(e) for p, e in (data.get("errors") or {}).items()},
                failing={z: Failing(datetime.fromisoformat(f["since"]), datetime.fromisoformat(f["notified_at"]),
                                    str(f["error"])) for z, f in (data.get("failing") or {}).items()},
            )
        except (TypeError, ValueError, KeyError, AttributeError):
            return cls()  # an unreadable watcher state only costs a repeated alert


def step_hold(prev: WatchState, hold: str | None, why_cleared: str = "") -> tuple[WatchState, list[Alert]]:
    """A vantage hold starts or ends (told once each way)."""
    if hold and not prev.hold:
        return replace(prev, hold=hold), [Alert(AlertKind.HOLD, f"hold: {hold}; nothing is written", {"reason": hold})]
    if not hold and prev.hold:
        why = why_cleared or "the controller's own network answers again"
        return replace(prev, hold=None), [Alert(AlertKind.HOLD_CLEARED, f"hold cleared: {why}", {"reason": why})]
    if hold and hold != prev.hold:
        return replace(prev, hold=hold), []  # still held, for a reason worded differently
    return prev, []


def step(
    prev: WatchState,
    now: datetime,
    *,
    plan: Plan | None = None,
    zone: str | None = None,
    error: str | None = None,
    reminder: float = APPLY_REMINDER_SECONDS,
) -> tuple[WatchState, list[Alert]]:
    """Fold one reconcile's plan (its pools only) and its zone's outcome (`error`: None when it worked)."""
    alerts: list[Alert] = []
    state = prev
    if plan is not None:
        state, alerts = _step_pools(state, plan.pools)
    if zone is not None:
        state, more = _step_zone(state, zone, error, now, reminder)
        alerts += more
    return state, alerts


def _step_pools(prev: WatchState, pools: Sequence[Any]) -> tuple[WatchState, list[Alert]]:
    alerts: list[Alert] = []
    panic, fail_open, deferred = set(prev.panic), set(prev.fail_open), set(prev.deferred)
    errors = dict(prev.errors)
    for pp in pools:
        name = pp.pool
        detail = {"pool": name}
        text = "; ".join(pp.alerts)
        if pp.panic and name not in panic:
            panic.add(name)
            alerts.append(Alert(AlertKind.PANIC, _pick(pp.alerts, "panic") or text, detail))
        elif not pp.panic and name in panic:
            panic.discard(name)
            alerts.append(Alert(AlertKind.PANIC_END, f"pool {name}: out of panic", detail))
        if pp.fail_open and name not in fail_open:
            fail_open.add(name)
            alerts.append(Alert(AlertKind.FAIL_OPEN, _pick(pp.alerts, "failing open") or text, detail))
        elif not pp.fail_open and name in fail_open:
            fail_open.discard(name)
            alerts.append(Alert(AlertKind.FAIL_OPEN_END,
                                f"pool {name}: healthy nodes again, no longer failing open", detail))
        if pp.deferred and name not in deferred:
            deferred.add(name)
            alerts.append(Alert(AlertKind.DRAIN_DEFERRED, _pick(pp.alerts, "max_drain_per_cycle") or text, detail))
        elif not pp.deferred and name in deferred:
            deferred.discard(name)
        seen = errors.get(name, frozenset())
        for err in pp.errors:
            if err not in seen:  # new, or fixed and back again
                alerts.append(Alert(AlertKind.DRIFT, err, detail))
        for err in sorted(seen.difference(pp.errors)):
            alerts.append(Alert(AlertKind.DRIFT_CLEARED, f"cleared: {err}", detail))
        errors[name] = frozenset(pp.errors)
    return replace(prev, panic=frozenset(panic), fail_open=frozenset(fail_open), deferred=frozenset(deferred),
                   errors={p: e for p, e in errors.items() if e}), alerts


def _step_zone(prev: WatchState, zone: str, error: str | None, now: datetime,
               reminder: float) -> tuple[WatchState, list[Alert]]:
    failing = dict(prev.failing)
    was = failing.get(zone)
    detail = {"zone": zone}
    if error is None:
        if was is None:
            return prev, []
        failing.pop(zone)
        took = (now - was.since).total_seconds()
        return replace(prev, failing=failing), [Alert(
            AlertKind.APPLY_RECOVERED, f"zone {zone}: Route 53 reconcile works again after {took:.0f}s", detail)]
    if was is None:
        failing[zone] = Failing(now, now, error)
        return replace(prev, failing=failing), [Alert(
            AlertKind.APPLY_FAILED, f"zone {zone}: apply failed: {error}", {**detail, "error": error})]
    if (now - was.notified_at).total_seconds() >= reminder:
        failing[zone] = Failing(was.since, now, error)
        lasting = (now - was.since).total_seconds()
        return replace(prev, failing=failing), [Alert(
            AlertKind.APPLY_REMINDER, f"zone {zone}: apply failed (failing for {lasting:.0f}s): {error}",
            {**detail, "error": error})]
    failing[zone] = Failing(was.since, was.notified_at, error)
    return replace(prev, failing=failing), []


def _pick(alerts: Sequence[str], word: str) -> str | None:
    return next((a for a in alerts if word in a), None)
