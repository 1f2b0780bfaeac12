"""One way to make AWS clients and one way to read their errors (Route 53, SNS, DynamoDB).

Credentials only come from boto3's usual chain; nothing here ever puts them in a message.
boto3 is imported on first use, so `r53lb --help` does not pay for it.
"""

from __future__ import annotations

from ..errors import R53lbError

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
