"""A pool's `mta_sts`: the policy senders read, as a gate."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..fields import DnsName, Duration, _Model


class MtaSts(_Model):
    """`mta_sts` on a pool: the domain's MTA-STS policy (RFC 8461) against the pool's record and nodes."""

    domain: DnsName = Field(min_length=1)
    nameservers: list[str] = Field(default_factory=list)  # for the `_mta-sts` TXT; default: the system resolver
    # Where to fetch the policy instead of mta-sts.<domain>:443 (host:port; the TLS name stays mta-sts.<domain>).
    policy_address: str | None = None
    ca_file: Path | None = None  # trust for the policy server and the nodes' certificates; default: system CAs
    port: int = Field(25, ge=1, le=65535)  # the nodes' SMTP port whose certificate a sender sees
    interval: Duration = 3600.0  # how often the TXT id and each node's certificate are checked
    timeout: Duration | None = None

