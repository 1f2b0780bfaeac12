"""A real Prometheus (Debian's package) on loopback, scraping an exporter whose values the test sets.

`Exporter` serves the text exposition format from a dict on 127.0.0.1 (a random port);
`Prometheus` runs the server with a private data directory, scrapes the exporter every
second, and is ready when /-/ready says so. Tests wait for a value with `wait_for` (poll
with a deadline), never with a fixed sleep.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, TypeVar

from programs import require
from r53lb.demo.process import stop_process

T = TypeVar("T")

# bcrypt of "loopback-only-password" (cost 4: the tests want speed, not strength).
BASIC_AUTH_USER = "r53lb"
BASIC_AUTH_PASSWORD = "loopback-only-password"
BASIC_AUTH_HASH = "$2b$04$KCNX01R1GNv1EwCara5q7ubG4PDZ8MF9U66r4idso1ToS1MKvSHMe"


def _number(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class Exporter:
    """Serves `series -> value` (e.g. 'mail_deferral_rate{node="n1"}': 0.01) as /metrics."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with exporter._lock:
                    body = "".join(f"{k} {_number(v)}\n" for k, v in exporter.values.items()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="exporter")
        self._thread.start()

    def set(self, series: str, value: float) -> None:
        with self._lock:
            self.values[series] = value

    def remove(self, series: str) -> None:
        with self._lock:
            self.values.pop(series, None)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """One Prometheus server on 127.0.0.1, its data in `workdir`, scraping `targets` every second."""

    def __init__(self, workdir: Path, targets: list[str], basic_auth: bool = False) -> None:
        self.binary = require("prometheus", "prometheus")
        self.workdir = workdir
        self.targets = targets
        self.basic_auth = basic_auth
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, deadline: float = 20.0) -> "Prometheus":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: exporter\n    static_configs: [{{targets: [{targets}]}}]\n"
        )
        args = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                "--log.level=warn"]
        if self.basic_auth:
            web = self.workdir / "web.yml"
            web.write_text(f"basic_auth_users:\n  {BASIC_AUTH_USER}: '{BASIC_AUTH_HASH}'\n")
            args.append(f"--web.config.file={web}")
        log = (self.workdir / "prometheus.log").open("wb")
        end = time.monotonic() + deadline
        for _ in range(5):  # another process may take the free port between probe and bind
            self.port = _free_port()
            self.proc = subprocess.Popen(args + [f"--web.listen-address=127.0.0.1:{self.port}"],
                                         stdout=log, stderr=subprocess.STDOUT)
            while time.monotonic() < end and self.proc.poll() is None:
                if self._ready():
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None:
                break
        self.stop()
        tail = (self.workdir / "prometheus.log").read_text(errors="replace")[-600:]
        raise RuntimeError(f"prometheus did not become ready within {deadline:g}s: {tail}")

    def _ready(self) -> bool:
        request = urllib.request.Request(f"{self.url}/-/ready")
        if self.basic_auth:
            import base64

            token = base64.b64encode(f"{BASIC_AUTH_USER}:{BASIC_AUTH_PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=0.5) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_scraped(self, deadline: float = 15.0) -> None:
        """Until every target has been scraped once (`up` has a sample for each)."""
        import json

        def count() -> int:
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/query?query=up", timeout=1) as response:
                    return len(json.load(response)["data"]["result"])
            except (OSError, ValueError, KeyError):
                return 0

        if wait_for(count, lambda n: n >= len(self.targets), deadline, every=0.2) < len(self.targets):
            raise RuntimeError(f"prometheus scraped nothing within {deadline:g}s")

    def stop(self) -> None:
        stop_process(self.proc, 10)


def wait_for(fn: Callable[[], T], accept: Callable[[T], bool], deadline: float = 10.0,
             every: float = 0.1) -> T:
    """Call `fn` until `accept` says yes or the deadline passes; returns the last value either way."""
    end = time.monotonic() + deadline
    while True:
        value = fn()
        if accept(value) or time.monotonic() >= end:
            return value
        time.sleep(every)
