"""MTA-STS: read a domain's policy (TXT `_mta-sts`, then HTTPS), and check a node's certificate as a sender does.

The policy is fetched as RFC 8461 section 3.3 says: `https://mta-sts.<domain>/.well-known/mta-sts.txt`,
the certificate verified for that name, no redirect followed, status 200, at most
MAX_POLICY_BYTES read, one deadline over the whole fetch. A node's certificate is checked
by an SMTP dialogue with STARTTLS that verifies the chain the node sends (no missing
intermediate is fetched for it: senders do not either) for the pool's record name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from ..config import MtaSts, SmtpCheck, split_hostport
from ..core.mta_sts import MAX_POLICY_BYTES, Policy, parse_policy, parse_txt
from .base import ProbeResult, Target, fmt_duration, tls_context, trim

__all__ = ["Fetched", "fetch_policy", "read_id", "check_node"]


@dataclass(frozen=True)
class Fetched:
    """A policy and its id, or the reason there is none (`unknown`: could not tell, keep what was known)."""

    policy: Policy | None = None
    policy_id: str = ""
    error: str = ""
    unknown: bool = False  # a timeout, a network error: not a statement about the policy


async def read_id(spec: MtaSts, timeout: float) -> Fetched:
    """The `_mta-sts.<domain>` TXT record's id."""
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    name = f"_mta-sts.{spec.domain}"
    resolver = dns.asyncresolver.Resolver(configure=not spec.nameservers)
    if spec.nameservers:
        servers = [split_hostport(ns, 53) for ns in spec.nameservers]
        resolver.nameservers = [h for h, _ in servers]
        resolver.port = servers[0][1]
    resolver.lifetime = timeout
    try:
        answer = await resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Fetched(error=f"no TXT record at {name}: the domain publishes no MTA-STS policy")
    except dns.exception.DNSException as e:
        return Fetched(error=f"TXT {name}: {trim(type(e).__name__ + ': ' + str(e), 100)}", unknown=True)
    texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
    try:
        return Fetched(policy_id=parse_txt(texts))
    except ValueError as e:
        return Fetched(error=f"TXT {name}: {e}")


async def fetch_policy(spec: MtaSts, timeout: float) -> Fetched:
    """The TXT id, then the policy over HTTPS with full validation; every failure a reason."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            got = await read_id(spec, timeout)
            if got.error:
                return got
            return await _https(spec, got.policy_id, deadline - loop.time())
    except TimeoutError:
        return Fetched(error=f"MTA-STS policy of {spec.domain}: no answer within {fmt_duration(timeout)}", unknown=True)


async def _https(spec: MtaSts, policy_id: str, timeout: float) -> Fetched:
    host = f"mta-sts.{spec.domain}"
    where = spec.policy_address or host
    url = f"https://{where}/.well-known/mta-sts.txt"
    shown = f"https://{host}/.well-known/mta-sts.txt"
    headers = {"User-Agent": "r53lb-mta-sts", "Accept-Encoding": "identity", "Host": host}
    extensions = {"sni_hostname": host}
    try:
        async with httpx.AsyncClient(verify=tls_context(True, str(spec.ca_file) if spec.ca_file else None),
                                     follow_redirects=False, timeout=httpx.Timeout(timeout), trust_env=False) as client:
            request = client.build_request("GET", url, headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    return Fetched(policy_id=policy_id, error=f"{shown}: status {response.status_code} "
                                   "(senders follow no redirect and take only 200)")
                ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if ctype != "text/plain":
                    return Fetched(policy_id=policy_id, error=f"{shown}: Content-Type {ctype or 'none'!r}, want text/plain")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        return Fetched(policy_id=policy_id,
                                       error=f"{shown}: policy larger than {MAX_POLICY_BYTES // 1024} KiB")
            finally:
                await response.aclose()
    except httpx.ConnectError as e:
        text = str(e)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            why = text.split("certificate verify failed:")[-1].strip(" ()") if "verify failed:" in text else text
            return Fetched(policy_id=policy_id, error=f"{shown}: certificate verify failed: {trim(why, 100)}")
        return Fetched(policy_id=policy_id, error=f"{shown}: {trim(text or type(e).__name__, 100)}", unknown=True)
    except httpx.HTTPError as e:
        return Fetched(policy_id=policy_id, error=f"{shown}: {trim(type(e).__name__ + ' ' + str(e), 100)}", unknown=True)
    try:
        return Fetched(policy=parse_policy(bytes(body)), policy_id=policy_id)
    except ValueError as e:
        return Fetched(policy_id=policy_id, error=f"{shown}: {e}")


async def check_node(target: Target, spec: MtaSts, record: str, timeout: float) -> ProbeResult:
    """STARTTLS on the node's SMTP port, the chain verified (PKIX, dates) for `record`, as an MTA-STS sender does."""
    from .smtp import probe

    check = SmtpCheck(port=spec.port, starttls=True, verify=True, server_name=record,
                      ca_file=spec.ca_file)
    return await probe(target, check, timeout)
