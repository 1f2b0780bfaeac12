"""Where r53lb talks to AWS and keeps its state: `aws`, `state`, `cluster`."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .fields import Duration, HttpUrl, _Model, show


class AwsConfig(_Model):
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    endpoint_url: HttpUrl | None = None
    profile: str | None = None


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise ValueError(f"{show(value)} contains a NUL byte")
    return value


class StateConfig(_Model):
    path: Annotated[Path, BeforeValidator(_no_nul)] | None = None

    def resolved_path(self) -> Path:
        if self.path is not None:
            return Path(os.path.expanduser(str(self.path)))
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return Path(base) / "r53lb" / "state.db"


_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def _quorum(value: Any) -> Any:
    if value == "majority":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not `majority` nor a number of replicas (1 or more)")
    return value


MIN_HEARTBEAT = 0.1
PLAUSIBLE_REPLICAS = 9  # a quorum above this many replicas is more likely a typo than a fleet


class ClusterConfig(_Model):
    """Several `r53lb run` replicas sharing one DynamoDB table: all probe, the lease holder writes."""

    backend: Literal["dynamodb"] = "dynamodb"
    table: str
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")  # default: aws.region, then boto3's chain
    replica: str = Field(default_factory=lambda: socket.gethostname() or "r53lb", min_length=1, max_length=128)
    lease: Duration = 15.0
    heartbeat: Duration = 1.0
    quorum: Annotated[Literal["majority"] | int, BeforeValidator(_quorum)] = "majority"

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _TABLE.match(v):
            raise ValueError(f"{v!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
        return v

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, v: float) -> float:
        # Every heartbeat is a DynamoDB write per replica: 1e-7s would be millions a second.
        if v < MIN_HEARTBEAT:
            raise ValueError(f"{v:g}s is below {MIN_HEARTBEAT * 1000:g}ms (each heartbeat is a DynamoDB write)")
        return v

    @model_validator(mode="after")
    def _timing(self) -> "ClusterConfig":
        # The leader renews at each heartbeat: a lease of fewer than 3 heartbeats is lost to one slow write.
        if self.lease < 3 * self.heartbeat:
            raise ValueError(f"lease: {self.lease:g}s is shorter than 3 heartbeats ({3 * self.heartbeat:g}s)")
        return self
