"""A `dnsbl` check."""

from __future__ import annotations

from pydantic import Field, field_validator

from ..fields import Duration, DurationOrZero, _Model, is_ip, show, split_hostport


class DnsblCheck(_Model):
    zones: list[str] = Field(min_length=1)
    ip: str | None = None
    interval: DurationOrZero = 600.0  # how long a verdict is reused; 0s: look up at every probe
    nameservers: list[str] = Field(default_factory=list)
    timeout: Duration | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None and not is_ip(v):
            raise ValueError(f"{show(v)} is not an IP address")
        return v

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, v: list[str]) -> list[str]:
        for ns in v:
            split_hostport(ns, 53)
        return v
