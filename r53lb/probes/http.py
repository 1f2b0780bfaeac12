"""http: one request to the node's address, under one deadline, reading a bounded body.

`{address}` in the URL becomes the probe address (IPv6 in brackets); `host` becomes the
Host header and the TLS server name (SNI and the name the certificate must carry) while
the connection still goes to the probe address. The body is read only when
`expect_body` is set, and then at most MAX_READ_BYTES of it: a 10 MB body costs nothing.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import time
from typing import Any

import httpx

from ..config import HttpCheck, status_range
from .base import MAX_READ_BYTES, PhaseClock, ProbeResult, Target, fmt_duration, tls_context, trim

__all__ = ["probe", "build_url"]

MAX_REDIRECTS = 5

# httpcore trace events -> our phase names (the phase that starts when the event fires).
_PHASES = {
    "connection.connect_tcp.started": "connect",
    "connection.start_tls.started": "tls",
    "http11.send_request_headers.started": "request",
    "http11.receive_response_headers.started": "headers",
    "http11.receive_response_body.started": "body",
}


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode())


def build_url(url: str, address: str) -> str:
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return url.replace("{address}", address)


def _expected(spec: HttpCheck) -> str:
    out = []
    for item in spec.expect_status:
        lo, hi = status_range(item)
        out.append(str(lo) if lo == hi else f"{lo}-{hi}")
    return ", ".join(out)


def _error(e: BaseException) -> str:
    """The root cause of an httpx error as a short phrase."""
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {trim(seen.verify_message or str(seen), 120)}"
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed: {trim(seen.reason or str(seen), 120)}"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, ConnectionResetError):
            return "connection reset"
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno).lower()
        seen = seen.__cause__ or seen.__context__
    return trim(str(e) or type(e).__name__, 120)


class _Clock(PhaseClock):
    async def trace(self, event: str, info: dict[str, Any]) -> None:
        phase = _PHASES.get(event)
        if phase is not None:
            self.enter(phase)


async def probe(target: Target, spec: HttpCheck, timeout: float) -> ProbeResult:
    clock = _Clock()
    url = build_url(spec.url, target.address)
    headers = {"User-Agent": "r53lb-probe", "Accept-Encoding": "identity"}
    headers.update(spec.headers)
    extensions: dict[str, Any] = {"trace": clock.trace}
    if spec.host:
        headers["Host"] = spec.host
        extensions["sni_hostname"] = spec.host
    status: str = "fail"
    code: int | None = None
    text: str | None = None
    detail = ""
    try:
        async with asyncio.timeout(timeout):
            async with httpx.AsyncClient(
                verify=tls_context(spec.verify, str(spec.ca_file) if spec.ca_file else None),
                follow_redirects=spec.follow_redirects,
                max_redirects=MAX_REDIRECTS,
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_keepalive_connections=0),
                trust_env=False,  # a probe goes straight to the node, never through a proxy
            ) as client:
                request = client.build_request(spec.method, url, headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                try:
                    code, text = response.status_code, response.reason_phrase
                    if not spec.status_ok(code):
                        where = response.headers.get("location")
                        detail = f"status {code} (expected {_expected(spec)})" + (
                            f" -> {trim(where, 100)}" if where else ""
                        )
                    elif spec.expect_body is None:
                        status = "ok"
                    else:
                        clock.enter("body")
                        body = bytearray()
                        async for chunk in response.aiter_raw():
                            body += chunk[: MAX_READ_BYTES - len(body)]
                            if len(body) >= MAX_READ_BYTES:
                                break
                        if _regex(spec.expect_body).search(body):
                            status = "ok"
                        else:
                            cut = " in the first 64 KiB" if len(body) >= MAX_READ_BYTES else ""
                            detail = f"status {code}, body does not match /{trim(spec.expect_body, 60)}/{cut}"
                finally:
                    await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        within = fmt_duration(timeout)
        detail = {
            "connect": f"connect: no answer within {within}",
            "tls": f"tls: no handshake within {within}",
            "request": f"request: not sent within {within}",
            "headers": f"no response within {within}",
            "body": f"body: not complete within {within}",
        }.get(clock.phase, f"no answer within {within}")
    except httpx.TooManyRedirects:
        detail = f"more than {MAX_REDIRECTS} redirects"
    except httpx.HTTPError as e:
        detail = f"{clock.phase}: {_error(e)}"
    except (OSError, ValueError) as e:
        detail = f"{clock.phase}: {_error(e)}"
    clock.stop()
    ms = (time.perf_counter() - clock.started) * 1000
    if status == "ok":
        detail = f"http {code} in {ms:.0f} ms"
    return ProbeResult(
        pool=target.pool,
        node=target.node,
        check="http",
        status=status,  # type: ignore[arg-type]
        latency_ms=ms,
        detail=detail,
        phase=clock.phase,
        code=code,
        text=trim(text, 160) if text else None,
        phases=clock.phases,
    )
