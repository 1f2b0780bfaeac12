"""`python -m r53lb.probes.worker`: one probe worker process (see probes/workers.py).

Reads frames of ("job", jid, Job), ("run", rid, jid) and ("reset",) on stdin, runs each probe
with probes.runner.run_one and answers (rid, result fields) on stdout. Exits when stdin closes.
Logs go to stderr (the main process's journal); stdout carries only frames.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from .. import eventloop
from .runner import Job, run_one
from .workers import Frames, frame, pack


class _Worker(asyncio.Protocol):
    def __init__(self, out: asyncio.WriteTransport, done: asyncio.Future[None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.out = out
        self.done = done
        self.frames = Frames()
        self.jobs: dict[int, Job] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.answers: list[Any] = []
        self.flush_due = False

    def data_received(self, data: bytes) -> None:
        for msg in self.frames.feed(data):
            kind = msg[0]
            if kind == "run":
                _, rid, jid = msg
                task = self.loop.create_task(run_one(self.jobs[jid]))
                task.rid = rid  # type: ignore[attr-defined]
                self.tasks.add(task)
                task.add_done_callback(self._answered)
            elif kind == "job":
                self.jobs[msg[1]] = msg[2]
            elif kind == "reset":
                self.jobs = {}

    def _answered(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        self.answers.append((task.rid, pack(task.result())))  # type: ignore[attr-defined]
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_due = False
        if self.answers and not self.out.is_closing():
            self.out.write(frame(self.answers))
        self.answers = []

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def main() -> None:
    loop = asyncio.get_running_loop()
    # The frames get a private copy of stdout; fd 1 itself goes to stderr, so a stray print cannot garble them.
    wire = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, wire)
    done: asyncio.Future[None] = loop.create_future()
    worker = _Worker(out, done)  # type: ignore[arg-type]
    await loop.connect_read_pipe(lambda: worker, sys.stdin.buffer)
    await done  # stdin closed: the main process is gone or stopping
    for t in list(worker.tasks):
        t.cancel()
    out.close()


if __name__ == "__main__":
    # The main process decides when probing ends (it closes our stdin); a group-wide signal does not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="r53lb probe worker: %(message)s")
    eventloop.run(main())
