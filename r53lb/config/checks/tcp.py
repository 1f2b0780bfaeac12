"""A `tcp` check."""

from __future__ import annotations

from pydantic import Field

from ..fields import Duration, _Model


class TcpCheck(_Model):
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None
