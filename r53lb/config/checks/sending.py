"""Warm-up's `require`: the sending-IP gates (FCrDNS, SPF)."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..fields import Duration, _HOSTNAME, _Model, show


class SendingGates(_Model):
    """`warmup.require`: a new sending IP's credentials, checked before warm-up gives it any weight."""

    fcrdns: bool = True  # the address's PTR name resolves back to it
    spf: str | None = None  # a sender domain whose SPF policy must authorise the address
    nameservers: list[str] = Field(default_factory=list)  # default: the system resolver
    interval: Duration = 3600.0  # DNS facts, not health: re-checked slowly
    timeout: Duration | None = None

    @field_validator("spf")
    @classmethod
    def _spf(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.rstrip(".").lower()
        if not _HOSTNAME.match(v):
            raise ValueError(f"{show(v)} is not a DNS name")
        return v
