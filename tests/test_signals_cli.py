"""`r53lb probe --json` with the signal checks: agent and prometheus verdicts, and the exit code."""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import yaml


class Agent:
    """A loopback agent answering `line` to every connection."""

    def __init__(self) -> None:
        self.line = b"ready\n"
        agent = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(agent.line)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent() -> Iterator[Agent]:
    a = Agent()
    yield a
    a.stop()


def probe_json(tmp_path: Path, agent_port: int) -> tuple[int, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens: Prometheus "down"
    cfg = {
        "defaults": {"timeout": "1s"},
        "pools": [{
            "name": "mta", "zone": "example.test", "record": "mx.example.test",
            "checks": [
                {"agent": {"port": agent_port}},
                {"prometheus": {"url": f"http://127.0.0.1:{closed}", "query": 'deferral{node="{id}"}',
                                "quarantine_above": 0.05}},
            ],
            "nodes": [{"id": "mx1", "address": "127.0.0.1"}],
        }],
    }
    path = tmp_path / "r53lb.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(path), "probe", "--json"],
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, json.loads(proc.stdout)


def test_drain_and_unknown_exit_0(tmp_path: Path, agent: Agent) -> None:
    agent.line = b"drain 40% # queue 12000\n"
    code, out = probe_json(tmp_path, agent.port)
    by_check = {r["check"]: r for r in out["results"]}
    assert code == 0, out
    a, p = by_check["agent"], by_check["prometheus"]
    assert (a["status"], a["ok"], a["share"], a["agent_state"]) == ("ok", True, 0.4, "drain")
    assert a["detail"] == "agent: drain 40% (queue 12000)"
    assert a["agent"]["admin"] == "drain"
    assert (p["status"], p["ok"], p["value"]) == ("unknown", None, None)
    assert p["detail"].endswith(": connection refused")


def test_agent_down_exits_3(tmp_path: Path, agent: Agent) -> None:
    agent.line = b"down # disk full\n"
    code, out = probe_json(tmp_path, agent.port)
    a = next(r for r in out["results"] if r["check"] == "agent")
    assert code == 3
    assert (a["status"], a["agent_state"], a["detail"]) == ("fail", "down", "agent: down (disk full)")
