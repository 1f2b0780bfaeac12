"""A `prometheus` check: a rule on a metric, its bounds and its scale."""

from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..fields import Duration, HttpUrl, Share, _Model, show


class BasicAuthEnv(_Model):
    """Basic auth whose username and password come from the environment, never from the file."""

    username_env: str = Field(min_length=1)
    password_env: str = Field(min_length=1)


class PromScale(_Model):
    """A linear map from a metric value to a share of weight, clamped at both ends."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: tuple[float, float] = Field(alias="from")
    to: tuple[Share, Share]

    @model_validator(mode="after")
    def _span(self) -> "PromScale":
        if any(math.isnan(v) or math.isinf(v) for v in self.from_):
            raise ValueError("from: values must be finite numbers")
        if self.from_[0] == self.from_[1]:
            raise ValueError(f"from: {list(self.from_)} spans nothing (give two different values)")
        return self


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class PrometheusCheck(_Model):
    """A PromQL instant query per node; the value is judged by quarantine bounds and scaled to a share."""

    url: HttpUrl  # the server's base URL; the check calls <url>/api/v1/query
    query: str = Field(min_length=1)
    quarantine_above: float | None = None
    quarantine_below: float | None = None
    scale: PromScale | None = None
    interval: Duration = 60.0
    timeout: Duration | None = None
    name: str | None = Field(None, min_length=1, max_length=64)
    bearer_token_env: str | None = None
    basic_auth: BasicAuthEnv | None = None
    verify: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^https?://([^/?#]*)", v)
        if not m or not m.group(1):
            raise ValueError(f"{show(v)} must start with http:// or https:// and name a host")
        if "@" in m.group(1):
            # A password in the URL would end up in logs and reasons: it belongs in the environment.
            raise ValueError("must not carry credentials; use basic_auth or bearer_token_env")
        return v.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{show(str(v))} is not a file (the CA bundle to verify the Prometheus server with)")
        return v

    @field_validator("bearer_token_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(f"{show(v)} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "PrometheusCheck":
        for key in ("quarantine_above", "quarantine_below"):
            v = getattr(self, key)
            if v is not None and math.isnan(v):
                raise ValueError(f"{key}: must be a number")
        if (self.quarantine_above is not None and self.quarantine_below is not None
                and self.quarantine_below > self.quarantine_above):
            raise ValueError(
                f"quarantine_below ({self.quarantine_below:g}) is above quarantine_above "
                f"({self.quarantine_above:g}): no value would pass")
        if self.bearer_token_env and self.basic_auth:
            raise ValueError("give either bearer_token_env or basic_auth, not both")
        if self.basic_auth is not None:
            for key in ("username_env", "password_env"):
                if not _ENV_NAME.match(getattr(self.basic_auth, key)):
                    raise ValueError(f"basic_auth.{key}: {show(getattr(self.basic_auth, key))} "
                                     "is not an environment variable name")
        return self

    @property
    def label(self) -> str:
        """How reasons and metrics name this rule: `name`, else the query."""
        return self.name or self.query
