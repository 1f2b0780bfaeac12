"""Counters and fault injection for moto's DynamoDB (the cluster's table), as strict.py does for Route 53.

    from moto_fixtures.dynamodb import dynamodb_controls as ddb
    ddb.throttle("TransactWriteItems", 3)   # the next 3 answer ThrottlingException (HTTP 400)
    ddb.lose_answer("UpdateItem", 1)        # carried out, but the client gets a 500 instead of the answer
    ddb.counts["PutItem"]

Installed with `install()` (the moto server fixture does it); one per process, like moto's state.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.dynamodb.responses import DynamoHandler

__all__ = ["DynamoControls", "dynamodb_controls", "install"]


class DynamoControls:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._faults: dict[str, collections.deque[tuple[str, str]]] = collections.defaultdict(collections.deque)
        self._down = 0.0
        self._lost: collections.Counter[str] = collections.Counter()
        self._lost_delay = 0.0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self._faults.clear()
            self._lost.clear()

    def throttle(self, operation: str, n: int = 1) -> None:
        """The next n calls of `operation` answer ThrottlingException, as DynamoDB does under load."""
        self.fail(operation, n, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")

    def fail(self, operation: str, n: int = 1, code: str = "InternalServerError",
             message: str = "Internal server error") -> None:
        with self._lock:
            self._faults[operation].extend((code, message) for _ in range(n))

    def lose_answer(self, operation: str, n: int = 1, delay: float = 0.0) -> None:
        """The next n calls of `operation` are carried out, but the client gets a 500 instead of
        the answer, `delay` seconds late (the connection dropped after DynamoDB wrote)."""
        with self._lock:
            self._lost[operation] += n
            self._lost_delay = delay

    def _take_lost(self, action: str) -> float | None:
        with self._lock:
            if self._lost[action] > 0:
                self._lost[action] -= 1
                return self._lost_delay
            return None

    def _on_request(self, action: str) -> tuple[str, str] | None:
        with self._lock:
            self.counts[action] += 1
            q = self._faults.get(action)
            return q.popleft() if q else None

    @property
    def writes(self) -> int:
        return sum(self.counts[o] for o in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems",
                                           "BatchWriteItem"))


dynamodb_controls = DynamoControls()
_orig: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()
_apply = threading.Lock()


def _counted(self: Any) -> Any:
    try:
        action = self._get_action() or "?"
    except Exception:
        action = "?"
    fault = dynamodb_controls._on_request(action)
    if fault is not None:
        return _error(*fault)
    with _apply:  # DynamoDB applies a conditional write atomically; moto's threaded server does not
        result = _orig["call_action"](self)
    lost = dynamodb_controls._take_lost(action)
    if lost is not None:
        time.sleep(lost)
        return _error("InternalServerError", "the answer was lost on the way back")
    return result


def _error(code: str, message: str) -> tuple[int, dict[str, str], str]:
    status = 500 if code == "InternalServerError" else 400
    body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
    return status, {"Content-Type": "application/x-amz-json-1.0", "status": str(status)}, body


def install() -> DynamoControls:
    with _lock:
        if not _orig:
            _orig["call_action"] = DynamoHandler.call_action
            DynamoHandler.call_action = _counted  # type: ignore[method-assign]
    return dynamodb_controls
