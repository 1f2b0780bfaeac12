"""MTA-STS (RFC 8461): the policy served by a real nginx over HTTPS, its TXT by a loopback DNS server.

Three SMTP nodes (aiosmtpd, STARTTLS) behind mx.sts.test: `good` sends its intermediate,
`nochain` forgets it (MTA-STS senders fail, DANE-EE senders would not), `wrongname` has a
certificate for another name. `testing` warns, `enforce` takes the failing nodes out, a
policy whose mx patterns miss the pool's record raises an alert and drains nothing.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from r53lb.demo.loopback import SmtpServer

from loopback_dns import LoopbackDNS

from .fleet import Zone
from .servers import Nginx, free_port, wait_for, world_readable_dir

pytestmark = pytest.mark.timeout(180)

DOMAIN = "sts.test"
RECORD = "mx.sts.test"
HOSTS = {"good": "127.0.93.1", "nochain": "127.0.93.2", "wrongname": "127.0.93.3"}
POLICY_HOST = "127.0.93.10"


def _policy(mode: str, mx: str = RECORD, max_age: int = 86400) -> str:
    return f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n"


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.inter = self.ca.create_child_ca()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.policy_file = root / "mta-sts.txt"
        self.dns = LoopbackDNS().start()
        self.dns.add_zone(DOMAIN, selftest=False)
        self.nodes: dict[str, SmtpServer] = {}

    def ctx(self, name: str, chain: bool = True) -> ssl.SSLContext:
        leaf = self.inter.issue_cert(name)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        pem = self.root / f"{name}-{len(list(self.root.iterdir()))}.pem"
        pems = leaf.cert_chain_pems if chain else leaf.cert_chain_pems[:1]
        pem.write_bytes(b"".join(p.bytes() for p in pems) + leaf.private_key_pem.bytes())
        ctx.load_cert_chain(str(pem))
        return ctx

    def publish(self, policy_id: str, body: str) -> None:
        self.policy_file.write_text(body)
        self.dns.set(f"_mta-sts.{DOMAIN}", txt=[f"v=STSv1; id={policy_id}"])


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[World, Nginx, int]]:
    with world_readable_dir("r53lb-mtasts-") as root:
        w = World(root)
        site = w.inter.issue_cert(f"mta-sts.{DOMAIN}")
        (root / "site.pem").write_bytes(b"".join(p.bytes() for p in site.cert_chain_pems))
        (root / "site.key").write_bytes(site.private_key_pem.bytes())
        (root / "site.key").chmod(0o644)
        w.publish("1", _policy("testing"))
        nginx = Nginx(root, POLICY_HOST, f"""
    server {{
        listen LISTEN ssl;
        server_name mta-sts.{DOMAIN};
        ssl_certificate {root}/site.pem; ssl_certificate_key {root}/site.key;
        location = /.well-known/mta-sts.txt {{ alias {w.policy_file}; default_type text/plain; }}
    }}
""").start()
        port = free_port(HOSTS["good"])
        try:
            for node, host in HOSTS.items():
                srv = SmtpServer(host, port, hostname=RECORD, tls="starttls")
                srv._ctx = w.ctx("other.sts.test" if node == "wrongname" else RECORD, chain=node != "nochain")
                w.nodes[node] = srv.start()
            yield w, nginx, port
        finally:
            for srv in w.nodes.values():
                srv.stop()
            nginx.stop()
            w.dns.stop()


def test_testing_warns_enforce_drains_and_a_missed_mx_alerts(world: tuple[World, Nginx, int], moto_server: Any,
                                                            tmp_path: Path) -> None:
    w, nginx, port = world
    checks = [{"smtp": {"port": port, "starttls": True, "verify": False}}]
    zone = Zone.make(tmp_path, moto_server.endpoint_url, RECORD, {k: (h, checks) for k, h in HOSTS.items()},
                     max_drain_per_cycle=3, mta_sts={
                         "domain": DOMAIN, "nameservers": [w.dns.nameserver], "ca_file": str(w.ca_file),
                         "policy_address": f"{POLICY_HOST}:{nginx.port}", "interval": "1s", "port": port})
    try:
        # testing: every node keeps its weight; the failing ones carry a warning in status.
        w.publish("1", _policy("testing"))
        code, out, err = zone.sync()
        assert (code, out.get("changes")) == (0, []), err
        rows = {r["node"]: r for r in json.loads(zone.r53lb("status", "--json").stdout)["nodes"]}
        warn = {n: [s["reason"] for s in r["signals"] if s["kind"] == "mta_sts"][0] for n, r in rows.items()}
        assert warn["good"] == f"certificate valid for {RECORD}"
        assert warn["nochain"].startswith("MTA-STS testing (warning only): certificate verify failed: "
                                          "unable to get local issuer certificate"), warn
        assert "MTA-STS testing (warning only)" in warn["wrongname"] and "mx.sts.test" in warn["wrongname"], warn

        # enforce: the missing intermediate and the wrong name are out.
        w.publish("2", _policy("enforce"))
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"good": 50, "nochain": 0, "wrongname": 0}
        reasons = {c["node"]: c["reason"] for c in out["changes"]}
        assert reasons["nochain"].startswith("MTA-STS enforce: certificate verify failed: unable to get local issuer"), reasons
        assert "MTA-STS enforce: certificate verify failed" in reasons["wrongname"], reasons

        # run: the node that forgot its intermediate is fixed, and comes back.
        daemon = zone.run()
        try:
            w.nodes["nochain"]._ctx = w.ctx(RECORD, chain=True)
            wait_for("run to restore nochain", lambda: zone.weights()["nochain"] == 50, deadline=30, every=0.2)
            assert zone.weights()["wrongname"] == 0
            assert daemon.stop() == 0
        finally:
            if daemon.proc.poll() is None:
                daemon.stop()

        # A policy whose mx patterns miss the pool's record: an alert, no drain.
        w.publish("3", _policy("enforce", mx="*.elsewhere.test"))
        code, out, err = zone.sync()
        assert code == 0, err
        assert "mx.sts.test matches no mx pattern of sts.test's MTA-STS policy" in err, err
        assert zone.weights() == {"good": 50, "nochain": 50, "wrongname": 0}
    finally:
        zone.close()


def test_hostile_or_broken_policy_servers_get_a_reason(world: tuple[World, Nginx, int]) -> None:
    import asyncio

    from r53lb.config import MtaSts
    from r53lb.probes.mtasts import fetch_policy

    w, nginx, _ = world
    spec = MtaSts(domain=DOMAIN, nameservers=[w.dns.nameserver], ca_file=w.ca_file,
                  policy_address=f"{POLICY_HOST}:{nginx.port}")
    w.publish("9", "x" * (200 * 1024))
    got = asyncio.run(fetch_policy(spec, 5.0))
    assert got.policy is None and "larger than 64 KiB" in got.error
    w.publish("9", "version: STSv1\nmode: sometimes\nmx: mx.sts.test\nmax_age: 10\n")
    got = asyncio.run(fetch_policy(spec, 5.0))
    assert "policy mode 'sometimes'" in got.error
    # Not trusted: the system CAs do not know the test CA.
    got = asyncio.run(fetch_policy(spec.model_copy(update={"ca_file": None}), 5.0))
    assert "certificate verify failed" in got.error
    w.dns.remove(f"_mta-sts.{DOMAIN}")
    got = asyncio.run(fetch_policy(spec, 5.0))
    assert "no TXT record at _mta-sts.sts.test" in got.error
    w.publish("1", _policy("testing"))
