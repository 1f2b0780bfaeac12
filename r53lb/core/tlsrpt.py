"""TLS-RPT (RFC 8460) reports as values: parse one, and judge each node from a window of them. Pure: no I/O.

Senders report daily how their TLS sessions to a domain's MX hosts went: per policy, the
successful and failed session counts, and failure details that carry the `receiving-ip`
and a `result-type` (`certificate-host-mismatch`, `tlsa-invalid`, `starttls-not-supported`,
...). Failures are attributed to nodes by `receiving-ip`. Successes are only reported per
policy, not per address: they are spread evenly over the pool's nodes, so a node's
failure share is its failures over its failures plus its part of the successes.

Reports are hostile input: `parse_report` reads a size-bounded JSON document and keeps at
most MAX_DETAILS failure details; anything that does not fit the RFC's shape is a
ValueError with the reason.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

__all__ = ["MAX_REPORT_BYTES", "MAX_DETAILS", "Report", "Failure", "NodeCounts", "parse_report", "tally"]

MAX_REPORT_BYTES = 4 * 1024 * 1024  # decompressed; a day's report for a busy domain is kilobytes
MAX_DETAILS = 10_000  # failure details kept from one report
MAX_COUNT = 10**12  # a session count beyond this is not a real one


@dataclass(frozen=True)
class Failure:
    receiving_ip: str
    result_type: str
    sessions: int


@dataclass(frozen=True)
class Report:
    report_id: str
    organization: str
    start: datetime
    end: datetime
    # (policy-domain, successful sessions, failed sessions) per policy
    policies: tuple[tuple[str, int, int], ...]
    failures: tuple[Failure, ...]


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{what}: {str(value)[:20]!r} is not a session count")
    return value


def _when(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError(f"{what} is not a date-time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an RFC 3339 date-time") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def parse_report(data: bytes) -> Report:
    """One report (JSON, already decompressed); ValueError with the reason when it is not RFC 8460's shape."""
    if len(data) > MAX_REPORT_BYTES:
        raise ValueError(f"report larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {str(e)[:80]}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a TLS-RPT report (the top level is not an object)")
    dr = doc.get("date-range")
    if not isinstance(dr, dict):
        raise ValueError("no date-range")
    start, end = _when(dr.get("start-datetime"), "start-datetime"), _when(dr.get("end-datetime"), "end-datetime")
    pols = doc.get("policies")
    if not isinstance(pols, list) or not pols:
        raise ValueError("no policies")
    policies, failures = [], []
    for i, p in enumerate(pols[:1000]):
        if not isinstance(p, dict) or not isinstance(p.get("summary"), dict):
            raise ValueError(f"policies[{i}]: no summary")
        pol = p.get("policy") if isinstance(p.get("policy"), dict) else {}
        summary = p["summary"]
        ok = _count(summary.get("total-successful-session-count", 0), f"policies[{i}].summary")
        bad = _count(summary.get("total-failure-session-count", 0), f"policies[{i}].summary")
        policies.append((str(pol.get("policy-domain", ""))[:253].lower().rstrip("."), ok, bad))
        details = p.get("failure-details") or []
        if not isinstance(details, list):
            raise ValueError(f"policies[{i}].failure-details is not a list")
        for d in details:
            if len(failures) >= MAX_DETAILS:
                break
            if not isinstance(d, dict):
                continue
            ip = d.get("receiving-ip")
            try:
                ip = str(ipaddress.ip_address(ip)) if isinstance(ip, str) else None
            except ValueError:
                ip = None
            if ip is None:
                continue  # a failure with no address (no MX found) belongs to no node
            failures.append(Failure(ip, str(d.get("result-type", "unknown"))[:64],
                                    _count(d.get("failed-session-count", 0), f"policies[{i}].failed-session-count")))
    return Report(str(doc.get("report-id", ""))[:200], str(doc.get("organization-name", ""))[:200], start, end,
                  tuple(policies), tuple(failures))


@dataclass(frozen=True)
class NodeCounts:
    """One node's sessions over the window, as the reports tell them."""

    failed: int = 0
    sessions: float = 0.0  # failed + its even part of the successes
    by_type: Mapping[str, int] = field(default_factory=dict)
    reports: int = 0

    @property
    def share(self) -> float:
        return self.failed / self.sessions if self.sessions else 0.0

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_type.items(), key=lambda kv: -kv[1])[:3])
        return (f"{self.failed} of {self.sessions:.0f} sessions failed ({self.share * 100:.0f}%)"
                + (f": {kinds}" if kinds else ""))


def tally(reports: Iterable[Report], nodes: Mapping[str, Iterable[str]], domain: str | None,
          since: datetime, until: datetime) -> dict[str, NodeCounts]:
    """Each node's counts from the reports whose date range ends within [since, until].

    `nodes`: node id -> its addresses. `domain`: only policies for this policy-domain count
    (None: every policy). A report seen twice (same report-id) counts once.
    """
    owner = {str(ipaddress.ip_address(a)): n for n, addrs in nodes.items() for a in addrs}
    failed: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = {n: Counter() for n in nodes}
    seen_in: Counter[str] = Counter()
    successes = 0
    ids: set[str] = set()
    for r in reports:
        if not since <= r.end <= until:
            continue
        if r.report_id:
            key = f"{r.organization}\0{r.report_id}"
            if key in ids:
                continue
            ids.add(key)
        if domain is not None and not any(d == domain for d, _, _ in r.policies):
            continue
        successes += sum(ok for d, ok, _ in r.policies if domain is None or d == domain)
        touched = set()
        for f in r.failures:
            n = owner.get(f.receiving_ip)
            if n is not None:
                failed[n] += f.sessions
                by_type[n][f.result_type] += f.sessions
                touched.add(n)
        for n in touched:
            seen_in[n] += 1
    each = successes / len(nodes) if nodes else 0.0
    return {n: NodeCounts(failed[n], failed[n] + each, dict(by_type[n]), seen_in[n]) for n in nodes}
