"""`r53lb run` alerts: panic, fail open, apply failure and recovery, drift; /healthz while a zone fails.

The daemon runs in-process on this test's event loop (the main thread, as its signal handlers
want), against the session's strict moto server, loopback SMTP servers and a loopback webhook.
Route 53 retries are cut to one attempt so that a failing write surfaces at once. Short profile:
interval 0.5s, fastinter 0.25s, fall 2, rise 2, resync 0.5s.

Each test ends by stopping the daemon, which delivers every queued notification first, so the
webhook's bodies are then the complete list: one message per transition, none repeated per pass.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

import r53lb.engine.daemon
from moto_fixtures.spec import build, change, record_sets, weights
from r53lb.engine.daemon import Daemon
from r53lb.demo.loopback import SmtpServer
from r53lb.aws.route53 import Route53
from test_daemon import free_port
from test_notify import WebhookReceiver

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

INTERVAL, FASTINTER, FALL, RISE, TIMEOUT, RESYNC = 0.5, 0.25, 2, 2, 1.0, 0.5
# A node's change reaches Route 53 within interval + (fall - 1) x fastinter + timeout; slack for 2 cores.
TRANSITION = INTERVAL * 1.1 + (FALL - 1) * FASTINTER + TIMEOUT + 4.0
ZONE = "example.com"
MX, RELAY = "mx.example.com", "relay.example.com"
MX_NODES = {"hlb-1": "127.0.0.71", "hlb-2": "127.0.0.72", "hlb-3": "127.0.0.73"}
RELAY_NODES = {"relay-1": "127.0.0.74", "relay-2": "127.0.0.75"}

# One attempt per call, no botocore retries: a failing write becomes a failed reconcile at once.
fast_route53 = functools.partial(Route53, attempts=1, retry_deadline=1, botocore_attempts=1)


@dataclass
class Fleet:
    tmp: Path
    server: Any
    zone_id: str
    smtp: dict[str, SmtpServer]
    hook: WebhookReceiver
    doc: dict[str, Any]
    relay_pool: dict[str, Any]  # not in `doc` unless a test adds it
    task: asyncio.Task[int] | None = None
    daemon: Daemon | None = None
    healthz_url: str = ""

    @property
    def client(self) -> Any:
        return boto3.client("route53", endpoint_url=self.server.endpoint_url, region_name="us-east-1")

    def weights(self, record: str = MX) -> dict[str, int]:
        return weights(self.client, self.zone_id, record, "A")

    def sample(self, name: str, **labels: str) -> float | None:
        assert self.daemon is not None
        return self.daemon.metrics.registry.get_sample_value(name, labels)

    def passes(self) -> float:
        """Reconcile passes that read the zone and planned (failed writes included)."""
        return self.sample("r53lb_reconcile_duration_seconds_count", zone=ZONE) or 0

    def messages(self) -> list[dict[str, Any]]:
        return list(self.hook.bodies)  # appended by the receiver's threads; a copy is atomic

    def alerts(self) -> list[tuple[str, str]]:
        """(kind, message) of everything but node health changes, in order."""
        return [(b["kind"], b["message"]) for b in self.messages() if b["kind"] != "health"]

    def healthz(self) -> httpx.Response:
        return httpx.get(self.healthz_url, timeout=5)

    async def until(self, what: str, fn: Callable[[], Any], timeout: float = TRANSITION) -> Any:
        """Poll `fn` (run beside the loop: it may block on HTTP) until it is truthy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Any = None
        while loop.time() < deadline:
            if self.task is not None and self.task.done():
                raise AssertionError(f"r53lb run ended while waiting for {what}: {self.task.result()!r}")
            last = await asyncio.to_thread(fn)
            if last:
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    async def more_passes(self, n: int = 3) -> None:
        """Let the resync run the zone's reconcile n more times."""
        start = self.passes()
        await self.until(f"{n} more reconcile passes", lambda: self.passes() >= start + n,
                         timeout=n * RESYNC * 1.2 + 5)

    def drive(self, scenario: Callable[[], Awaitable[None]]) -> None:
        """Run the daemon until the first full probe round, then the scenario, then stop it (exit 0)."""
        self.tmp.joinpath("r53lb.yaml").write_text(yaml.safe_dump(self.doc))
        port = free_port()
        self.healthz_url = f"http://127.0.0.1:{port}/healthz"

        async def main() -> None:
            self.daemon = Daemon(self.tmp / "r53lb.yaml", metrics_addr=("127.0.0.1", port),
                                 route53_factory=fast_route53, resync=RESYNC)
            self.task = asyncio.create_task(self.daemon.run())
            try:
                nodes = [(p["name"], n["id"]) for p in self.doc["pools"] for n in p["nodes"]]
                await self.until("the first full probe round", lambda: (
                    (self.sample("r53lb_last_probe_round_timestamp_seconds") or 0) > 0
                    and all(self.sample("r53lb_node_up", pool=p, node=n) == 1 for p, n in nodes)
                    and self.passes() >= 1
                ), timeout=20)
                await scenario()
            finally:
                self.daemon.request_stop("end of test")
                code = await asyncio.wait_for(self.task, 30)  # delivers queued notifications first
            assert code == 0

        asyncio.run(main())
        for b in self.messages():  # every message is Slack-compatible
            assert b["text"] == f"r53lb@{b['source']}: {b['message']}"


@pytest.fixture
def fleet(tmp_path: Path, moto_server: Any) -> Iterator[Fleet]:
    check_port = free_port()
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zones = build(client, {ZONE: {
        MX: {"type": "A", "sets": {k: (v, 50) for k, v in MX_NODES.items()}},
        RELAY: {"type": "A", "sets": {k: (v, 50) for k, v in RELAY_NODES.items()}},
    }})
    smtp = {k: SmtpServer(v, check_port).start() for k, v in {**MX_NODES, **RELAY_NODES}.items()}
    hook = WebhookReceiver()

    def pool(name: str, record: str, nodes: dict[str, str]) -> dict[str, Any]:
        return {"name": name, "zone": ZONE, "record": record, "checks": [{"smtp": {"port": check_port}}],
                "nodes": [{"id": k, "address": v, "weight": 50} for k, v in nodes.items()]}

    doc = {
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "state": {"path": str(tmp_path / "state.db")},
        "defaults": {"interval": f"{INTERVAL}s", "fastinter": f"{FASTINTER}s", "timeout": f"{TIMEOUT}s",
                     "rise": RISE, "fall": FALL, "helo": "probe.r53lb.test"},
        "notify": {"webhooks": [{"url": hook.url}]},
        "pools": [pool("mx", MX, MX_NODES)],
    }
    f = Fleet(tmp_path, moto_server, zones[ZONE], smtp, hook, doc, pool("relay", RELAY, RELAY_NODES))
    try:
        yield f
    finally:
        hook.stop()
        for s in smtp.values():
            s.stop()


def test_panic_keeps_a_node_at_min_in_service_and_its_end_is_a_recovery(fleet: Fleet) -> None:
    fleet.doc["pools"][0]["min_in_service"] = 2

    async def scenario() -> None:
        fleet.smtp["hlb-1"].set_mode("refuse")
        await fleet.until("hlb-1 drained", lambda: fleet.weights()["hlb-1"] == 0)
        assert fleet.alerts() == []  # two nodes left: min_in_service holds, no panic

        fleet.smtp["hlb-2"].set_mode("refuse")
        await fleet.until("panic", lambda: fleet.sample("r53lb_pool_panic", pool="mx") == 1)
        await fleet.until("hlb-2 down", lambda: fleet.sample("r53lb_node_up", pool="mx", node="hlb-2") == 0)
        await fleet.more_passes()
        # hlb-2 is down but keeps its weight: draining it would leave one node, below min_in_service.
        assert fleet.weights() == {"hlb-1": 0, "hlb-2": 50, "hlb-3": 50}
        assert fleet.sample("r53lb_node_desired_weight", pool="mx", node="hlb-2") == 50
        assert fleet.healthz().status_code == 200

        fleet.smtp["hlb-2"].set_mode("ok")
        await fleet.until("out of panic", lambda: fleet.sample("r53lb_pool_panic", pool="mx") == 0)
        await fleet.more_passes()
        assert fleet.weights() == {"hlb-1": 0, "hlb-2": 50, "hlb-3": 50}

    fleet.drive(scenario)
    assert fleet.alerts() == [
        ("panic", "pool mx: panic: 1 healthy node(s), min_in_service is 2"),
        ("recovery", "pool mx: out of panic"),
    ]
    # In order with the health changes that caused them.
    seq = [(b["kind"], b["details"].get("node")) for b in fleet.messages()]
    assert seq == [("health", "hlb-1"), ("health", "hlb-2"), ("panic", None), ("health", "hlb-2"),
                   ("recovery", None)]
    assert fleet.messages()[2]["details"] == {"pool": "mx"}


def test_every_node_of_a_pool_down_fails_open_and_its_end_is_a_recovery(fleet: Fleet) -> None:
    # Both relay nodes die while mx stays healthy: not our own network, so no hold.
    fleet.doc["pools"].append(fleet.relay_pool)

    async def scenario() -> None:
        fleet.smtp["relay-1"].set_mode("refuse")
        fleet.smtp["relay-2"].set_mode("refuse")
        await fleet.until("the fail open alert", lambda: fleet.alerts())
        await fleet.until("both relay nodes down", lambda: all(
            fleet.sample("r53lb_node_up", pool="relay", node=n) == 0 for n in RELAY_NODES))
        await fleet.more_passes()
        # Nobody healthy: the base weights stay (or come back), never all zero.
        assert fleet.weights(RELAY) == {"relay-1": 50, "relay-2": 50}
        assert fleet.weights(MX) == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}
        assert fleet.sample("r53lb_hold") == 0
        assert fleet.healthz().status_code == 200

        fleet.smtp["relay-1"].set_mode("ok")
        await fleet.until("relay-1 alone serving", lambda: fleet.weights(RELAY) == {"relay-1": 50, "relay-2": 0})
        await fleet.until("the recovery", lambda: len(fleet.alerts()) >= 2, timeout=5)
        await fleet.more_passes()

    fleet.drive(scenario)
    assert fleet.alerts() == [
        ("alert", "pool relay: no healthy node; failing open to base weights"),
        ("recovery", "pool relay: healthy nodes again, no longer failing open"),
    ]
    health = [(b["details"]["node"], b["details"]["to"]) for b in fleet.messages() if b["kind"] == "health"]
    assert sorted(health[:2]) == [("relay-1", "down"), ("relay-2", "down")] and health[2:] == [("relay-1", "up")]


def test_failing_writes_alert_once_turn_healthz_503_and_recover(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # 503 after max(this, 3 x interval) = 1.5 s of failures instead of a minute.
    monkeypatch.setattr(r53lb.engine.daemon, "ZONE_FAILING_UNHEALTHY", 0.0)

    async def scenario() -> None:
        writes = fleet.server.counts["ChangeResourceRecordSets"]
        fleet.server.fail("ChangeResourceRecordSets", 10_000)  # every write fails until reset
        fleet.smtp["hlb-2"].set_mode("refuse")
        await fleet.until("the apply failure alert", lambda: fleet.alerts())
        r = await fleet.until("/healthz 503", lambda: (r := fleet.healthz()).status_code == 503 and r)
        assert r.text.startswith("unhealthy: zone example.com: reconcile failing for ")
        assert "ServiceUnavailable" in r.text
        # Retried (every min(resync, 5 s)), each attempt refused, nothing changed in Route 53.
        await fleet.until("3 failed writes", lambda: fleet.server.counts["ChangeResourceRecordSets"] >= writes + 3)
        assert (fleet.sample("r53lb_reconcile_errors_total", zone=ZONE) or 0) >= 3
        assert fleet.weights() == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}

        fleet.server.controls.reset()  # Route 53 takes writes again
        await fleet.until("hlb-2 drained", lambda: fleet.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50})
        await fleet.until("/healthz 200", lambda: fleet.healthz().status_code == 200)
        await fleet.more_passes()
        assert fleet.server.counts["ChangeResourceRecordSets"] == 1  # one write once it worked, none since

    fleet.drive(scenario)
    alerts = fleet.alerts()
    assert [k for k, _ in alerts] == ["apply_failed", "recovery"], alerts
    assert alerts[0][1] == ("zone example.com: apply failed: Route 53 ChangeResourceRecordSets: "
                            "ServiceUnavailable: Service is unavailable, try again later (gave up after 1 attempt)")
    assert alerts[1][1].startswith("zone example.com: Route 53 reconcile works again after ")
    failed = next(b for b in fleet.messages() if b["kind"] == "apply_failed")
    assert failed["details"]["zone"] == ZONE and "ServiceUnavailable" in failed["details"]["error"]


def test_drift_is_reported_once_not_every_pass(fleet: Fleet) -> None:
    def edit_hlb3(address: str) -> None:
        rs = next(r for r in record_sets(fleet.client, fleet.zone_id, MX, "A") if r["SetIdentifier"] == "hlb-3")
        change(fleet.client, fleet.zone_id, ("UPSERT", {**rs, "ResourceRecords": [{"Value": address}]}))

    drift = "mx/hlb-3 (mx.example.com A hlb-3): drift: Route 53 holds 127.0.0.99, config says 127.0.0.73; not written"

    async def scenario() -> None:
        await asyncio.to_thread(edit_hlb3, "127.0.0.99")  # someone edits the set by hand
        await fleet.until("the drift alert", lambda: fleet.alerts())
        await fleet.more_passes(4)
        assert len(fleet.alerts()) == 1

        await asyncio.to_thread(edit_hlb3, "127.0.0.73")  # fixed by hand ...
        await fleet.more_passes()
        await asyncio.to_thread(edit_hlb3, "127.0.0.99")  # ... and broken again: worth telling
        await fleet.until("the second drift alert", lambda: len(fleet.alerts()) >= 2)
        await fleet.more_passes(3)
        # Nothing was written over the hand edit.
        held = {r["SetIdentifier"]: r["ResourceRecords"][0]["Value"]
                for r in record_sets(fleet.client, fleet.zone_id, MX, "A")}
        assert held["hlb-3"] == "127.0.0.99" and fleet.weights()["hlb-3"] == 50

    fleet.drive(scenario)
    # Told when it appears and when it clears; back again is new.
    assert fleet.alerts() == [("alert", drift), ("recovery", f"cleared: {drift}"), ("alert", drift)]
