"""Agent and prometheus signals through the one engine, in BOTH modes: `r53lb sync` and `r53lb run`.

Real parts: the CLI in a subprocess against the strict moto server, loopback SMTP servers,
loopback HAProxy agents (r53lb.demo.loopback.AgentServer), and a real Prometheus (Debian's
package, tests/prom.py) scraping a loopback exporter whose values the test sets. The same
scenario must give the same weights in both modes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from prom import Exporter, Prometheus
from r53lb.demo.loopback import AgentServer, PromApiServer
from test_daemon import free_port, wait_until
from test_safety_modes import World, world  # noqa: F401 - the fixture, parametrised over sync and run

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

RECORD = "mx.example.com"
NODES = {"a": "127.0.2.11", "b": "127.0.2.12", "c": "127.0.2.13"}


def settle(world: World, what: str, ok: Callable[[dict[str, int]], bool], timeout: float = 40) -> dict[str, int]:
    """Until Route 53 holds weights `ok` accepts: sync runs `r53lb sync` again, run waits for the daemon."""
    def look() -> dict[str, int] | None:
        if world.mode == "sync":
            p = world.cli("sync", "--json")
            assert p.returncode == 0, p.stderr
        else:
            world._alive()
        w = world.weights(RECORD)
        return w if ok(w) else None

    return wait_until(what, look, timeout=timeout, every=0.2)


def steady(world: World, runs: int = 3) -> None:
    """Let the controller look again a few times (sync: cron runs; run: reconciles of the zone)."""
    if world.mode == "sync":
        for _ in range(runs):
            p = world.cli("sync", "--json")
            assert p.returncode == 0, p.stderr
    else:
        world.passes(runs)


def status(world: World) -> dict[str, dict[str, Any]]:
    p = world.cli("status", "--json")
    assert p.returncode == 0, p.stderr
    return {r["node"]: r for r in json.loads(p.stdout)["nodes"]}


def history(world: World, kind: str) -> list[dict[str, Any]]:
    events = json.loads(world.cli("history", "--json", "--limit", "200").stdout)["events"]
    return [e for e in events if e["kind"] == kind]


def base_world(world: World, weights: dict[str, int], checks: list[dict[str, Any]],
               nodes: dict[str, str] = NODES, **node_extra: dict[str, Any]) -> None:
    world.zone({RECORD: {"type": "A", "sets": {k: (v, weights[k]) for k, v in nodes.items()}}})
    world.serve(*nodes.values())
    world.doc["pools"].append({
        "name": "mx", "zone": "example.com", "record": RECORD,
        "checks": [{"smtp": {"port": world.port}}, *checks],
        "nodes": [{"id": k, "address": v, "weight": 50, **node_extra.get(k, {})} for k, v in nodes.items()]})


# --- the agent -----------------------------------------------------------------------------------


@pytest.fixture
def agents() -> Iterator[dict[str, AgentServer]]:
    port = free_port()
    servers = {k: AgentServer(v, port, "ready up 100%").start() for k, v in NODES.items()}
    yield servers
    for s in servers.values():
        s.stop()


def test_agent_steers_the_weight(world: World, agents: dict[str, AgentServer]) -> None:
    port = agents["a"].port
    # interval 100ms: every sync asks the agent again (its verdict would be cached for the interval).
    base_world(world, {"a": 50, "b": 50, "c": 50}, [{"agent": {"port": port, "interval": "100ms"}}])
    world.start()
    agents["a"].set_line("50%")
    agents["b"].set_line("drain")
    agents["c"].set_line("down#disk full")
    settle(world, "a halved, b drained, c down", lambda w: w == {"a": 25, "b": 0, "c": 0})
    rows = status(world)
    assert rows["a"]["reason"] == "agent: 50%"
    assert rows["b"]["reason"] == "agent: drain" and rows["b"]["health"] == "up"  # a drain is not a death
    assert rows["c"]["reason"] == "agent: down (disk full)"
    changes = {e["node"]: e for e in history(world, "agent")}
    assert (changes["a"]["from"], changes["a"]["to"]) == ("100%", "50%")
    assert changes["c"]["to"] == "down (disk full)"
    if world.mode == "run":
        assert world.daemon is not None
        assert world.daemon.sample("r53lb_node_agent_share", pool="mx", node="a") == 0.5
        assert world.daemon.sample("r53lb_node_agent_share", pool="mx", node="b") == 0.0

    # No answer (a silent agent, a refused connection): unknown, weights untouched.
    asked = agents["a"].accepted
    agents["a"].set_line(None)
    agents["c"].stop()
    wait_until("the silent agent asked again", lambda: steady(world, 1) or agents["a"].accepted > asked + 1,
               timeout=40)
    steady(world, 2)
    assert world.weights(RECORD) == {"a": 25, "b": 0, "c": 0}
    # The agent speaks again: words left out keep their value (HAProxy), so `ready` ends the drain at 100%.
    agents["a"].set_line("ready")
    agents["b"].set_line("ready")
    settle(world, "b back", lambda w: w == {"a": 25, "b": 50, "c": 0})
    world.stop()


# --- prometheus rules ---------------------------------------------------------------------------


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[tuple[Prometheus, Exporter]]:
    exporter = Exporter()
    server = Prometheus(tmp_path / "prometheus", [exporter.address])
    try:
        yield server, exporter
    finally:
        server.stop()
        exporter.stop()


def rules(url: str) -> list[dict[str, Any]]:
    return [
        {"prometheus": {"url": url, "name": "deferral", "query": 'mail_deferral_rate{node="{id}"}',
                        "quarantine_above": 0.05, "interval": "100ms"}},
        {"prometheus": {"url": url, "name": "queue", "query": 'mail_queue{node="{id}"}',
                        "scale": {"from": [1000, 20000], "to": ["100%", "10%"]}, "interval": "100ms"}},
    ]


def test_metric_rules_quarantine_and_scale_and_a_stopped_prometheus_changes_nothing(
        world: World, prom: tuple[Prometheus, Exporter]) -> None:
    server, exporter = prom
    for node in NODES:
        exporter.set(f'mail_deferral_rate{{node="{node}"}}', 0.01)
        exporter.set(f'mail_queue{{node="{node}"}}', 500)
    server.start()
    server.wait_scraped()
    base_world(world, {"a": 50, "b": 50, "c": 50}, rules(server.url))
    world.start()
    steady(world, 2)
    assert world.weights(RECORD) == {"a": 50, "b": 50, "c": 50}
    # c's deferral rate crosses the threshold; b's queue grows to 10,500 (55%).
    exporter.set('mail_deferral_rate{node="c"}', 0.083)
    exporter.set('mail_queue{node="b"}', 10500)
    settle(world, "c quarantined, b scaled", lambda w: w == {"a": 50, "b": 28, "c": 0})
    rows = status(world)
    assert rows["c"]["reason"] == "quarantined by metric: deferral 0.083 > 0.05"
    assert rows["b"]["reason"] == "queue 10500 -> 55%"
    metric = {(e["node"], e["to"]): e for e in history(world, "metric")}
    assert metric[("c", "out")]["reason"] == "deferral 0.083 > 0.05"
    assert metric[("b", "55%")]["reason"] == "queue 10500 -> 55%"
    if world.mode == "run":
        assert world.daemon is not None
        assert world.daemon.sample("r53lb_node_metric_value", pool="mx", node="b", check="queue") == 10500
        assert world.daemon.sample("r53lb_node_metric_value", pool="mx", node="c", check="deferral") == 0.083

    # Prometheus stops: every rule is unknown, the last verdicts stand, no weight moves.
    server.stop()
    steady(world, 3)
    assert world.weights(RECORD) == {"a": 50, "b": 28, "c": 0}
    assert status(world)["c"]["reason"] == "quarantined by metric: deferral 0.083 > 0.05"
    if world.mode == "run":
        assert world.daemon is not None
        assert "prometheus unknown, weight untouched" in world.daemon.log()
    world.stop()


def test_gated_warmup_pauses_while_the_gate_is_closed_and_resumes(
        world: World, prom: tuple[Prometheus, Exporter]) -> None:
    server, exporter = prom
    for node in ("a", "b"):
        exporter.set(f'mail_deferral_rate{{node="{node}"}}', 0.01)
        exporter.set(f'mail_queue{{node="{node}"}}', 500)
    server.start()
    server.wait_scraped()
    # Time is injected through the start date: b is 40 s into a 200 s warm-up (10% -> 100%),
    # a schedule in seconds so that a pause of a few seconds shows in the weight.
    start = datetime.now(timezone.utc) - timedelta(seconds=40)
    warmup = {"start": start.isoformat(), "schedule": {"0s": "10%", "200s": "100%"}, "hold_when": ["deferral"]}
    nodes = {"a": NODES["a"], "b": NODES["b"]}
    base_world(world, {"a": 50, "b": 14}, rules(server.url), nodes=nodes, b={"warmup": warmup, "weight": 100})
    world.doc["pools"][0]["nodes"][1]["weight"] = 100

    def unpaused() -> float:  # the warm-up's weight by the calendar alone
        return 100 * (0.1 + 0.9 * (datetime.now(timezone.utc) - start).total_seconds() / 200)

    world.start()
    settle(world, "b warming up", lambda w: w["b"] >= 20)
    exporter.set('mail_deferral_rate{node="b"}', 0.09)
    settle(world, "b out", lambda w: w["b"] == 0)
    paused_at = status(world)["b"]
    assert paused_at["warmup_paused"] == "deferral: deferral 0.09 > 0.05"
    share_at_pause = paused_at["warmup_share"]
    # The gate stays closed for 12 s of real time (polled, not slept): the day counter stands still.
    wait_until("a 12 s pause", lambda: steady(world, 1) or status(world)["b"]["warmup_paused_seconds"] >= 12,
               timeout=60)
    assert status(world)["b"]["warmup_share"] == share_at_pause
    exporter.set('mail_deferral_rate{node="b"}', 0.01)
    w = settle(world, "b back", lambda w: w["b"] > 0)
    # It comes back at the share it had when the gate closed (not a step lower), not the calendar's.
    assert share_at_pause * 100 - 1 <= w["b"] <= unpaused() - 12 * 0.45 + 1, (w, share_at_pause, unpaused())
    row = status(world)["b"]
    assert row["warmup_paused"] is None and row["warmup_paused_seconds"] >= 12
    events = [(e["from"], e["to"]) for e in history(world, "warm-up") if e["node"] == "b"]
    assert ("running", "paused") in events and ("paused", "running") in events
    world.stop()


def test_sync_from_cron_asks_prometheus_once_per_interval(tmp_path: Path, moto_server: Any) -> None:
    """The verdict is cached in the state store for the rule's interval: cron runs do not add queries."""
    api = PromApiServer().start()
    w = World(tmp_path, moto_server, "sync")
    try:
        api.values.update({"a": 0.01, "b": 0.2})
        nodes = {"a": NODES["a"], "b": NODES["b"]}
        base_world(w, {"a": 50, "b": 50}, [{"prometheus": {
            "url": api.url, "name": "deferral", "query": 'mail_deferral_rate{node="{id}"}',
            "quarantine_above": 0.05, "interval": "1h"}}], nodes=nodes)
        w.start()
        for _ in range(3):
            p = w.cli("sync", "--json")
            assert p.returncode == 0, p.stderr
        assert sorted(api.queries) == ['mail_deferral_rate{node="a"}', 'mail_deferral_rate{node="b"}']
        assert w.weights(RECORD) == {"a": 50, "b": 0}  # the cached verdict still counts
        events = history(w, "metric")
        assert [(e["node"], e["from"], e["to"], e["reason"]) for e in events] == [
            ("b", "unknown", "out", "deferral 0.2 > 0.05")]
    finally:
        api.stop()
        for s in w.smtp.values():
            s.stop()
