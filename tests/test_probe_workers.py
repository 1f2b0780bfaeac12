"""Probe worker processes: shards probed in another process, a worker's death never a gap."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

import hostile
from r53lb.config import Check, SmtpCheck
from r53lb.probes.base import Target
from r53lb.probes.runner import Job
from r53lb.probes.workers import ProbeWorkers, processes_for

pytestmark = pytest.mark.timeout(60)

NODES = 12
GREETING = b"220 node.test ESMTP\r\n"
EHLO = {b"EHLO": b"250-node.test\r\n250 8BITMIME\r\n"}


def _slow(delay: float) -> hostile.Handler:
    """The plain dialogue, greeting `delay` seconds after the connection."""
    inner = hostile.dialogue(GREETING, EHLO)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[bytes]) -> None:
        await asyncio.sleep(delay)
        await inner(reader, writer, log)

    return handler


@pytest.fixture(scope="module")
def fleet():
    suite = hostile.Suite("127.0.81.")
    try:
        for i in range(NODES):
            suite.add(f"n{i:02d}", hostile.dialogue(GREETING, EHLO))
        suite.add("slow", _slow(1.0))
        yield suite
    finally:
        suite.stop()


def _job(suite: hostile.Suite, name: str) -> Job:
    return Job(Target("fleet", name, suite.addresses[name], helo="probe.test"), Check(smtp=SmtpCheck(port=suite.port)), 5.0)


def test_auto_adds_a_process_per_2500_probes_a_second_up_to_the_cores() -> None:
    assert processes_for("auto", 2000, cpus=2) == 1
    assert processes_for("auto", 4000, cpus=2) == 2
    assert processes_for("auto", 100_000, cpus=2) == 2
    assert processes_for("auto", 100_000, cpus=8) == 8
    assert processes_for(3, 10, cpus=2) == 3  # what the operator sets is what runs


def test_every_shard_is_probed_and_the_workers_answer_theirs(fleet) -> None:
    async def main() -> tuple[list, list[int], int]:
        workers = await ProbeWorkers(3).start()
        try:
            jobs = [_job(fleet, f"n{i:02d}") for i in range(NODES)]
            results = await asyncio.gather(*(workers.run(j, workers.shard_of(i)) for i, j in enumerate(jobs)))
            answered = [s.answered for s in workers.slots]
            # The same jobs again: each worker was sent each job once, then only its id.
            again = await asyncio.gather(*(workers.run(j, workers.shard_of(i)) for i, j in enumerate(jobs)))
            return list(results) + list(again), answered, sum(len(s.known) for s in workers.slots)
        finally:
            await workers.close()

    results, answered, known = asyncio.run(main())
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok]
    assert [r.node for r in results[:NODES]] == [f"n{i:02d}" for i in range(NODES)]
    assert results[0].latency_ms > 0 and results[0].phases and results[0].detail.startswith("smtp ok")
    # Shards 1 and 2 answered by the two workers; this process probed one node in seven.
    here = sum(1 for i in range(NODES) if i % 7 == 0)
    assert answered[0] + answered[1] == NODES - here and abs(answered[0] - answered[1]) <= 1
    assert known == NODES - here


def test_a_worker_killed_mid_probe_is_an_error_restarted_and_its_probes_run_here(fleet, caplog) -> None:
    caplog.set_level(logging.ERROR, "r53lb.probes.workers")
    restarts = []

    async def main() -> tuple[list, int | None, int | None, list]:
        workers = await ProbeWorkers(2, on_restart=lambda: restarts.append(1)).start()
        try:
            pid = workers.pids[0]
            slow = [asyncio.ensure_future(workers.run(_job(fleet, "slow"), 1)) for _ in range(3)]
            deadline = time.monotonic() + 10
            while len(workers.slots[0].inflight) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the worker holds them: the slow node greets after 1 s
            os.kill(pid, signal.SIGKILL)
            results = await asyncio.gather(*slow)
            deadline = time.monotonic() + 20
            while workers.pids[0] in (None, pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            new = workers.pids[0]
            after = await workers.run(_job(fleet, "n01"), 1)
            return list(results), pid, new, [after, workers.slots[0].answered]
        finally:
            await workers.close()

    results, pid, new, (after, answered) = asyncio.run(main())
    assert all(r.ok for r in results), [r.detail for r in results]  # run again here: no gap, no false failure
    assert restarts == [1]
    assert new is not None and new != pid
    assert after.ok and answered == 1  # the restarted worker probes its shard again
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"probe worker 1 (pid {pid}) died (signal 9)" in m and "3 probe(s) in flight are run again here" in m
               for m in errors), errors


def test_close_ends_the_workers(fleet) -> None:
    async def main() -> list[int]:
        workers = await ProbeWorkers(3).start()
        pids = [p for p in workers.pids if p is not None]
        await workers.run(_job(fleet, "n00"), 1)
        await workers.close()
        return pids

    pids = asyncio.run(main())
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
