"""Find a zone's authoritative name servers and sample what they hand out (dnspython).

The judging is pure and lives in verify.py; this module only asks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import R53lbError
from .core.verify import NOT_ASKED, TIMEOUT, Answer, Tolerance, Verdict, compare

if TYPE_CHECKING:
    import dns.resolver

    from .config import Pool
    from .aws.route53 import Route53

__all__ = ["NameServer", "NameServerError", "parse_nameserver", "delegation", "sample", "verify_pool"]

CONCURRENCY = 16  # queries in flight per server: fast on loopback, polite to Route 53's servers
QUERY_TIMEOUT = 2.0
TRIES = 3  # a UDP answer can be lost; ask again before calling it a timeout
DEAD_AFTER = 3  # queries timed out with none answered: the server is not answering, stop asking it


class _Progress:
    """One server's sampling: a deadline over all its queries, and whether it answers at all."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.answered = 0
        self.timeouts = 0

    def left(self) -> float:
        import time

        return QUERY_TIMEOUT if self.deadline is None else min(QUERY_TIMEOUT, self.deadline - time.monotonic())

    def stop(self) -> str | None:
        """Why no more queries go to this server, or None."""
        if self.answered == 0 and self.timeouts >= DEAD_AFTER:
            return f"{NOT_ASKED}, server silent"
        if self.left() <= 0:
            return f"{NOT_ASKED}, --timeout passed"
        return None


class NameServerError(R53lbError):
    """A name server could not be named or found; the message is one line."""


@dataclass(frozen=True)
class NameServer:
    address: str
    port: int = 53
    name: str | None = None  # the delegation set's host name, when it came from there

    def __str__(self) -> str:
        where = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        if self.port == 53:
            where = self.address
        return f"{self.name} ({where})" if self.name else where


_BRACKETED = re.compile(r"^\[([0-9A-Fa-f:.]+)\](?::(\d+))?$")


def parse_nameserver(text: str, resolver: "dns.resolver.Resolver | None" = None) -> NameServer:
    """ADDR, ADDR:PORT, [IPv6]:PORT or a host name (resolved with dnspython) -> NameServer."""
    text = text.strip()
    m = _BRACKETED.match(text)
    host, port = (m.group(1), m.group(2)) if m else (text, None)
    if not m and text.count(":") == 1:
        host, port = text.split(":")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise NameServerError(f"name server {text!r}: port {port!r} is not 1-65535")
    try:
        return NameServer(str(ipaddress.ip_address(host)), int(port or 53))
    except ValueError:
        pass
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?", host or ""):
        raise NameServerError(f"name server {text!r} is neither an address nor a host name")
    return resolve_host(host, int(port or 53), resolver)


def resolve_host(name: str, port: int = 53, resolver: "dns.resolver.Resolver | None" = None) -> NameServer:
    """A name server's host name -> its IPv4 address (IPv6 when it has none), through the system's resolver."""
    import dns.exception
    import dns.resolver

    res = resolver or dns.resolver.Resolver()
    last = "no A or AAAA record"
    for rtype in ("A", "AAAA"):
        try:
            answer = res.resolve(name, rtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as e:
            last = " ".join(str(e).split()) or type(e).__name__
            continue
        return NameServer(answer[0].to_text(), port, name.rstrip("."))
    raise NameServerError(f"cannot resolve name server {name}: {last}")


def delegation(route53: "Route53", zone_id: str, resolver: "dns.resolver.Resolver | None" = None) -> list[NameServer]:
    """The zone's authoritative servers: its delegation set, each name resolved to an address."""
    names = route53.name_servers(zone_id)
    if not names:
        raise NameServerError(f"hosted zone {zone_id} has no delegation set (a private zone?); "
                              "give its servers with --nameserver ADDR[:PORT]")
    return [resolve_host(n, 53, resolver) for n in names]


def _values(response: Any, qname: Any, rdtype: int) -> Answer:
    import dns.rcode

    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        return Answer(error=dns.rcode.to_text(rcode))
    for rrset in response.answer:
        if rrset.name == qname and rrset.rdtype == rdtype:
            return Answer(values=frozenset(r.to_text() for r in rrset))
    for rrset in response.answer:
        if rrset.name == qname:  # a CNAME where an address was asked: served, but not a set of this type
            return Answer(values=frozenset(f"{r.to_text()} ({rrset.rdtype.name})" for r in rrset))
    return Answer(error="no data")


async def _ask(server: NameServer, qname: Any, rdtype: int, sem: asyncio.Semaphore, progress: _Progress) -> Answer:
    import dns.asyncquery
    import dns.exception
    import dns.flags
    import dns.message

    query = dns.message.make_query(qname, rdtype)
    query.flags &= ~dns.flags.RD  # ask the authoritative server itself, never for recursion
    async with sem:
        for _ in range(TRIES):
            why = progress.stop()
            if why:
                return Answer(error=why)
            try:
                response, _tcp = await dns.asyncquery.udp_with_fallback(
                    query, server.address, timeout=progress.left(), port=server.port)
            except dns.exception.Timeout:
                continue
            except (OSError, dns.exception.DNSException) as e:
                return Answer(error=type(e).__name__)
            progress.answered += 1
            return _values(response, qname, rdtype)
    progress.timeouts += 1
    return Answer(error=TIMEOUT)


async def sample(server: NameServer, record: str, rtype: str, n: int, deadline: float | None = None) -> list[Answer]:
    """Ask `server` for record/rtype n times (a few at a time); one Answer per query.

    Bounded: nothing is asked after `deadline` (time.monotonic()), and a server that answers
    none of its first queries is not asked the rest (a dead server costs one query timeout).
    """
    import dns.name
    import dns.rdatatype

    qname = dns.name.from_text(record)
    rdtype = dns.rdatatype.from_text(rtype)
    sem = asyncio.Semaphore(CONCURRENCY)
    progress = _Progress(deadline)
    return list(await asyncio.gather(*(_ask(server, qname, rdtype, sem, progress) for _ in range(n))))


def verify_pool(route53: "Route53", zone_id: str, pool: "Pool", servers: Sequence[NameServer], samples: int,
                tolerance: Tolerance, types: Iterable[str] | None = None,
                deadline: float | None = None) -> list[Verdict]:
    """Read the pool's weighted sets from Route 53, sample every server for every type, judge each."""
    types = list(types or pool.record_types())
    sets = route53.read(zone_id, [(pool.record, t) for t in types])

    async def all_servers() -> list[tuple[NameServer, str, list[Answer]]]:
        jobs = [(s, t) for s in servers for t in types]
        answers = await asyncio.gather(*(sample(s, pool.record, t, samples, deadline) for s, t in jobs))
        return [(s, t, a) for (s, t), a in zip(jobs, answers)]

    return [
        compare(str(s), pool.record, t, [r for r in sets.values() if r.name == pool.record], a, tolerance)
        for s, t, a in asyncio.run(all_servers())
    ]
