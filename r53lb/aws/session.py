"""One way to make AWS clients and one way to read their errors (Route 53, SNS, DynamoDB).

Credentials only come from boto3's usual chain; nothing here ever puts them in a message.
boto3 is imported on first use, so `r53lb --help` does not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import R53lbError

if TYPE_CHECKING:
    from ..config import AwsConfig

NO_CREDENTIALS = "no AWS credentials found (boto3's usual chain: env, ~/.aws, instance role)"
THROTTLE_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete",
                            "ProvisionedThroughputExceededException", "RequestLimitExceeded",
                            "TooManyRequestsException"})


class AwsError(R53lbError):
    """An AWS client could not be made (a profile that does not exist, ...); one line."""


@dataclass(frozen=True)
class Failure:
    """An AWS call's error, read once: what to show, its class, whether to try again."""

    code: str  # the error's class alone: AccessDenied, Throttling, ConnectionError (fit for /healthz)
    message: str  # one line, no credentials
    status: int = 0
    transient: bool = False  # throttling, a 5xx, a connection error: worth another try
    throttled: bool = False


def one_line(text: object, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def client(aws: "AwsConfig | None", service: str, *, region: str | None = None, connect_timeout: float = 5.0,
           read_timeout: float = 20.0, attempts: int = 2) -> Any:
    """A boto3 client for `service`: the config's profile, region and endpoint_url (moto, LocalStack)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=connect_timeout, read_timeout=read_timeout,
                    retries={"mode": "standard", "total_max_attempts": max(1, attempts)})
    try:
        session = boto3.session.Session(profile_name=aws.profile if aws else None,
                                        region_name=region or (aws.region if aws else None))
    except Exception as e:  # botocore's ProfileNotFound and friends
        raise AwsError(f"AWS profile {aws.profile if aws else None!r}: {one_line(e)}") from None
    return session.client(service, endpoint_url=aws.endpoint_url if aws else None, config=config)


def read_error(e: BaseException, what: str) -> Failure | None:
    """botocore's exception as a Failure (`what`: 'Route 53 ListResourceRecordSets'); None if not botocore's."""
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

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = one_line(err.get("Message") or e)
        throttled = code in THROTTLE_CODES
        return Failure(code, f"{what}: {code}: {message}", status, throttled or status >= 500, throttled)
    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return Failure("NoCredentials", NO_CREDENTIALS)
    if isinstance(e, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)):
        return Failure(type(e).__name__, f"{what}: {one_line(e)}", transient=True)
    if isinstance(e, BotoCoreError):
        return Failure(type(e).__name__, f"{what}: {one_line(e)}")
    return None


class Transient(Exception):
    """One attempt that may succeed if tried again (throttling, a 5xx, a connection error)."""

    def __init__(self, message: str, code: str = "Error") -> None:
        super().__init__(message)
        self.code = code


def report(on_request: Callable[[str, str], None] | None, operation: str, outcome: str) -> None:
    """Count a request for the metrics; counting never breaks a call."""
    if on_request is not None:
        try:
            on_request(operation, outcome)
        except Exception:
            pass


def with_retries(attempt: Callable[..., Any], *args: Any, attempts: int, deadline: float, backoff: float,
                 backoff_max: float, give_up: Callable[[str, str], Exception]) -> Any:
    """`attempt(*args)` again on Transient, with exponential backoff and jitter, bounded in count and time.

    When the tries run out, `give_up(message, code)` is raised (one line, the last error and the count).
    """
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        stop_after_delay,
        wait_random_exponential,
    )

    retrying = Retrying(
        retry=retry_if_exception_type(Transient),
        stop=stop_after_attempt(max(1, attempts)) | stop_after_delay(deadline),
        wait=wait_random_exponential(multiplier=backoff, max=backoff_max),
        reraise=False,
    )
    try:
        return retrying(attempt, *args)
    except RetryError as e:
        last = e.last_attempt.exception()
        n = e.last_attempt.attempt_number
        raise give_up(f"{last} (gave up after {n} attempt{'s' if n > 1 else ''})",
                      getattr(last, "code", "Error")) from None
