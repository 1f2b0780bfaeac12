"""Read a TLSA set through a validating resolver, with the AD bit that says it was DNSSEC-validated.

The alternative to reading it from the hosted zone through Route 53 (engine/dane.py). A
DANE sender uses TLSA records only when they validate (RFC 7672 section 2.2): an answer
without the AD bit is returned as not authenticated, and a SERVFAIL (a bogus signature, a
broken chain of trust) is an error, never an empty set.
"""

from __future__ import annotations

import asyncio

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from ..config import split_hostport

__all__ = ["TlsaError", "read_tlsa"]


class TlsaError(Exception):
    """The resolver could not give an answer (timeout, SERVFAIL, refused)."""


async def read_tlsa(name: str, resolvers: list[str], timeout: float) -> tuple[tuple[str, ...], bool]:
    """(the set's values as text, validated) from the first resolver that answers."""
    last = "no resolver"
    for entry in resolvers:
        host, port = split_hostport(entry, 53)
        query = dns.message.make_query(name, dns.rdatatype.TLSA, want_dnssec=True)
        query.flags |= dns.flags.AD  # RFC 6840 5.7: ask for the AD bit
        try:
            async with asyncio.timeout(timeout):
                response, _ = await dns.asyncquery.udp_with_fallback(query, host, timeout=timeout, port=port)
        except (TimeoutError, dns.exception.DNSException, OSError) as e:
            last = f"{entry}: {type(e).__name__} {e}".strip()
            continue
        rcode = response.rcode()
        validated = bool(response.flags & dns.flags.AD)
        if rcode == dns.rcode.NXDOMAIN:
            return (), validated
        if rcode != dns.rcode.NOERROR:
            last = f"{entry}: {dns.rcode.to_text(rcode)} (a bogus DNSSEC answer makes DANE senders defer)"
            continue
        values = tuple(rd.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.TLSA for rd in rrset)
        return values, validated
    raise TlsaError(f"TLSA {name}: {last}")
