"""Probing on more than one core: worker processes that each own a shard of the nodes.

`r53lb run` keeps its engine, its safety rules and its single writer in the main process.
With `defaults.probe_workers` above 1 (or `auto` on a fleet that needs it) the main
process starts `probe_workers - 1` workers (`python -m r53lb.probes.worker`) and probes
shard 0 itself; every other node's liveness checks go to the worker owning its shard.
The main process still schedules every probe and folds every result: a worker only speaks
the protocol (the sockets, TLS and parsing: most of a probe's CPU) and answers with the
result.

The wire is the worker's stdin and stdout: frames of a 4-byte length and a pickled list.
Main to worker: ("job", jid, Job) once per job and worker, ("run", rid, jid) per probe,
("reset",) after a reload. Worker to main: (rid, result fields) per probe. Messages that
fall due in the same turn of the event loop share one frame (one write, one read).

A worker's death is an error in the log and in `r53lb_probe_worker_restarts_total`,
never a gap in probing: the probes it had in flight are run again in the main process,
its shard is probed there until the worker is back, and it is restarted (backing off when
it dies again at once). A worker that holds a probe past its deadline plus STALL_GRACE is
killed and treated the same way. A worker exits when its stdin closes (the main process
stopped, however it stopped); it ignores SIGTERM and SIGINT, which systemd and a terminal
send to the whole group: the main process decides when probing ends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import pickle
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from .base import ProbeResult
from .runner import Job, run_one

__all__ = ["AUTO_RATE", "ProbeWorkers", "WorkerLost", "processes_for"]

log = logging.getLogger("r53lb.probes.workers")

AUTO_RATE = 2500.0  # probes per second one process carries before `auto` adds a worker
STALL_GRACE = 5.0  # a probe held this long past its deadline means the worker is stuck
RESTART_BACKOFF = (0.2, 30.0)  # first and longest wait before restarting a worker that died at once
STABLE_AFTER = 30.0  # a worker that ran this long before dying is restarted without waiting
_HEADER = struct.Struct("!I")
# Nodes a worker probes for each one the main process probes: in the 4,000-node bench a worker
# spent ~235 µs per probe and the main process ~115 µs per probe of any shard on scheduling,
# folding and the pipe, so a quarter of the nodes here evens the two cores out.
WORKER_WEIGHT = 3


def processes_for(setting: int | str, probes_per_second: float, cpus: int | None = None) -> int:
    """How many processes probe: the setting, or with `auto` one per AUTO_RATE probes/s, at most one per core."""
    if setting != "auto":
        return max(1, int(setting))
    cores = cpus or len(os.sched_getaffinity(0)) or 1  # the cores this process may run on
    return max(1, min(cores, math.ceil(probes_per_second / AUTO_RATE)))


class WorkerLost(Exception):
    """The worker running a probe died or stalled: the probe is run again in the main process."""


def frame(messages: list[Any]) -> bytes:
    body = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class Frames:
    """Splits a byte stream into the pickled lists it carries."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self.buf += data
        out: list[Any] = []
        while len(self.buf) >= 4:
            (n,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                break
            out.extend(pickle.loads(bytes(self.buf[4:4 + n])))
            del self.buf[:4 + n]
        return out


def pack(r: ProbeResult) -> tuple[Any, ...]:
    """A result as the tuple of its fields (what crosses the pipe)."""
    return tuple(r.__dict__.values())


class _Slot(asyncio.SubprocessProtocol):
    """One worker process: its pipe, the probes it has in flight, its restarts."""

    def __init__(self, owner: "ProbeWorkers", index: int) -> None:
        self.owner = owner
        self.index = index
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.pid: int | None = None
        self.alive = False
        self.started = 0.0
        self.known: set[int] = set()  # job ids this worker has been sent
        self.inflight: dict[int, tuple[asyncio.Future[ProbeResult], Job, float]] = {}
        self.out: list[Any] = []
        self.flush_due = False
        self.frames = Frames()
        self.backoff = RESTART_BACKOFF[0]
        self.answered = 0  # probes this slot's worker (the current one) answered

    # --- subprocess protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stdin = self.transport.get_pipe_transport(0)  # type: ignore[union-attr, assignment]
        self.pid = self.transport.get_pid()  # type: ignore[union-attr]
        self.frames = Frames()
        self.answered = 0
        self.alive, self.started = True, time.monotonic()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        try:
            answers = self.frames.feed(data)
        except Exception as e:  # a garbled stream is a broken worker
            log.error("probe worker %d (pid %s) sent an unreadable answer (%s): restarting it", self.index, self.pid, e)
            self.kill()
            return
        self.answered += len(answers)
        for rid, fields in answers:
            entry = self.inflight.pop(rid, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(ProbeResult(*fields))

    def process_exited(self) -> None:
        code = self.transport.get_returncode() if self.transport is not None else None
        self._lost(code)

    # --- sending -----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        self.out.append(message)
        if not self.flush_due:
            self.flush_due = True
            self.owner.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_due = False
        if self.out and self.alive and self.stdin is not None and not self.stdin.is_closing():
            self.stdin.write(frame(self.out))
        self.out = []

    def kill(self) -> None:
        if self.transport is not None and self.alive:
            try:
                self.transport.kill()
            except ProcessLookupError:
                pass

    # --- death and restarts --------------------------------------------------------------------

    def _lost(self, code: int | None) -> None:
        if not self.alive:
            return
        self.alive = False
        lost, self.inflight = self.inflight, {}
        for fut, _, _ in lost.values():
            if not fut.done():
                fut.set_exception(WorkerLost())
        self.known = set()
        self.out = []
        if self.owner.closing:
            return
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        lived = time.monotonic() - self.started
        wait = 0.0 if lived >= STABLE_AFTER else self.backoff
        self.backoff = RESTART_BACKOFF[0] if lived >= STABLE_AFTER else min(self.backoff * 2, RESTART_BACKOFF[1])
        log.error("probe worker %d (pid %s) died (%s) after %.0fs: %d probe(s) in flight are run again here, "
                  "its shard is probed here until it is back; restarting it%s", self.index, self.pid, how, lived,
                  len(lost), f" in {wait:g}s" if wait else "")
        self.owner.on_restart()
        self.owner.loop.call_later(wait, self.owner.restart, self)

    def check_stalls(self, now: float) -> None:
        for _, job, sent in self.inflight.values():
            if now - sent > job.deadline + STALL_GRACE:
                log.error("probe worker %d (pid %s) held a probe of %s/%s for %.0fs (deadline %gs): killing it",
                          self.index, self.pid, job.target.pool, job.target.node, now - sent, job.deadline)
                self.kill()
                return


class ProbeWorkers:
    """`processes` probing processes in all: this one (shard 0) and `processes - 1` workers."""

    def __init__(self, processes: int, on_restart: Callable[[], None] | None = None) -> None:
        self.processes = max(1, processes)
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.slots = [_Slot(self, i) for i in range(1, self.processes)]
        self.on_restart: Callable[[], None] = on_restart or (lambda: None)
        self._jids: dict[int, tuple[Job, int]] = {}  # id(job) -> (job, its id on the wire)
        self._next_jid = itertools.count(1)
        self._next_rid = itertools.count(1)
        self._watch: asyncio.TimerHandle | None = None
        # One node here, then WORKER_WEIGHT to each worker in turn.
        self._cycle = [0] + [w for _ in range(WORKER_WEIGHT) for w in range(1, self.processes)]

    @property
    def pids(self) -> list[int | None]:
        return [s.pid if s.alive else None for s in self.slots]

    async def start(self) -> "ProbeWorkers":
        for slot in self.slots:
            await self._spawn(slot)
        if self.slots:
            self._watch = self.loop.call_later(1.0, self._check_stalls)
        return self

    async def _spawn(self, slot: _Slot) -> None:
        try:
            await self.loop.subprocess_exec(
                lambda: slot, sys.executable, "-m", "r53lb.probes.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
        except OSError as e:
            log.error("probe worker %d cannot start (%s): its shard is probed here; trying again in %gs",
                      slot.index, e, RESTART_BACKOFF[1])
            self.loop.call_later(RESTART_BACKOFF[1], self.restart, slot)

    def restart(self, slot: _Slot) -> None:
        if self.closing or slot.alive:
            return
        task = self.loop.create_task(self._spawn(slot))
        task.add_done_callback(lambda t: t.exception())  # _spawn logs its own failure

    def _check_stalls(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.alive:
                slot.check_stalls(now)
        if not self.closing:
            self._watch = self.loop.call_later(1.0, self._check_stalls)

    def shard_of(self, index: int) -> int:
        """The shard of the index-th node of the config. This process also schedules and folds
        every node, so it probes one node for every WORKER_WEIGHT a worker probes."""
        return self._cycle[index % len(self._cycle)]

    def reset(self) -> None:
        """After a reload: the old jobs are forgotten here and in every worker."""
        self._jids = {}
        for slot in self.slots:
            if slot.alive:
                slot.known = set()
                slot.send(("reset",))

    async def run(self, job: Job, shard: int) -> ProbeResult:
        """The job's result, from the process owning `shard` (this one for shard 0, or while its worker is down)."""
        slot = self.slots[shard - 1] if 0 < shard <= len(self.slots) else None
        if slot is None or not slot.alive:
            return await run_one(job)
        entry = self._jids.get(id(job))
        if entry is None or entry[0] is not job:
            entry = self._jids[id(job)] = (job, next(self._next_jid))
        jid = entry[1]
        if jid not in slot.known:
            slot.known.add(jid)
            slot.send(("job", jid, job))
        rid = next(self._next_rid)
        fut: asyncio.Future[ProbeResult] = self.loop.create_future()
        slot.inflight[rid] = (fut, job, time.monotonic())
        slot.send(("run", rid, jid))
        try:
            return await fut
        except WorkerLost:
            return await run_one(job)
        finally:
            slot.inflight.pop(rid, None)

    async def close(self, grace: float = 5.0) -> None:
        """Close the workers' stdin (they exit at EOF); kill the ones still there after `grace`."""
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
        for slot in self.slots:
            if slot.stdin is not None and not slot.stdin.is_closing():
                slot.flush()
                slot.stdin.close()
        deadline = time.monotonic() + grace
        for slot in self.slots:
            t = slot.transport
            if t is None:
                continue
            while t.get_returncode() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if t.get_returncode() is None:
                slot.kill()
            t.close()
