"""Warm-up's `require`: the sending-IP gates (FCrDNS, SPF)."""

from __future__ import annotations

from pydantic import Field

from ..fields import DnsName, Duration, _Model


class SendingGates(_Model):
    """`warmup.require`: a new sending IP's credentials, checked before warm-up gives it any weight."""

    fcrdns: bool = True  # the address's PTR name resolves back to it
    spf: DnsName | None = None  # a sender domain whose SPF policy must authorise the address
    nameservers: list[str] = Field(default_factory=list)  # default: the system resolver
    interval: Duration = 3600.0  # DNS facts, not health: re-checked slowly
    timeout: Duration | None = None

