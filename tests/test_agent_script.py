"""deploy/agent/postfix-queue-agent: its arithmetic on a fake queue, and end to end behind socket activation."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from programs import require
from r53lb.config import AgentCheck
from r53lb.probes.agent import probe
from r53lb.probes.base import ProbeResult, Target

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "agent" / "postfix-queue-agent"
BOUNDS = {"LOW": "10", "HIGH": "50", "MIN_SHARE": "10", "DRAIN": "80"}


def queue(root: Path, **counts: int) -> Path:
    """A Postfix-like queue directory with `counts` files per queue (hashed subdirectories, as Postfix makes them)."""
    for name in ("incoming", "active", "deferred", "maildrop", "hold"):
        (root / name / "A").mkdir(parents=True, exist_ok=True)
        for i in range(counts.get(name, 0)):
            (root / name / "A" / f"{name}{i:05d}").touch()
    return root


def agent(env: dict[str, str]) -> str:
    sh = require("sh", "dash")
    out = subprocess.run([sh, str(SCRIPT)], env={"PATH": os.environ["PATH"], **BOUNDS, **env},
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout


@pytest.mark.parametrize("counts, line", [
    ({}, "ready 100% # queue 0\n"),
    ({"active": 10}, "ready 100% # queue 10\n"),
    ({"active": 5, "deferred": 25}, "ready 55% # queue 30\n"),  # halfway from 10 to 50: halfway from 100% to 10%
    ({"deferred": 50}, "ready 10% # queue 50\n"),
    ({"deferred": 70}, "ready 10% # queue 70\n"),  # clamped at MIN_SHARE
    ({"incoming": 20, "deferred": 60}, "drain # queue 80\n"),
    ({"maildrop": 30}, "ready 55% # queue 30\n"),
    ({"hold": 500, "active": 10}, "ready 100% # queue 10\n"),  # held mail is not load
])
def test_queue_depth_to_share(tmp_path: Path, counts: dict[str, int], line: str) -> None:
    assert agent({"QUEUE_DIR": str(queue(tmp_path, **counts))}) == line


def test_unreadable_queue_says_nothing(tmp_path: Path) -> None:
    assert agent({"QUEUE_DIR": str(tmp_path / "missing")}) == "# cannot read the queue\n"


def test_postqueue_mode(tmp_path: Path) -> None:
    fake = tmp_path / "postqueue"
    lines = [f'{{"queue_name": "{q}", "queue_id": "ID{i}"}}' for i, q in
             enumerate(["deferred"] * 25 + ["active"] * 5 + ["hold"] * 40)]
    fake.write_text("#!/bin/sh\n[ \"$1\" = -j ] || exit 2\ncat <<'END'\n" + "\n".join(lines) + "\nEND\n")
    fake.chmod(0o755)
    assert agent({"POSTQUEUE": str(fake)}) == "ready 55% # queue 30\n"
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'postqueue: fatal: Queue report unavailable - mail system is down' >&2\nexit 69\n")
    broken.chmod(0o755)
    assert agent({"POSTQUEUE": str(broken)}) == "# cannot read the queue\n"


# --- end to end: systemd socket activation (Accept=yes) -> r53lb's agent check --------------

@pytest.fixture
def activated(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The script behind `systemd-socket-activate --inetd --accept`, as the shipped .socket runs it."""
    tool = require("systemd-socket-activate", "systemd")
    spool = queue(tmp_path / "spool")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = [f"--setenv={k}={v}" for k, v in {**BOUNDS, "QUEUE_DIR": str(spool)}.items()]
    proc = subprocess.Popen([tool, f"--listen=127.0.0.1:{port}", "--accept", "--inetd", *env,
                             require("sh", "dash"), str(SCRIPT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while True:  # listening yet?
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
                time.sleep(0.05)
        yield port, spool
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def check(port: int) -> ProbeResult:
    return asyncio.run(probe(Target("mta", "mx1", "127.0.0.1"), AgentCheck(port=port), 2.0))


def test_end_to_end_behind_socket_activation(activated: tuple[int, Path]) -> None:
    port, spool = activated
    r = check(port)
    assert (r.status, r.share, r.agent_state, r.detail) == ("ok", 1.0, "ready", "agent: ready 100% (queue 0)")
    queue(spool, deferred=30)
    r = check(port)
    assert (r.status, r.share, r.detail) == ("ok", 0.55, "agent: ready 55% (queue 30)")
    queue(spool, deferred=90)
    r = check(port)
    assert (r.status, r.agent_state, r.detail) == ("ok", "drain", "agent: drain (queue 90)")
    (spool / "active" / "A").rename(spool / "gone")
    (spool / "active").rmdir()
    r = check(port)
    assert (r.status, r.agent) == ("unknown", None)
    assert r.detail == f"agent port {port}: agent sent an empty line (cannot read the queue)"


def test_recipe_configs_load() -> None:
    """Every config block of docs/recipes.md is a valid config."""
    import re

    from r53lb.config import loads

    text = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("pools:")]
    assert len(blocks) == 2
    for block in blocks:
        assert loads(block, "docs/recipes.md").pools[0].name == "smtp-outbound"
