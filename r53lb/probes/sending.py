"""A sending IP's credentials, as receivers check them: FCrDNS and SPF.

- FCrDNS: the address's PTR names, and one of them resolves back to the address.
- SPF (RFC 7208): the sender domain's policy authorises the address. Evaluated by pyspf,
  the reference implementation that Postfix's policy server (spf-engine) runs, with the
  RFC's limits (10 DNS-querying terms, 2 void lookups; more is a permerror, as receivers
  treat it). pyspf asks DNS through one module-level function: here it goes to the
  resolver of the check at hand (a context variable, carried into the worker thread).

A DNS error or timeout is *unknown* (the verdict known before stays); only an answer
(NXDOMAIN, a record that does not fit) fails a gate.
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any, Literal

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename

from ..config import SendingGates, split_hostport
from .base import fmt_duration, trim

__all__ = ["GateResult", "fcrdns", "spf_check", "MAX_PTR_NAMES"]

MAX_PTR_NAMES = 10  # PTR names followed back (receivers look at a few; a hostile zone may list hundreds)
Status = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True)
class GateResult:
    status: Status
    detail: str


def _resolver(spec: SendingGates, timeout: float, sync: bool = False) -> Any:
    r = (dns.resolver.Resolver if sync else dns.asyncresolver.Resolver)(configure=not spec.nameservers)
    if spec.nameservers:
        servers = [split_hostport(ns, 53) for ns in spec.nameservers]
        r.nameservers = [h for h, _ in servers]
        r.port = servers[0][1]
    r.lifetime = timeout
    return r


async def fcrdns(address: str, spec: SendingGates, timeout: float) -> GateResult:
    """Forward-confirmed reverse DNS of one address."""
    res = _resolver(spec, timeout)
    rev = dns.reversename.from_address(address)
    try:
        async with asyncio.timeout(timeout):
            try:
                ptr = await res.resolve(rev, "PTR")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                return GateResult("fail", f"no PTR record for {address} ({rev.to_text(True)})")
            names = [r.target.to_text(True) for r in ptr][:MAX_PTR_NAMES]
            rtype = "AAAA" if ":" in address else "A"
            back: list[str] = []
            for name in names:
                try:
                    ans = await res.resolve(name, rtype)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    continue
                back += [r.address for r in ans]
                if _same(address, back):
                    return GateResult("ok", f"FCrDNS {address} -> {name} -> {address}")
    except TimeoutError:
        return GateResult("unknown", f"FCrDNS of {address}: no answer within {fmt_duration(timeout)}")
    except dns.exception.DNSException as e:
        return GateResult("unknown", f"FCrDNS of {address}: {trim(type(e).__name__ + ': ' + str(e), 100)}")
    shown = ", ".join(names[:3])
    return GateResult("fail", f"PTR of {address} is {shown}, whose {rtype} record does not lead back to {address}"
                      + (f" ({', '.join(back[:3])})" if back else " (none)"))


def _same(address: str, others: list[str]) -> bool:
    import ipaddress

    want = ipaddress.ip_address(address)
    return any(ipaddress.ip_address(o) == want for o in others)


# --- SPF -----------------------------------------------------------------------------------------

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("r53lb_spf_resolver")


def _lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list[Any]:
    """pyspf's DNSLookup, through the resolver of the check at hand (RFC 7208's answers, pyspf's shapes)."""
    import spf

    res = _current.get()
    out: list[Any] = []
    try:
        answers = res.resolve(name, qtype, lifetime=min(timeout, res.lifetime))
    except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
        return out
    except dns.exception.DNSException as e:
        raise spf.TempError(f"DNS {type(e).__name__}: {e}") from None
    for rdata in answers:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            out.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            out.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), rdata.strings))
    return out


def _spf_sync(address: str, domain: str, spec: SendingGates, timeout: float) -> tuple[str, str]:
    import spf

    spf.DNSLookup = _lookup  # pyspf's one hook for DNS; ours picks the resolver from the context
    token = _current.set(_resolver(spec, timeout, sync=True))
    try:
        q = spf.query(i=address, s=f"postmaster@{domain}", h=domain, timeout=timeout, querytime=timeout)
        result, _, explanation = q.check()
        return result, explanation
    finally:
        _current.reset(token)


async def spf_check(address: str, spec: SendingGates, timeout: float) -> GateResult:
    """Does the SPF policy of `spec.spf` authorise `address`? pass: ok; temperror: unknown; else fail."""
    domain = spec.spf
    assert domain is not None
    try:
        async with asyncio.timeout(timeout + 1):
            result, why = await asyncio.to_thread(_spf_sync, address, domain, spec, timeout)
    except TimeoutError:
        return GateResult("unknown", f"SPF of {domain}: no answer within {fmt_duration(timeout)}")
    why = trim(str(why), 120)
    if result == "pass":
        return GateResult("ok", f"SPF of {domain} authorises {address}")
    if result == "temperror":
        return GateResult("unknown", f"SPF of {domain}: temperror: {why}")
    if result == "none":
        return GateResult("fail", f"no SPF record at {domain} (TXT v=spf1)")
    if result == "permerror":
        return GateResult("fail", f"SPF of {domain} is broken (permerror: {why})")
    return GateResult("fail", f"SPF of {domain} does not authorise {address} ({result})")
