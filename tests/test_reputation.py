"""Reputation and warm-up through the real cycle: loopback DNS blocklists, SMTP servers, strict moto."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import datetime, timedelta, timezone

import boto3
import pytest
import yaml

from moto_fixtures.spec import build, weights
from r53lb.config import Config
from r53lb.engine.cycle import Controller
from r53lb.demo.loopback import SmtpServer
from loopback_dns import LoopbackDNS
from r53lb.probes import dnsbl
from r53lb.aws.route53 import Route53
from r53lb.state.sqlite import StateStore
from r53lb.engine.status import collect

NODES = {"n1": "127.0.0.61", "n2": "127.0.0.62", "n3": "127.0.0.63"}
V6 = "2001:db8::63"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def no_sleep(_: float) -> None:
    return None


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def dns_server():
    dnsbl.clear_selftest_cache()
    with LoopbackDNS() as server:
        server.add_zone("bl.test")
        server.add_zone("bl2.test")
        server.add_zone("broken.test", selftest=False)
        yield server
    dnsbl.clear_selftest_cache()


@pytest.fixture
def smtp_port():
    port = free_port()
    servers = [SmtpServer(a, port).start() for a in NODES.values()]
    yield port
    for s in servers:
        s.stop()


def setup(tmp_path, port, dns_server, *, zones=("bl.test",), quarantine="listed_on_any", warmup=None, clock=None):
    client = boto3.client("route53", region_name="us-east-1")
    zone_id = build(client, {"example.com": {"mx.example.com": [
        {"type": "A", "sets": {k: (v, 50) for k, v in NODES.items()}},
        {"type": "AAAA", "sets": {"n3": (V6, 50)}},
    ]}})["example.com"]
    nodes = [{"id": k, "address": v, "weight": 50} for k, v in NODES.items()]
    nodes[2]["address"] = [NODES["n3"], V6]
    if warmup:
        nodes[0]["warmup"] = warmup
    cfg = Config.model_validate(yaml.safe_load(yaml.safe_dump({
        "state": {"path": str(tmp_path / "state.db")},
        "defaults": {"timeout": "1s", "fastinter": "10ms", "rise": 1, "fall": 1, "helo": "probe.test"},
        "pools": [{
            "name": "mx", "zone": "example.com", "record": "mx.example.com",
            "quarantine": quarantine, "max_drain_per_cycle": 3,
            "checks": [{"smtp": {"port": port}},
                       {"dnsbl": {"zones": list(zones), "nameservers": [dns_server.nameserver], "interval": "0s"}}],
            "nodes": nodes,
        }],
    })))
    store = StateStore.open(tmp_path / "state.db")
    ctl = Controller(cfg, store, Route53(cfg.aws), sleep=no_sleep, clock=clock or Clock())
    return ctl, client, zone_id


def run(ctl):
    return asyncio.run(ctl.cycle())


def test_listed_ip_is_quarantined_and_restored_when_delisted(tmp_path, mock_route53, dns_server, smtp_port):
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server)
    assert run(ctl).plan.changes == []
    dns_server.list_ip("bl.test", NODES["n2"], txt="spam source, see https://bl.test/lookup")
    res = run(ctl)
    assert res.exit_code == 0
    assert weights(client, zid, "mx.example.com") == {"n1": 50, "n2": 0, "n3": 50}
    [c] = res.plan.changes
    assert c.reason.startswith("quarantined: listed on bl.test (127.0.0.2)")
    events = [e for e in ctl.store.events() if e.kind == "reputation"]
    assert events[-1].node == "n2" and events[-1].to_state == "bl.test"
    row = next(r for r in collect(ctl)["nodes"] if r["node"] == "n2")
    assert row["quarantined"] and row["listed_on"] == ["bl.test"]

    dns_server.delist("bl.test", NODES["n2"])
    run(ctl)
    assert weights(client, zid, "mx.example.com")["n2"] == 50
    assert [e for e in ctl.store.events() if e.kind == "reputation"][-1].to_state == "clean"


def test_unknown_never_changes_a_weight(tmp_path, mock_route53, dns_server, smtp_port):
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server)
    dns_server.list_ip("bl.test", NODES["n2"])
    run(ctl)
    assert weights(client, zid, "mx.example.com")["n2"] == 0
    # The list starts answering "you asked through a public resolver": unknown, weight untouched.
    dns_server.list_ip("bl.test", NODES["n2"], code="127.255.255.254")
    dns_server.list_ip("bl.test", NODES["n1"], code="127.255.255.254")
    res = run(ctl)
    assert res.plan.changes == []
    assert weights(client, zid, "mx.example.com") == {"n1": 50, "n2": 0, "n3": 50}


def test_timeout_is_unknown(tmp_path, mock_route53, dns_server, smtp_port):
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server)
    dns_server.set(f"{'.'.join(reversed(NODES['n1'].split('.')))}.bl.test", drop=True)
    res = run(ctl)
    assert res.plan.changes == [] and weights(client, zid, "mx.example.com")["n1"] == 50


def test_zone_failing_the_self_test_is_ignored_with_a_warning(tmp_path, mock_route53, dns_server, smtp_port, caplog):
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server, zones=("broken.test",))
    dns_server.list_ip("broken.test", NODES["n2"])
    with caplog.at_level(logging.WARNING, logger="r53lb"):
        res = run(ctl)
    assert res.plan.changes == []
    assert any("self-test" in r.getMessage() for r in caplog.records)


def test_ipv6_sending_address_is_looked_up_in_nibble_form(tmp_path, mock_route53, dns_server, smtp_port):
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server)
    dns_server.list_ip("bl.test", V6)
    run(ctl)
    assert weights(client, zid, "mx.example.com", "AAAA") == {"n3": 0}
    assert weights(client, zid, "mx.example.com", "A")["n3"] == 0  # the node moves as a whole


def test_listed_on_n_needs_agreement(tmp_path, mock_route53, dns_server, smtp_port):
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server, zones=("bl.test", "bl2.test"), quarantine="listed_on_n: 2")
    dns_server.list_ip("bl.test", NODES["n1"])
    run(ctl)
    assert weights(client, zid, "mx.example.com")["n1"] == 50
    dns_server.list_ip("bl2.test", NODES["n1"])
    run(ctl)
    assert weights(client, zid, "mx.example.com")["n1"] == 0


def test_warmup_share_in_status_and_route53(tmp_path, mock_route53, dns_server, smtp_port):
    clock = Clock()
    start = (clock.now - timedelta(days=3)).date().isoformat()
    ctl, client, zid = setup(tmp_path, smtp_port, dns_server, clock=clock,
                             warmup={"start": start, "schedule": {"0d": "5%", "3d": "20%", "7d": "50%", "14d": "100%"}})
    res = run(ctl)
    assert weights(client, zid, "mx.example.com")["n1"] == 10  # 20% of 50, on day 3
    assert res.plan.changes[0].reason == "warm-up 20%"
    row = next(r for r in collect(ctl)["nodes"] if r["node"] == "n1")
    assert row["warmup_share"] == 0.2
    assert row["warmup_next"]["share"] == 0.5
    clock.now += timedelta(days=2)  # day 5: halfway from 20% to 50%
    run(ctl)
    assert weights(client, zid, "mx.example.com")["n1"] == 18
    # A drain wins over warm-up.
    ctl.store.drain("mx", "n1", "rebuild", clock.now)
    run(ctl)
    assert weights(client, zid, "mx.example.com")["n1"] == 0
