"""Counters and fault injection for moto's DynamoDB (the cluster's table), as strict.py does for Route 53.

    from moto_fixtures.dynamodb import dynamodb_controls as ddb
    ddb.throttle("TransactWriteItems", 3)   # the next 3 answer ThrottlingException (HTTP 400)
    ddb.counts["PutItem"]

Installed with `install()` (the moto server fixture does it); one per process, like moto's state.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.responses import DynamoHandler

__all__ = ["DynamoControls", "dynamodb_controls", "install"]


class DynamoControls:
    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._faults: dict[str, collections.deque[tuple[str, str]]] = collections.defaultdict(collections.deque)
        self._down = 0.0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self._faults.clear()

    def throttle(self, operation: str, n: int = 1) -> None:
        """The next n calls of `operation` answer ThrottlingException, as DynamoDB does under load."""
        self.fail(operation, n, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")

    def fail(self, operation: str, n: int = 1, code: str = "InternalServerError",
             message: str = "Internal server error") -> None:
        with self._lock:
            self._faults[operation].extend((code, message) for _ in range(n))

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


def _counted(self: Any) -> Any:
    try:
        action = self._get_action() or "?"
    except Exception:
        action = "?"
    fault = dynamodb_controls._on_request(action)
    if fault is not None:
        code, message = fault
        status = 500 if code == "InternalServerError" else 400
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message})
        return status, {"Content-Type": "application/x-amz-json-1.0", "status": str(status)}, body
    return _orig["call_action"](self)


def install() -> DynamoControls:
    with _lock:
        if not _orig:
            _orig["call_action"] = DynamoHandler.call_action
            DynamoHandler.call_action = _counted  # type: ignore[method-assign]
    return dynamodb_controls
