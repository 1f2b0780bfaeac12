"""One entry of a `checks:` list; each kind's model lives in its own module here."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import model_validator

from ..fields import _Model, show
from .agent import AgentCheck
from .dnsbl import DnsblCheck
from .http import HttpCheck
from .prometheus import PrometheusCheck
from .smtp import SmtpCheck
from .tcp import TcpCheck


CHECK_KINDS = ("smtp", "http", "tcp", "dnsbl", "agent", "prometheus")
# Checks that are signals rather than liveness: when they cannot be read the result is
# unknown (never a failure), and unknown never changes a weight.
SIGNAL_KINDS = ("dnsbl", "agent", "prometheus")


class Check(_Model):
    """One entry of a `checks:` list: a mapping with exactly one key naming the kind."""

    smtp: SmtpCheck | None = None
    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    dnsbl: DnsblCheck | None = None
    agent: AgentCheck | None = None
    prometheus: PrometheusCheck | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, str) and data in ("smtp",):
            return {data: {}}
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError("a check is a mapping with exactly one of: " + ", ".join(CHECK_KINDS))
        (kind, body), = data.items()
        if kind not in CHECK_KINDS:
            raise ValueError(f"unknown check {show(kind)} (known: {', '.join(CHECK_KINDS)})")
        return {kind: {} if body is None else body}

    @functools.cached_property  # asked on every probe and every fold: worked out once
    def kind(self) -> str:
        return next(k for k in CHECK_KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> SmtpCheck | HttpCheck | TcpCheck | DnsblCheck | AgentCheck | PrometheusCheck:
        return getattr(self, self.kind)
