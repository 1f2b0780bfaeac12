"""Metrics: private registries, reason classes, the /metrics and /healthz endpoint."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from r53lb.engine.metrics import Metrics, MetricsServer, parse_addr, reason_class
from r53lb.probes.base import ProbeResult


def result(check: str = "smtp", status: str = "fail", detail: str = "", **kw) -> ProbeResult:
    return ProbeResult("mx", "hlb-1", check, status, 12.0, detail, **kw)  # type: ignore[arg-type]


def test_reason_class_is_the_probes_own_class_not_its_text():
    from r53lb.probes.base import Failure

    # The text would say "refused"; the class the probe set is what counts.
    assert reason_class(result(detail="connection refused", failure=Failure.TIMEOUT)) == "timeout"
    assert reason_class(result(detail="anything")) == "error"  # a failure the probe did not type
    assert reason_class(result("dnsbl", status="unknown", detail="timeout")) == "unknown"
    assert result(status="ok", detail="smtp ok", failure=Failure.TIMEOUT).failure is None


def test_each_daemon_has_its_own_registry():
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.node_up.labels("mx", "hlb-1").set(1)
    assert b.registry.get_sample_value("r53lb_node_up", {"pool": "mx", "node": "hlb-1"}) is None
    assert a.registry.get_sample_value("r53lb_node_up", {"pool": "mx", "node": "hlb-1"}) == 1


def test_probe_observations():
    m = Metrics()
    m.observe_probe(result(status="ok", detail="smtp ok"))
    from r53lb.probes.base import Failure

    m.observe_probe(result(detail="connection refused", failure=Failure.REFUSED))
    r = m.registry
    assert r.get_sample_value("r53lb_probe_duration_seconds_count", {"check": "smtp"}) == 2
    assert r.get_sample_value("r53lb_probe_failures_total", {"check": "smtp", "reason": "refused"}) == 1


def test_forget_nodes_after_reload():
    m = Metrics()
    for node in ("hlb-1", "hlb-2"):
        m.node_up.labels("mx", node).set(1)
        m.node_weight.labels("mx", node).set(50)
    m.pool_panic.labels("old").set(0)
    m.forget_nodes({("mx", "hlb-1")}, {"mx"})
    assert m.registry.get_sample_value("r53lb_node_weight", {"pool": "mx", "node": "hlb-2"}) is None
    assert m.registry.get_sample_value("r53lb_node_weight", {"pool": "mx", "node": "hlb-1"}) == 50
    assert m.registry.get_sample_value("r53lb_pool_panic", {"pool": "old"}) is None


@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("0.0.0.0", 9464)), ("[::1]:9000", ("::1", 9000)),
])
def test_parse_addr(value, expected):
    assert parse_addr(value) == expected


@pytest.mark.parametrize("value", ["9464", "localhost", "127.0.0.1:http", "1.2.3.4:70000"])
def test_parse_addr_refuses(value):
    with pytest.raises(ValueError):
        parse_addr(value)


def test_endpoint_serves_metrics_and_healthz():
    m = Metrics()
    m.hold.set(1)
    state = {"ok": True, "reason": "3 node(s) probed on time"}
    srv = MetricsServer(m, lambda: (state["ok"], state["reason"]), "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{srv.port}"
        text = httpx.get(f"{base}/metrics").text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["r53lb_hold"].samples[0].value == 1
        r = httpx.get(f"{base}/healthz")
        assert (r.status_code, r.text) == (200, "ok: 3 node(s) probed on time\n")
        state.update(ok=False, reason="mx/hlb-1 not probed for 40s (limit 31s)")
        r = httpx.get(f"{base}/healthz")
        assert r.status_code == 503 and "not probed for 40s" in r.text
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        srv.stop()


def test_healthz_answers_even_when_the_check_breaks():
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    srv = MetricsServer(Metrics(), broken, "127.0.0.1", 0).start()
    try:
        r = httpx.get(f"http://127.0.0.1:{srv.port}/healthz")
        assert r.status_code == 503 and "boom" in r.text
    finally:
        srv.stop()


def test_grafana_dashboard_uses_only_exported_series():
    import json
    import re
    from pathlib import Path

    dash = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text())
    exported = {m.name for m in Metrics(cluster=True).registry.collect()}
    exported |= {n + "_total" for n in exported}  # counters are collected without the suffix
    used = set()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            used |= set(re.findall(r"\br53lb_\w+", t["expr"]))
    base = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert base <= exported, base - exported
    required = {"r53lb_node_up", "r53lb_node_weight", "r53lb_node_desired_weight", "r53lb_probe_duration_seconds",
                "r53lb_probe_failures_total", "r53lb_route53_requests_total", "r53lb_reconcile_duration_seconds",
                "r53lb_pool_panic", "r53lb_hold", "r53lb_node_listed", "r53lb_node_warmup_share"}
    assert required <= base


def test_a_busy_port_is_one_clear_error():
    from r53lb.engine.metrics import MetricsError

    srv = MetricsServer(Metrics(), lambda: (True, "ok"), "127.0.0.1", 0).start()
    try:
        with pytest.raises(MetricsError, match=r"cannot listen on 127\.0\.0\.1:\d+: address already in use"):
            MetricsServer(Metrics(), lambda: (True, "ok"), "127.0.0.1", srv.port)
    finally:
        srv.stop()


def test_build_info_and_cluster_series_only_with_a_cluster():
    import platform

    from r53lb import __version__

    def exported(m: Metrics) -> dict[str, list]:
        return {f.name: f.samples for f in m.registry.collect()}

    single, replica = exported(Metrics()), exported(Metrics(cluster=True))
    [info] = single["r53lb_build_info"]
    assert info.labels == {"version": __version__, "python": platform.python_version()} and info.value == 1
    cluster = {"r53lb_leader", "r53lb_lease_epoch", "r53lb_replicas_fresh", "r53lb_node_votes_down",
               "r53lb_dynamodb_requests"}
    assert not cluster & set(single), cluster & set(single)
    assert cluster <= set(replica)
    assert "r53lb_build_info" in replica and "r53lb_node_up" in single
