"""http: one request to the node's address, under one deadline, reading a bounded body.

`{address}` in the URL becomes the probe address (IPv6 in brackets); `host` becomes the
Host header and the TLS server name (SNI and the name the certificate must carry) while
the connection still goes to the probe address. The body is matched only when
`expect_body` is set, and at most MAX_READ_BYTES of it is ever read: a 10 MB body costs nothing.

Redirects (`follow_redirects`) are followed only while they stay on the node: the probe
URL's scheme and port, and its host or the configured `host` name (which is then sent to
the probe address again, as nginx's absolute `Location: https://$host/...` would have it
go to whichever node DNS returns). A URL starting with an `allow_redirects_to` prefix is
followed too; anywhere else is a failure naming the URL, since the probe would be judging
another server.

Manners: a body that fits in MAX_READ_BYTES is read to its end before the connection is
closed (the client closes first on HTTP/1.1), so no unread data makes the kernel answer
the close with a TCP reset.
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
from .base import MAX_READ_BYTES, Failure, PhaseClock, ProbeResult, Target, failure_of, fmt_duration, tls_context, trim

__all__ = ["probe", "build_url"]

MAX_REDIRECTS = 5
CLOSE_GRACE = 0.2  # the most spent reading an unneeded body to its end, within the deadline
_DEFAULT_PORTS = {"http": 80, "https": 443}

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


def _port(url: httpx.URL) -> int:
    return url.port or _DEFAULT_PORTS.get(url.scheme, 0)


def _next_hop(spec: HttpCheck, probe_url: httpx.URL, location: httpx.URL) -> tuple[httpx.URL, bool] | None:
    """Where a redirect may be followed: (URL to request, still on the node), or None: off the node."""
    same_door = location.scheme == probe_url.scheme and _port(location) == _port(probe_url)
    if same_door and location.host == probe_url.host:
        return location, True
    if same_door and spec.host and location.host == spec.host.lower().rstrip("."):
        return location.copy_with(host=probe_url.host), True
    text = str(location)
    if any(text.startswith(prefix) for prefix in spec.allow_redirects_to):
        return location, False
    return None


async def _drain(response: httpx.Response, limit: float) -> None:
    """Read what is left of a body (bounded in bytes and time) so the close finds nothing unread."""
    if limit <= 0:
        return
    got = 0
    try:
        async with asyncio.timeout(limit):
            async for chunk in response.aiter_raw():
                got += len(chunk)
                if got >= MAX_READ_BYTES:
                    return
    except (TimeoutError, httpx.HTTPError, httpx.StreamError, OSError):
        pass


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
    failure: Failure | None = None
    code: int | None = None
    text: str | None = None
    detail = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            async with httpx.AsyncClient(
                verify=tls_context(spec.verify, str(spec.ca_file) if spec.ca_file else None),
                follow_redirects=False,  # followed below, only while they stay on the node
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_keepalive_connections=0),
                trust_env=False,  # a probe goes straight to the node, never through a proxy
            ) as client:
                probe_url = httpx.URL(url)
                request = client.build_request(spec.method, url, headers=headers, extensions=extensions)
                response = await client.send(request, stream=True)
                hops = 0
                while spec.follow_redirects and response.is_redirect:
                    location = response.url.join(response.headers["location"])
                    hop = _next_hop(spec, probe_url, location)
                    if hop is None or hops == MAX_REDIRECTS:
                        break
                    hops += 1
                    await _drain(response, min(deadline - loop.time() - 0.05, CLOSE_GRACE))
                    await response.aclose()
                    target_url, on_node = hop
                    method = "GET" if response.status_code == 303 and spec.method != "HEAD" else spec.method
                    request = client.build_request(
                        method, target_url, headers=headers if on_node else {**headers, "Host": target_url.netloc.decode()},
                        extensions=extensions if on_node else {"trace": clock.trace},
                    )
                    response = await client.send(request, stream=True)
                try:
                    code, text = response.status_code, response.reason_phrase
                    if spec.follow_redirects and response.is_redirect:
                        location = response.url.join(response.headers["location"])
                        failure = Failure.REDIRECT
                        if hops == MAX_REDIRECTS and _next_hop(spec, probe_url, location) is not None:
                            detail = f"more than {MAX_REDIRECTS} redirects"
                        else:
                            detail = f"status {code} redirects off the node to {trim(str(location), 100)}"
                    elif not spec.status_ok(code):
                        failure = Failure.STATUS
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
                            failure = Failure.BODY
                            cut = " in the first 64 KiB" if len(body) >= MAX_READ_BYTES else ""
                            detail = f"status {code}, body does not match /{trim(spec.expect_body, 60)}/{cut}"
                finally:
                    await _drain(response, min(deadline - loop.time() - 0.05, CLOSE_GRACE))
                    await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        failure = Failure.TIMEOUT
        within = fmt_duration(timeout)
        detail = {
            "connect": f"connect: no answer within {within}",
            "tls": f"tls: no handshake within {within}",
            "request": f"request: not sent within {within}",
            "headers": f"no response within {within}",
            "body": f"body: not complete within {within}",
        }.get(clock.phase, f"no answer within {within}")
    except httpx.HTTPError as e:
        detail, failure = f"{clock.phase}: {_error(e)}", failure_of(e)
    except (OSError, ValueError) as e:
        detail, failure = f"{clock.phase}: {_error(e)}", failure_of(e)
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
        failure=failure,
    )
