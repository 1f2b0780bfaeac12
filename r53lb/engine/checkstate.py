"""The signal checks' state as the engine keeps it, and the engine as the checks see it.

Every signal check module (engine/signals.py, mtasts.py, sending.py, tlsrpt.py, dane.py)
reads and keeps its state through here, and takes the engine as the `Engine` protocol
rather than engine/cycle.py's Controller: the checks sit below the reconcile that runs
them, so no import goes back up.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from ..aws.route53 import Route53
    from ..config import Config, Node, Pool
    from ..core.signals import NodeSignals
    from ..probes.base import Target
    from ..state.base import Store

__all__ = ["DUE_SLACK", "RESTAMP", "Cached", "Engine", "cached", "keep"]

# A signal falls due this close to its interval: run mode probes at interval ±10% (jitter),
# and a check asked at 0.95 x its interval must not wait for the turn after.
DUE_SLACK = 0.10
Cached = dict[tuple[str, str, str], tuple[datetime, dict[str, Any]]]  # (pool, node, slot) -> (at, verdict)
RESTAMP = timedelta(minutes=30)  # an unchanged result's stored time is refreshed this often


class Engine(Protocol):
    """What a signal check needs of the engine (engine/cycle.py's Controller is one)."""

    cfg: "Config"
    store: "Store | None"
    route53: "Route53 | None"
    notify: Callable[[str, str, dict[str, Any]], None]
    last_signals: dict[tuple[str, str], "NodeSignals"]
    records: Callable[[], bool] | None

    def target(self, pool: "Pool", node: "Node") -> "Target": ...

    def zone_id(self, pool: "Pool") -> str: ...

    def checks_cached(self) -> Cached: ...

    def keep_check(self, pool: str, node: str, slot: str, now: datetime, result: dict[str, Any]) -> None: ...


class _Memory:
    """The check state of one store, in memory: what was read once, and what the store holds."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.cached: Cached = store.check_results()
        self.stored: Cached = dict(self.cached)


def memory(ctl: Engine) -> _Memory:
    mem = getattr(ctl, "_checks_memory", None)
    if mem is None or mem.store is not ctl.store:  # a new store (a snapshot for --dry-run): read it once
        mem = _Memory(ctl.store)
        ctl._checks_memory = mem  # type: ignore[attr-defined]
    return mem


def cached(ctl: Engine) -> Cached:
    """The check state as the engine knows it (read from the store once per store)."""
    assert ctl.store is not None
    return dict(memory(ctl).cached)


def keep(ctl: Engine, key: tuple[str, str, str], now: datetime, result: dict[str, Any]) -> None:
    """Into memory; into the store when it changed or its stored time is RESTAMP old."""
    assert ctl.store is not None
    mem = memory(ctl)
    mem.cached[key] = (now, result)
    was = mem.stored.get(key)
    if was is None or was[1] != result or now - was[0] >= RESTAMP:
        ctl.store.put_check_result(key[0], key[1], key[2], now, result)
        mem.stored[key] = (now, result)
