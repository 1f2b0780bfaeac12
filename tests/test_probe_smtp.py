"""The smtp probe against real servers on loopback: healthy, broken and hostile.

Every scenario is probed once, all at the same time (the suite costs one deadline, not
one per case); each test then checks one verdict, its reason, and that it came in time.
"""

from __future__ import annotations

import asyncio
import re
import time
import tracemalloc
from datetime import datetime, timezone
from typing import Any

import pytest

import hostile
from r53lb.config import Check, SmtpCheck
from r53lb.demo.loopback import Certs
from r53lb.probes.base import ProbeResult, Target
from r53lb.probes.runner import Job, run_one
from r53lb.probes.smtp import probe

TIMEOUT = 1.0
MARGIN = 0.5  # the whole probe ends within the deadline plus this


ENVELOPE = {"from": "<>", "to": "postmaster@example.com"}

# name -> (server, check options, expected status, reason pattern)
CASES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "plain": ("plain", {}, "ok", r"^smtp ok in \d+ ms$"),
    "starttls": ("starttls", {"starttls": True}, "ok", r"^smtp ok in \d+ ms, STARTTLS, certificate valid \d+ more days$"),
    "starttls_min_days": ("starttls", {"starttls": True, "cert_min_days": 14}, "ok", r"STARTTLS"),
    "starttls_sni": ("starttls", {"starttls": True, "server_name": "mx.test"}, "ok", r"STARTTLS"),
    "starttls_wrong_name": (
        "starttls", {"starttls": True, "server_name": "other.test"}, "fail",
        r"^tls: certificate verify failed: Hostname mismatch, certificate is not valid for 'other.test'",
    ),
    "starttls_untrusted": (
        "starttls", {"starttls": True, "ca_file": None}, "fail",
        r"^tls: certificate verify failed: unable to get local issuer certificate$",
    ),
    "starttls_noverify": ("starttls", {"starttls": True, "ca_file": None, "verify": False}, "ok", r"STARTTLS"),
    "implicit": ("implicit", {"tls": True}, "ok", r"^smtp ok in \d+ ms, certificate valid \d+ more days$"),
    "implicit_on_plain": ("plain", {"tls": True}, "fail", r"^tls: TLS handshake failed"),
    "helo_fallback": ("ehlo_refused", {}, "ok", r"^smtp ok in \d+ ms, HELO$"),
    "helo_refused_too": ("helo_refused", {}, "fail", r'^HELO 501 "5.5.4 go away" \(after EHLO refused\)$'),
    "ehlo_4xx": ("ehlo_421", {}, "fail", r'^EHLO 421 "4.7.0 slow down"$'),
    "no_greeting": ("silent", {}, "fail", r"^no greeting within 1s$"),
    "greeting_421": ("greeting_421", {}, "fail", r'^greeting 421 "mx.test 4.3.2 too busy, try later"$'),
    "greeting_554": ("greeting_554", {}, "fail", r'^greeting 554 "mx.test 5.7.1 no SMTP service here"$'),
    "drip": ("drip", {}, "fail", r"^no greeting within 1s \(\d bytes?, no complete reply\)$"),
    "endless_multiline": ("endless_multiline", {}, "fail", r"^greeting: reply too long( \(more than 64 KiB received\))?$"),
    "megaline": ("megaline", {}, "fail", r"^greeting: reply too long( \(more than 64 KiB received\))?$"),
    "random_bytes": ("random_bytes", {}, "fail", r"^greeting: not SMTP: "),
    "reset": ("reset", {}, "fail", r"^(greeting|connect to port \d+): connection (reset|closed)$"),
    "close_after_greeting": ("close_after_greeting", {}, "fail", r"^EHLO: connection (closed|reset)$"),
    "http_on_smtp_port": ("http", {}, "fail", r"^no greeting within 1s$"),
    "starttls_garbage": ("starttls_garbage", {"starttls": True}, "fail", r"^tls: TLS handshake failed: "),
    "starttls_not_offered": ("plain", {"starttls": True}, "fail", r"^STARTTLS required but not offered$"),
    "starttls_refused": ("starttls_454", {"starttls": True}, "fail", r'^STARTTLS 454 "4.7.0 TLS not available now"$'),
    "expired_verify": (
        "expired", {"starttls": True}, "fail", r"^tls: certificate verify failed: certificate has expired$",
    ),
    "expired_noverify": (
        "expired", {"starttls": True, "verify": False, "cert_min_days": 0}, "fail",
        r"^certificate expired 2 days ago$",
    ),
    "expires_3d_min_14": ("expiring", {"starttls": True, "cert_min_days": 14}, "fail", r"^certificate expires in 3 days \(< 14\)$"),
    "expires_3d_min_1": ("expiring", {"starttls": True, "cert_min_days": 1}, "ok", r"certificate valid 3 more days"),
    "nothing_listening": ("unused", {}, "fail", r"^connect to port \d+: connection refused$"),
    "envelope": ("envelope", {"envelope": ENVELOPE}, "ok", r"^smtp ok in \d+ ms, envelope$"),
    "envelope_rcpt_452": (
        "rcpt_452", {"envelope": ENVELOPE}, "fail", r'^rcpt 452 "4.3.1 Insufficient system storage"$',
    ),
    "envelope_rcpt_251": ("rcpt_251", {"envelope": ENVELOPE}, "ok", r"envelope$"),
    "envelope_rcpt_251_not_expected": (
        "rcpt_251", {"envelope": {**ENVELOPE, "expect": [250]}}, "fail", r'^rcpt 251 "2.1.5 user not local; will forward"$',
    ),
    "envelope_mail_553": ("mail_553", {"envelope": ENVELOPE}, "fail", r'^mail 553 "5.1.8 sender address rejected"$'),
    "envelope_starttls": (
        "starttls", {"starttls": True, "envelope": {"from": "probe@r53lb.test", "to": "postmaster@mx.test"}}, "ok",
        r"^smtp ok in \d+ ms, STARTTLS, envelope, certificate valid \d+ more days$",
    ),
}


@pytest.fixture(scope="module")
def servers():
    with hostile.smtp_scenarios() as (certs, suite):
        yield certs, suite


def _spec(certs: Certs, port: int, options: dict[str, Any]) -> SmtpCheck:
    opts = {"port": port, "ca_file": certs.ca_file, **options}
    return SmtpCheck(**opts)


def run_on(loop: str, coro: Any) -> Any:
    """The coroutine on asyncio's own loop or on uvloop (the one r53lb runs on): the probe must
    behave the same on both."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def results(servers, request) -> dict[str, tuple[ProbeResult, float]]:
    certs, suite = servers
    for lines in suite.received.values():  # what the servers heard is told per loop
        lines.clear()

    async def one(case: str) -> tuple[ProbeResult, float]:
        server, options, _, _ = CASES[case]
        target = Target("mail", case, suite.addresses[server], helo="probe.r53lb.test")
        job = Job(target, Check(smtp=_spec(certs, suite.port, options)), TIMEOUT)
        started = time.perf_counter()
        result = await run_one(job)
        return result, time.perf_counter() - started

    async def all_cases() -> dict[str, tuple[ProbeResult, float]]:
        done = await asyncio.gather(*(one(c) for c in CASES))
        return dict(zip(CASES, done))

    return run_on(request.param, all_cases())


@pytest.mark.parametrize("case", list(CASES))
def test_verdict_reason_and_deadline(results, case: str) -> None:
    _, _, status, pattern = CASES[case]
    result, elapsed = results[case]
    assert result.status == status, result.detail
    assert result.check == "smtp" and result.node == case
    assert re.search(pattern, result.detail), result.detail
    assert elapsed <= TIMEOUT + MARGIN, f"{case} took {elapsed:.2f}s"
    assert result.latency_ms <= (TIMEOUT + MARGIN) * 1000


def test_healthy_result_records_phases_and_greeting(results) -> None:
    result, _ = results["starttls"]
    assert result.phase == "quit"
    assert list(result.phases) == ["connect", "greeting", "ehlo", "starttls", "tls", "ehlo_tls", "quit"]
    assert result.code == 220 and "mx.test" in (result.text or "")
    assert result.cert_not_after is not None and result.cert_not_after > datetime.now(timezone.utc)


def test_failure_records_the_phase_and_the_servers_reply(results) -> None:
    result, _ = results["greeting_421"]
    assert (result.phase, result.code) == ("greeting", 421)
    assert "too busy" in (result.text or "")
    result, _ = results["expires_3d_min_14"]
    assert result.phase == "ehlo_tls"
    assert result.cert_not_after is not None
    assert 3 <= (result.cert_not_after - datetime.now(timezone.utc)).days <= 4


def test_expired_certificate_is_read_even_unverified(results) -> None:
    result, _ = results["expired_noverify"]
    assert result.cert_not_after is not None and result.cert_not_after < datetime.now(timezone.utc)


def test_never_speaks_before_the_greeting(servers, results) -> None:
    _, suite = servers
    for name in ("silent", "drip", "http"):
        assert suite.received[name] == [], f"{name}: the probe spoke first: {suite.received[name]}"


def test_quit_always_when_the_connection_is_usable(servers, results) -> None:
    _, suite = servers
    assert suite.received["ehlo_refused"] == [b"EHLO probe.r53lb.test", b"HELO probe.r53lb.test", b"QUIT"]
    assert suite.received["helo_refused"][-1] == b"QUIT"
    assert suite.received["ehlo_421"] == [b"EHLO probe.r53lb.test", b"QUIT"]
    assert suite.received["starttls_454"] == [b"EHLO probe.r53lb.test", b"STARTTLS", b"QUIT"]


def test_envelope_is_mail_rcpt_rset_then_quit_never_data(servers, results) -> None:
    _, suite = servers
    assert suite.received["envelope"] == [
        b"EHLO probe.r53lb.test", b"MAIL FROM:<>", b"RCPT TO:<postmaster@example.com>", b"RSET", b"QUIT",
    ]
    # A refused recipient: QUIT at once (it ends the transaction too); nothing is ever sent as DATA.
    assert suite.received["rcpt_452"] == [
        b"EHLO probe.r53lb.test", b"MAIL FROM:<>", b"RCPT TO:<postmaster@example.com>", b"QUIT",
    ]
    assert suite.received["mail_553"][-1] == b"QUIT"
    assert not any(line.startswith(b"DATA") for lines in suite.received.values() for line in lines)
    result, _ = results["envelope_rcpt_452"]
    assert (result.phase, result.code) == ("rcpt", 452)
    assert list(results["envelope"][0].phases)[-4:] == ["mail", "rcpt", "rset", "quit"]


def test_hostile_servers_cost_bounded_memory(servers) -> None:
    """An endless greeting or a line of megabytes costs at most MAX_READ_BYTES-ish, not megabytes."""
    certs, suite = servers

    async def run() -> list[ProbeResult]:
        spec = SmtpCheck(port=suite.port)
        return await asyncio.gather(*(
            probe(Target("mail", name, suite.addresses[name]), spec, TIMEOUT)
            for name in ("endless_multiline", "megaline", "random_bytes") for _ in range(5)
        ))

    tracemalloc.start()
    try:
        out = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(r.status == "fail" for r in out)
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for 15 hostile probes"


def test_a_probe_never_raises(servers) -> None:
    """Even a nonsense address becomes a result with a reason."""
    target = Target("mail", "bad", "not-an-address.invalid")
    result = asyncio.run(probe(target, SmtpCheck(port=25), TIMEOUT))
    assert result.status == "fail"
    assert result.detail.startswith("connect to port 25: ")


# The failure class each case carries (metrics and alerts key on it, never on the reason text).
FAILURE_CLASSES = {
    "starttls_wrong_name": "certificate", "starttls_untrusted": "certificate", "expired_verify": "certificate",
    "expired_noverify": "certificate", "expires_3d_min_14": "certificate",
    "implicit_on_plain": "tls", "starttls_garbage": "tls",
    "helo_refused_too": "reply_code", "ehlo_4xx": "reply_code", "greeting_421": "reply_code",
    "greeting_554": "reply_code", "starttls_refused": "reply_code", "envelope_rcpt_452": "reply_code",
    "envelope_mail_553": "reply_code",
    "no_greeting": "timeout", "drip": "timeout", "http_on_smtp_port": "timeout",
    "endless_multiline": "protocol", "megaline": "protocol", "random_bytes": "protocol",
    "starttls_not_offered": "protocol",
    "reset": "connection_closed", "close_after_greeting": "connection_closed",
    "nothing_listening": "refused",
}


@pytest.mark.parametrize("case", sorted(FAILURE_CLASSES))
def test_failure_class_is_typed(results, case: str) -> None:
    result, _ = results[case]
    assert result.failure is not None and result.failure.value == FAILURE_CLASSES[case], result.detail


def test_every_case_that_passes_has_no_failure_class(results) -> None:
    assert all(r.failure is None for r, _ in results.values() if r.ok)
