"""`r53lb verify` and `drain/enable --wait`: the pure comparison, then end to end through the CLI
against the strict moto server and loopback authoritative servers (tests/authdns.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import dns.message
import dns.query
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from authdns import AuthDNS
from moto_fixtures.spec import build, change, record_sets, set_weight, weights
from r53lb.core.records import RecordSet
from r53lb.core.verify import Answer, Tolerance, compare, expected_shares
from r53lb.demo.process import stop_process

# --- the pure comparison ------------------------------------------------------------------


def rs(node: str, weight: int, value: str, rtype: str = "A") -> RecordSet:
    return RecordSet("mx.example.com", rtype, node, weight, 60, (value,))


def answers(spec: dict[str, int]) -> list[Answer]:
    return [Answer(values=frozenset({v})) for v, n in spec.items() for _ in range(n)]


SETS = [rs("a", 50, "192.0.2.1"), rs("b", 50, "192.0.2.2"), rs("c", 0, "192.0.2.3")]


def test_expected_shares_follow_route53_weighted_routing():
    assert expected_shares({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
    assert expected_shares({"a": 0, "b": 0, "c": 0}) == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert expected_shares({"a": 5, "b": 0}) == {"a": 1.0, "b": 0.0}


def test_tolerance_is_binomial_sigmas_plus_floor():
    tol = Tolerance(sigmas=4, floor=0.02)
    assert tol.band(0.5, 400) == pytest.approx(4 * 0.025 + 0.02)
    assert tol.band(0.0, 400) == pytest.approx(0.02)
    assert tol.band(0.5, 1600) < tol.band(0.5, 400)
    assert "4 binomial sigmas + 2% for 400 answers per server (at most ±12.0%" in tol.describe(400)


def test_shares_in_line_pass():
    v = compare("ns1", "mx.example.com", "A", SETS, answers({"192.0.2.1": 96, "192.0.2.2": 104}), Tolerance())
    assert v.ok and v.problems == ()
    assert {n.node: n.count for n in v.nodes} == {"a": 96, "b": 104, "c": 0}


def test_a_node_at_weight_zero_served_once_fails():
    v = compare("ns1", "mx.example.com", "A", SETS,
                answers({"192.0.2.1": 100, "192.0.2.2": 99, "192.0.2.3": 1}), Tolerance())
    assert not v.ok
    assert v.problems == ("c has weight 0 in Route 53 but was served 1 of 200 times",)
    assert v.count("c") == 1


def test_share_outside_tolerance_fails_inside_passes():
    # 200 answers, expected 50%: band = 4 * sqrt(.25/200) + 2% = 16.1%
    inside = compare("ns1", "mx.example.com", "A", SETS, answers({"192.0.2.1": 132, "192.0.2.2": 68}), Tolerance())
    assert inside.ok, inside.problems
    outside = compare("ns1", "mx.example.com", "A", SETS, answers({"192.0.2.1": 134, "192.0.2.2": 66}), Tolerance())
    assert not outside.ok
    assert outside.problems[0] == "a served 67.0% of answers; its weight 50 gives 50.0% ± 16.1%"


def test_all_zero_pool_is_served_evenly():
    sets = [rs("a", 0, "192.0.2.1"), rs("b", 0, "192.0.2.2")]
    assert compare("ns1", "mx.example.com", "A", sets, answers({"192.0.2.1": 50, "192.0.2.2": 50}), Tolerance()).ok
    lopsided = compare("ns1", "mx.example.com", "A", sets, answers({"192.0.2.1": 100}), Tolerance())
    assert not lopsided.ok
    assert "b served 0.0% of answers; the whole pool at weight 0 gives each 50.0% ± 22.0%" in lopsided.problems


def test_unknown_values_errors_and_value_forms():
    v = compare("ns1", "mx.example.com", "A", SETS,
                answers({"192.0.2.1": 10, "198.51.100.9": 2}) + [Answer(error="NXDOMAIN")], Tolerance())
    assert "served 198.51.100.9 2 times: no A record set at mx.example.com holds it" in v.problems
    assert "1 of 13 queries got no record set (NXDOMAIN x1)" in v.problems
    # IPv6 compares by value, names without case or final dot.
    v6 = compare("ns1", "mx.example.com", "AAAA", [rs("a", 1, "2001:0db8::1", "AAAA")],
                 answers({"2001:db8::1": 20}), Tolerance())
    assert v6.ok
    cn = compare("ns1", "mx.example.com", "CNAME", [rs("a", 1, "Mail.Example.net.", "CNAME")],
                 answers({"mail.example.net": 20}), Tolerance())
    assert cn.ok


def test_no_record_set_in_route53_is_a_problem():
    v = compare("ns1", "mx.example.com", "A", [], [Answer(error="NXDOMAIN")] * 3, Tolerance())
    assert not v.ok and v.problems[0] == "Route 53 holds no weighted A record set at mx.example.com"


# --- end to end ---------------------------------------------------------------------------

MX = {"hlb-1": "192.0.2.1", "hlb-2": "192.0.2.2", "hlb-3": "192.0.2.3"}
TTL = 1


@dataclass
class Env:
    config: Path
    client: object
    zone_id: str
    endpoint: str
    servers: list[AuthDNS]

    def r53lb(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        ns = [a for s in self.servers for a in ("--nameserver", s.nameserver)]
        cmd = [sys.executable, "-m", "r53lb", "-c", str(self.config), *args]
        if args[0] in ("verify", "drain", "enable"):
            cmd += ns
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def weights(self) -> dict[str, int]:
        return weights(self.client, self.zone_id, "mx.example.com", "A")


@pytest.fixture
def env(tmp_path, moto_server):
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zones = build(client, {"example.com": {
        "mx.example.com": {"type": "A", "ttl": TTL, "sets": {k: (v, 50) for k, v in MX.items()}},
    }})
    config = tmp_path / "r53lb.yaml"
    config.write_text(yaml.safe_dump({
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "state": {"path": str(tmp_path / "state.db")},
        "pools": [{"name": "mx", "zone": "example.com", "record": "mx.example.com", "ttl": TTL,
                   "checks": [{"tcp": {"port": 25}}],  # never probed: verify and --wait do not probe
                   "nodes": [{"id": k, "address": v, "weight": 50} for k, v in MX.items()]}],
    }))
    servers = [AuthDNS(moto_server.endpoint_url, "example.com", host=h).start() for h in ("127.0.0.61", "127.0.0.62")]
    yield Env(config, client, zones["example.com"], moto_server.endpoint_url, servers)
    for s in servers:
        s.stop()


def ask(server: AuthDNS, name: str, rtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rtype), server.host, port=server.port, timeout=2)


def test_authdns_serves_route53_weighted_routing(env):
    set_weight(env.client, env.zone_id, "mx.example.com", "A", "hlb-3", 0)
    ns = env.servers[0]
    deadline = time.monotonic() + 5
    while ns.weight("mx.example.com", "A", "hlb-3") != 0:  # it re-reads moto every 100 ms
        assert time.monotonic() < deadline, "authdns never saw the new weight"
        time.sleep(0.05)
    seen = set()
    for _ in range(100):
        r = ask(ns, "mx.example.com", "A")
        assert r.rcode() == dns.rcode.NOERROR and len(r.answer) == 1 and r.answer[0].ttl == TTL
        seen.add(r.answer[0][0].to_text())
    assert seen == {MX["hlb-1"], MX["hlb-2"]}  # hlb-3 at 0 never, the two others both
    assert ask(ns, "nope.example.com", "A").rcode() == dns.rcode.NXDOMAIN
    empty = ask(ns, "mx.example.com", "AAAA")
    assert empty.rcode() == dns.rcode.NOERROR and not empty.answer and empty.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(ns, "example.com", "SOA").answer[0].rdtype == dns.rdatatype.SOA
    assert len(ask(ns, "example.com", "NS").answer[0]) == 4
    assert ask(ns, "example.org", "A").rcode() == dns.rcode.REFUSED


def test_verify_passes_when_dns_serves_route53_weights(env):
    p = env.r53lb("verify", "--json", "--samples", "300")
    assert p.returncode == 0, p.stderr + p.stdout
    out = json.loads(p.stdout)
    assert out["ok"] is True and out["samples"] == 300
    assert out["tolerance"]["sigmas"] == 4 and out["tolerance"]["floor"] == 0.02
    assert len(out["checks"]) == 2  # one per name server
    for check in out["checks"]:
        assert set(check) >= {"pool", "server", "record", "type", "ok", "samples", "answered", "nodes",
                              "unexpected", "errors", "problems"}
        assert check["answered"] == 300 and check["problems"] == []
        for n in check["nodes"]:
            assert n["expected_share"] == pytest.approx(1 / 3, abs=1e-3)
            assert abs(n["share"] - n["expected_share"]) <= n["tolerance"]
    assert {c["server"] for c in out["checks"]} == {s.nameserver for s in env.servers}
    # The table for people states the tolerance.
    p = env.r53lb("verify", "mx")
    assert p.returncode == 0, p.stderr
    assert "tolerance: 4 binomial sigmas + 2% for 200 answers per server" in p.stdout
    assert "DNS serves what Route 53 holds" in p.stdout


def test_verify_fails_when_a_lagging_server_hands_out_a_node_at_zero(env):
    env.servers[1].lag = 3600  # never catches up during this test
    set_weight(env.client, env.zone_id, "mx.example.com", "A", "hlb-2", 0)
    p = env.r53lb("verify", "--json")
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["ok"] is False
    by_server = {c["server"]: c for c in out["checks"]}
    assert by_server[env.servers[0].nameserver]["ok"] is True
    lagging = by_server[env.servers[1].nameserver]
    assert lagging["ok"] is False
    assert any(pr.startswith("hlb-2 has weight 0 in Route 53 but was served") for pr in lagging["problems"])
    p = env.r53lb("verify")
    assert p.returncode == 1 and "DNS disagrees with Route 53" in p.stdout


def test_verify_catches_a_share_out_of_line(env):
    # The server serves 50/50/50 while Route 53 now holds 200/1/1: hlb-1 should get ~99%.
    env.servers[0].lag = env.servers[1].lag = 3600
    for node, w in (("hlb-1", 200), ("hlb-2", 1), ("hlb-3", 1)):
        set_weight(env.client, env.zone_id, "mx.example.com", "A", node, w)
    p = env.r53lb("verify", "--json", "--samples", "100")
    assert p.returncode == 1
    problems = [pr for c in json.loads(p.stdout)["checks"] for pr in c["problems"]]
    assert any(pr.startswith("hlb-1 served") and "gives 99.0% ±" in pr for pr in problems), problems


def test_verify_bad_input_is_one_line(env):
    p = env.r53lb("verify", "nope")
    assert p.returncode == 2 and p.stderr.strip() == "r53lb: unknown pool 'nope' (known: mx)"
    p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(env.config), "verify", "--nameserver", "127.0.0.1:99999"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.strip() == "r53lb: name server '127.0.0.1:99999': port '99999' is not 1-65535"


def test_verify_reports_a_silent_server(env):
    env.servers[1].stop()
    p = env.r53lb("verify", "--json", "--samples", "2", timeout=120)
    assert p.returncode == 1
    dead = next(c for c in json.loads(p.stdout)["checks"] if c["server"] == env.servers[1].nameserver)
    assert dead["errors"] == {"timeout": 2} and dead["answered"] == 0


class Stalling:
    """A UDP relay in front of a name server that passes on one query in `every` and drops the rest."""

    def __init__(self, upstream: AuthDNS, every: int = 4) -> None:
        import socket
        import threading

        self.upstream, self.every, self.seen = upstream, every, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.71", 0))
        self.sock.settimeout(0.2)
        self.nameserver = f"127.0.0.71:{self.sock.getsockname()[1]}"
        self.stopping = False
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        import socket

        while not self.stopping:
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            self.seen += 1
            if self.seen % self.every:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
                up.settimeout(1)
                up.sendto(data, (self.upstream.host, self.upstream.port))
                try:
                    self.sock.sendto(up.recv(4096), peer)
                except socket.timeout:
                    pass

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=2)
        self.sock.close()


def test_verify_says_a_dead_server_did_not_answer_and_does_not_wait_on_it(env):
    env.servers[1].stop()
    started = time.monotonic()
    p = env.r53lb("verify", "--samples", "200")
    took = time.monotonic() - started
    assert p.returncode == 1
    assert took < 30, took  # one round of query timeouts, not 200 samples x 3 tries (76 s)
    dead = env.servers[1].nameserver
    rows = [line for line in p.stdout.splitlines() if dead in line and "NO ANSWER" in line]
    assert len(rows) == 1, p.stdout  # one row for the server, not every node "WRONG 0.0% (0)"
    assert "WRONG" not in p.stdout and "±100.0%" not in p.stdout
    assert "DNS disagrees" not in p.stdout
    assert f"no answer from {dead}: what DNS serves is not known" in p.stdout
    assert "did not answer (timeout x" in p.stdout
    # The tolerance line's "at most" is the widest band any row shows.
    import re

    widest = float(re.search(r"at most ±([0-9.]+)%", p.stdout).group(1))
    bands = [float(b) for b in re.findall(r"±([0-9.]+)%", p.stdout.split("tolerance:")[0])]
    assert bands and max(bands) <= widest, (bands, widest)
    p = env.r53lb("verify", "--json", "--samples", "200")
    by_server = {c["server"]: c for c in json.loads(p.stdout)["checks"]}
    assert by_server[dead]["outcome"] == "no answer" and by_server[env.servers[0].nameserver]["outcome"] == "ok"


def test_verify_and_drain_wait_keep_to_timeout_against_a_stalling_server(env):
    relay = Stalling(env.servers[1])
    try:
        started = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(env.config), "verify", "--samples", "200",
                            "--timeout", "4s", "--nameserver", relay.nameserver], capture_output=True, text=True,
                           timeout=120)
        took = time.monotonic() - started
        assert p.returncode == 1, p.stdout
        assert took < 15, took  # --timeout 4s (plus start-up and the Route 53 read), not a minute
        assert "not asked, --timeout passed" in p.stdout
        # The tolerance line states the band the rows use (fewer answers: a wider band).
        assert relay.seen >= 16
        started = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(env.config), "drain", "mx/hlb-2", "--reason",
                            "x", "--wait", "--timeout", "5s", "--samples", "200", "--nameserver", relay.nameserver],
                           capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        assert p.returncode == 1, p.stdout
        assert "step dns did not finish" in p.stderr
        assert took < 15, took
    finally:
        relay.stop()


def steps(stdout: str) -> dict[str, float]:
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0] in ("apply", "insync", "dns", "ttl"):
            out[parts[0]] = float(parts[1])
    return out


def test_drain_wait_waits_for_a_lagging_server_and_the_ttl(env):
    lag = 2.0
    env.servers[1].lag = lag
    started = time.monotonic()
    p = env.r53lb("drain", "mx/hlb-2", "--reason", "kernel upgrade", "--wait", "--samples", "100")
    elapsed = time.monotonic() - started
    assert p.returncode == 0, p.stderr + p.stdout
    assert env.weights() == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50}  # applied with no daemon running
    t = steps(p.stdout)
    assert list(t) == ["apply", "insync", "dns", "ttl"], p.stdout
    assert t["dns"] >= lag - 0.5  # the lagging server kept handing hlb-2 out for `lag` seconds
    assert t["ttl"] >= TTL - 0.1
    assert elapsed >= lag + TTL
    assert "is out of DNS after" in p.stdout
    # Once it returns, no server hands the node out.
    for ns in env.servers:
        for _ in range(50):
            assert ask(ns, "mx.example.com", "A").answer[0][0].to_text() != MX["hlb-2"]
    status = json.loads(env.r53lb("status", "--json").stdout)["nodes"]
    assert next(r for r in status if r["node"] == "hlb-2")["drained"] == "kernel upgrade"


def test_enable_wait_waits_until_every_server_hands_the_node_out_again(env):
    p = env.r53lb("drain", "mx/hlb-1", "--reason", "disk swap", "--wait", "--samples", "50")
    assert p.returncode == 0, p.stderr + p.stdout
    lag = 1.5
    env.servers[0].lag = lag
    p = env.r53lb("enable", "mx/hlb-1", "--wait", "--samples", "100")
    assert p.returncode == 0, p.stderr + p.stdout
    assert env.weights()["hlb-1"] == 50
    t = steps(p.stdout)
    assert t["dns"] >= lag - 0.5 and t["ttl"] >= TTL - 0.1
    assert "is back in DNS" in p.stdout
    served = {ask(env.servers[0], "mx.example.com", "A").answer[0][0].to_text() for _ in range(60)}
    assert MX["hlb-1"] in served


def test_drain_wait_deadline_names_the_step(env):
    env.servers[1].lag = 3600
    p = env.r53lb("drain", "mx/hlb-3", "--reason", "rack move", "--wait", "--timeout", "2s", "--samples", "50")
    assert p.returncode == 1
    assert env.weights()["hlb-3"] == 0  # the drain itself went out
    line = p.stderr.strip().splitlines()[-1]  # after the log line of the weight written
    assert line.startswith("r53lb: mx/hlb-3: step dns did not finish"), line
    assert f"{env.servers[1].nameserver} still hands out hlb-3" in line


def test_drain_wait_deadline_inside_the_ttl(env):
    # A long TTL on hlb-1's set (Terraform owns TTLs; r53lb keeps whatever it finds).
    [cur] = [r for r in record_sets(env.client, env.zone_id, "mx.example.com", "A") if r["SetIdentifier"] == "hlb-1"]
    change(env.client, env.zone_id, ("UPSERT", {**cur, "TTL": 300}))
    started = time.monotonic()
    p = env.r53lb("drain", "mx/hlb-1", "--reason", "x", "--wait", "--timeout", "20s", "--samples", "20")
    assert p.returncode == 1, p.stdout
    assert "step ttl did not finish" in p.stderr and "the record's TTL (300 s) passes" in p.stderr
    assert time.monotonic() - started < 20  # it says so at once rather than sleeping into the deadline


# --- finding the authoritative servers ----------------------------------------------------


def test_delegation_set_is_resolved_with_dnspython(mock_route53):
    """GetHostedZone's name servers, each resolved through a real resolver (a loopback server here)."""
    import dns.nameserver
    import dns.resolver

    from r53lb.config import AwsConfig
    from loopback_dns import LoopbackDNS
    from r53lb.nameservers import NameServerError, delegation, parse_nameserver
    from r53lb.aws.route53 import Route53

    client = boto3.client("route53", region_name="us-east-1")
    zid = build(client, {"example.com": {}})["example.com"]
    private = client.create_hosted_zone(
        Name="internal.example", CallerReference="private-1", HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-1"})["HostedZone"]["Id"].rsplit("/", 1)[-1]
    r53 = Route53(AwsConfig(region="us-east-1"))
    names = r53.name_servers(zid)
    assert len(names) == 4 and all(".awsdns-" in n for n in names)

    with LoopbackDNS() as upstream:
        for i, name in enumerate(names):
            tld = name.split(".", 1)[1]
            upstream.add_zone(tld, selftest=False)
            upstream.set(name + ".", a=(f"127.0.0.{71 + i}",))
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(upstream.host, upstream.port)]
        resolver.lifetime = 3
        servers = delegation(r53, zid, resolver)
        assert [(s.name, s.address, s.port) for s in servers] == [
            (n, f"127.0.0.{71 + i}", 53) for i, n in enumerate(names)]
        assert str(servers[0]) == f"{names[0]} (127.0.0.71)"
        assert parse_nameserver(f"{names[1]}:5353", resolver).address == "127.0.0.72"
        upstream.remove(names[2] + ".")
        with pytest.raises(NameServerError, match=f"cannot resolve name server {names[2]}"):
            delegation(r53, zid, resolver)
    with pytest.raises(NameServerError, match=r"has no delegation set \(a private zone\?\); give its servers with --nameserver"):
        delegation(r53, private, resolver)


@pytest.mark.parametrize("text, want", [
    ("127.0.0.61", ("127.0.0.61", 53)),
    ("127.0.0.61:5353", ("127.0.0.61", 5353)),
    ("[::1]:5353", ("::1", 5353)),
    ("::1", ("::1", 53)),
    ("2001:0db8::1", ("2001:db8::1", 53)),
])
def test_nameserver_forms(text, want):
    from r53lb.nameservers import parse_nameserver

    ns = parse_nameserver(text)
    assert (ns.address, ns.port) == want


@pytest.mark.parametrize("text, error", [
    ("127.0.0.1:0", "port '0' is not 1-65535"),
    ("[::1]:x", "neither an address nor a host name"),
    ("bad name!", "neither an address nor a host name"),
])
def test_nameserver_bad_forms(text, error):
    from r53lb.nameservers import NameServerError, parse_nameserver

    with pytest.raises(NameServerError, match=error):
        parse_nameserver(text)


def test_drain_wait_with_another_process_holding_the_state_waits_for_its_write(env, tmp_path):
    """`r53lb run` holds the state file for its life and applies drains itself; --wait then waits
    for Route 53 to show the write. The holder here is this test, writing as the daemon would."""
    from r53lb.state.sqlite import StateStore

    store = StateStore.open(tmp_path / "state.db")
    with store.exclusive():
        proc = subprocess.Popen(
            [sys.executable, "-m", "r53lb", "-c", str(env.config), "drain", "mx/hlb-1", "--reason", "patching",
             "--wait", "--samples", "50", *[a for s in env.servers for a in ("--nameserver", s.nameserver)]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while ("mx", "hlb-1") not in store.drains():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        set_weight(env.client, env.zone_id, "mx.example.com", "A", "hlb-1", 0)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err + out
    assert "apply" in steps(out) and "written by the r53lb process that holds the state file" in out
    assert "is out of DNS after" in out


def test_unresolvable_delegation_fails_before_anything_is_recorded(env):
    # moto's delegation set names (ns-2048.awsdns-64.com ...) resolve nowhere: offline, or NXDOMAIN.
    p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(env.config), "drain", "mx/hlb-1", "--reason", "x",
                        "--wait", "--timeout", "30s"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.startswith("r53lb: cannot resolve name server ns-2048.awsdns-64.com: ")
    assert len(p.stderr.strip().splitlines()) == 1
    assert json.loads(env.r53lb("status", "--json").stdout)["nodes"][0]["drained"] is None
    assert env.weights()["hlb-1"] == 50


def test_drain_wait_writes_only_the_nodes_zone(env, tmp_path):
    """One reconcile of the node's zone: another zone's pending change stays for the next sync."""
    other = build(env.client, {"example.org": {"mx.example.org": {"type": "A", "ttl": TTL, "sets": {
        "o-1": ("192.0.2.11", 10), "o-2": ("192.0.2.12", 10)}}}})["example.org"]
    cfg = yaml.safe_load(env.config.read_text())
    cfg["pools"].append({"name": "org", "zone": "example.org", "record": "mx.example.org", "ttl": TTL,
                         "checks": [{"tcp": {"port": 25}}],
                         "nodes": [{"id": "o-1", "address": "192.0.2.11", "weight": 10},
                                   {"id": "o-2", "address": "192.0.2.12", "weight": 10}]})
    env.config.write_text(yaml.safe_dump(cfg))
    assert env.r53lb("drain", "org/o-1", "--reason", "later").returncode == 0  # recorded, not written
    p = env.r53lb("drain", "mx/hlb-1", "--reason", "now", "--wait", "--samples", "50")
    assert p.returncode == 0, p.stderr + p.stdout
    assert env.weights()["hlb-1"] == 0
    assert weights(env.client, other, "mx.example.org", "A") == {"o-1": 10, "o-2": 10}


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_drain_wait_with_r53lb_run_running(tmp_path, moto_server):
    """With `r53lb run` holding the state file, the daemon writes the drain at its next pass of
    the zone (every 30 s) and --wait follows it through to DNS."""
    import os
    import socket

    from moto_fixtures.pytest_plugin import FAKE_ENV
    from r53lb.demo.loopback import SmtpServer
    from r53lb.state.sqlite import StateError, StateStore

    nodes = {"n-1": "127.0.0.86", "n-2": "127.0.0.87"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zid = build(client, {"example.net": {"mx.example.net": {"type": "A", "ttl": TTL, "sets": {
        k: (v, 10) for k, v in nodes.items()}}}})["example.net"]
    config = tmp_path / "r53lb.yaml"
    config.write_text(yaml.safe_dump({
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "state": {"path": str(tmp_path / "state.db")},
        "defaults": {"interval": "1s", "timeout": "1s", "helo": "probe.r53lb.test"},
        "pools": [{"name": "mx", "zone": "example.net", "record": "mx.example.net", "ttl": TTL,
                   "checks": [{"smtp": {"port": port}}],
                   "nodes": [{"id": k, "address": v, "weight": 10} for k, v in nodes.items()]}],
    }))
    smtp = [SmtpServer(v, port).start() for v in nodes.values()]
    ns = AuthDNS(moto_server.endpoint_url, "example.net", host="127.0.0.63").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_ENV)
    daemon = subprocess.Popen([sys.executable, "-m", "r53lb", "-c", str(config), "run", "--no-metrics"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        store = StateStore.open(tmp_path / "state.db")
        deadline = time.monotonic() + 30
        while True:  # wait until the daemon holds the state file
            assert daemon.poll() is None and time.monotonic() < deadline, daemon.communicate()[1]
            try:
                with store.exclusive():
                    pass
            except StateError:
                break
            time.sleep(0.05)
        started = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(config), "drain", "mx/n-1", "--reason",
                            "patching", "--wait", "--timeout", "90s", "--samples", "50", "--nameserver", ns.nameserver],
                           capture_output=True, text=True, timeout=120, env=env)
        elapsed = time.monotonic() - started
        assert p.returncode == 0, p.stderr + p.stdout
        assert "written by the r53lb process that holds the state file" in p.stdout
        assert weights(client, zid, "mx.example.net", "A") == {"n-1": 0, "n-2": 10}
        assert elapsed >= TTL
    finally:
        stop_process(daemon, 20)
        ns.stop()
        for s in smtp:
            s.stop()


def test_drain_wait_of_the_last_node_with_weight_says_it_cannot_leave_dns(env):
    for ref in ("mx/hlb-2", "mx/hlb-3"):
        assert env.r53lb("drain", ref, "--reason", "earlier").returncode == 0
    p = env.r53lb("drain", "mx/hlb-1", "--reason", "last one", "--wait", "--samples", "20")
    assert p.returncode == 1
    assert env.weights() == {"hlb-1": 0, "hlb-2": 0, "hlb-3": 0}  # the operator's call: written
    assert "  apply " in p.stdout  # written, then it says at once that DNS cannot drop the node
    assert ("step dns did not finish" in p.stderr and "every A record set of mx.example.com is at weight 0: "
            "Route 53 then hands all of them out equally, hlb-1 included" in p.stderr), p.stderr


def test_verify_dual_stack_pool_checks_a_and_aaaa(env):
    build(env.client, {"example.com": {"dual.example.com": [
        {"type": "A", "ttl": TTL, "sets": {"ds-1": ("192.0.2.51", 30), "ds-2": ("192.0.2.52", 0)}},
        {"type": "AAAA", "ttl": TTL, "sets": {"ds-1": ("2001:db8::51", 30), "ds-2": ("2001:db8::52", 0)}}]}})
    cfg = yaml.safe_load(env.config.read_text())
    cfg["pools"].append({"name": "dual", "zone": "example.com", "record": "dual.example.com", "ttl": TTL,
                         "checks": [{"tcp": {"port": 25}}],
                         "nodes": [{"id": "ds-1", "address": ["192.0.2.51", "2001:db8::51"], "weight": 30},
                                   {"id": "ds-2", "address": ["192.0.2.52", "2001:0db8::52"], "weight": 30}]})
    env.config.write_text(yaml.safe_dump(cfg))
    deadline = time.monotonic() + 5
    while any(ns.weight("dual.example.com", "AAAA", "ds-2") is None for ns in env.servers):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p = env.r53lb("verify", "dual", "--json", "--samples", "50")
    assert p.returncode == 0, p.stderr + p.stdout
    checks = json.loads(p.stdout)["checks"]
    assert sorted((c["type"], c["server"]) for c in checks) == sorted(
        (t, s.nameserver) for t in ("A", "AAAA") for s in env.servers)
    for c in checks:
        assert {n["node"]: n["count"] for n in c["nodes"]} == {"ds-1": 50, "ds-2": 0}
