"""The http probe against real servers on loopback: status, body, slow and huge bodies, redirects, TLS names."""

from __future__ import annotations

import asyncio
import re
import time
import tracemalloc
from typing import Any

import pytest

import hostile
from r53lb.config import Check, HttpCheck
from r53lb.demo.loopback import Certs, HttpServer
from r53lb.probes.base import ProbeResult, Target
from r53lb.probes.http import build_url, probe
from r53lb.probes.runner import Job, run_one

TIMEOUT = 1.0
MARGIN = 0.5

# name -> (server, path and check options, expected status, reason pattern)
CASES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "healthy": ("healthy", {}, "ok", r"^http 200 in \d+ ms$"),
    "healthy_body": ("healthy", {"expect_body": r"^ok$"}, "ok", r"^http 200"),
    "healthy_exact_status": ("healthy", {"expect_status": [200]}, "ok", r"^http 200"),
    "head": ("healthy", {"method": "HEAD"}, "ok", r"^http 200"),
    "wrong_status": ("unavailable", {}, "fail", r"^status 503 \(expected 200-399\)$"),
    "wrong_status_list": ("healthy", {"expect_status": [204, "3xx"]}, "fail", r"^status 200 \(expected 204, 300-399\)$"),
    "body_mismatch": ("healthy", {"expect_body": "^healthy"}, "fail", r"^status 200, body does not match /\^healthy/$"),
    "slow_body_read": ("scripted", {"path": "/slow", "expect_body": "done"}, "fail", r"^body: not complete within 1s$"),
    "slow_body_unread": ("scripted", {"path": "/slow"}, "ok", r"^http 200"),
    "huge_body_match": ("scripted", {"path": "/huge", "expect_body": "status: ok"}, "ok", r"^http 200"),
    "huge_body_mismatch": (
        "scripted", {"path": "/huge", "expect_body": "^never"}, "fail",
        r"^status 200, body does not match /\^never/ in the first 64 KiB$",
    ),
    "huge_body_unread": ("scripted", {"path": "/huge"}, "ok", r"^http 200"),
    "redirect_strict": (
        "scripted", {"path": "/old", "expect_status": [200]}, "fail", r"^status 301 \(expected 200\) -> /new$",
    ),
    "redirect_default_range": ("scripted", {"path": "/old"}, "ok", r"^http 301"),
    "redirect_followed": ("scripted", {"path": "/old", "expect_status": [200], "follow_redirects": True}, "ok", r"^http 200"),
    "redirect_loop": ("scripted", {"path": "/loop", "follow_redirects": True, "expect_status": [200]}, "fail", r"^more than 5 redirects$"),
    "redirect_off_node": (
        "scripted", {"path": "/away", "follow_redirects": True, "expect_status": [200]}, "fail",
        r"^status 301 redirects off the node to http://elsewhere\.invalid/ok$",
    ),
    "redirect_other_node": (
        "scripted", {"path": "/to-other-node", "follow_redirects": True}, "fail",
        r"^status 302 redirects off the node to http://127\.0\.78\.1:\d+/health$",
    ),
    "redirect_allowed": (
        "scripted", {"path": "/to-other-node", "follow_redirects": True, "expect_status": [200],
                     "allow_redirects_to": ["http://127.0.78.1:"]}, "ok", r"^http 200",
    ),
    "redirect_to_own_host_name": (
        "scripted", {"path": "/to-host", "host": "web.test", "follow_redirects": True, "expect_status": [200],
                     "expect_body": "moved here"}, "ok", r"^http 200",
    ),
    "redirect_scheme_change": (
        "scripted", {"path": "/to-https", "host": "web.test", "follow_redirects": True}, "fail",
        r"^status 301 redirects off the node to https://web\.test/new$",
    ),
    "redirect_bad_location": (
        "scripted", {"path": "/bad-location", "follow_redirects": True}, "fail",
        r"^headers: Invalid URL in location header: Invalid port: ':1'\.$",  # httpx's own words
    ),
    "no_response": ("hang", {}, "fail", r"^no response within 1s$"),
    "tls_ip_without_host": (
        "tls", {"scheme": "https"}, "fail",
        r"^tls: certificate verify failed: IP address mismatch, certificate is not valid for '127\.0\.78\.\d+'",
    ),
    "tls_with_host": ("tls", {"scheme": "https", "host": "web.test"}, "ok", r"^http 200"),
    "tls_wrong_host": (
        "tls", {"scheme": "https", "host": "other.test"}, "fail",
        r"^tls: certificate verify failed: Hostname mismatch, certificate is not valid for 'other.test'",
    ),
    "tls_noverify": ("tls", {"scheme": "https", "verify": False}, "ok", r"^http 200"),
    "tls_untrusted": (
        "tls", {"scheme": "https", "host": "web.test", "ca_file": None}, "fail",
        r"^tls: certificate verify failed: unable to get local issuer certificate$",
    ),
    "plain_to_tls_port": ("tls", {}, "fail", r"^(headers|request|body): "),
    "nothing_listening": ("unused", {}, "fail", r"^connect: connection refused$"),
}


@pytest.fixture(scope="module")
def servers():
    with hostile.http_scenarios() as (certs, suite):
        yield certs, suite


def _spec(certs: Certs, port: int, options: dict[str, Any]) -> HttpCheck:
    opts = dict(options)
    scheme = opts.pop("scheme", "http")
    path = opts.pop("path", "/health")
    opts.setdefault("ca_file", certs.ca_file)
    return HttpCheck(url=f"{scheme}://{{address}}:{port}{path}", **opts)


@pytest.fixture(scope="module")
def results(servers) -> dict[str, tuple[ProbeResult, float]]:
    certs, suite = servers

    async def one(case: str) -> tuple[ProbeResult, float]:
        server, options, _, _ = CASES[case]
        target = Target("web", case, suite.addresses[server])
        job = Job(target, Check(http=_spec(certs, suite.port, options)), TIMEOUT)
        started = time.perf_counter()
        result = await run_one(job)
        return result, time.perf_counter() - started

    async def all_cases() -> dict[str, tuple[ProbeResult, float]]:
        return dict(zip(CASES, await asyncio.gather(*(one(c) for c in CASES))))

    return asyncio.run(all_cases())


@pytest.mark.parametrize("case", list(CASES))
def test_verdict_reason_and_deadline(results, case: str) -> None:
    _, _, status, pattern = CASES[case]
    result, elapsed = results[case]
    assert result.status == status, result.detail
    assert re.search(pattern, result.detail), result.detail
    assert elapsed <= TIMEOUT + MARGIN, f"{case} took {elapsed:.2f}s"


def test_huge_bodies_cost_nothing(results) -> None:
    for case in ("huge_body_match", "huge_body_mismatch", "huge_body_unread", "slow_body_unread"):
        _, elapsed = results[case]
        assert elapsed < 0.5, f"{case} took {elapsed:.2f}s"


def test_result_records_status_and_phases(results) -> None:
    result, _ = results["tls_with_host"]
    assert (result.code, result.text) == (200, "OK")
    assert {"connect", "tls", "request", "headers"} <= set(result.phases)
    result, _ = results["wrong_status"]
    assert result.code == 503


def test_host_header_and_custom_headers_are_sent(servers) -> None:
    certs, suite = servers
    spec = HttpCheck(url=f"https://{{address}}:{suite.port}/x", host="web.test", headers={"X-Probe": "r53lb"},
                     ca_file=certs.ca_file)
    before = len(suite.received["tls"])
    result = asyncio.run(probe(Target("web", "n", suite.addresses["tls"]), spec, TIMEOUT))
    assert result.ok, result.detail
    assert suite.received["tls"][before:] == [b"GET /x host=web.test x-probe=r53lb"]


def test_huge_body_memory_is_bounded(servers) -> None:
    certs, suite = servers
    spec = HttpCheck(url=f"http://{{address}}:{suite.port}/huge", expect_body="^never")

    async def run() -> list[ProbeResult]:
        return await asyncio.gather(*(probe(Target("web", "n", suite.addresses["scripted"]), spec, TIMEOUT)
                                      for _ in range(10)))

    tracemalloc.start()
    try:
        out = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(r.status == "fail" for r in out)
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for 10 probes of a 10 MB body"


def test_build_url_brackets_ipv6() -> None:
    assert build_url("https://{address}:8443/h", "2001:db8::1") == "https://[2001:db8::1]:8443/h"
    assert build_url("http://{address}/h", "192.0.2.1") == "http://192.0.2.1/h"


def test_ipv6_loopback() -> None:
    if not hostile.has_ipv6_loopback():
        pytest.skip("the kernel has IPv6 switched off: no ::1 to serve on (IPv6 URLs are covered by "
                    "test_build_url_brackets_ipv6)")
    server = HttpServer("::1", hostile.free_port("::1")).start()
    try:
        spec = HttpCheck(url=f"http://{{address}}:{server.port}/")
        result = asyncio.run(probe(Target("web", "v6", "::1"), spec, TIMEOUT))
        assert result.ok, result.detail
    finally:
        server.stop()
