"""The prometheus check against a real Prometheus scraping a loopback exporter, and its pure rules."""

from __future__ import annotations

import asyncio
import math
import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from prom import BASIC_AUTH_PASSWORD, BASIC_AUTH_USER, Exporter, Prometheus, wait_for
from r53lb.config import Check, ConfigError, PrometheusCheck, loads
from r53lb.probes.base import ProbeResult, Target
from r53lb.probes.prometheus import evaluate, parse_response, probe, render_query, scale_share
from r53lb.probes.runner import Job, run_one

TIMEOUT = 2.0
DEFERRAL = 'mail_deferral_rate{node="{id}"}'


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, exporter: Exporter) -> Iterator[Prometheus]:
    # Prometheus 2.x hands new targets to its scrapers on a 5 s tick: the first scrape comes
    # about 5 s after start. One server for the module pays that once, here.
    p = Prometheus(tmp_path_factory.mktemp("prometheus"), [exporter.address]).start()
    p.wait_scraped()
    yield p
    p.stop()


def check(url: str, query: str = DEFERRAL, **rules: Any) -> PrometheusCheck:
    return PrometheusCheck(url=url, query=query, **rules)


def target(node: str) -> Target:
    return Target("mx", node, "127.0.0.1")


def run(spec: PrometheusCheck, node: str, timeout: float = TIMEOUT) -> ProbeResult:
    return asyncio.run(probe(target(node), spec, timeout))


def until(spec: PrometheusCheck, node: str, value: float) -> ProbeResult:
    """Poll the check until Prometheus has scraped `value` (the exporter just set it)."""
    return wait_for(lambda: run(spec, node), lambda r: r.value == value, deadline=10.0)


# --- against the real server ----------------------------------------------------------------

def test_reads_the_value(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.set('mail_deferral_rate{node="n1"}', 0.01)
    r = until(check(prometheus.url, quarantine_above=0.05), "n1", 0.01)
    assert (r.check, r.status, r.value, r.share) == ("prometheus", "ok", 0.01, None)
    assert r.detail == 'mail_deferral_rate{node="n1"} 0.01'


def test_quarantine_when_the_value_crosses(prometheus: Prometheus, exporter: Exporter) -> None:
    spec = check(prometheus.url, quarantine_above=0.05)
    exporter.set('mail_deferral_rate{node="n2"}', 0.02)
    assert until(spec, "n2", 0.02).status == "ok"
    exporter.set('mail_deferral_rate{node="n2"}', 0.083)
    r = until(spec, "n2", 0.083)
    assert (r.status, r.value) == ("fail", 0.083)
    assert r.detail == 'mail_deferral_rate{node="n2"} 0.083 > 0.05'
    named = run(check(prometheus.url, quarantine_above=0.05, name="deferral"), "n2")
    assert named.detail == "deferral 0.083 > 0.05"


def test_quarantine_below(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.set('mail_delivered_per_second{node="n7"}', 0.0)
    r = until(check(prometheus.url, 'mail_delivered_per_second{node="{id}"}', quarantine_below=0.5), "n7", 0.0)
    assert (r.status, r.detail) == ("fail", 'mail_delivered_per_second{node="n7"} 0 < 0.5')


def test_scale(prometheus: Prometheus, exporter: Exporter) -> None:
    spec = check(prometheus.url, 'postfix_queue_depth{node="{id}"}',
                 scale={"from": [1000, 20000], "to": ["100%", "10%"]})
    exporter.set('postfix_queue_depth{node="n3"}', 10500)
    r = until(spec, "n3", 10500)
    assert (r.status, r.share) == ("ok", 0.55)
    assert r.detail == 'postfix_queue_depth{node="n3"} 10500 -> 55%'
    exporter.set('postfix_queue_depth{node="n3"}', 90000)
    assert until(spec, "n3", 90000).share == 0.1  # clamped


def test_no_data_several_series_bad_query_are_unknown(prometheus: Prometheus, exporter: Exporter) -> None:
    exporter.set('mail_deferral_rate{node="n4"}', 0.01)
    exporter.set('mail_deferral_rate{node="n5"}', 0.01)
    until(check(prometheus.url), "n5", 0.01)
    nodata = run(check(prometheus.url, quarantine_above=0.05), "nobody")
    assert nodata.status == "unknown" and nodata.value is None
    assert nodata.detail == (f"prometheus {prometheus.url}: "
                             'mail_deferral_rate{node="nobody"}: no data (the query matched no series)')
    several = run(check(prometheus.url, "mail_deferral_rate"), "n4")
    assert several.status == "unknown"
    assert re.search(r"mail_deferral_rate: \d+ series \(expected one", several.detail), several.detail
    bad = run(check(prometheus.url, "rate(mail_deferral_rate[5m]"), "n4")
    assert bad.status == "unknown"
    assert re.match(rf"^prometheus {re.escape(prometheus.url)}: HTTP 400, .*bad_data: ", bad.detail), bad.detail
    nan = run(check(prometheus.url, "0/0"), "n4")
    assert (nan.status, nan.detail.endswith("value is NaN (a ratio of zero to zero?)")) == ("unknown", True)
    scalar = run(check(prometheus.url, "scalar(vector(0.5))", quarantine_above=0.05), "n4")
    assert (scalar.status, scalar.value) == ("fail", 0.5)
    matrix = run(check(prometheus.url, 'mail_deferral_rate{node="{id}"}[1m]'), "n4")
    assert matrix.status == "unknown" and "range vector" in matrix.detail


def test_prometheus_stopped_is_unknown(tmp_path: Path) -> None:
    own = Prometheus(tmp_path / "prom", []).start()
    try:
        # A constant expression: this server's first scrape would be 5 s away.
        spec = check(own.url, "vector(0.2)", quarantine_above=0.05)
        assert run(spec, "n6").status == "fail"
    finally:
        own.stop()
    started = time.perf_counter()
    r = run(spec, "n6")
    assert r.status == "unknown" and r.value is None
    assert r.detail == f"prometheus {own.url}: connection refused"
    assert time.perf_counter() - started < TIMEOUT


def test_no_answer_within_the_deadline() -> None:
    """A server that accepts and never answers: unknown within the check's timeout, through the runner."""
    async def go() -> tuple[ProbeResult, float]:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            c = Check.model_validate({"prometheus": {"url": f"http://127.0.0.1:{port}", "query": "up",
                                                     "timeout": "400ms"}})
            started = time.perf_counter()
            r = await run_one(Job(target("n1"), c, 10.0))
            return r, time.perf_counter() - started
        finally:
            server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

    r, elapsed = asyncio.run(go())
    assert r.status == "unknown" and r.detail.endswith("no answer within 400ms")
    assert elapsed < 1.0


def test_basic_auth_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prometheus with --web.config.file basic auth: the right password reads, the wrong one is unknown, neither is shown."""
    secured = Prometheus(tmp_path / "prom", [], basic_auth=True).start()
    try:
        spec = check(secured.url, "vector(0.01)",
                     basic_auth={"username_env": "PROM_USER", "password_env": "PROM_PASSWORD"})
        missing = run(spec, "n8")
        assert (missing.status, missing.detail) == (
            "unknown", "prometheus: environment variable PROM_USER is not set")
        monkeypatch.setenv("PROM_USER", BASIC_AUTH_USER)
        monkeypatch.setenv("PROM_PASSWORD", "wrong-password")
        wrong = run(spec, "n8")
        assert (wrong.status, wrong.detail) == ("unknown", f"prometheus {secured.url}: HTTP 401")
        monkeypatch.setenv("PROM_PASSWORD", BASIC_AUTH_PASSWORD)
        right = run(spec, "n8")
        assert (right.status, right.value) == ("ok", 0.01)
        for r in (missing, wrong, right):
            text = str(r.to_json())
            assert BASIC_AUTH_PASSWORD not in text and "wrong-password" not in text
    finally:
        secured.stop()


def test_bearer_token_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prometheus itself checks no bearer tokens (a proxy in front does): a loopback proxy stand-in checks the header."""
    seen: list[str] = []

    async def go() -> ProbeResult:
        async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            auth = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                         if line.lower().startswith(b"authorization:")), "")
            seen.append(auth)
            body = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.2"]}]}}'
            code = b"200 OK" if auth == "Bearer t0ken-xyz" else b"401 Unauthorized"
            writer.write(b"HTTP/1.1 " + code + b"\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(front, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            spec = check(f"http://127.0.0.1:{port}", bearer_token_env="PROM_TOKEN", quarantine_above=0.05)
            return await probe(target("n1"), spec, TIMEOUT)

    monkeypatch.setenv("PROM_TOKEN", "t0ken-xyz")
    r = asyncio.run(go())
    assert seen == ["Bearer t0ken-xyz"]
    assert (r.status, r.value) == ("fail", 0.2)
    assert "t0ken" not in str(r.to_json())


# --- pure rules -----------------------------------------------------------------------------

def test_render_query_substitutes_three_names_only() -> None:
    t = Target("smtp-out", 'mx"1', "2001:db8::1")
    q = 'sum(rate(x{node="{id}", pool="{pool}", addr="{address}"}[15m])) / {other}'
    assert render_query(q, t) == 'sum(rate(x{node="mx\\"1", pool="smtp-out", addr="2001:db8::1"}[15m])) / {other}'


@pytest.mark.parametrize("body, value, error", [
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.5"]}]}}, 0.5, ""),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "+Inf"]}]}}, math.inf, ""),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, 3.0, ""),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, None, "no data"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]}}, None, "NaN"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]}}, None, "not a number"),
    ({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}, None, "unexpected result type"),
    ({"status": "error", "errorType": "timeout", "error": "query timed out"}, None, "timeout: query timed out"),
    ({"status": "success"}, None, "no data"),
    ([], None, "not a Prometheus API object"),
    (None, None, "not a Prometheus API object"),
])
def test_parse_response(body: Any, value: float | None, error: str) -> None:
    reading = parse_response(body)
    assert reading.value == value
    assert error in reading.error


def test_evaluate_bounds_and_scale() -> None:
    spec = PrometheusCheck(url="http://p:9090", query="q", name="deferral", quarantine_above=0.05,
                           quarantine_below=0.0, scale={"from": [0.0, 0.05], "to": ["100%", "20%"]})
    assert evaluate(0.083, spec).detail == "deferral 0.083 > 0.05"
    assert evaluate(-1, spec).status == "fail"
    v = evaluate(0.025, spec)
    assert (v.status, v.share, v.detail) == ("ok", 0.6, "deferral 0.025 -> 60%")
    assert evaluate(0.05, spec).status == "ok"  # the bound itself is inside


bounds = st.floats(-1e9, 1e9, allow_nan=False)
shares = st.floats(0, 1)


@given(bounds, bounds, shares, shares, st.floats(allow_nan=False))
def test_scale_is_a_clamped_linear_map(v1: float, v2: float, s1: float, s2: float, x: float) -> None:
    assume(abs(v2 - v1) > 1e-6)
    scale = PrometheusCheck(url="http://p", query="q", scale={"from": [v1, v2], "to": [s1, s2]}).scale
    assert scale is not None
    share = scale_share(x, scale)
    assert min(s1, s2) - 1e-6 <= share <= max(s1, s2) + 1e-6
    assert scale_share(v1, scale) == pytest.approx(s1, abs=1e-6)
    assert scale_share(v2, scale) == pytest.approx(s2, abs=1e-6)
    beyond = v2 + (v2 - v1)  # past the far end: the far share, not beyond it
    assert scale_share(beyond, scale) == pytest.approx(s2, abs=1e-6)


def test_config_errors_name_the_key() -> None:
    base = ("pools: [{name: p, zone: example.com, record: mx.example.com, nodes: [{id: a, address: 192.0.2.1}], "
            "checks: [{prometheus: %s}]}]")
    loads(base % "{url: 'http://prom:9090/', query: 'up', interval: 30s, quarantine_above: 0.05}")
    cases = {
        "{url: 'http://user:pw@prom:9090', query: up}":
            r"prometheus\.url: must not carry credentials; use basic_auth or bearer_token_env$",
        "{url: 'prom:9090', query: up}": r"prometheus\.url: 'prom:9090' must start with http:// or https://",
        "{url: 'http://p', query: up, quarantine_above: 1, quarantine_below: 2}":
            r"prometheus: quarantine_below \(2\) is above quarantine_above \(1\): no value would pass$",
        "{url: 'http://p', query: up, scale: {from: [5, 5], to: [100%, 10%]}}":
            r"prometheus\.scale\.from: \[5\.0, 5\.0\] spans nothing",
        "{url: 'http://p', query: up, scale: {from: [1, 5], to: [100%, 120%]}}":
            r"prometheus\.scale\.to\[1\]: '120%' is not between 0% and 100%$",
        "{url: 'http://p', query: up, bearer_token_env: 'not a name'}":
            r"prometheus\.bearer_token_env: 'not a name' is not an environment variable name$",
        "{url: 'http://p', query: up, bearer_token: abc}": r"prometheus\.bearer_token: unknown key \(did you mean bearer_token_env\?\)$",
        "{url: 'http://p'}": r"prometheus\.query: is required$",
    }
    for body, pattern in cases.items():
        with pytest.raises(ConfigError) as e:
            loads(base % body)
        assert re.search(pattern, str(e.value)), str(e.value)


# --- docs/recipes.md, end to end --------------------------------------------------------------

RECIPES = Path(__file__).resolve().parent.parent / "docs" / "recipes.md"


def recipe_config(url: str) -> Any:
    text = RECIPES.read_text()
    block = re.search(r"<!-- recipe: prometheus .*?-->\n```yaml\n(.*?)```", text, re.S)
    assert block, "docs/recipes.md lost its prometheus recipe block"
    return loads(block.group(1).replace("http://prometheus.internal:9090", url), "docs/recipes.md")


def test_postfix_recipe(prometheus: Prometheus, exporter: Exporter) -> None:
    """The recipe's own YAML and the kumina postfix_exporter's metric names, through a real Prometheus."""
    cfg = recipe_config(prometheus.url)
    pool = cfg.pools[0]
    rules = {c.prometheus.name: c.prometheus for c in pool.checks if c.kind == "prometheus"}
    assert set(rules) == {"deferral-rate", "queue-depth"}
    deferral, depth = rules["deferral-rate"], rules["queue-depth"]
    sent = 'postfix_smtp_messages_processed_total{node="mx1",status="sent"}'
    deferred = 'postfix_smtp_messages_processed_total{node="mx1",status="deferred"}'
    exporter.set(sent, 1000)
    exporter.set(deferred, 100)
    for queue, n in {"active": 500, "deferred": 10000, "hold": 9999}.items():
        exporter.set(f'postfix_showq_message_age_seconds_count{{node="mx1",queue="{queue}"}}', n)

    # No delivery in the window yet: 0/0, unknown.
    quiet = wait_for(lambda: run(deferral, "mx1"), lambda r: "NaN" in r.detail)
    assert quiet.status == "unknown", quiet.detail
    # 10 of the next 100 attempts deferred: 10% > 5%, out.
    exporter.set(sent, 1090)
    exporter.set(deferred, 110)
    out = wait_for(lambda: run(deferral, "mx1"), lambda r: r.status == "fail")
    assert out.status == "fail" and out.value == pytest.approx(0.1), out.detail
    assert re.fullmatch(r"deferral-rate 0\.1\d* > 0\.05", out.detail), out.detail
    # Queue: incoming+active+deferred+maildrop = 10,500 (hold is not load) -> 55%.
    scaled = wait_for(lambda: run(depth, "mx1"), lambda r: r.value == 10500)
    assert (scaled.status, scaled.share, scaled.detail) == ("ok", 0.55, "queue-depth 10500 -> 55%")
    # A node Prometheus knows nothing of: unknown.
    assert run(depth, "mx2").status == "unknown"


def test_an_error_type_from_a_proxy_is_trimmed_to_one_short_line() -> None:
    body = {"status": "error", "errorType": "bad_data\n\x1b[2J" + "E" * 600_000, "error": "x\ny" * 1000}
    reading = parse_response(body)
    assert reading.value is None
    kind, _, text = reading.error.partition(": ")
    assert len(kind) <= 40 and kind.startswith("bad_data ?[2J")
    assert "\n" not in reading.error and "\x1b" not in reading.error and len(reading.error) <= 40 + 2 + 160
