"""The status page of `r53lb run`: plain HTTP (JSON, headers, read-only) and a real headless Chromium.

The daemon is a subprocess against the strict moto server and loopback SMTP servers (the
fleet of test_daemon.py). Chromium is Debian's, driven by its own `--dump-dom` and
`--screenshot`; its console (CSP violations, script errors) is read from `--enable-logging`.

Set R53LB_DOCS_SCREENSHOT=1 to copy the page's screenshot to docs/status-page.png (the README's).
"""

from __future__ import annotations

import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from programs import require
from r53lb.engine.web import CSP, REFRESH_SECONDS, render
from test_daemon import BUDGET, NODES, Daemon, Fleet, fleet, free_port, wait_until  # noqa: F401

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "status-page.png"


# --- Chromium ----------------------------------------------------------------------------------


class Chromium:
    """Debian's Chromium, headless, one fresh profile per run, no network of its own."""

    def __init__(self, tmp: Path) -> None:
        self.exe = require("chromium")
        self.tmp = tmp
        self.runs = 0

    def _run(self, url: str, *extra: str) -> tuple[str, list[str]]:
        self.runs += 1
        profile = self.tmp / f"chromium-profile-{self.runs}"
        # Root needs --no-sandbox; the rest keeps Chromium from calling home or updating itself.
        args = [self.exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
                "--enable-logging=stderr", "--v=0", *extra, url]
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
        shutil.rmtree(profile, ignore_errors=True)
        assert p.returncode == 0, f"chromium exited {p.returncode}:\n{p.stderr[-3000:]}"
        # Every console message (a CSP violation, a script error, a failed load) is logged as CONSOLE.
        console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
        return p.stdout, console

    def dom(self, url: str) -> tuple[str, list[str]]:
        return self._run(url, "--dump-dom")

    def screenshot(self, url: str, path: Path, width: int = 1280, height: int = 900) -> list[str]:
        _, console = self._run(url, f"--screenshot={path}", f"--window-size={width},{height}")
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"no screenshot at {path}"
        return console


def text(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def node_row(dom: str, node: str) -> tuple[str, str]:
    """(the row's class, its text) of a node in the page's tables."""
    for m in re.finditer(r'<tr class="([^"]*)">(.*?)</tr>', dom, re.S):
        if f"<strong>{node}</strong>" in m.group(2):
            return m.group(1), text(m.group(2))
    raise AssertionError(f"no row for {node} in the page:\n{text(dom)[:2000]}")


def status(d: Any) -> dict[str, Any]:
    r = httpx.get(f"{d.metrics_url}/api/status", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def row(doc: dict[str, Any], node: str) -> dict[str, Any]:
    return next(r for r in doc["nodes"] if r["node"] == node)


def start(fleet: Fleet, *run_args: str) -> Daemon:
    """`r53lb run` with options of its own (the fleet's start() takes global ones)."""
    from moto_fixtures.pytest_plugin import FAKE_ENV

    port = free_port()
    log_path = fleet.tmp / f"daemon-{len(fleet.daemons)}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_ENV, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "r53lb", "-c", str(fleet.config), "run",
             "--metrics-addr", f"127.0.0.1:{port}", *run_args],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    d = Daemon(proc, f"http://127.0.0.1:{port}", log_path)
    fleet.daemons.append(d)  # the fixture stops it
    return d


def r53lb(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    from moto_fixtures.pytest_plugin import FAKE_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_ENV)
    return subprocess.run([sys.executable, "-m", "r53lb", "-c", str(fleet.config), *args],
                          capture_output=True, text=True, timeout=60, env=env)


# --- plain HTTP --------------------------------------------------------------------------------


def test_api_status_is_the_status_command_and_the_port_is_read_only(fleet: Fleet) -> None:
    d = fleet.start()
    fleet.settled(d)
    wait_until("every node probed and the zone read", lambda: all(
        r["probes"] and r["weight"] == 50 for r in status(d)["nodes"]))

    # The same document as `r53lb status --json` for the same state. Only the daemon has the
    # latest probe results (the command probes nothing); the command reads health from the
    # store, which the daemon snapshots every 10 s, so the two agree once a snapshot is in.
    def same() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        live = status(d)
        p = r53lb(fleet, "status", "--json")
        assert p.returncode == 0, p.stderr
        cli = json.loads(p.stdout)
        for doc in (live, cli):
            doc.pop("generated_at")
        assert [r.pop("probes") for r in cli["nodes"]] == [None] * len(NODES)
        probes = {r["node"]: r.pop("probes") for r in live["nodes"]}
        return (live, cli, probes) if live == cli else None

    live, cli, probes = wait_until("/api/status and `r53lb status --json` to agree", same, timeout=25, every=0.5)
    for node, results in probes.items():
        assert [(x["check"], x["ok"]) for x in results] == [("smtp", True)], (node, results)
        assert 0 < results[0]["latency_ms"] < 1000
    assert [r["health"] for r in live["nodes"]] == ["up"] * len(NODES)
    assert live["hold"] is None and live["zone_errors"] == {}
    assert live["pools"] == [{
        "name": "mx", "zone": "example.com", "record": "mx.example.com", "mode": "weighted", "read": True,
        "panic": False, "fail_open": False, "active": None, "alerts": [], "errors": [], "deferred": 0}]

    # A drain from another shell shows on the very next request, before any reconcile.
    p = r53lb(fleet, "drain", "mx/hlb-1", "--reason", "kernel upgrade")
    assert p.returncode == 0, p.stderr
    after = status(d)
    assert (row(after, "hlb-1")["drained"], row(after, "hlb-1")["desired_weight"]) == ("kernel upgrade", 0)
    assert row(after, "hlb-1")["reason"] == "drained: kernel upgrade"
    assert after["history"][0]["kind"] == "drain" and after["history"][0]["reason"] == "kernel upgrade"

    # Security headers on everything the page is made of; nothing that changes state.
    for path, ctype in (("/", "text/html"), ("/api/status", "application/json"), ("/status.css", "text/css")):
        r = httpx.get(f"{d.metrics_url}{path}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), (path, r.status_code)
        assert {k: r.headers.get(k) for k in HEADERS} == HEADERS, path
    page = httpx.get(f"{d.metrics_url}/", timeout=10).text
    assert "<script" not in page and "<form" not in page and "style=" not in page and "<button" not in page
    assert f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/status", "/metrics"):
            r = httpx.request(method, f"{d.metrics_url}{path}", timeout=10)
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (method, path, r.status_code)
    r = httpx.head(f"{d.metrics_url}/api/status", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert httpx.get(f"{d.metrics_url}/metrics", timeout=10).text.count("r53lb_node_up{") == len(NODES)
    assert httpx.get(f"{d.metrics_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{d.metrics_url}/nope", timeout=10).status_code == 404
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_everything_shown_is_escaped() -> None:
    evil = '<script>alert(1)</script>"\'&'
    node = {"pool": evil, "node": evil, "record": "mx.example.com", "type": "A", "weight": 50, "base_weight": 50,
            "desired_weight": 0, "reason": f"drained: {evil}", "health": "down", "since": "2026-11-25T10:00:00+00:00",
            "last_result": evil, "drained": evil, "drained_at": "2026-11-25T10:00:00+00:00", "quarantined": True,
            "listed_on": [evil], "listed_detail": evil, "slow_start_share": 0.5, "warmup_share": 0.2,
            "warmup_next": {"at": "2026-11-26T00:00:00+00:00", "share": 0.5},
            "probes": [{"check": "smtp", "status": "fail", "ok": False, "latency_ms": 3.2, "detail": evil}],
            "panic": True, "fail_open": False, "active": None}
    doc = {"generated_at": "2026-11-25T10:00:00+00:00", "hold": evil,
           "zone_errors": {evil: {"error": evil, "since": "2026-11-25T10:00:00+00:00"}},
           "pools": [{"name": evil, "zone": evil, "record": evil, "mode": "weighted", "read": True, "panic": True,
                      "fail_open": True, "active": None, "alerts": [evil], "errors": [evil], "deferred": 0}],
           "nodes": [node],
           "history": [{"at": "2026-11-25T10:00:00+00:00", "pool": evil, "node": evil, "kind": "drain",
                        "from": None, "to": "drained", "reason": evil}]}
    page = render(doc)
    assert "<script" not in page and "alert(1)</" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 12
    # Colour is never the only signal: words and marks beside every state.
    for words in ("\u25bc down", "\u2298 drained", "HOLD:", "PANIC", "FAIL OPEN", "\u2716 smtp", "\u2716 listed",
                  "slow start 50%", "warm-up 20%", "(pending)"):
        assert words in page, words


# --- a real browser --------------------------------------------------------------------------


def test_console_check_sees_a_csp_violation(tmp_path: Path) -> None:
    """The browser test's 'no console errors' means something: an inline script under the
    page's CSP is reported."""
    body = b'<!doctype html><title>x</title><p>hi</p><script>document.title="ran"</script>'

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        dom, console = Chromium(tmp_path).dom(f"http://127.0.0.1:{srv.server_port}/")
    finally:
        srv.shutdown()
        srv.server_close()
    assert "<title>x</title>" in dom  # the script did not run
    assert any("Content Security Policy" in line for line in console), console


def test_the_page_in_chromium(fleet: Fleet, tmp_path: Path) -> None:
    browser = Chromium(tmp_path)
    d = start(fleet, "--resync", "1s")  # the drain below reaches Route 53 within a second
    fleet.settled(d)
    url = f"{d.metrics_url}/"
    wait_until("the zone read", lambda: all(r["weight"] == 50 for r in status(d)["nodes"]))

    dom, console = browser.dom(url)
    assert console == []
    assert "r53lb status" in dom and "3/3 up" in text(dom)
    for node in NODES:
        cls, words = node_row(dom, node)
        assert cls == "row-up" and "\u25b2 up" in words and "50 \u2192 50" in words and "\u2714 smtp" in words, words

    # A killed node: down with its reason on the next refresh after the daemon saw it.
    fleet.smtp["hlb-2"].set_mode("refuse")
    wait_until("hlb-2 at weight 0 in Route 53", lambda: fleet.weights()["hlb-2"] == 0, timeout=BUDGET + 5)
    seen = time.monotonic()
    dom, console = browser.dom(url)
    shown_after = time.monotonic() - seen
    assert console == []
    cls, words = node_row(dom, "hlb-2")
    assert cls == "row-down" and "\u25bc down" in words and "refused" in words and "0 \u2192 0" in words, words
    assert shown_after <= REFRESH_SECONDS, shown_after
    print(f"\nkilled node shown as down {shown_after:.2f}s after Route 53 held 0 (refresh {REFRESH_SECONDS}s)")

    # A drain made with the real CLI from another process, reason with markup in it.
    p = r53lb(fleet, "drain", "mx/hlb-3", "--reason", "disk swap <ticket #42>")
    assert p.returncode == 0, p.stderr
    dom, console = browser.dom(url)
    assert console == []
    cls, words = node_row(dom, "hlb-3")
    assert cls == "row-drained" and "\u2298 drained" in words and "drained: disk swap <ticket #42>" in words, words
    assert "&lt;ticket #42&gt;" in dom and "<ticket" not in dom
    assert "disk swap <ticket #42>" in text(dom.split("<h2>History", 1)[1])
    wait_until("hlb-3 drained in Route 53", lambda: fleet.weights()["hlb-3"] == 0, timeout=10)
    shot = tmp_path / "status-page.png"
    assert browser.screenshot(url, shot, 1280, 660) == []
    phone = tmp_path / "status-page-phone.png"
    assert browser.screenshot(url, phone, 390, 844) == []
    if os.environ.get("R53LB_DOCS_SCREENSHOT"):
        shutil.copyfile(shot, DOCS_PNG)

    # A vantage hold: every remaining node fails at once; the banner says nothing is written.
    for n in ("hlb-1", "hlb-3"):
        fleet.smtp[n].set_mode("refuse")
    wait_until("the hold", lambda: status(d)["hold"], timeout=BUDGET + 5)
    dom, console = browser.dom(url)
    assert console == []
    banner = re.search(r'<div class="banner" role="alert">(.*?)</div>', dom, re.S)
    assert banner and "\u26a0 HOLD:" in text(banner.group(1)) and "every check of every node failed" in text(
        banner.group(1)) and "nothing is written" in text(banner.group(1)), dom[:3000]
    assert "<title>HOLD \u00b7 r53lb status</title>" in dom
    assert browser.screenshot(url, tmp_path / "status-page-hold.png") == []
    assert fleet.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 0}
    assert d.stop() == 0
    assert "Traceback" not in d.log()


def test_a_costly_document_is_shared_not_rebuilt_per_viewer() -> None:
    """With a big fleet, viewers share one build for 5x its cost: the HTTP thread never holds the
    GIL (and so the event loop) for more than a sixth of the time."""
    from r53lb.engine.web import _Bodies

    builds: list[float] = []
    doc = {"generated_at": "2026-11-25T10:00:00+00:00", "hold": None, "zone_errors": {}, "pools": [], "nodes": [],
           "history": []}

    def build() -> dict[str, Any]:
        builds.append(time.monotonic())
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:  # a build that costs 50 ms of CPU, as 500 nodes would
            pass
        return doc

    bodies = _Bodies(build, REFRESH_SECONDS)
    threads = [threading.Thread(target=bodies.get, args=(kind,)) for kind in ("html", "json") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(builds) == 1
    assert json.loads(bodies.get("json")) == doc and b"r53lb status" in bodies.get("html")
    wait_until("a rebuild once the reuse window is over", lambda: bodies.get("json") and len(builds) == 2, timeout=5)
    assert builds[1] - builds[0] >= 5 * 0.05
