"""The only module that talks to DynamoDB: one client, bounded retries on throttling, one-line errors.

The cluster's table (state/dynamodb.py) and its lease go through `DynamoDB.call`. Retries
follow route53.py: botocore's own, then tenacity with exponential backoff and jitter on
throttling, 5xx and connection errors, bounded in attempts and time (the heartbeat loop
must not hang on a call longer than a lease).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from r53lb.config import AwsConfig

__all__ = ["ConditionFailed", "DynamoDB", "DynamoDBError", "create_table"]

_THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "Throttling", "TransactionInProgressException",
})
NO_CREDENTIALS = "no AWS credentials found (boto3's usual chain: env, ~/.aws, instance role)"


class DynamoDBError(Exception):
    """DynamoDB could not be used (after retries); one line, never credentials. `code`: the error's class."""

    def __init__(self, message: str, code: str = "Error") -> None:
        super().__init__(message)
        self.code = code


class ConditionFailed(DynamoDBError):
    """A conditional write was refused: someone else changed the item (the lease moved)."""


class _Transient(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _one_line(text: object, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                    # tenacity does the retrying (bounded in time); botocore's own would multiply it.
                    retries={"mode": "standard", "total_max_attempts": 1},
                )
                try:
                    session = boto3.session.Session(profile_name=self.aws.profile, region_name=self.region)
                except Exception as e:  # ProfileNotFound and friends
                    raise DynamoDBError(f"AWS profile {self.aws.profile!r}: {_one_line(e)}") from None
                self._client = session.client("dynamodb", endpoint_url=self.aws.endpoint_url, config=config)
            return self._client

    def _report(self, operation: str, outcome: str) -> None:
        if self.on_request is not None:
            try:
                self.on_request(operation, outcome)
            except Exception:  # metrics never break a call
                pass

    def _attempt(self, operation: str, kwargs: dict[str, Any], started: list[float]) -> Any:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        method = getattr(self.client, _snake(operation))
        self.request_counts[operation] += 1
        started.append(time.monotonic())
        try:
            result = method(**kwargs)
        except ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", "Unknown"))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = _one_line(err.get("Message") or e)
            text = f"DynamoDB {operation}: {code}: {message}"
            if code in _THROTTLE_CODES or status >= 500:
                self._report(operation, "throttled" if code in _THROTTLE_CODES else "error")
                raise _Transient(text, code) from None
            if code == "ConditionalCheckFailedException" or (
                    code == "TransactionCanceledException" and "ConditionalCheckFailed" in message):
                self._report(operation, "condition_failed")
                raise ConditionFailed(text, code) from None
            if code == "TransactionCanceledException" and ("Throttling" in message or "TransactionConflict" in message):
                self._report(operation, "throttled")
                raise _Transient(text, code) from None
            self._report(operation, "error")
            raise DynamoDBError(text, code) from None
        except (NoCredentialsError, PartialCredentialsError):
            self._report(operation, "error")
            raise DynamoDBError(NO_CREDENTIALS, "NoCredentials") from None
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError) as e:
            self._report(operation, "error")
            raise _Transient(f"DynamoDB {operation}: {_one_line(e)}", type(e).__name__) from None
        except BotoCoreError as e:
            self._report(operation, "error")
            raise DynamoDBError(f"DynamoDB {operation}: {_one_line(e)}", type(e).__name__) from None
        self._report(operation, "ok")
        return result

    def call(self, operation: str, *, sent: list[float] | None = None, deadline: float | None = None,
             **kwargs: Any) -> Any:
        """One API call with bounded retries. `sent` receives the monotonic start of each attempt
        (the lease counts from the attempt that succeeded); `deadline` caps the retrying (seconds)."""
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_after_delay,
            wait_random_exponential,
        )

        started = sent if sent is not None else []
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(deadline or self.retry_deadline),
            wait=wait_random_exponential(multiplier=self.backoff, max=self.backoff_max),
            reraise=False,
        )
        try:
            return retrying(self._attempt, operation, kwargs, started)
        except RetryError as e:
            last = e.last_attempt.exception()
            n = e.last_attempt.attempt_number
            raise DynamoDBError(f"{last} (gave up after {n} attempt{'s' if n > 1 else ''})",
                                getattr(last, "code", "Error")) from None


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
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    return True


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
