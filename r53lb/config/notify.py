"""Notifications: `notify.webhooks` and `notify.sns`."""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import Field, model_validator

from .checks.prometheus import _ENV_NAME
from .fields import Duration, Headers, HttpUrl, _Model, show


class WebhookConfig(_Model):
    """A JSON POST per alert. Its secret (a Slack URL, a token header) may come from the environment."""

    url: HttpUrl | None = None
    url_env: str | None = None  # the URL is read from this environment variable when an alert is sent
    headers: Headers = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)  # header name -> environment variable with its value
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _where(self) -> "WebhookConfig":
        if (self.url is None) == (self.url_env is None):
            raise ValueError("url: give url or url_env (an environment variable holding the URL), one of them")
        for name in [self.url_env or "", *self.headers_env.values()]:
            if name and not _ENV_NAME.match(name):
                raise ValueError(f"{show(name)} is not an environment variable name")
        for header in self.headers_env:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", header):
                raise ValueError(f"headers_env: {show(header)} is not a header name")
        return self

    def resolved(self, environ: Any = os.environ) -> tuple[str, dict[str, str]]:
        """(URL, headers) with the environment's values; KeyError names a variable that is not set."""
        url = self.url if self.url is not None else environ[self.url_env]
        extra = {}
        for header, name in self.headers_env.items():
            value = environ[name]
            if "\r" in value or "\n" in value:
                raise KeyError(name)
            extra[header] = value
        return url, {**self.headers, **extra}


class SnsConfig(_Model):
    topic_arn: str = Field(pattern=r"^arn:[a-z-]+:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


class NotifyConfig(_Model):
    webhooks: tuple[WebhookConfig, ...] = ()
    sns: SnsConfig | None = None
