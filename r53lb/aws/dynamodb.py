"""The only module that talks to DynamoDB: one client, bounded retries on throttling, one-line errors.

The cluster's table (state/dynamodb.py) and its lease go through `DynamoDB.call`; the client
and the reading of errors are aws/session.py's, as for Route 53 and SNS. Retries follow
route53.py: botocore's own, then tenacity with exponential backoff and jitter on
throttling, 5xx and connection errors, bounded in attempts and time (the heartbeat loop
must not hang on a call longer than a lease).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import R53lbError
from .session import Transient, report, with_retries

if TYPE_CHECKING:
    from r53lb.config import AwsConfig

__all__ = ["ConditionFailed", "DynamoDB", "DynamoDBError", "check_table", "create_table"]

KEY_SCHEMA = {"pk": ("HASH", "S"), "sk": ("RANGE", "S")}
TTL_ATTRIBUTE = "expires"

class DynamoDBError(R53lbError):
    """DynamoDB could not be used (after retries); one line, never credentials. `code`: the error's class."""

    prefix = "dynamodb: "

    def __init__(self, message: str, code: str = "Error") -> None:
        super().__init__(message)
        self.code = code


class ConditionFailed(DynamoDBError):
    """A conditional write was refused: someone else changed the item (the lease moved)."""


class DynamoDB:
    """A DynamoDB client for one table's region; `request_counts` per operation (bench, tests)."""

    def __init__(
        self,
        aws: "AwsConfig",
        region: str | None = None,
        *,
        on_request: Callable[[str, str], None] | None = None,
        attempts: int = 5,
        backoff: float = 0.05,
        backoff_max: float = 1.0,
        retry_deadline: float = 5.0,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
    ) -> None:
        self.aws = aws
        self.region = region or aws.region
        self.on_request = on_request
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_deadline = retry_deadline
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.request_counts: collections.Counter[str] = collections.Counter()
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        from .session import AwsError, client

        with self._lock:
            if self._client is None:
                try:
                    # tenacity does the retrying (bounded in time); botocore's own would multiply it.
                    self._client = client(self.aws, "dynamodb", region=self.region, attempts=1,
                                          connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)
                except AwsError as e:
                    raise DynamoDBError(str(e)) from None
            return self._client

    def _report(self, operation: str, outcome: str) -> None:
        report(self.on_request, operation, outcome)

    def _attempt(self, operation: str, kwargs: dict[str, Any], started: list[float]) -> Any:
        from .session import read_error

        method = getattr(self.client, _snake(operation))
        self.request_counts[operation] += 1
        started.append(time.monotonic())
        try:
            result = method(**kwargs)
        except Exception as e:
            f = read_error(e, f"DynamoDB {operation}")
            if f is None:
                raise
            # A transaction refused for a condition says so only in its cancellation reasons.
            if f.code == "ConditionalCheckFailedException" or (
                    f.code == "TransactionCanceledException" and "ConditionalCheckFailed" in f.message):
                self._report(operation, "condition_failed")
                raise ConditionFailed(f.message, f.code) from None
            if f.transient or (f.code == "TransactionCanceledException" and (
                    "Throttling" in f.message or "TransactionConflict" in f.message)):
                self._report(operation, "throttled" if f.throttled else "error")
                raise Transient(f.message, f.code) from None
            self._report(operation, "error")
            raise DynamoDBError(f.message, f.code) from None
        self._report(operation, "ok")
        return result

    def call(self, operation: str, *, sent: list[float] | None = None, deadline: float | None = None,
             **kwargs: Any) -> Any:
        """One API call with bounded retries. `sent` receives the monotonic start of each attempt
        (the lease counts from the attempt that succeeded); `deadline` caps the retrying (seconds)."""
        started = sent if sent is not None else []
        return with_retries(self._attempt, operation, kwargs, started, attempts=self.attempts,
                            deadline=deadline or self.retry_deadline, backoff=self.backoff,
                            backoff_max=self.backoff_max, give_up=DynamoDBError)


def check_table(db: DynamoDB, table: str) -> list[str]:
    """What is wrong with an existing table for r53lb (its key schema, its TTL); empty when nothing."""
    desc = db.call("DescribeTable", TableName=table)["Table"]
    types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}
    keys = {k["AttributeName"]: (k["KeyType"], types.get(k["AttributeName"], "?")) for k in desc.get("KeySchema", [])}
    problems = []
    if keys != KEY_SCHEMA:
        def show(ks: dict[str, tuple[str, str]]) -> str:
            return ", ".join(f"{name} {kind} {t}" for name, (kind, t) in sorted(ks.items(), key=lambda kv: kv[1][0]))

        problems.append(f"its key schema is {show(keys) or 'unknown'}, r53lb needs {show(KEY_SCHEMA)} "
                        "(create another table, or delete this one and run `r53lb cluster init` again)")
    ttl = db.call("DescribeTimeToLive", TableName=table).get("TimeToLiveDescription", {})
    status, attr = ttl.get("TimeToLiveStatus", "DISABLED"), ttl.get("AttributeName")
    if status not in ("ENABLED", "ENABLING"):
        problems.append(f"its TTL is {status.lower()}, r53lb needs it on attribute `{TTL_ATTRIBUTE}` (history and "
                        f"heartbeats of replicas gone for good expire by it): aws dynamodb update-time-to-live "
                        f"--table-name {table} --time-to-live-specification Enabled=true,AttributeName={TTL_ATTRIBUTE}")
    elif attr != TTL_ATTRIBUTE:
        problems.append(f"its TTL is on attribute `{attr}`, r53lb writes `{TTL_ATTRIBUTE}`")
    return problems


def create_table(db: DynamoDB, table: str, wait: float = 60.0) -> bool:
    """Create the cluster's table (on demand, TTL on `expires`) when it does not exist; True if created."""
    try:
        db.call("DescribeTable", TableName=table)
        return False
    except DynamoDBError as e:
        if e.code != "ResourceNotFoundException":
            raise
    try:
        db.call("CreateTable", TableName=table, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                      {"AttributeName": "sk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    except DynamoDBError as e:
        if e.code != "ResourceInUseException":  # another replica created it meanwhile
            raise
    deadline = time.monotonic() + wait
    while True:
        status = db.call("DescribeTable", TableName=table)["Table"].get("TableStatus")
        if status == "ACTIVE":
            break
        if time.monotonic() > deadline:
            raise DynamoDBError(f"DynamoDB table {table} still {status} after {wait:g}s", "Timeout")
        time.sleep(0.5)
    db.call("UpdateTimeToLive", TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    return True


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
