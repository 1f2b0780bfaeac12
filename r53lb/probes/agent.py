"""agent: the node reports its own share and state, in HAProxy's agent-check protocol.

The check connects to `port` on the node's probe address, writes `send` when given
(HAProxy's agent-send), and reads one line: words separated by spaces, tabs or commas,
case-insensitive, ended by CR or LF (HAProxy ignores a line the agent did not finish, and
so do we). The words, as HAProxy's configuration manual lists them:

- `75%`: a share of the node's weight (the last one wins);
- `ready`, `drain`, `maint`: the administrative state;
- `up`, `down`, `fail`, `stopped` (HAProxy's manual also spells it `failed`): the operational state;
- `maxconn:30`: understood and ignored (DNS has no connection limit);
- `#`: the rest of the line is the agent's description (`down # disk full`, `down#disk full`).

A line is judged on its own by `probe` (what `r53lb probe` shows), while HAProxy's rule
that a word left out keeps its previous value is `merge_agent`, a pure fold the engine
applies reply after reply. An agent that cannot be reached, says nothing, or says only
words outside the grammar is *unknown*: HAProxy does not count a failed agent connection
as an error either, since liveness is the other checks' job.
"""

from __future__ import annotations

import asyncio
import os
import re
import time

from ..config import AgentCheck
from ..core.signals import _ADMIN, _HEALTH, AdminState, AgentReply, AgentState, HealthWord, merge_agent
from .base import Failure, ProbeResult, Status, Target, fmt_duration, trim

__all__ = ["probe", "parse_line", "merge_agent", "AgentReply", "AgentState"]  # the last three live in core/signals.py


# One agent line is a handful of words; HAProxy reads it into one 16 KiB buffer. Anything
# longer without an end of line is a broken or hostile agent, not a longer answer.
MAX_LINE_BYTES = 4096

_SEPARATORS = " \t,"
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def parse_line(line: str) -> AgentReply:
    """HAProxy's agent grammar -> AgentReply. Never raises: unknown words are collected."""
    share: float | None = None
    capped = False
    admin: AdminState | None = None
    health: HealthWord | None = None
    description = ""
    ignored: list[str] = []
    unknown: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in _SEPARATORS:
            i += 1
            continue
        if line[i] == "#":
            description = trim(line[i + 1:], 120)  # it goes into reasons, logs and the page as it is
            break
        j = i
        # HAProxy's parser wants '#' at the start of a word, its manual only "after a sharp":
        # `down#disk full` is read as the manual says, rather than dropped as a bad word.
        while j < n and line[j] not in _SEPARATORS and line[j] != "#":
            j += 1
        word, low = line[i:j], line[i:j].lower()
        i = j
        if low in _HEALTH:
            health = _HEALTH[low]
        elif low in _ADMIN:
            admin = low  # type: ignore[assignment]
        elif low.startswith("maxconn:"):
            ignored.append(word)
        elif m := _PERCENT.match(low):
            pct = float(m.group(1))
            capped = pct > 100
            share = min(pct, 100.0) / 100.0
        else:
            unknown.append(word)
    return AgentReply(share, admin, health, description, tuple(ignored), tuple(unknown), capped)



def judge(reply: AgentReply, line: str) -> tuple[Status, str]:
    """One reply on its own -> status and detail (the engine folds replies with merge_agent)."""
    extra = ""
    if reply.unknown:
        extra += f"; ignored unknown word{'s' if len(reply.unknown) > 1 else ''} {trim(' '.join(reply.unknown), 60)!r}"
    if reply.capped:
        extra += "; share capped at 100%"
    if not reply.says_anything:
        if reply.unknown:
            return "unknown", f"agent said {trim(line, 80)!r}: not in HAProxy's agent grammar"
        if reply.ignored:
            return "unknown", f"agent said only {trim(' '.join(reply.ignored), 60)}: nothing that sets a weight"
        return "unknown", "agent sent an empty line" + (f" ({trim(reply.description, 80)})" if reply.description else "")
    state = merge_agent(None, reply)
    said = [w for w in (reply.admin, reply.health) if w is not None]
    if reply.share is not None:
        said.append(f"{reply.share * 100:g}%")
    text = "agent: " + " ".join(said) + (f" ({trim(reply.description, 120)})" if reply.description else "")
    return state.status, text + extra


async def probe(target: Target, spec: AgentCheck, timeout: float) -> ProbeResult:
    started = time.perf_counter()
    phase = "connect"
    where = f"agent port {spec.port}"

    def result(status: Status, detail: str, reply: AgentReply | None = None) -> ProbeResult:
        ms = (time.perf_counter() - started) * 1000
        return ProbeResult(target.pool, target.node, "agent", status, ms, detail, phase,
                           phases={"agent": ms},
                           share=None if reply is None else reply.share,
                           agent_state=None if reply is None else reply.word,
                           agent=reply, failure=Failure.SIGNAL if status == "fail" else None)

    buf = bytearray()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target.address, spec.port, limit=MAX_LINE_BYTES)
            if spec.send:
                phase = "send"
                writer.write(spec.send.encode("utf-8"))
                await writer.drain()
            phase = "read"
            while True:
                chunk = await reader.read(MAX_LINE_BYTES + 1 - len(buf))
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf or b"\r" in buf or len(buf) > MAX_LINE_BYTES:
                    break
    except TimeoutError:
        got = f" (got {len(buf)} bytes, no end of line)" if buf else ""
        what = "no connection" if phase == "connect" else "no complete line"
        return result("unknown", f"{where}: {what} within {fmt_duration(timeout)}{got}")
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else (e.strerror or str(e) or type(e).__name__)
        return result("unknown", f"{where}: {phase}: {reason}")
    finally:
        if writer is not None:
            writer.close()  # not awaited: the agent's close handshake must not cost the deadline
    end = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
    if end < 0:
        if len(buf) > MAX_LINE_BYTES:
            return result("unknown", f"{where}: no end of line in the first {MAX_LINE_BYTES} bytes")
        if not buf:
            return result("unknown", f"{where}: the agent closed the connection without a reply")
        return result("unknown", f"{where}: incomplete line {trim(buf.decode('utf-8', 'replace'), 60)!r} "
                                 "(the agent closed the connection before the end of line)")
    line = buf[:end].decode("utf-8", "replace")
    reply = parse_line(line)
    status, detail = judge(reply, line)
    if status == "unknown":
        return result(status, f"{where}: {detail}")
    return result(status, detail, reply)
