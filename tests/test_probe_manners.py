"""How probes end their connections, judged per connection by the server (tests/manners.py).

A polite SMTP probe reads to the server's EOF after the 221 and sends nothing more (not
even a TLS close_notify); an HTTP(S) probe reads the body and closes first. Either way no
TCP reset in either direction. The interop suite checks the same against real Postfix.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import pytest

from manners import HttpManners, SmtpManners
from r53lb.config import HttpCheck, SmtpCheck
from r53lb.demo.loopback import Certs
from r53lb.probes import http, smtp
from r53lb.probes.base import Target

ROUNDS = 10  # connections per case: a race that resets one in ten still shows


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def _probe_many(coro_factory: Any, loop: str = "asyncio") -> list[Any]:
    async def run() -> list[Any]:
        return await asyncio.gather(*(coro_factory() for _ in range(ROUNDS)))

    if loop == "uvloop":  # the loop r53lb runs on (r53lb/eventloop.py): its TLS layer is its own
        import uvloop

        return uvloop.run(run())
    return asyncio.run(run())


def _settled(server: SmtpManners | HttpManners) -> list[str]:
    """The servers' verdicts, once every connection has been judged (polled, with a deadline)."""
    deadline = time.monotonic() + 5
    while len(server.outcomes) < ROUNDS and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(server.outcomes)


@pytest.mark.parametrize("tls,options", [
    (None, {}),
    ("starttls", {"starttls": True}),
    ("implicit", {"tls": True}),
    ("starttls", {"starttls": True, "envelope": {"to": "postmaster@example.com"}}),
], ids=["plain", "starttls", "implicit", "starttls-envelope"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_smtp_probe_leaves_without_a_reset(certs: Certs, tls: str | None, options: dict[str, Any], loop: str) -> None:
    host = {None: "127.0.79.1", "starttls": "127.0.79.2", "implicit": "127.0.79.3"}[tls]
    server = SmtpManners(host, certs.server_context("manners.test", host), tls)
    try:
        spec = SmtpCheck(port=server.port, ca_file=certs.ca_file, server_name="manners.test", **options)
        results = _probe_many(lambda: smtp.probe(Target("mail", "n", host, helo="probe.r53lb.test"), spec, 3.0), loop)
        assert all(r.ok for r in results), [r.detail for r in results]
        assert _settled(server) == ["clean"] * ROUNDS
    finally:
        server.stop()


@pytest.mark.parametrize("tls,options", [(None, {}), ("implicit", {"tls": True})], ids=["plain", "implicit"])
def test_smtp_latency_ends_with_the_221_not_the_servers_close(
    certs: Certs, tls: str | None, options: dict[str, Any],
) -> None:
    """A server that keeps the connection open 0.8 s after its 221: the probe waits for that
    close (manners) but its latency and phase timings measure the dialogue only."""
    host = {None: "127.0.79.11", "implicit": "127.0.79.12"}[tls]
    server = SmtpManners(host, certs.server_context("manners.test", host), tls, linger=0.8)
    try:
        spec = SmtpCheck(port=server.port, ca_file=certs.ca_file, server_name="manners.test", **options)
        target = Target("mail", "n", host, helo="probe.r53lb.test")

        async def timed() -> tuple[Any, float]:
            started = time.monotonic()
            r = await smtp.probe(target, spec, 3.0)
            return r, time.monotonic() - started

        for r, took in _probe_many(timed):
            assert r.ok, r.detail
            assert took >= 0.7  # it did wait for the server's close
            assert r.latency_ms < 400, (r.latency_ms, r.phases)
            assert r.phases["quit"] < 400, r.phases
            assert abs(sum(r.phases.values()) - r.latency_ms) < 5, (r.latency_ms, r.phases)
            assert r.detail.startswith("smtp ok in ") and int(r.detail.split()[3]) < 400, r.detail
        assert _settled(server) == ["clean"] * ROUNDS
    finally:
        server.stop()


def test_the_judge_sees_a_close_notify_sent_after_the_servers_close(certs: Certs) -> None:
    """Control: asyncio's own close answers the server's close_notify, which Postfix resets."""
    host = "127.0.79.4"
    server = SmtpManners(host, certs.server_context("manners.test", host), "implicit")
    ctx = ssl.create_default_context(cafile=str(certs.ca_file))

    async def rude() -> None:
        reader, writer = await asyncio.open_connection(host, server.port, ssl=ctx, server_hostname="manners.test")
        await reader.readline()
        writer.write(b"QUIT\r\n")
        await reader.readline()
        await reader.read()  # the server's close_notify: asyncio answers it with its own
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass

    try:
        _probe_many(rude)
        outcomes = _settled(server)
        assert len(outcomes) == ROUNDS and all(o != "clean" for o in outcomes), outcomes
    finally:
        server.stop()


@pytest.mark.parametrize("scheme,body_after", [("http", 0.0), ("https", 0.0), ("http", 0.05), ("https", 0.05)],
                         ids=["http", "https", "http-late-body", "https-late-body"])
def test_http_probe_reads_the_body_and_closes_first_without_a_reset(
    certs: Certs, scheme: str, body_after: float,
) -> None:
    host = f"127.0.79.{5 + (scheme == 'https') + 2 * (body_after > 0)}"
    ctx = certs.server_context("web.test", host) if scheme == "https" else None
    server = HttpManners(host, ctx, body=b"x" * 60000, body_after=body_after)
    try:
        spec = HttpCheck(url=f"{scheme}://{{address}}:{server.port}/health", host="web.test", ca_file=certs.ca_file)
        results = _probe_many(lambda: http.probe(Target("web", "n", host), spec, 3.0))
        assert all(r.ok for r in results), [r.detail for r in results]
        assert _settled(server) == ["clean"] * ROUNDS
    finally:
        server.stop()
