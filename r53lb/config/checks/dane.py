"""An smtp check's `dane` option: which TLSA set the served chain must match."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..fields import Duration, _Model


class DaneOptions(_Model):
    """`dane: true` on an smtp check, or these options: RFC 7672 against the pool record's TLSA set."""

    refresh: Duration = 60.0  # how long the TLSA set read from Route 53 is used before it is read again
    on_mismatch: Literal["out", "warn"] = "out"  # warn: the node stays in, the mismatch is logged and shown
    # A validating resolver (host[:port]) to read the TLSA set through instead of Route 53; its
    # answers count only with the AD bit (DNSSEC-validated), as a DANE sender requires.
    resolver: list[str] = Field(default_factory=list)


def _dane(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value
