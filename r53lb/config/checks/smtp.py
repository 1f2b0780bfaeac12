"""An `smtp` check: the conversation, its envelope and its DANE option."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..fields import Duration, HeloName, _Model, show
from .dane import DaneOptions, _dane


def _mailbox(value: Any, null_ok: bool) -> str:
    """'postmaster@example.com' or '<postmaster@example.com>' -> 'postmaster@example.com'; '<>' kept."""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a mail address")
    v = value.strip()
    if v in ("<>", "") and null_ok:
        return "<>"
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    # No spaces, brackets or line breaks: the address goes into an SMTP command line as it is.
    if not re.fullmatch(r"[^\s<>@\"\\]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*", v) or not v.isascii():
        extra = ', or "<>" for the null sender' if null_ok else ""
        raise ValueError(f"{show(value)} is not a mail address (local@domain{extra})")
    return v


class SmtpEnvelope(_Model):
    """MAIL FROM and RCPT TO after EHLO, then RSET and QUIT: never DATA, nothing is delivered."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    sender: str = Field("<>", alias="from")
    to: str
    expect: list[int] = Field(default_factory=lambda: [250, 251], min_length=1)

    @field_validator("sender", mode="before")
    @classmethod
    def _sender(cls, v: Any) -> str:
        return _mailbox(v, null_ok=True)

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> str:
        return _mailbox(v, null_ok=False)

    @field_validator("expect")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        for code in v:
            if not 200 <= code <= 299:
                raise ValueError(f"{show(code)} is not a positive SMTP reply code (2xx)")
        return v


class SmtpCheck(_Model):
    port: int = Field(25, ge=1, le=65535)
    tls: bool = False  # implicit TLS (port 465)
    starttls: bool = False
    helo: HeloName | None = None
    verify: bool = True
    ca_file: Path | None = None
    server_name: str | None = None
    cert_min_days: int | None = Field(None, ge=0)
    envelope: SmtpEnvelope | None = None
    dane: Annotated[DaneOptions | None, BeforeValidator(_dane)] = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _tls_modes(self) -> "SmtpCheck":
        if self.tls and self.starttls:
            raise ValueError("tls (implicit TLS) and starttls cannot both be true")
        if self.dane is not None and not (self.tls or self.starttls):
            raise ValueError("dane needs a TLS session: set starttls: true (or tls: true)")
        return self
