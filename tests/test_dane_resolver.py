"""DANE with `resolver`: the TLSA set read through a validating resolver counts only with the AD bit.

A loopback DNS server stands in for the resolver (it sets AD on its TLSA answers or not);
two STARTTLS nodes (aiosmtpd) with a key each, `r53lb sync` against the moto server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback_dns import LoopbackDNS
from r53lb.core.dane import spki_sha256
from r53lb.demo.loopback import SmtpServer

from interop.fleet import Zone
from interop.servers import free_port

pytestmark = pytest.mark.timeout(120)

RECORD = "mx.dane-r.test"
NODES = {"a": "127.0.96.1", "b": "127.0.96.2"}


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS().start()
    server.add_zone("dane-r.test", selftest=False)
    try:
        yield server
    finally:
        server.stop()


def test_only_a_validated_tlsa_set_takes_a_node_out(dns: LoopbackDNS, moto_server: Any, tmp_path: Path) -> None:
    port = free_port(NODES["a"])
    servers = {n: SmtpServer(ip, port, hostname=RECORD, tls="starttls").start() for n, ip in NODES.items()}
    try:
        dns.set(f"_25._tcp.{RECORD}", tlsa=[f"3 1 1 {spki_sha256(servers['a'].cert_der)}"])
        dns.ad = True
        check = {"smtp": {"port": port, "starttls": True, "dane": {"resolver": [dns.nameserver], "refresh": "1s"}}}
        zone = Zone.make(tmp_path, moto_server.endpoint_url, RECORD, {n: (ip, [check]) for n, ip in NODES.items()})
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"a": 50, "b": 0}
        assert out["changes"][0]["reason"].startswith(
            f"down: smtp: dane: no TLSA record of _25._tcp.{RECORD} matches: the server's SPKI sha256 is "
            f"{spki_sha256(servers['b'].cert_der)}"), out

        # Without the AD bit the set is not validated: DANE senders ignore it, and so does r53lb.
        dns.ad = False
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"a": 50, "b": 50}
        rows = {r["node"]: r for r in json.loads(zone.r53lb("status", "--json").stdout)["nodes"]}
        assert rows["b"]["dane"]["state"] == "unusable"
        assert "not DNSSEC-validated" in rows["b"]["dane"]["detail"]
    finally:
        for s in servers.values():
            s.stop()
