"""A pool's `tlsrpt`: what senders report, as a gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from ..fields import DnsName, Duration, _Model, _percent


class TlsRpt(_Model):
    """`tlsrpt` on a pool: senders' TLS-RPT reports (RFC 8460) in a directory, failures judged per node."""

    directory: Path
    domain: DnsName | None = None  # the policy-domain the reports are about; default: every policy in them
    window: Duration = 7 * 86400.0  # reports whose date range ends within this long ago
    threshold: Annotated[float, BeforeValidator(_percent)] = 0.05  # a node's failure share above this ...
    min_count: int = Field(10, ge=1)  # ... with at least this many failed sessions
    action: Literal["out", "alert"] = "out"  # alert: the node stays in, an alert says why
    interval: Duration = 300.0  # how often the directory is read

