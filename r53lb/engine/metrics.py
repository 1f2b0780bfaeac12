"""Prometheus metrics of the long-running controller, and the HTTP endpoint serving them with /healthz.

Every daemon owns a private CollectorRegistry, so tests (and embedders) may run several.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from .. import __version__
from ..errors import R53lbError
from ..core.signals import NodeSignals
from ..probes.base import ProbeResult
from .httpserver import HttpServer

__all__ = ["Metrics", "MetricsError", "MetricsServer", "reason_class", "parse_addr"]

log = logging.getLogger("r53lb.engine.metrics")

# Probes on a LAN answer in milliseconds, across a WAN in tens to hundreds; timeouts are seconds.
PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def reason_class(r: ProbeResult) -> str:
    """A failed probe's class, as the probe typed it (low cardinality: see probes.base.Failure)."""
    return r.failure.value if r.failure is not None else "error"


class Metrics:
    """The r53lb_* series. Label values are pool and node names from the config, never free text.

    The cluster's series (lease, replicas, votes, DynamoDB) are exported only with `cluster`: a
    single controller showing `r53lb_leader 0` would read as a replica that lost its lease.
    """

    def __init__(self, registry: CollectorRegistry | None = None, cluster: bool = False) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge("r53lb_build_info", "Always 1; the running version in the labels",
                                ["version", "python"], registry=r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.node_up = Gauge("r53lb_node_up", "1 when the node is healthy (rise/fall state), else 0",
                             ["pool", "node"], registry=r)
        self.node_weight = Gauge("r53lb_node_weight", "The node's weight in Route 53, as last read or written",
                                 ["pool", "node"], registry=r)
        self.node_desired_weight = Gauge("r53lb_node_desired_weight",
                                         "The weight the planner wants the node to carry",
                                         ["pool", "node"], registry=r)
        self.node_listed = Gauge("r53lb_node_listed",
                                 "Blocklists (dnsbl zones) that list the node's sending IP; 0 when clean",
                                 ["pool", "node"], registry=r)
        self.node_warmup_share = Gauge("r53lb_node_warmup_share",
                                       "The warm-up share of the node's weight in force (1 when warmed up)",
                                       ["pool", "node"], registry=r)
        self.node_agent_share = Gauge("r53lb_node_agent_share",
                                      "The share of its weight the node's agent allows (0 in drain, maint or down)",
                                      ["pool", "node"], registry=r)
        self.node_metric_value = Gauge("r53lb_node_metric_value",
                                       "The last value a prometheus check read for the node (its rule's input)",
                                       ["pool", "node", "check"], registry=r)
        # Label children bound once (check, failure class): no label formatting per probe.
        self._durations: dict[str, Any] = {}
        self._failures: dict[tuple[str, Any], Any] = {}
        self._up: dict[tuple[str, str], Any] = {}
        self.probe_duration = Histogram("r53lb_probe_duration_seconds", "Duration of one check, every phase",
                                        ["check"], buckets=PROBE_BUCKETS, registry=r)
        self.probe_failures = Counter("r53lb_probe_failures_total", "Failed checks by reason class",
                                      ["check", "reason"], registry=r)
        self.route53_requests = Counter("r53lb_route53_requests_total", "Route 53 API requests by outcome",
                                        ["operation", "outcome"], registry=r)
        self.reconcile_duration = Histogram("r53lb_reconcile_duration_seconds",
                                            "One reconcile of a zone: read, plan, write",
                                            ["zone"], buckets=RECONCILE_BUCKETS, registry=r)
        self.reconcile_errors = Counter("r53lb_reconcile_errors_total", "Reconciles that failed to read or write",
                                        ["zone"], registry=r)
        self.pool_panic = Gauge("r53lb_pool_panic", "1 while the pool is held at min_in_service (panic)",
                                ["pool"], registry=r)
        self.hold = Gauge("r53lb_hold", "1 while a vantage hold stops all writes", registry=r)
        self.notifications = Counter("r53lb_notifications_total", "Notifications by channel and outcome",
                                     ["channel", "outcome"], registry=r)
        self.last_round = Gauge("r53lb_last_probe_round_timestamp_seconds",
                                "When the last full probe round (every node probed once) finished",
                                registry=r)
        # Cluster (several replicas on DynamoDB): kept unregistered (never exported) without one.
        r = self.registry if cluster else None
        self.leader = Gauge("r53lb_leader", "1 while this replica holds the lease (computed when scraped)",
                            registry=r)
        self.lease_epoch = Gauge("r53lb_lease_epoch", "The lease epoch this replica last saw or holds", registry=r)
        self.replicas_fresh = Gauge("r53lb_replicas_fresh",
                                    "Replicas whose heartbeat is fresh, this one included", registry=r)
        self.replicas_config_mismatch = Gauge(
            "r53lb_replicas_config_mismatch",
            "Fresh replicas whose config digest is not the lease holder's (they do not vote)", registry=r)
        self.node_votes_down = Gauge("r53lb_node_votes_down", "Fresh replicas that see the node down",
                                     ["pool", "node"], registry=r)
        self.dynamodb_requests = Counter("r53lb_dynamodb_requests_total", "DynamoDB API requests by outcome",
                                         ["operation", "outcome"], registry=r)
        r = self.registry
        self.probe_processes = Gauge("r53lb_probe_processes",
                                     "Processes probing: 1, or this one and its probe workers (defaults.probe_workers)",
                                     registry=r)
        self.probe_worker_restarts = Counter("r53lb_probe_worker_restarts_total",
                                             "Probe worker processes that died or stalled and were restarted "
                                             "(their probes run again in the main process)", registry=r)
        self.config_reloads = Counter("r53lb_config_reloads_total", "SIGHUP reloads by outcome",
                                      ["outcome"], registry=r)

    # --- feeding -------------------------------------------------------------------------

    def observe_probe(self, r: ProbeResult) -> None:
        child = self._durations.get(r.check)
        if child is None:  # a labels() lookup per probe costs more than the observation itself
            child = self._durations[r.check] = self.probe_duration.labels(r.check)
        child.observe(max(r.latency_ms, 0.0) / 1000.0)
        if r.status != "ok":
            key = (r.check, r.failure)
            failed = self._failures.get(key)
            if failed is None:
                failed = self._failures[key] = self.probe_failures.labels(r.check, reason_class(r))
            failed.inc()

    def set_node_up(self, key: tuple[str, str], up: bool) -> None:
        """r53lb_node_up after every probe, through a child bound once per node."""
        child = self._up.get(key)
        if child is None:
            child = self._up[key] = self.node_up.labels(*key)
        child.set(1 if up else 0)

    def observe_signals(self, key: tuple[str, str], signals: NodeSignals | None) -> None:
        """The node's agent share (the lowest of its agents) and each metric rule's value."""
        if signals is None:
            return
        agents = [s for s in signals.signals if s.kind == "agent"]
        if agents:
            self.node_agent_share.labels(*key).set(min(0.0 if s.out or s.drain else s.share for s in agents))
        for s in signals.signals:
            if s.kind == "prometheus" and s.value is not None:
                self.node_metric_value.labels(*key, s.name).set(s.value)

    def route53_request(self, operation: str, outcome: str) -> None:
        self.route53_requests.labels(operation, outcome).inc()

    def dynamodb_request(self, operation: str, outcome: str) -> None:
        self.dynamodb_requests.labels(operation, outcome).inc()

    def forget_nodes(self, keep: Iterable[tuple[str, str]], keep_pools: Iterable[str]) -> None:
        """Drop the series of nodes and pools no longer in the config (after a reload)."""
        keep, keep_pools = set(keep), set(keep_pools)
        self._up = {k: c for k, c in self._up.items() if k in keep}
        for gauge in (self.node_up, self.node_weight, self.node_desired_weight, self.node_listed,
                      self.node_warmup_share, self.node_agent_share, self.node_metric_value,
                      self.node_votes_down):
            for labels in _label_sets(gauge):
                if labels[:2] not in keep:
                    gauge.remove(*labels)
        for labels in _label_sets(self.pool_panic):
            if labels[0] not in keep_pools:
                self.pool_panic.remove(*labels)


def _label_sets(metric: Any) -> list[tuple[str, ...]]:
    # prometheus-client keeps children in `_metrics`; collecting is the public, slower way.
    out = set()
    for fam in metric.collect():
        for s in fam.samples:
            out.add(tuple(s.labels[k] for k in metric._labelnames))
    return sorted(out)


def parse_addr(value: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', ':9464' (every interface) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


Health = Callable[[], tuple[bool, str]]


class MetricsError(R53lbError):
    """The metrics endpoint cannot listen (address in use, no such address)."""


class MetricsServer:
    """/metrics (Prometheus text format) and /healthz (200 or 503 with the reason) on one port;
    with `status`, the read-only status page at / and /api/status (engine/web.py). Served by
    engine/httpserver.py: bounded threads, connections, header size and time; only the Host
    names in `allowed_hosts` (besides the bind address, localhost and IP literals)."""

    def __init__(self, metrics: Metrics, health: Health, host: str = "127.0.0.1", port: int = 9464,
                 status: Callable[[], dict[str, Any]] | None = None, allowed_hosts: Iterable[str] = ()) -> None:
        metrics_app = make_wsgi_app(metrics.registry)
        page = None
        if status is not None:
            from .web import SECURITY_HEADERS, status_app

            page = status_app(status)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "/")
            if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
                # Read-only: nothing on this port changes state.
                body = b"method not allowed: this endpoint is read-only\n"
                start_response("405 Method Not Allowed", [
                    ("Allow", "GET, HEAD"), ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
                    *(SECURITY_HEADERS if page is not None else ())])
                return [body]
            if page is not None:
                out = page(environ, start_response)
                if out is not None:
                    return out
            if path == "/healthz":
                try:
                    ok, reason = health()
                except Exception as e:  # the health check must answer, whatever broke
                    ok, reason = False, f"health check failed: {type(e).__name__}: {e}"
                body = f"{'ok' if ok else 'unhealthy'}: {reason}\n".encode()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
                return [body]
            if path in ("/metrics", "/"):
                return metrics_app(environ, start_response)
            body = b"not found: try /, /api/status, /metrics or /healthz\n"
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]

        try:
            self._httpd = HttpServer(app, host, port, allowed_hosts)
        except OSError as e:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            reason = (e.strerror or str(e)).lower()
            raise MetricsError(f"metrics: cannot listen on {where}: {reason} (--metrics-addr, or --no-metrics)") from None
        self.host = host
        self.port = self._httpd.port  # the real one when 0 was asked

    def start(self) -> "MetricsServer":
        self._httpd.start()
        url = f"http://{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}/"
        log.info("status page on %s (also /api/status, /metrics, /healthz)", url, extra={"event": "listening", "url": url})
        return self

    def stop(self) -> None:
        self._httpd.stop()
