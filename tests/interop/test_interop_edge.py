"""HAProxy, nginx and rbldnsd from Debian in front of or beside the nodes, judged by r53lb's CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from r53lb.demo.loopback import SmtpServer

from .fleet import Certs, Zone
from .servers import HAProxy, Nginx, Rbldnsd, ResetWatch, free_port, wait_for, world_readable_dir

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with world_readable_dir("r53lb-edge-") as path:
        yield path


# --- HAProxy: TCP mode, option smtpchk, both backends dead ------------------------------------


def test_haproxy_with_every_backend_dead_is_drained(root: Path, moto_server: Any, tmp_path: Path) -> None:
    port = free_port("127.0.91.2")
    backends = [SmtpServer("127.0.91.2", port).start(), SmtpServer("127.0.91.3", port).start()]
    other = SmtpServer("127.0.91.4", port).start()  # the pool's other balancer
    lb = HAProxy(root, "127.0.91.1", [(b.host, b.port) for b in backends]).start()
    watch = ResetWatch(lb.port)
    zone = Zone.make(tmp_path, moto_server.endpoint_url, "relay.interop.test", {
        "hlb-1": (lb.host, [{"smtp": {"port": lb.port, "envelope": {"to": "postmaster@mx.test"}}}]),
        "hlb-2": (other.host, [{"smtp": {"port": other.port, "envelope": {"to": "postmaster@mx.test"}}}]),
    })
    try:
        code, out, err = zone.sync()  # HAProxy starts with its servers up; smtpchk keeps them so
        assert (code, out.get("changes")) == (0, []), err + str(out) + lb.log()
        resets_healthy = list(watch.resets)

        for b in backends:
            b.stop()
        wait_for("HAProxy to see no server left", lambda: "has no server available" in lb.log(),
                 deadline=5)
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"hlb-1": 0, "hlb-2": 50}
        [change] = out["changes"]
        # HAProxy accepts, finds no server and closes: no greeting ever comes.
        assert change["node"] == "hlb-1" and change["reason"].startswith("down: smtp: greeting: connection closed"), change
    finally:
        watch.stop()
        zone.close()
        lb.stop()
        for s in [*backends, other]:
            s.stop()
    assert resets_healthy == [], f"TCP resets through HAProxy while healthy: {resets_healthy}"
    sessions = [line for line in lb.log().splitlines() if " smtp mta/" in line]
    assert sessions, lb.log()
    # tcplog's termination state: "--" is a normal close; "CD" would be a client abort.
    healthy = [line for line in sessions if " mta/mta" in line and "<NOSRV>" not in line]
    assert healthy and all(" -- " in line for line in healthy), healthy


# --- nginx: a name-based HTTPS vhost -----------------------------------------------------------

VHOST = "api.interop.test"


@pytest.fixture(scope="module")
def nginx(root: Path) -> Iterator[tuple[Nginx, Certs]]:
    certs = Certs.make(root / "nginx-certs", VHOST)
    tls = f"ssl_certificate {certs.cert_file}; ssl_certificate_key {certs.key_file};"
    server = Nginx(root, "127.0.92.1", f"""
    server {{
        listen LISTEN ssl default_server;
        {tls}
        return 404;
    }}
    server {{
        listen LISTEN ssl;
        server_name {VHOST};
        {tls}
        location = /health {{ return 200 "ok\\n"; }}
        location = /down   {{ return 503 "maintenance\\n"; }}
        location = /away   {{ return 301 https://elsewhere.interop.test/health; }}
        location = /self   {{ return 301 /health; }}
    }}
""").start()
    try:
        yield server, certs
    finally:
        server.stop()


def test_nginx_vhost_verdicts_through_r53lb_probe(nginx: tuple[Nginx, Certs], tmp_path: Path) -> None:
    server, certs = nginx

    def http(path: str, **options: Any) -> list[dict[str, Any]]:
        return [{"http": {"url": f"https://{{address}}:{server.port}{path}", "host": VHOST,
                          "ca_file": str(certs.ca_file), **options}}]

    nodes = {
        "healthy": http("/health", expect_body="^ok"),
        "unavailable": http("/down"),
        "off-node-redirect": http("/away", follow_redirects=True),
        # nginx makes `return 301 /health` absolute with the vhost's name: still this node.
        "own-redirect": http("/self", follow_redirects=True, expect_status=[200]),
        "no-vhost": [{"http": {"url": f"https://{{address}}:{server.port}/health", "host": "other.interop.test",
                               "verify": False}}],
    }
    # Only a config: `r53lb probe` touches neither Route 53 nor the state.
    zone = Zone.offline(tmp_path, "api.interop.test", {k: (server.host, c) for k, c in nodes.items()})
    watch = ResetWatch(server.port)
    try:
        code, results, err = zone.probe()
    finally:
        resets = watch.stop()
    assert code == 3, err
    verdicts = {node: (r["ok"], r["detail"]) for node, r in results.items()}
    assert verdicts["healthy"][0] is True, verdicts
    assert verdicts["own-redirect"][0] is True, verdicts
    assert verdicts["unavailable"] == (False, "status 503 (expected 200-399)")
    assert verdicts["off-node-redirect"] == (
        False, "status 301 redirects off the node to https://elsewhere.interop.test/health")
    assert verdicts["no-vhost"] == (False, "status 404 (expected 200-399)")
    assert resets == [], f"TCP resets on nginx's port: {resets}"


# --- rbldnsd: listed -> quarantined, delisted -> back ------------------------------------------


def test_rbldnsd_listing_quarantines_and_delisting_restores(root: Path, moto_server: Any, tmp_path: Path) -> None:
    port = free_port("127.0.93.11")
    relays = {"relay-1": SmtpServer("127.0.93.11", port).start(), "relay-2": SmtpServer("127.0.93.12", port).start()}
    bl = Rbldnsd(root, "127.0.93.1", "bl.interop.test").start()
    checks = [{"smtp": {"port": port}},
              {"dnsbl": {"zones": ["bl.interop.test"], "nameservers": [bl.nameserver], "interval": "0s"}}]
    zone = Zone.make(tmp_path, moto_server.endpoint_url, "out.interop.test",
                     {k: (s.host, checks) for k, s in relays.items()})
    try:
        code, out, err = zone.sync()
        assert (code, out.get("changes")) == (0, []), err + str(out)

        bl.set_listed(["127.0.93.12"])
        wait_for("rbldnsd to list relay-2", lambda: bl.lookup("127.0.93.12") == "127.0.0.2")
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"relay-1": 50, "relay-2": 0}
        [change] = out["changes"]
        assert change["reason"].startswith("quarantined: listed on bl.interop.test (127.0.0.2"), change

        bl.set_listed([])
        wait_for("rbldnsd to delist relay-2", lambda: bl.lookup("127.0.93.12") is None)
        for _ in range(3):  # the quarantine lifts on the next clean lookup; bounded
            code, out, err = zone.sync()
            assert code == 0, err
            if zone.weights()["relay-2"] == 50:
                break
        assert zone.weights() == {"relay-1": 50, "relay-2": 50}
    finally:
        zone.close()
        bl.stop()
        for s in relays.values():
            s.stop()
