"""Fan-out: bounded concurrency, jitter, one connection per node, nothing escapes as an exception."""

from __future__ import annotations

import asyncio
import time

import pytest

import hostile
from r53lb.config import Check, SmtpCheck, TcpCheck
from r53lb.probes import runner
from r53lb.probes.base import ProbeResult, Target
from r53lb.probes.base import fmt_duration
from r53lb.probes.runner import Job, run_all, run_one

NODES = 200


@pytest.fixture(scope="module")
def fleet():
    """NODES plain SMTP servers, each on its own 127.0.79.x address."""
    suite = hostile.Suite("127.0.79.")
    handler = hostile.dialogue(b"220 node.test ESMTP\r\n", {b"EHLO": b"250-node.test\r\n250 8BITMIME\r\n"})
    try:
        for i in range(NODES):
            suite.add(f"n{i:03d}", handler)
        yield suite
    finally:
        suite.stop()


def _jobs(suite: hostile.Suite, timeout: float = 2.0) -> list[Job]:
    check = Check(smtp=SmtpCheck(port=suite.port))
    return [Job(Target("fleet", name, addr, helo="probe.test"), check, timeout) for name, addr in suite.addresses.items()]


def test_fleet_probed_once_each_in_order(fleet) -> None:
    jobs = _jobs(fleet)
    results = asyncio.run(run_all(jobs, concurrency=32, jitter=0.2))
    assert [r.node for r in results] == [j.target.node for j in jobs]
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok][:3]
    # One connection per node: each server saw exactly one dialogue, ending in QUIT.
    for name in fleet.addresses:
        assert fleet.received[name] == [b"EHLO probe.test", b"QUIT"], name


def _fake(monkeypatch, body):
    monkeypatch.setattr(runner, "_probe_fn", lambda kind: body)


def test_concurrency_is_bounded(monkeypatch) -> None:
    in_flight = peak = 0

    async def probe(target: Target, spec: object, timeout: float) -> ProbeResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return ProbeResult(target.pool, target.node, "tcp", "ok", 10.0, "ok")

    _fake(monkeypatch, probe)
    check = Check(tcp=TcpCheck(port=1))
    jobs = [Job(Target("p", f"n{i}", "127.0.0.1"), check, 1.0) for i in range(100)]
    results = asyncio.run(run_all(jobs, concurrency=7))
    assert len(results) == 100 and all(r.ok for r in results)
    assert peak == 7


def test_jitter_spreads_the_starts(monkeypatch) -> None:
    """Each job starts at its drawn offset, never before it: the fleet is not one burst.

    The offsets are fixed (0 to 0.5 s, evenly), so what is checked is what jitter promises
    whatever the machine does: a stall of the process can only make a start late, never early.
    """
    starts: dict[str, float] = {}

    async def probe(target: Target, spec: object, timeout: float) -> ProbeResult:
        starts[target.node] = time.perf_counter()
        return ProbeResult(target.pool, target.node, "tcp", "ok", 0.0, "ok")

    _fake(monkeypatch, probe)
    planned = [i * 0.5 / 200 for i in range(200)]
    draws = iter(reversed(planned))  # drawn in job order; the runner sorts them
    monkeypatch.setattr(runner.random, "uniform", lambda a, b: next(draws))
    check = Check(tcp=TcpCheck(port=1))
    jobs = [Job(Target("p", f"n{i}", "127.0.0.1"), check, 1.0) for i in range(200)]
    t0 = time.perf_counter()
    asyncio.run(run_all(jobs, concurrency=200, jitter=0.5))
    assert len(starts) == 200
    offsets = {f"n{i}": at for i, at in enumerate(reversed(planned))}
    early = [(n, round(starts[n] - t0, 4), at) for n, at in offsets.items() if starts[n] - t0 < at - 0.002]
    assert not early, f"started before their offset: {early[:5]}"
    assert max(starts.values()) - t0 >= 0.49  # the last one waited for its offset too


def test_a_raising_probe_becomes_a_failed_result(monkeypatch) -> None:
    async def probe(target: Target, spec: object, timeout: float) -> ProbeResult:
        raise RuntimeError("boom")

    _fake(monkeypatch, probe)
    result = asyncio.run(run_one(Job(Target("p", "n", "127.0.0.1"), Check(tcp=TcpCheck(port=1)), 1.0)))
    assert (result.status, result.detail) == ("fail", "probe error: RuntimeError: boom")


def test_a_probe_that_ignores_its_deadline_is_cut_off(monkeypatch) -> None:
    async def probe(target: Target, spec: object, timeout: float) -> ProbeResult:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    _fake(monkeypatch, probe)
    started = time.perf_counter()
    result = asyncio.run(run_one(Job(Target("p", "n", "127.0.0.1"), Check(tcp=TcpCheck(port=1)), 0.3)))
    assert time.perf_counter() - started < 1.5
    assert (result.status, result.detail) == ("fail", "no answer within 300ms")


def test_the_checks_own_timeout_wins(monkeypatch) -> None:
    seen: list[float] = []

    async def probe(target: Target, spec: object, timeout: float) -> ProbeResult:
        seen.append(timeout)
        return ProbeResult(target.pool, target.node, "tcp", "ok", 0.0, "ok")

    _fake(monkeypatch, probe)
    asyncio.run(run_one(Job(Target("p", "n", "127.0.0.1"), Check(tcp={"port": 1, "timeout": "250ms"}), 10.0)))
    assert seen == [0.25]


def test_tcp_check(fleet) -> None:
    addr = fleet.addresses["n000"]
    ok = asyncio.run(run_one(Job(Target("p", "n", addr), Check(tcp=TcpCheck(port=fleet.port)), 1.0)))
    assert ok.ok and ok.detail == f"tcp port {fleet.port} open"
    refused = asyncio.run(run_one(Job(Target("p", "n", "127.0.79.254"), Check(tcp=TcpCheck(port=fleet.port)), 1.0)))
    assert refused.status == "fail"
    assert refused.detail == f"connect to port {fleet.port}: connection refused"  # the reason reads "tcp: connect to port ..."


@pytest.mark.parametrize("seconds,text", [
    (2.99928, "3s"), (3.04, "3s"), (1.5, "1.5s"), (1.04999, "1s"), (9.96, "10s"), (10.4, "10s"), (90, "90s"),
    (0.25, "250ms"), (0.2501234, "250ms"), (0.9996, "1s"), (0.0004, "0ms"),
])
def test_durations_in_reasons_are_rounded(seconds: float, text: str) -> None:
    """A reason reads the same every cycle, so logs and alerts can de-duplicate it."""
    assert fmt_duration(seconds) == text
