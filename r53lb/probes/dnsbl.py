"""dnsbl: is the node's sending IP on a DNS blocklist? RFC 5782 lookups, each zone self-tested first.

Only an answer in 127.0.0.0/24 other than 127.0.0.1 means *listed*; NXDOMAIN means
*clean*; everything else (a timeout, SERVFAIL, REFUSED, a list's own error answer in
127.255.255.0/24) is *unknown*, which never changes a weight. A zone that fails the
self-test (127.0.0.2 listed, 127.0.0.1 not) is not trusted: reported, logged, ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver

from ..config import DnsblCheck, is_ip, split_hostport
from .base import Failure, ProbeResult, Status, Target, fmt_duration, trim

__all__ = [
    "probe",
    "reverse_name",
    "classify",
    "quarantined",
    "DnsblCache",
    "clear_selftest_cache",
]

log = logging.getLogger("r53lb.dnsbl")

Verdict = Literal["listed", "clean", "unknown"]
Server = tuple[str, int]

_LISTED = ipaddress.ip_network("127.0.0.0/24")
_ERRORS = ipaddress.ip_network("127.255.255.0/24")
_NOT_A_LISTING = ipaddress.ip_address("127.0.0.1")
# Spamhaus's error answers (https://www.spamhaus.org/faqs/domain-blocklist/ "return codes").
_ERROR_MEANING = {
    "127.255.255.252": "typing error in the zone name",
    "127.255.255.254": "public resolver refused",
    "127.255.255.255": "too many queries",
}
# How long one server gets before the query goes to the next one (or again), as resolvers do.
PER_TRY = 2.0


# --- pure helpers ---------------------------------------------------------------------------


def reverse_name(ip: str, zone: str) -> str:
    """The RFC 5782 query name: '192.0.2.1' -> '1.2.0.192.zone'; IPv6 as 32 reversed nibbles."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # an IPv4 sender seen through a dual-stack socket
    if addr.version == 4:
        labels = str(addr).split(".")
    else:
        labels = list(addr.exploded.replace(":", ""))
    return ".".join(reversed(labels)) + "." + _zone_text(zone)


def classify(answer_addresses: Iterable[str]) -> Verdict:
    """A zone's A answer -> listed | clean | unknown (no addresses, as for NXDOMAIN, is clean)."""
    try:
        addrs = [ipaddress.ip_address(a) for a in answer_addresses]
    except ValueError:
        return "unknown"
    if not addrs:
        return "clean"
    if any(a in _ERRORS for a in addrs):
        return "unknown"  # the list refuses to answer; it says nothing about the IP
    if any(a in _LISTED and a != _NOT_A_LISTING for a in addrs):
        return "listed"
    return "unknown"  # 127.0.0.1, or an address outside 127/8 (an expired list, a hijacking resolver)


def quarantined(listed_on: Sequence[str], listed_on_n: int = 1) -> bool:
    """The pool's `quarantine` rule: listed on at least `listed_on_n` distinct zones (listed_on_any is 1)."""
    return len({_zone_text(z) for z in listed_on}) >= max(1, listed_on_n)


def _zone_text(zone: str) -> str:
    return zone.strip().rstrip(".").lower()


def _why_unknown(addresses: Sequence[str]) -> str:
    """Why an answer that classify() calls unknown says nothing about the IP."""
    for a in addresses:
        try:
            if ipaddress.ip_address(a) in _ERRORS:
                return f"error answer {a} ({_ERROR_MEANING.get(a, 'list error')})"
        except ValueError:
            return f"unparsable answer {a!r}"
    if all(a == str(_NOT_A_LISTING) for a in addresses):
        return "answer 127.0.0.1, which RFC 5782 reserves (not a listing)"
    return f"unexpected answer {', '.join(addresses)} (outside 127.0.0.0/24)"


class DnsblCache:
    """The last dnsbl result per (pool, node, check index), for the daemon's fast probe loop.

    Pure: the caller passes `now` (any clock, seconds). A result older than the check's
    `interval` is gone.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, int], tuple[ProbeResult, float]] = {}

    def get(self, key: tuple[str, str, int], now: float, interval: float) -> ProbeResult | None:
        item = self._items.get(key)
        if item is None or now - item[1] >= interval or now < item[1]:
            return None
        return item[0]

    def put(self, key: tuple[str, str, int], result: ProbeResult, now: float) -> None:
        self._items[key] = (result, now)

    def __len__(self) -> int:
        return len(self._items)


# --- DNS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    addresses: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    error: str | None = None  # no usable answer: "timeout after 1s", "SERVFAIL", ...


def _servers(spec: DnsblCheck) -> tuple[Server, ...]:
    if spec.nameservers:
        return tuple(split_hostport(ns, 53) for ns in spec.nameservers)
    return _system_servers()


def _system_servers() -> tuple[Server, ...]:
    """The resolvers of /etc/resolv.conf (read on each check, so a change is picked up)."""
    try:
        resolver = dns.resolver.Resolver()
    except dns.exception.DNSException:
        return ()
    out: list[Server] = []
    for ns in resolver.nameservers:
        if isinstance(ns, str):
            out.append((ns, resolver.port))
        elif isinstance(ns, dns.nameserver.Do53Nameserver):
            out.append((ns.address, ns.port))
    return tuple(out)


def _server_text(server: Server) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _query(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                 servers: tuple[Server, ...], deadline: float) -> _Answer:
    """Ask the servers in turn until one gives NOERROR or NXDOMAIN, or the deadline passes."""
    loop = asyncio.get_running_loop()
    if not servers:
        return _Answer(error="no nameserver (none given and the system resolver has none)")
    budget = max(0.0, deadline - loop.time())
    errors: dict[Server, str] = {}
    while True:
        for server in servers:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return _Answer(error=_summary(errors, servers, budget))
            wait = min(remaining, PER_TRY)
            query = dns.message.make_query(qname, rdtype)
            try:
                async with asyncio.timeout(wait):
                    response, _ = await dns.asyncquery.udp_with_fallback(
                        query, server[0], timeout=wait, port=server[1])
            except (TimeoutError, dns.exception.Timeout):
                errors[server] = "timeout"
                continue
            except (dns.exception.DNSException, OSError, ValueError) as e:
                errors[server] = trim(f"{type(e).__name__}: {e}", 80)
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return _Answer()
            if rcode != dns.rcode.NOERROR:
                errors[server] = dns.rcode.to_text(rcode)
                continue
            addresses: list[str] = []
            texts: list[str] = []
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.A:
                    addresses.extend(r.address for r in rrset)
                elif rrset.rdtype == dns.rdatatype.TXT:
                    texts.extend(b"".join(r.strings).decode("utf-8", "replace") for r in rrset)
            return _Answer(tuple(addresses), tuple(texts))
        if "timeout" not in errors.values():
            # Every server answered, each with an error: asking again within one check won't help.
            return _Answer(error=_summary(errors, servers, budget))


def _summary(errors: dict[Server, str], servers: tuple[Server, ...], budget: float) -> str:
    def text(e: str) -> str:
        return f"timeout after {fmt_duration(budget)}" if e == "timeout" else e

    kinds = set(errors.values())
    if len(kinds) <= 1:
        return text(kinds.pop() if kinds else "timeout")
    return ", ".join(f"{_server_text(s)} {text(errors[s])}" for s in servers if s in errors)


# --- the RFC 5782 self-test, cached per (zone, nameservers) for the check's interval ---------


@dataclass(frozen=True)
class _SelfTest:
    trusted: bool | None  # None: inconclusive (no answer, an error answer); ask again next time
    reason: str = ""


_selftests: dict[tuple[str, tuple[Server, ...]], tuple[_SelfTest, float]] = {}
_inflight: dict[tuple[str, tuple[Server, ...]], asyncio.Task[_SelfTest]] = {}


def clear_selftest_cache() -> None:
    """Forget every self-test result (tests; a config reload)."""
    _selftests.clear()
    _inflight.clear()


async def _selftest(zone: str, servers: tuple[Server, ...], deadline: float,
                    interval: float) -> _SelfTest:
    key = (zone, servers)
    cached = _selftests.get(key)
    if cached is not None and 0 <= time.monotonic() - cached[1] < interval:
        return cached[0]
    # Many nodes check the same zones at once: one self-test serves them all.
    loop = asyncio.get_running_loop()
    task = _inflight.get(key)
    if task is None or task.done() or task.get_loop() is not loop:
        task = loop.create_task(_run_selftest(zone, servers, deadline, interval))
        _inflight[key] = task
        task.add_done_callback(lambda t: _inflight.pop(key, None) if _inflight.get(key) is t else None)
    try:
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(task)
    except TimeoutError:
        return _SelfTest(None, "self-test: no answer in time")


async def _run_selftest(zone: str, servers: tuple[Server, ...], deadline: float,
                        interval: float) -> _SelfTest:
    positive, negative = await asyncio.gather(
        _query(dns.name.from_text(reverse_name("127.0.0.2", zone)), dns.rdatatype.A, servers, deadline),
        _query(dns.name.from_text(reverse_name("127.0.0.1", zone)), dns.rdatatype.A, servers, deadline),
    )
    result = _judge_selftest(positive, negative)
    if result.trusted is not None:
        _selftests[(zone, servers)] = (result, time.monotonic())
        if not result.trusted:
            log.warning("dnsbl zone %s failed the RFC 5782 self-test (%s): ignored for %s",
                        zone, result.reason, fmt_duration(interval))
    return result


def _is_error_answer(addresses: Sequence[str]) -> bool:
    return any(is_ip(a) and ipaddress.ip_address(a) in _ERRORS for a in addresses)


def _judge_selftest(positive: _Answer, negative: _Answer) -> _SelfTest:
    # Wrong data is a verdict (the zone is broken, expired, or wildcarded); no data is not.
    if negative.error is None and negative.addresses and not _is_error_answer(negative.addresses):
        return _SelfTest(False, f"127.0.0.1 is listed ({', '.join(negative.addresses)})")
    if positive.error is None and not positive.addresses:
        return _SelfTest(False, "127.0.0.2 is not listed")
    if positive.error is None and classify(positive.addresses) == "unknown" \
            and not _is_error_answer(positive.addresses):
        return _SelfTest(False, f"127.0.0.2 answers {', '.join(positive.addresses)}")
    for answer in (positive, negative):
        if answer.error is not None:
            return _SelfTest(None, f"self-test: {answer.error}")
        if _is_error_answer(answer.addresses):
            return _SelfTest(None, f"self-test: {_why_unknown(answer.addresses)}")
    return _SelfTest(True)


# --- the check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _IpVerdict:
    ip: str
    verdict: Verdict
    codes: tuple[str, ...] = ()
    reason: str = ""  # listed: the list's TXT; unknown: why


@dataclass(frozen=True)
class _ZoneVerdict:
    zone: str
    verdict: Literal["listed", "clean", "unknown", "ignored"]
    parts: tuple[str, ...]  # detail fragments


async def _lookup(ip: str, zone: str, servers: tuple[Server, ...], deadline: float) -> _IpVerdict:
    qname = dns.name.from_text(reverse_name(ip, zone))
    answer = await _query(qname, dns.rdatatype.A, servers, deadline)
    if answer.error is not None:
        return _IpVerdict(ip, "unknown", reason=answer.error)
    verdict = classify(answer.addresses)
    if verdict == "unknown":
        return _IpVerdict(ip, "unknown", reason=_why_unknown(answer.addresses))
    if verdict == "clean":
        return _IpVerdict(ip, "clean")
    codes = tuple(sorted(answer.addresses, key=ipaddress.ip_address))
    # The reason is a bonus: a list that answers A but not TXT must not cost the whole deadline.
    txt_deadline = min(deadline, asyncio.get_running_loop().time() + PER_TRY / 4)
    txt = await _query(qname, dns.rdatatype.TXT, servers, txt_deadline)
    return _IpVerdict(ip, "listed", codes, trim(" / ".join(txt.texts)) if txt.error is None else "")


async def _zone_verdict(zone: str, ips: Sequence[str], servers: tuple[Server, ...],
                        deadline: float, interval: float) -> _ZoneVerdict:
    try:
        dns.name.from_text(reverse_name("127.0.0.2", zone))
    except dns.exception.DNSException as e:
        return _ZoneVerdict(zone, "unknown", (f"{zone}: not a usable zone name ({e})",))
    selftest, *lookups = await asyncio.gather(
        _selftest(zone, servers, deadline, interval),
        *(_lookup(ip, zone, servers, deadline) for ip in ips),
    )
    if selftest.trusted is False:
        return _ZoneVerdict(zone, "ignored",
                            (f"{zone}: failed the RFC 5782 self-test ({selftest.reason}), ignored",))
    many = len(ips) > 1

    def who(v: _IpVerdict) -> str:
        return f" for {v.ip}" if many else ""

    listed = [v for v in lookups if v.verdict == "listed"]
    unknown = [v for v in lookups if v.verdict == "unknown"]
    if selftest.trusted is None:
        # Not trusted yet: whatever the lookup said, it counts for nothing this time.
        parts = [f"{zone}{who(v)}: {v.reason}" for v in unknown] or [f"{zone}: {selftest.reason}"]
        return _ZoneVerdict(zone, "unknown", tuple(parts))
    if listed:
        return _ZoneVerdict(zone, "listed", tuple(
            f"listed on {zone} ({', '.join(v.codes)}){who(v)}" + (f": {v.reason}" if v.reason else "")
            for v in listed))
    if unknown:
        return _ZoneVerdict(zone, "unknown", tuple(f"{zone}{who(v)}: {v.reason}" for v in unknown))
    return _ZoneVerdict(zone, "clean", ())


def _sending_ips(target: Target, spec: DnsblCheck) -> list[str]:
    candidates = [spec.ip] if spec.ip else (list(target.addresses) or [target.address])
    out: list[str] = []
    for c in candidates:
        if c and is_ip(c):
            ip = str(ipaddress.ip_address(c))
            if ip not in out:
                out.append(ip)
    return out


async def probe(target: Target, spec: DnsblCheck, timeout: float) -> ProbeResult:
    started = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + timeout

    def result(status: Status, detail: str, listed_on: tuple[str, ...] = ()) -> ProbeResult:
        ms = (time.perf_counter() - started) * 1000
        return ProbeResult(target.pool, target.node, "dnsbl", status, ms, detail, "lookup",
                           phases={"lookup": ms}, listed_on=listed_on,
                           failure=Failure.LISTED if status == "fail" else None)

    ips = _sending_ips(target, spec)
    if not ips:
        return result("unknown", f"no IP address to look up for {target.address} (set the check's `ip`)")
    zones = list(dict.fromkeys(_zone_text(z) for z in spec.zones))
    servers = _servers(spec)
    verdicts: list[_ZoneVerdict] = list(await asyncio.gather(
        *(_zone_verdict(z, ips, servers, deadline, spec.interval) for z in zones)))

    listed = [v for v in verdicts if v.verdict == "listed"]
    if listed:  # listed on a trusted zone: a failure, whatever the other zones said
        return result("fail", "; ".join(p for v in listed for p in v.parts),
                      tuple(v.zone for v in listed))
    clean = [v for v in verdicts if v.verdict == "clean"]
    unknown = [v for v in verdicts if v.verdict == "unknown"]
    ignored = [v for v in verdicts if v.verdict == "ignored"]
    notes = [p for v in unknown + ignored for p in v.parts]
    if unknown or not clean:
        return result("unknown", "; ".join(notes))
    n = len(clean)
    return result("ok", "; ".join([f"not listed on {n} zone{'s' if n > 1 else ''}"] + notes))
