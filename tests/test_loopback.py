"""The loopback servers other tests and the demo stand on: modes, down and back up at the same address."""

from __future__ import annotations

import asyncio

import pytest

from hostile import free_port
from r53lb.config import HttpCheck, SmtpCheck
from r53lb.demo.loopback import Certs, HttpServer, SmtpServer
from r53lb.probes import http, smtp
from r53lb.probes.base import ProbeResult, Target


def _smtp(addr: str, spec: SmtpCheck) -> ProbeResult:
    return asyncio.run(smtp.probe(Target("p", "n", addr), spec, 2.0))


def _http(addr: str, spec: HttpCheck) -> ProbeResult:
    return asyncio.run(http.probe(Target("p", "n", addr), spec, 2.0))


def test_smtp_server_modes_and_restart() -> None:
    addr = "127.0.81.1"
    port = free_port(addr)
    spec = SmtpCheck(port=port)
    with SmtpServer(addr, port) as server:
        assert _smtp(addr, spec).ok
        server.set_mode("421")
        assert _smtp(addr, spec).detail.startswith('greeting 421 "mx.test 4.3.2')
        server.set_mode("refuse")
        assert _smtp(addr, spec).detail == f"connect to port {port}: connection refused"
        server.set_mode("ok")
        assert _smtp(addr, spec).ok
        server.stop()
        assert _smtp(addr, spec).detail.endswith("connection refused")
        server.start()
        assert _smtp(addr, spec).ok
        assert server.accepted == 4  # refused connections never reach it


def test_smtp_server_tls_and_delay() -> None:
    certs = Certs()
    addr = "127.0.81.2"
    port = free_port(addr)
    with SmtpServer(addr, port, tls="starttls", certs=certs, delay=0.05):
        result = _smtp(addr, SmtpCheck(port=port, starttls=True, ca_file=certs.ca_file))
        assert result.ok, result.detail
        assert result.phases["greeting"] >= 45  # the delay stands in for WAN distance
    with SmtpServer(addr, port, tls="implicit") as server:  # its own CA when none is given
        result = _smtp(addr, SmtpCheck(port=port, tls=True, ca_file=server.certs.ca_file))
        assert result.ok, result.detail


def test_http_server_modes_and_tls() -> None:
    addr = "127.0.81.3"
    port = free_port(addr)
    spec = HttpCheck(url=f"http://{{address}}:{port}/health", expect_body="^ok")
    with HttpServer(addr, port) as server:
        assert _http(addr, spec).ok
        server.set_mode("503")
        assert _http(addr, spec).detail == "status 503 (expected 200-399)"
        server.set_mode("refuse")
        assert _http(addr, spec).detail == "connect: connection refused"
        server.set_mode("ok")
        assert _http(addr, spec).ok
    certs = Certs()
    with HttpServer(addr, port, tls=True, certs=certs, body=b"fine"):
        result = _http(addr, HttpCheck(url=f"https://{{address}}:{port}/", ca_file=certs.ca_file, expect_body="fine"))
        assert result.ok, result.detail


def test_refuses_non_loopback() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        SmtpServer("192.0.2.1", 25)
    with pytest.raises(ValueError, match="unknown mode"):
        HttpServer("127.0.0.1", 8080, mode="sideways")
