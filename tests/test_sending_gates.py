"""Sending-IP gates (warm-up `require`): FCrDNS and SPF against a loopback authoritative DNS server.

The verdicts of probes/sending.py (RFC 7208's lookup limits included), then the gates
through `r53lb sync` and `r53lb run` against the moto server: a node without its records
is held at 0 with the missing record named, and comes back once they are published.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from loopback_dns import LoopbackDNS
from r53lb.config import SendingGates
from r53lb.demo.loopback import SmtpServer
from r53lb.probes.sending import fcrdns, spf_check

from interop.fleet import Zone
from interop.servers import free_port, wait_for

pytestmark = pytest.mark.timeout(120)

DOMAIN = "gates.test"
REV = "94.0.127.in-addr.arpa"
OK, NOPTR, WRONG = "127.0.94.1", "127.0.94.2", "127.0.94.3"


def _rev(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS().start()
    server.add_zone(DOMAIN, selftest=False)
    server.add_zone(REV, selftest=False)
    server.set(_rev(OK), ptr=["mx1.gates.test"])
    server.set("mx1.gates.test", a=[OK])
    server.set(_rev(WRONG), ptr=["mx3.gates.test"])
    server.set("mx3.gates.test", a=["127.0.94.99"])
    server.set(DOMAIN, txt=[f"v=spf1 ip4:{OK} ip4:{WRONG} -all"])
    try:
        yield server
    finally:
        server.stop()


def _spec(dns: LoopbackDNS, spf: str | None = DOMAIN) -> SendingGates:
    return SendingGates(spf=spf, nameservers=[dns.nameserver])


def test_fcrdns_verdicts(dns: LoopbackDNS) -> None:
    spec = _spec(dns)
    ok = asyncio.run(fcrdns(OK, spec, 3.0))
    assert (ok.status, ok.detail) == ("ok", f"FCrDNS {OK} -> mx1.gates.test -> {OK}")
    none = asyncio.run(fcrdns(NOPTR, spec, 3.0))
    assert (none.status, none.detail) == ("fail", f"no PTR record for {NOPTR} ({_rev(NOPTR)})")
    wrong = asyncio.run(fcrdns(WRONG, spec, 3.0))
    assert wrong.status == "fail"
    assert wrong.detail == f"PTR of {WRONG} is mx3.gates.test, whose A record does not lead back to {WRONG} (127.0.94.99)"
    dns.set(_rev(OK), drop=True)  # the server does not answer: unknown, never a failure
    lost = asyncio.run(fcrdns(OK, spec, 1.0))
    assert lost.status == "unknown"


def test_spf_verdicts_with_the_rfc_7208_limits(dns: LoopbackDNS) -> None:
    assert asyncio.run(spf_check(OK, _spec(dns), 3.0)).status == "ok"
    no = asyncio.run(spf_check(NOPTR, _spec(dns), 3.0))
    assert (no.status, no.detail) == ("fail", f"SPF of {DOMAIN} does not authorise {NOPTR} (fail)")
    dns.set(f"none.{DOMAIN}", a=["192.0.2.1"])
    none = asyncio.run(spf_check(OK, _spec(dns, f"none.{DOMAIN}"), 3.0))
    assert (none.status, none.detail) == ("fail", f"no SPF record at none.{DOMAIN} (TXT v=spf1)")
    # 11 DNS-querying terms: a permerror, as receivers treat it.
    for i in range(12):
        dns.set(f"h{i}.{DOMAIN}", a=["192.0.2.1"])
    dns.set(f"many.{DOMAIN}", txt=["v=spf1 " + " ".join(f"a:h{i}.{DOMAIN}" for i in range(11)) + f" ip4:{OK} -all"])
    many = asyncio.run(spf_check(OK, _spec(dns, f"many.{DOMAIN}"), 3.0))
    assert many.status == "fail" and "permerror" in many.detail and "lookups" in many.detail.lower(), many
    # Three lookups that find nothing (void): more than 2 is a permerror too.
    dns.set(f"void.{DOMAIN}", txt=["v=spf1 " + " ".join(f"a:nx{i}.{DOMAIN}" for i in range(3)) + f" ip4:{OK} -all"])
    void = asyncio.run(spf_check(OK, _spec(dns, f"void.{DOMAIN}"), 3.0))
    assert void.status == "fail" and "permerror" in void.detail and "void" in void.detail.lower(), void
    dns.set(DOMAIN, drop=True)
    assert asyncio.run(spf_check(OK, _spec(dns), 1.0)).status == "unknown"


def test_a_node_without_its_records_is_held_at_0_by_sync_and_released_by_run(
    dns: LoopbackDNS, moto_server: Any, tmp_path: Path,
) -> None:
    port = free_port(OK)
    servers = [SmtpServer(ip, port, hostname="mx.gates.test").start() for ip in (OK, NOPTR)]
    start = (date.today() - timedelta(days=30)).isoformat()
    try:
        zone = Zone.make(tmp_path, moto_server.endpoint_url, f"mx.{DOMAIN}",
                         {n: (ip, [{"smtp": {"port": port}}]) for n, ip in (("ok", OK), ("new", NOPTR))})
        for node in zone.doc["pools"][0]["nodes"]:
            node["warmup"] = {"start": start, "schedule": {"0d": "100%"},
                              "require": {"spf": DOMAIN, "nameservers": [dns.nameserver], "interval": "1s"}}
        zone.config.write_text(json.dumps(zone.doc))
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"ok": 50, "new": 0}
        [change] = out["changes"]
        assert change["reason"] == (f"held at 0 before warm-up: no PTR record for {NOPTR} ({_rev(NOPTR)}); "
                                    f"SPF of {DOMAIN} does not authorise {NOPTR} (fail)"), change["reason"]
        rows = {r["node"]: r for r in json.loads(zone.r53lb("status", "--json").stdout)["nodes"]}
        assert any(s["kind"] == "sending" and s["out"] for s in rows["new"]["signals"])

        daemon = zone.run()
        try:
            dns.set(_rev(NOPTR), ptr=["mx2.gates.test"])
            dns.set("mx2.gates.test", a=[NOPTR])
            dns.set(DOMAIN, txt=[f"v=spf1 ip4:127.0.94.0/24 -all"])
            wait_for("run to release the new node", lambda: zone.weights()["new"] == 50, deadline=30, every=0.2)
            assert daemon.stop() == 0
        finally:
            if daemon.proc.poll() is None:
                daemon.stop()
        history = zone.r53lb("history", "--json").stdout
        assert "sending" in history
    finally:
        for s in servers:
            s.stop()
        zone.close()
