"""The event loop every r53lb process runs on: uvloop (libuv) when it is installed.

The probe path is mostly the event loop's own work (sockets, transports, timers, waking
tasks): on uvloop a probe costs about a quarter less CPU than on asyncio's own loop
(docs/benchmarks.md). `R53LB_EVENT_LOOP=asyncio` runs on asyncio's loop instead, with the
same behaviour: nothing in r53lb depends on which loop runs it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "R53LB_EVENT_LOOP"


def name() -> str:
    """`uvloop` or `asyncio`: the loop `run` uses in this process."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:  # a platform without uvloop's wheels: asyncio's loop does the same work
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the loop `name()` says."""
    if name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
