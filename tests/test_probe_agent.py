"""The agent check (HAProxy's agent-check protocol) against loopback TCP agents, and merge_agent."""

from __future__ import annotations

import asyncio
import re
import time
import tracemalloc
from typing import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from r53lb.config import AgentCheck, Check, ConfigError, loads
from r53lb.probes.agent import AgentReply, AgentState, merge_agent, parse_line, probe
from r53lb.probes.base import ProbeResult, Target
from r53lb.probes.runner import Job, run_one

TIMEOUT = 1.0
MARGIN = 0.5

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def reply(data: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return handler


async def with_agent(handler: Handler, check: dict | None = None, timeout: float = TIMEOUT) -> ProbeResult:
    """Run one agent check against `handler` listening on a random loopback port."""
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        spec = AgentCheck(port=port, **(check or {}))
        target = Target("mx", "n1", "127.0.0.1")
        return await probe(target, spec, timeout)
    finally:
        server.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        await asyncio.sleep(0)


# --- every answer in HAProxy's grammar ----------------------------------------------------

# line -> (status, share, agent_state, detail pattern)
GRAMMAR: dict[bytes, tuple[str, float | None, str | None, str]] = {
    b"75%\n": ("ok", 0.75, None, r"^agent: 75%$"),
    b"100%\r\n": ("ok", 1.0, None, r"^agent: 100%$"),
    b"0%\n": ("ok", 0.0, None, r"^agent: 0%$"),
    b"150%\n": ("ok", 1.0, None, r"^agent: 100%; share capped at 100%$"),
    b"ready\n": ("ok", None, "ready", r"^agent: ready$"),
    b"drain\n": ("ok", None, "drain", r"^agent: drain$"),
    b"maint\n": ("fail", None, "maint", r"^agent: maint$"),
    b"up\n": ("ok", None, "up", r"^agent: up$"),
    b"down\n": ("fail", None, "down", r"^agent: down$"),
    b"fail\n": ("fail", None, "down", r"^agent: fail$"),
    b"failed\n": ("fail", None, "down", r"^agent: fail$"),
    b"stopped\n": ("fail", None, "down", r"^agent: stopped$"),
    b"down # disk full on /var/spool\n": ("fail", None, "down", r"^agent: down \(disk full on /var/spool\)$"),
    b"stopped#planned upgrade\n": ("fail", None, "down", r"^agent: stopped \(planned upgrade\)$"),
    b"DRAIN\n": ("ok", None, "drain", r"^agent: drain$"),
    b"up 50%\n": ("ok", 0.5, "up", r"^agent: up 50%$"),
    b"ready,40%,maxconn:30\n": ("ok", 0.4, "ready", r"^agent: ready 40%$"),
    b"up\tdrain 20%\n": ("ok", 0.2, "drain", r"^agent: drain up 20%$"),
    b"maint 75% # hardware swap\n": ("fail", 0.75, "maint", r"^agent: maint 75% \(hardware swap\)$"),
    b"10% 30%\n": ("ok", 0.3, None, r"^agent: 30%$"),  # the last share wins, as in HAProxy
    b"75% bogus\n": ("ok", 0.75, None, r"^agent: 75%; ignored unknown word 'bogus'$"),
    b"  , 60%  \n": ("ok", 0.6, None, r"^agent: 60%$"),
    b"50%\nmaint\n": ("ok", 0.5, None, r"^agent: 50%$"),  # one line only
}


@pytest.mark.parametrize("line", list(GRAMMAR), ids=[k.decode().strip().replace(" ", "_") or "blank" for k in GRAMMAR])
def test_grammar(line: bytes) -> None:
    status, share, state, pattern = GRAMMAR[line]
    r = asyncio.run(with_agent(reply(line)))
    assert (r.check, r.status, r.share, r.agent_state) == ("agent", status, share, state), r.detail
    assert re.search(pattern, r.detail), r.detail
    assert r.agent is not None and r.agent == parse_line(line.splitlines()[0].decode())


# --- unknown: nothing usable, within the deadline -------------------------------------------

async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for ch in b"75% # slowly":
        writer.write(bytes([ch]))
        await writer.drain()
        await asyncio.sleep(0.2)


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    chunk = b"9" * 65536
    while True:
        writer.write(chunk)
        await writer.drain()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    import socket
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


UNKNOWN: dict[str, tuple[Handler, str]] = {
    "no_answer": (silent, r"^agent port \d+: no complete line within 1s$"),
    "slow_drip": (drip, r"^agent port \d+: no complete line within 1s \(got [1-6] bytes, no end of line\)$"),
    "endless_line": (endless, r"^agent port \d+: no end of line in the first 4096 bytes$"),
    "closed": (close_at_once, r"^agent port \d+: the agent closed the connection without a reply$"),
    "reset": (reset, r"^agent port \d+: (read: connection reset by peer|the agent closed the connection without a reply)$"),
    "incomplete": (reply(b"75%"), r"^agent port \d+: incomplete line '75%' \(the agent closed the connection"),
    "garbage": (reply(b"hello world\n"), r"^agent port \d+: agent said 'hello world': not in HAProxy's agent grammar$"),
    "binary": (reply(b"\x00\xff\xfe\x01 \x80\n"), r"^agent port \d+: agent said '.*': not in HAProxy's agent grammar$"),
    "empty_line": (reply(b"\n"), r"^agent port \d+: agent sent an empty line$"),
    "only_maxconn": (reply(b"maxconn:30\n"), r"^agent port \d+: agent said only maxconn:30: nothing that sets a weight$"),
    "bad_percent": (reply(b"75.x%\n"), r"not in HAProxy's agent grammar$"),
    "http_server": (reply(b"HTTP/1.1 400 Bad Request\r\n\r\n"), r"not in HAProxy's agent grammar$"),
}


@pytest.mark.parametrize("name", list(UNKNOWN))
def test_unknown_within_the_deadline(name: str) -> None:
    handler, pattern = UNKNOWN[name]
    tracemalloc.start()
    started = time.perf_counter()
    r = asyncio.run(with_agent(handler))
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert r.status == "unknown", r.detail
    assert r.share is None and r.agent_state is None and r.agent is None
    assert re.search(pattern, r.detail), r.detail
    assert elapsed < TIMEOUT + MARGIN
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"  # an endless agent costs a socket buffer, not memory


def test_connection_refused_is_unknown() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        r = asyncio.run(probe(Target("mx", "n1", "127.0.0.1"), AgentCheck(port=port), TIMEOUT))
    assert r.status == "unknown"
    assert r.detail == f"agent port {port}: connect: connection refused"


def test_send_is_written_before_reading() -> None:
    """HAProxy's agent-send: one agent port can answer for several services."""
    async def per_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked = await reader.readline()
        writer.write({b"postfix\n": b"30%\n", b"dovecot\n": b"drain\n"}.get(asked, b"down # who?\n"))
        await writer.drain()
        writer.close()

    postfix = asyncio.run(with_agent(per_service, {"send": "postfix\n"}))
    dovecot = asyncio.run(with_agent(per_service, {"send": "dovecot\n"}))
    assert (postfix.status, postfix.share) == ("ok", 0.3)
    assert (dovecot.status, dovecot.agent_state) == ("ok", "drain")


def test_runner_dispatch_and_timeout_key() -> None:
    """Through the runner: the check's own timeout wins, and the result is a verdict, not an exception."""
    async def go() -> ProbeResult:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            check = Check.model_validate({"agent": {"port": port, "timeout": "300ms"}})
            return await run_one(Job(Target("mx", "n1", "127.0.0.1"), check, 10.0))
        finally:
            server.close()

    started = time.perf_counter()
    r = asyncio.run(go())
    assert time.perf_counter() - started < 1.0
    assert r.status == "unknown" and r.detail.endswith("no complete line within 300ms")


def test_config_errors_name_the_key() -> None:
    base = "pools: [{name: p, zone: example.com, record: mx.example.com, nodes: [{id: a, address: 192.0.2.1}], checks: [%s]}]"
    loads(base % "{agent: {port: 10000, send: \"mx\\n\", interval: 5s}}")
    with pytest.raises(ConfigError, match=r"^pools\[0\]\.checks\[0\]\.agent\.port: is required$"):
        loads(base % "{agent: {}}")
    with pytest.raises(ConfigError, match=r"^pools\[0\]\.checks\[0\]\.agent\.colour: unknown key$"):
        loads(base % "{agent: {port: 1, colour: red}}")


def test_to_json_carries_the_reply() -> None:
    r = asyncio.run(with_agent(reply(b"drain 40% # queue 12000\n")))
    d = r.to_json()
    assert d["ok"] is True and d["share"] == 0.4 and d["agent_state"] == "drain"
    assert d["agent"]["description"] == "queue 12000"


# --- merge_agent: HAProxy's "words left out keep their previous value" ----------------------

def test_merge_keeps_what_was_not_said() -> None:
    s = merge_agent(None, parse_line("down # disk full"))
    assert (s.status, s.reason) == ("fail", "agent: down (disk full)")
    s = merge_agent(s, parse_line("75%"))  # a share alone does not bring it back up
    assert (s.status, s.share, s.reason) == ("fail", 0.75, "agent: down (disk full)")
    s = merge_agent(s, parse_line("up"))  # only the agent reverts its own down
    assert (s.status, s.weight_share, s.reason) == ("ok", 0.75, "agent: 75%")
    s = merge_agent(s, parse_line("drain"))
    assert (s.status, s.weight_share, s.word) == ("ok", 0.0, "drain")
    s = merge_agent(s, parse_line("50%"))  # still draining: the share waits for ready
    assert (s.status, s.weight_share, s.share) == ("ok", 0.0, 0.5)
    s = merge_agent(s, parse_line("ready"))
    assert (s.status, s.weight_share, s.word) == ("ok", 0.5, "ready")
    s = merge_agent(s, parse_line("maint # swapping a disk"))
    assert (s.status, s.reason) == ("fail", "agent: maint (swapping a disk)")


def test_merge_unknown_changes_nothing() -> None:
    state = AgentState(share=0.3, admin="drain")
    assert merge_agent(state, None) is state
    assert merge_agent(state, parse_line("garbage words")) is state
    assert merge_agent(None, None) == AgentState()
    assert AgentState().reason == "agent: 100%"


replies = st.builds(
    AgentReply,
    share=st.none() | st.floats(0, 1),
    admin=st.none() | st.sampled_from(["ready", "drain", "maint"]),
    health=st.none() | st.sampled_from(["up", "down", "fail", "stopped"]),
    description=st.text(max_size=10),
)


@given(st.lists(st.none() | replies, max_size=12))
def test_merge_is_the_last_word_said(seq: list[AgentReply | None]) -> None:
    state = None
    for r in seq:
        state = merge_agent(state, r)
    final = state or AgentState()
    said = [r for r in seq if r is not None]

    def last(field: str, default: object) -> object:
        values = [getattr(r, field) for r in said if getattr(r, field) is not None]
        return values[-1] if values else default

    assert final.share == last("share", 1.0)
    assert final.admin == last("admin", "ready")
    assert final.health == last("health", "up")
    assert final.status == ("fail" if final.admin == "maint" or final.health != "up" else "ok")
    assert 0.0 <= final.weight_share <= 1.0
    if final.admin == "drain":
        assert final.weight_share == 0.0


@given(st.text(max_size=200))
def test_parse_line_never_raises(line: str) -> None:
    r = parse_line(line)
    assert r.share is None or 0.0 <= r.share <= 1.0


@given(replies)
def test_state_survives_the_store(reply: AgentReply) -> None:
    state = merge_agent(None, reply)
    assert AgentState.from_json(state.to_json()) == state


def test_state_from_a_damaged_store_is_the_default() -> None:
    assert AgentState.from_json(None) == AgentState()
    assert AgentState.from_json({"share": 7, "admin": "sleep", "health": True}) == AgentState()
    assert AgentState.from_json({"share": 0.5, "admin": "drain"}) == AgentState(share=0.5, admin="drain")


def test_a_huge_description_with_newlines_and_escape_codes_is_one_short_line() -> None:
    """The description goes into reasons, the log, alerts and the page: bounded, printable, one line."""
    text = "disk full\n\x1b[31mROOT\x1b[0m\r" + "x" * 600_000
    reply = parse_line("down # " + text)
    assert len(reply.description) <= 120 and reply.description.startswith("disk full ?[31mROOT?[0m x")
    state = merge_agent(None, reply)
    assert state.reason == f"agent: down ({reply.description})"
    assert all(ch.isprintable() for ch in state.reason) and len(state.reason) < 200
