"""The status server (/metrics, /healthz, the status page) under hostile and careless clients.

The HTTP port is an operator's tool reached through `ssh -L`: it answers only the Host names it
is configured for (DNS rebinding), shows AWS errors by class, stays valid JSON whatever a metric
reads, and is bounded in threads, descriptors, header size and time whatever the clients do:
a node that dies meanwhile is drained on time (the daemon against the strict moto server).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from r53lb.config import ConfigError, loads
from r53lb.engine.httpserver import HEADER_LIMIT, MAX_CONNECTIONS, WORKERS, host_allowed
from r53lb.engine.metrics import Metrics, MetricsServer
from r53lb.engine.web import public
from test_daemon import BUDGET, Fleet, fleet, wait_until  # noqa: F401
from test_status_page import start

DOC = {"generated_at": "2026-11-25T10:00:00+00:00", "hold": None, "zone_errors": {}, "pools": [], "nodes": [],
       "history": []}


def request(port: int, host: str | None, path: str = "/api/status", timeout: float = 10.0) -> tuple[int, bytes]:
    """One raw HTTP/1.1 request with exactly this Host header (None: none at all)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"GET {path} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "") + "\r\n"
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def answered(port: int, host: str | None, path: str = "/api/status") -> tuple[int, bytes]:
    """request(), or (0, b"") while the daemon does not listen yet."""
    try:
        return request(port, host, path)
    except OSError:
        return 0, b""


def strict_json(body: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(body, parse_constant=refuse)


# --- Host allow-list -------------------------------------------------------------------------


def test_only_configured_host_names_are_answered() -> None:
    srv = MetricsServer(Metrics(), lambda: (True, "ok"), "127.0.0.1", 0, status=lambda: DOC,
                        allowed_hosts=("ctl-1.example.net",)).start()
    try:
        for host in ("evil.example", "evil.example:9464", "127.0.0.1.evil.example", "", "ctl-1.example.net.evil"):
            status, body = request(srv.port, host)
            assert status == 421, host
            assert b"--allowed-host" in body
        for host in ("localhost", f"localhost:{srv.port}", "localhost:8080", "127.0.0.1", f"127.0.0.1:{srv.port}",
                     "[::1]:9464", "CTL-1.example.net:9464", "ctl-1.example.net.", "10.1.2.3:9464", None):
            status, body = request(srv.port, host)
            assert status == 200, host
            assert strict_json(body) == DOC
        # Every path: /metrics and /healthz say as much about the fleet as the page.
        assert request(srv.port, "evil.example", "/metrics")[0] == 421
        assert request(srv.port, "evil.example", "/healthz")[0] == 421
        assert request(srv.port, "localhost", "/healthz") == (200, b"ok: ok\n")
    finally:
        srv.stop()


def test_host_names_come_from_the_config_and_the_command_line(tmp_path: Path) -> None:
    assert host_allowed("r53lb.ops.example:9464", frozenset({"r53lb.ops.example"}))
    assert not host_allowed("r53lb.ops.example.attacker.test", frozenset({"r53lb.ops.example"}))
    base = {"pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com",
                       "checks": [{"tcp": {"port": 25}}], "nodes": [{"id": "a", "address": "192.0.2.1"}]}]}
    cfg = loads(yaml.safe_dump({**base, "status_page": {"hosts": ["R53LB.ops.example."]}}))
    assert cfg.status_page.hosts == ("r53lb.ops.example",)
    with pytest.raises(ConfigError, match=r"status_page\.hosts.*not a host name"):
        loads(yaml.safe_dump({**base, "status_page": {"hosts": ["bad name!"]}}))
    config = tmp_path / "r53lb.yaml"
    config.write_text(yaml.safe_dump(base))
    p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(config), "run", "--allowed-host", "bad name!"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--allowed-host" in p.stderr and "not a host name" in p.stderr
    assert "Traceback" not in p.stderr


# --- what the page shows ---------------------------------------------------------------------


def test_a_metric_of_inf_or_nan_keeps_api_status_json() -> None:
    doc = {**DOC, "nodes": [{"signals": [{"check": "queue", "value": float("inf")},
                                         {"check": "lag", "value": float("nan")},
                                         {"check": "floor", "value": float("-inf")}]}]}
    srv = MetricsServer(Metrics(), lambda: (True, "ok"), "127.0.0.1", 0, status=lambda: doc).start()
    try:
        status, body = request(srv.port, "localhost")
        assert status == 200
        values = [s["value"] for s in strict_json(body)["nodes"][0]["signals"]]
        assert values == ["+Inf", "NaN", "-Inf"]  # as Prometheus writes them
    finally:
        srv.stop()


def test_no_arn_or_account_id_in_what_the_port_shows() -> None:
    error = ("route53: AccessDenied: User: arn:aws:sts::123456789012:assumed-role/r53lb-controller/i-0abc "
             "is not authorized to perform: route53:ListResourceRecordSets on resource: "
             "arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ")
    doc = public({**DOC, "history": [{"reason": f"zone example.com: apply failed: {error}"}], "weight": 50})
    text = json.dumps(doc)
    assert "123456789012" not in text and "assumed-role" not in text and "hostedzone/Z0" not in text
    assert "AccessDenied" in text and "not authorized" in text and doc["weight"] == 50


def test_route53_errors_are_shown_by_class(fleet: Fleet) -> None:  # noqa: F811
    arn = "arn:aws:sts::123456789012:assumed-role/r53lb-controller/i-0abc"
    fleet.server.fail("ListResourceRecordSets", 10_000, code="AccessDenied", status=403,
                      message=f"User: {arn} is not authorized to perform: route53:ListResourceRecordSets")
    d = start(fleet)
    port = int(d.metrics_url.rsplit(":", 1)[1])
    doc = wait_until("the zone error on the page", lambda: (
        (r := answered(port, "localhost"))[0] == 200 and (j := strict_json(r[1]))["zone_errors"] and j), timeout=30)
    assert doc["zone_errors"]["example.com"]["error"].startswith("AccessDenied")
    for path in ("/api/status", "/", "/healthz"):
        _, body = request(port, "localhost", path)
        assert b"123456789012" not in body and b"assumed-role" not in body, path
    assert "123456789012" in d.log()  # the operator's own log keeps the whole message


# --- bounded under load ----------------------------------------------------------------------


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(180)
def test_idle_slow_and_oversized_clients_cost_bounded_threads_and_a_dead_node_is_drained_on_time(
        fleet: Fleet) -> None:  # noqa: F811
    d = start(fleet)
    fleet.settled(d)
    port = int(d.metrics_url.rsplit(":", 1)[1])
    for _ in range(2 * WORKERS):  # every worker thread started: the baseline is the steady state
        assert request(port, "localhost", "/healthz")[0] == 200
    threads0, fds0 = threads_and_fds(d.proc.pid)
    clients: list[socket.socket] = []
    peak = [threads0, fds0]

    def watch() -> None:
        t, f = threads_and_fds(d.proc.pid)
        peak[0], peak[1] = max(peak[0], t), max(peak[1], f)

    try:
        for i in range(300):  # idle: connect, say nothing
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            if i % 50 == 0:
                watch()
        for _ in range(20):  # slow: half a request, then silence (slowloris)
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1")
            clients.append(s)
        big = b"X-Big: " + b"a" * (64 * 1024 - 9) + b"\r\n"
        for _ in range(10):  # oversized: 99 headers of 64 KB, then stall
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            s.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            try:
                for _ in range(99):
                    s.send(big)
            except OSError:  # refused with 431 and closed, or the window is full: both fine
                pass
            clients.append(s)
        watch()

        # Meanwhile a node dies: the controller drains it within the usual budget.
        fleet.smtp["hlb-2"].set_mode("refuse")
        started = time.monotonic()
        wait_until("hlb-2 at weight 0", lambda: (watch(), fleet.weights().get("hlb-2") == 0)[1],
                   timeout=BUDGET + 5, every=0.05)
        took = time.monotonic() - started
        print(f"\ntime to DNS under 330 idle/slow/oversized connections: {took:.2f}s (budget {BUDGET:.1f}s); "
              f"threads {threads0} -> {peak[0]}, fds {fds0} -> {peak[1]}")
        assert took <= BUDGET
        assert fleet.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50}

        # A good request still gets an answer, and a rebinding page still does not.
        status, body = request(port, "localhost:9464")
        assert status == 200 and strict_json(body)["nodes"]
        assert request(port, "evil.example:9464")[0] == 421
        watch()
        assert peak[0] <= threads0 + 1, f"threads grew from {threads0} to {peak[0]}"
        assert peak[1] <= fds0 + MAX_CONNECTIONS + 4, f"descriptors grew from {fds0} to {peak[1]}"
        assert "Traceback" not in d.log()
    finally:
        for s in clients:
            s.close()
    assert d.stop() == 0


def test_an_oversized_request_gets_431_and_a_silent_one_408() -> None:
    from r53lb.engine.httpserver import HttpServer

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\n"]

    srv = HttpServer(app, "127.0.0.1", 0, header_timeout=1.0).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * HEADER_LIMIT + b"\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 431 ")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            started = time.monotonic()
            assert s.recv(100).startswith(b"HTTP/1.1 408 ")
            assert 0.5 < time.monotonic() - started < 5
        assert request(srv.port, "localhost", "/") == (200, b"hello\n")
        wait_until("every connection closed", lambda: srv.open_connections() == 0, timeout=5)
    finally:
        srv.stop()
