"""MTA-STS (RFC 8461) as values: the TXT record, the policy, `mx:` matching. Pure: no I/O.

A sender in `enforce` mode delivers only to an MX host that matches one of the policy's
`mx:` patterns and presents a certificate PKIX-valid for that name; in `testing` mode it
delivers anyway and reports (TLS-RPT). This module says what a policy means; the fetch is
probes/mtasts.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

__all__ = ["MAX_POLICY_BYTES", "MAX_AGE_LIMIT", "Policy", "parse_txt", "parse_policy", "mx_matches"]

MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 gives no limit; a policy is a few lines, more is hostile
MAX_AGE_LIMIT = 31557600  # RFC 8461 3.2: at most one year
Mode = Literal["enforce", "testing", "none"]
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Policy:
    mode: Mode
    mx: tuple[str, ...]
    max_age: int  # seconds

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)


def parse_txt(records: Iterable[str]) -> str:
    """The policy id of the `_mta-sts` TXT records (each already joined from its strings); ValueError why not.

    RFC 8461 3.1: exactly one record that begins `v=STSv1`; others are ignored.
    """
    sts = [r for r in records if r.startswith("v=STSv1")]
    if not sts:
        raise ValueError("no TXT record beginning v=STSv1")
    if len(sts) > 1:
        raise ValueError(f"{len(sts)} TXT records begin v=STSv1 (senders treat that as no policy)")
    fields = {}
    for part in sts[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    policy_id = fields.get("id", "")
    if not _ID.match(policy_id):
        raise ValueError(f"TXT {sts[0][:60]!r}: id must be 1-32 letters and digits")
    return policy_id


def parse_policy(body: bytes) -> Policy:
    """The policy file (`version`, `mode`, `mx`, `max_age`, CRLF or LF); ValueError with the reason."""
    if len(body) > MAX_POLICY_BYTES:
        raise ValueError(f"policy larger than {MAX_POLICY_BYTES // 1024} KiB")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("policy is not UTF-8") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"policy line {n}: {line[:40]!r} is not 'key: value'")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(key, value)  # RFC 8461 3.2: the first of a repeated key counts
    if fields.get("version") != "STSv1":
        raise ValueError(f"policy version {fields.get('version')!r}, want STSv1")
    mode = fields.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"policy mode {mode!r}, want enforce, testing or none")
    raw_age = fields.get("max_age", "")
    if not raw_age.isdigit() or len(raw_age) > 10 or int(raw_age) > MAX_AGE_LIMIT:
        raise ValueError(f"policy max_age {raw_age[:20]!r}: want 0-{MAX_AGE_LIMIT} seconds")
    bad = [p for p in mx if not _pattern_ok(p)]
    if bad:
        raise ValueError(f"policy mx {bad[0][:60]!r} is not a host name or *.name")
    if mode != "none" and not mx:
        raise ValueError(f"policy mode {mode} without any mx")
    return Policy(mode, tuple(mx), int(raw_age))  # type: ignore[arg-type]


def _pattern_ok(pattern: str) -> bool:
    labels = pattern[2:].split(".") if pattern.startswith("*.") else pattern.split(".")
    return len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: exact, or `*.example.com` for exactly one label more (not example.com itself)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host
