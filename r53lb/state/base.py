"""What the engine needs from a state store, whatever keeps it (SQLite on one machine, DynamoDB in a cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ContextManager, Protocol, runtime_checkable

from ..errors import R53lbError
from ..core.health import NodeHealth

NodeKey = tuple[str, str]  # (pool, node)

# The reason of the drain put on a node found at weight 0 after the state store was rebuilt:
# the lost store may have held a drain for it, so it stays out until the operator says otherwise.
STATE_LOST = "state was lost"


class StateError(R53lbError):
    """The state store cannot be used: locked, unwritable, full, failing I/O, or corrupt where it may not be rebuilt.

    The message is one line that names the file and what the operator does about it.
    """

    plain = True


@dataclass(frozen=True)
class Event:
    at: datetime
    pool: str
    node: str
    kind: str  # health | weight | drain | enable | quarantine | hold | alert | state | reputation
    from_state: str | None
    to_state: str | None
    reason: str
    replica: str | None = None  # cluster: the replica that recorded it
    epoch: int | None = None  # cluster: the lease epoch it held then (a weight written under it)

    def to_json(self) -> dict[str, Any]:
        d = {"at": self.at.isoformat(), "pool": self.pool, "node": self.node, "kind": self.kind,
             "from": self.from_state, "to": self.to_state, "reason": self.reason}
        if self.replica is not None:
            d.update(replica=self.replica, epoch=self.epoch)
        return d


@runtime_checkable
class Store(Protocol):
    """The state store the engine reads and writes. Every failure is a StateError, never a backend's own error.

    Writes made outside `transaction()` are committed one by one; inside it, together or not at all.
    `transaction()` nests: an inner one joins the outer.
    """

    @property
    def rebuilt(self) -> str | None:
        """Why the store was moved aside and rebuilt when it was opened this time (None when it was not)."""

    # health (rise/fall counters per node)
    def health(self) -> dict[NodeKey, NodeHealth]: ...
    def put_health(self, pool: str, node: str, h: NodeHealth) -> None: ...

    # drains by hand (and "state was lost")
    def drains(self) -> dict[NodeKey, tuple[str, datetime]]: ...
    def drain(self, pool: str, node: str, reason: str, now: datetime) -> None: ...
    def enable(self, pool: str, node: str, now: datetime) -> bool: ...

    # cached check results (dnsbl and other checks with their own interval)
    def check_results(self) -> dict[tuple[str, str, str], tuple[datetime, dict[str, Any]]]: ...
    def put_check_result(self, pool: str, node: str, slot: str, at: datetime, result: dict[str, Any]) -> None: ...

    # history
    def add_event(self, at: datetime, pool: str, node: str, kind: str,
                  from_state: str | None, to_state: str | None, reason: str) -> None: ...
    def events(self, limit: int = 50, pool: str | None = None, node: str | None = None) -> list[Event]: ...

    # small key/value state (the alert watcher's, the state-lost marker)
    def get_meta(self, key: str) -> str | None: ...
    def put_meta(self, key: str, value: str | None) -> None: ...

    def state_lost(self) -> str | None:
        """Why the store was rebuilt, while nodes from before the loss are still to be adopted; else None."""

    def clear_state_lost(self) -> None:
        """Every configured node has been seen since the rebuild: first sight is ordinary again."""

    # concurrency and lifetime
    def transaction(self) -> ContextManager[None]: ...
    def exclusive(self, wait: float = 0.0) -> ContextManager[None]: ...
    def snapshot(self) -> "Store":
        """An in-memory copy: the whole cycle can run against it and nothing is recorded."""

    def close(self) -> None: ...
