"""An `http` check."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from ..fields import Duration, Headers, HttpUrl, _Model, show


StatusSpec = int | str


class HttpCheck(_Model):
    url: HttpUrl
    method: str = Field("GET", pattern=r"^[A-Z]{1,16}$")
    host: str | None = None
    headers: Headers = Field(default_factory=dict)
    expect_status: list[StatusSpec] = Field(default_factory=lambda: ["200-399"])
    expect_body: str | None = None
    verify: bool = True
    ca_file: Path | None = None
    follow_redirects: bool = False
    # Redirects are followed only while they stay on the node (the probe URL's scheme, host
    # and port) or go to one of these URL prefixes; anywhere else the probe would judge
    # another server, so that is a failure naming where it was sent.
    allow_redirects_to: list[str] = Field(default_factory=list)
    timeout: Duration | None = None

    @field_validator("allow_redirects_to")
    @classmethod
    def _redirect_targets(cls, v: list[str]) -> list[str]:
        for item in v:
            if not re.match(r"^https?://[^/?#\s]+", item):
                raise ValueError(f"{show(item)} must be a URL prefix starting with http:// or https://")
        return v

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, v: list[StatusSpec]) -> list[StatusSpec]:
        for item in v:
            status_range(item)
        return v

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"{show(v)} is not a regular expression: {e}") from None
        return v

    def status_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in map(status_range, self.expect_status))


def status_range(item: StatusSpec) -> tuple[int, int]:
    """200 -> (200, 200); '200-399' -> (200, 399); '2xx' -> (200, 299)."""
    if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
        return item, item
    if isinstance(item, str):
        s = item.strip().lower()
        if re.fullmatch(r"[1-5]xx", s):
            base = int(s[0]) * 100
            return base, base + 99
        m = re.fullmatch(r"(\d{3})\s*-\s*(\d{3})", s)
        if m and 100 <= int(m.group(1)) <= int(m.group(2)) <= 599:
            return int(m.group(1)), int(m.group(2))
        if re.fullmatch(r"\d{3}", s) and 100 <= int(s) <= 599:
            return int(s), int(s)
    raise ValueError(f"{show(item)} is not a status, a range (200-299) or a class (2xx)")
