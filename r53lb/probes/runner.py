"""Fan-out: run many checks concurrently, bounded, each under its own deadline."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from ..config import SIGNAL_KINDS, Check
from .base import Failure, ProbeResult, Target, failure_of, fmt_duration

ProbeFn = Callable[[Target, object, float], Awaitable[ProbeResult]]


@dataclass(frozen=True)
class Job:
    target: Target
    check: Check
    timeout: float  # the whole check's deadline, every phase included

    # Worked out once per job, not once per probe (a daemon probes the same job for its life).
    @functools.cached_property
    def kind(self) -> str:
        return self.check.kind

    @functools.cached_property
    def spec(self) -> object:
        return self.check.spec

    @functools.cached_property
    def deadline(self) -> float:
        return getattr(self.spec, "timeout", None) or self.timeout


# Probes whose every await sits under their own deadline (tests/hostile.py holds them to it).
SELF_BOUNDED = frozenset({"smtp"})


@functools.cache
def _probe_fn(kind: str) -> ProbeFn:
    # Imported lazily so that `r53lb --help` does not pay for aiosmtplib, httpx and dnspython.
    if kind == "smtp":
        from .smtp import probe
    elif kind == "http":
        from .http import probe
    elif kind == "tcp":
        from .tcp import probe
    elif kind == "dnsbl":
        from .dnsbl import probe
    elif kind == "agent":
        from .agent import probe
    elif kind == "prometheus":
        from .prometheus import probe
    else:  # pragma: no cover - config validation refuses unknown kinds
        raise ValueError(kind)
    return probe


async def run_one(job: Job) -> ProbeResult:
    """One check under its deadline; whatever happens becomes a result."""
    kind, spec, timeout = job.kind, job.spec, job.deadline
    started = time.perf_counter()
    try:
        fn = _probe_fn(kind)
        if kind in SELF_BOUNDED:  # its one deadline covers every phase: no second timer per probe
            return await fn(job.target, spec, timeout)
        async with asyncio.timeout(timeout + 0.5):  # the probe keeps its own; this is the backstop
            return await fn(job.target, spec, timeout)
    except TimeoutError:
        detail, failure = f"no answer within {fmt_duration(timeout)}", Failure.TIMEOUT
    except Exception as e:  # a probe never raises out of the engine
        detail, failure = f"probe error: {type(e).__name__}: {e}", failure_of(e)
    return ProbeResult(
        pool=job.target.pool,
        node=job.target.node,
        check=kind,
        # A signal that could not be read is unknown (weight untouched), never a failure.
        status="unknown" if kind in SIGNAL_KINDS else "fail",
        latency_ms=(time.perf_counter() - started) * 1000,
        detail=detail,
        failure=None if kind in SIGNAL_KINDS else failure,
    )


async def run_all(
    jobs: Iterable[Job], concurrency: int = 512, jitter: float = 0.0
) -> list[ProbeResult]:
    """Run every job, at most `concurrency` at once; results in the order of `jobs`.

    `concurrency` workers take the jobs in turn (not one task per job waiting on a
    semaphore: with 10,000 jobs the semaphore's wake-ups cost more than the probes' own
    bookkeeping). `jitter` spreads the starts uniformly over that many seconds so a
    fleet's probes do not arrive in one burst.
    """
    jobs = list(jobs)
    results: list[ProbeResult | None] = [None] * len(jobs)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # With jitter, each job gets a start time in [0, jitter) and the workers take them in that order.
    starts = sorted((random.uniform(0, jitter) if jitter > 0 else 0.0, i) for i in range(len(jobs)))
    queue = iter(starts)

    async def worker() -> None:
        for at, i in queue:
            if at > 0:
                await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            results[i] = await run_one(jobs[i])

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))
    return results  # type: ignore[return-value]
