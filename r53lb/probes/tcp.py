"""tcp: healthy when a connection opens within the deadline."""

from __future__ import annotations

import asyncio
import os
import time

from ..config import TcpCheck
from .base import Failure, ProbeResult, Target, failure_of, fmt_duration


async def probe(target: Target, spec: TcpCheck, timeout: float) -> ProbeResult:
    started = time.perf_counter()

    def result(status: str, detail: str, phase: str, failure: Failure | None = None) -> ProbeResult:
        ms = (time.perf_counter() - started) * 1000
        return ProbeResult(target.pool, target.node, "tcp", status, ms, detail, phase,  # type: ignore[arg-type]
                           phases={"connect": ms}, failure=failure)

    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(target.address, spec.port)
    except TimeoutError:
        return result("fail", f"connect to port {spec.port}: no answer within {fmt_duration(timeout)}", "connect", Failure.TIMEOUT)
    except OSError as e:
        # asyncio's own message ("Connect call failed ('10.0.0.1', 25)") says less than errno does.
        reason = os.strerror(e.errno).lower() if e.errno else (e.strerror or str(e))
        return result("fail", f"connect to port {spec.port}: {reason}", "connect", failure_of(e))
    writer.close()
    try:
        async with asyncio.timeout(0.5):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        pass
    return result("ok", f"tcp port {spec.port} open", "connected")
