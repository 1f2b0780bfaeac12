"""An `agent` check (the HAProxy agent-check protocol)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..fields import Duration, _Model


class AgentCheck(_Model):
    """HAProxy's agent-check: the node reports its own share and state on a TCP port."""

    port: int = Field(ge=1, le=65535)
    send: str | None = None  # HAProxy's agent-send: written verbatim on connect (add "\n" if the agent wants a line)
    interval: Duration | None = None  # default: the pool's interval
    timeout: Duration | None = None
    name: str | None = Field(None, min_length=1, max_length=64)  # how gates and reasons refer to it

    @field_validator("send")
    @classmethod
    def _send(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode("utf-8")) > 1024:
            raise ValueError("is longer than 1024 bytes")
        return v
