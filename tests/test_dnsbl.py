"""dnsbl check against a real authoritative DNS server on loopback (tests.loopback_dns)."""

from __future__ import annotations

import asyncio
import logging
import time

import dns.rcode
import pytest

from r53lb.config import DnsblCheck
from loopback_dns import LoopbackDNS, rfc5782_name
from r53lb.probes import dnsbl
from r53lb.probes.base import ProbeResult, Target
from r53lb.probes.dnsbl import DnsblCache, classify, quarantined, reverse_name
from r53lb.probes.runner import Job, run_one

ZONE = "bl.test"
ZONE2 = "bl2.test"
FAST = 0.5  # seconds: every check's deadline in these tests


@pytest.fixture
def server():
    srv = LoopbackDNS().start()
    srv.add_zone(ZONE)
    srv.add_zone(ZONE2)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def fresh_selftests():
    dnsbl.clear_selftest_cache()
    yield
    dnsbl.clear_selftest_cache()


def spec_for(server: LoopbackDNS, zones=(ZONE,), **kw) -> DnsblCheck:
    return DnsblCheck(zones=list(zones), nameservers=[server.nameserver], **kw)


def run(spec: DnsblCheck, ip: str = "192.0.2.10", *, addresses=None, timeout: float = FAST) -> ProbeResult:
    addrs = (ip,) if addresses is None else tuple(addresses)
    return asyncio.run(dnsbl.probe(Target("mx", "hlb-1", ip, addrs), spec, timeout))


# --- pure helpers -----------------------------------------------------------------------


def test_reverse_name_ipv4_reverses_octets():
    assert reverse_name("192.0.2.10", "zen.spamhaus.org") == "10.2.0.192.zen.spamhaus.org"
    assert reverse_name("127.0.0.2", "Zen.Spamhaus.org.") == "2.0.0.127.zen.spamhaus.org"


def test_reverse_name_ipv6_is_32_reversed_nibbles():
    name = reverse_name("2001:db8::1", "bl.test")
    assert name == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
    assert len(name.split(".")) == 32 + 2
    assert name == rfc5782_name("2001:db8::1", "bl.test")  # dnspython's own reversal agrees


def test_reverse_name_ipv4_mapped_ipv6_is_looked_up_as_ipv4():
    assert reverse_name("::ffff:192.0.2.10", "bl.test") == "10.2.0.192.bl.test"


@pytest.mark.parametrize("answer, verdict", [
    ([], "clean"),
    (["127.0.0.2"], "listed"),
    (["127.0.0.11"], "listed"),
    (["127.0.0.4", "127.0.0.10"], "listed"),
    (["127.0.0.1"], "unknown"),            # RFC 5782 reserves it: never a listing
    (["127.255.255.254"], "unknown"),      # Spamhaus: asked through a public resolver
    (["127.255.255.255"], "unknown"),      # Spamhaus: too many queries
    (["127.0.0.2", "127.255.255.254"], "unknown"),
    (["127.0.1.2"], "unknown"),            # outside 127.0.0.0/24
    (["198.51.100.7"], "unknown"),         # a hijacking resolver's ad server, an expired list
    (["not-an-ip"], "unknown"),
])
def test_classify(answer, verdict):
    assert classify(answer) == verdict


def test_quarantined_listed_on_any_and_n():
    assert not quarantined([], 1)
    assert quarantined(["zen.spamhaus.org"], 1)
    assert not quarantined(["zen.spamhaus.org"], 2)
    assert quarantined(["zen.spamhaus.org", "b.barracudacentral.org"], 2)
    assert not quarantined(["zen.spamhaus.org", "ZEN.spamhaus.org."], 2)  # one zone, twice


def test_cache_keeps_a_result_for_the_interval():
    cache = DnsblCache()
    key = ("mx", "hlb-1", 1)
    res = ProbeResult("mx", "hlb-1", "dnsbl", "ok", 1.0, "not listed on 1 zone")
    assert cache.get(key, 1000.0, 600) is None
    cache.put(key, res, 1000.0)
    assert cache.get(key, 1000.0, 600) is res
    assert cache.get(key, 1599.9, 600) is res
    assert cache.get(key, 1600.0, 600) is None
    assert cache.get(("mx", "hlb-1", 2), 1000.0, 600) is None
    assert cache.get(key, 999.0, 600) is None  # a clock that went back: look again


# --- verdicts against a real server -------------------------------------------------------


def test_listed_ip_fails_with_code_and_txt_reason_then_recovers_when_delisted(server):
    server.list_ip(ZONE, "192.0.2.10", txt="Listed by SBL, see https://bl.test/q/192.0.2.10")
    spec = spec_for(server)
    r = run(spec)
    assert r.status == "fail" and not r.ok
    assert r.listed_on == (ZONE,)
    assert r.detail == "listed on bl.test (127.0.0.2): Listed by SBL, see https://bl.test/q/192.0.2.10"
    assert quarantined(r.listed_on, 1)

    server.delist(ZONE, "192.0.2.10")
    r = run(spec)
    assert r.status == "ok" and r.listed_on == ()
    assert r.detail == "not listed on 1 zone"
    assert not quarantined(r.listed_on, 1)


def test_listed_without_txt_has_the_code_alone(server):
    server.list_ip(ZONE, "192.0.2.10", code="127.0.0.4")
    r = run(spec_for(server))
    assert r.status == "fail"
    assert r.detail == "listed on bl.test (127.0.0.4)"


def test_listed_when_the_txt_reason_never_comes_does_not_wait_for_the_deadline(server):
    server.set(rfc5782_name("192.0.2.10", ZONE), a=["127.0.0.2"], txt=["never sent"], drop=["TXT"])
    started = time.perf_counter()
    r = run(spec_for(server), timeout=5.0)
    assert time.perf_counter() - started < 1.0
    assert r.status == "fail" and r.detail == "listed on bl.test (127.0.0.2)"


def test_clean_on_every_zone_is_ok(server):
    r = run(spec_for(server, zones=(ZONE, ZONE2)))
    assert r.status == "ok"
    assert r.detail == "not listed on 2 zones"
    assert r.check == "dnsbl" and (r.pool, r.node) == ("mx", "hlb-1")


def test_public_resolver_error_answer_is_unknown(server):
    server.set(rfc5782_name("192.0.2.10", ZONE), a=["127.255.255.254"])
    r = run(spec_for(server))
    assert r.status == "unknown" and r.listed_on == ()
    assert r.detail == "bl.test: error answer 127.255.255.254 (public resolver refused)"
    assert r.to_json()["ok"] is None


def test_too_many_queries_error_answer_is_unknown(server):
    server.set(rfc5782_name("192.0.2.10", ZONE), a=["127.255.255.255"])
    r = run(spec_for(server))
    assert r.status == "unknown"
    assert "too many queries" in r.detail


def test_list_answering_through_a_public_resolver_is_unknown_even_for_its_self_test(server):
    # Spamhaus answers every query, its test point included, with 127.255.255.254.
    server.add_zone("public.test", selftest=False, default=dnsbl_entry(a=["127.255.255.254"]))
    r = run(spec_for(server, zones=("public.test",)))
    assert r.status == "unknown"
    assert r.detail == "public.test: error answer 127.255.255.254 (public resolver refused)"


@pytest.mark.parametrize("rcode, text", [(dns.rcode.SERVFAIL, "SERVFAIL"), (dns.rcode.REFUSED, "REFUSED")])
def test_servfail_and_refused_are_unknown(server, rcode, text):
    server.set(rfc5782_name("192.0.2.10", ZONE), rcode=rcode)
    r = run(spec_for(server))
    assert r.status == "unknown"
    assert r.detail == f"bl.test: {text}"


def test_zone_not_served_is_refused_and_unknown(server):
    r = run(spec_for(server, zones=("elsewhere.test",)))
    assert r.status == "unknown"
    assert "elsewhere.test" in r.detail and "REFUSED" in r.detail


def test_answer_127_0_0_1_is_not_a_listing(server):
    server.set(rfc5782_name("192.0.2.10", ZONE), a=["127.0.0.1"])
    r = run(spec_for(server))
    assert r.status == "unknown"
    assert "127.0.0.1" in r.detail and "not a listing" in r.detail


def test_timeout_is_unknown_and_ends_at_the_deadline(server):
    server.set(rfc5782_name("192.0.2.10", ZONE), drop=True)
    started = time.perf_counter()
    r = run(spec_for(server), timeout=0.4)
    elapsed = time.perf_counter() - started
    assert r.status == "unknown"
    assert r.detail == "bl.test: timeout after 400ms"
    assert 0.35 <= elapsed < 0.4 + 0.25


def test_a_silent_zone_times_out_in_its_self_test_too_and_stays_unknown(server):
    server.add_zone("silent.test", selftest=False, default=dnsbl_entry(drop=True))
    started = time.perf_counter()
    r = run(spec_for(server, zones=("silent.test", ZONE)), timeout=0.4)
    assert time.perf_counter() - started < 0.4 + 0.25
    assert r.status == "unknown"
    assert r.detail == "silent.test: timeout after 400ms"


def test_listed_on_one_zone_and_unknown_on_another_is_a_failure(server):
    server.list_ip(ZONE, "192.0.2.10")
    server.set(rfc5782_name("192.0.2.10", ZONE2), drop=True)
    r = run(spec_for(server, zones=(ZONE, ZONE2)), timeout=0.4)
    assert r.status == "fail"
    assert r.listed_on == (ZONE,)
    assert r.detail == "listed on bl.test (127.0.0.2)"


def test_nameserver_that_does_not_answer_at_all_is_unknown():
    with LoopbackDNS() as srv:  # a port nobody serves once this server has stopped
        ns = srv.nameserver
    spec = DnsblCheck(zones=[ZONE], nameservers=[ns])
    started = time.perf_counter()
    r = run(spec, timeout=0.3)
    assert time.perf_counter() - started < 0.3 + 0.25
    assert r.status == "unknown"


def test_second_nameserver_answers_when_the_first_fails(server):
    bad = LoopbackDNS().start()
    try:
        bad.add_zone(ZONE, selftest=False, default=dnsbl_entry(rcode=dns.rcode.SERVFAIL))
        server.list_ip(ZONE, "192.0.2.10")
        spec = DnsblCheck(zones=[ZONE], nameservers=[bad.nameserver, server.nameserver])
        r = run(spec)
    finally:
        bad.stop()
    assert r.status == "fail" and r.listed_on == (ZONE,)


def test_truncated_udp_answer_is_retried_over_tcp(server):
    server.set(rfc5782_name("192.0.2.10", ZONE), a=["127.0.0.3"], truncate=True)
    r = run(spec_for(server))
    assert r.status == "fail" and r.detail == "listed on bl.test (127.0.0.3)"
    assert ("10.2.0.192.bl.test.", "A", "tcp") in server.queries


def test_ipv6_address_is_looked_up_in_nibble_form(server):
    ip6 = "2001:db8::25"
    server.set("5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test",
               a=["127.0.0.2"], txt=["IPv6 spam source"])
    r = run(spec_for(server), ip=ip6)
    assert r.status == "fail"
    assert r.detail == "listed on bl.test (127.0.0.2): IPv6 spam source"


def test_dual_stack_node_checks_both_published_addresses(server):
    server.list_ip(ZONE, "2001:db8::10", txt="v6 listing")
    r = run(spec_for(server), "192.0.2.10", addresses=("192.0.2.10", "2001:db8::10"))
    assert r.status == "fail"
    assert r.detail == "listed on bl.test (127.0.0.2) for 2001:db8::10: v6 listing"
    assert server.count(rfc5782_name("192.0.2.10", ZONE)) == 1


def test_ip_option_overrides_the_node_address(server):
    server.list_ip(ZONE, "198.51.100.7")
    r = run(spec_for(server, ip="198.51.100.7"), "192.0.2.10")
    assert r.status == "fail"
    assert server.count(rfc5782_name("192.0.2.10", ZONE)) == 0


def test_hostname_node_without_ip_is_unknown(server):
    r = run(spec_for(server), "mx1.example.com")
    assert r.status == "unknown" and "set the check's `ip`" in r.detail


def test_nameserver_on_ipv6_loopback_with_port():
    import hostile

    if not hostile.has_ipv6_loopback():
        pytest.skip("the kernel has IPv6 switched off: no ::1 to serve DNS on")
    srv = LoopbackDNS(host="::1").start()
    try:
        srv.add_zone(ZONE)
        srv.list_ip(ZONE, "192.0.2.10")
        assert srv.nameserver.startswith("[::1]:")
        r = run(DnsblCheck(zones=[ZONE], nameservers=[srv.nameserver]))
    finally:
        srv.stop()
    assert r.status == "fail" and r.listed_on == (ZONE,)


def test_system_resolver_is_used_without_nameservers(server, monkeypatch):
    monkeypatch.setattr(dnsbl, "_system_servers", lambda: (("127.0.0.1", server.port),))
    server.list_ip(ZONE, "192.0.2.10")
    r = run(DnsblCheck(zones=[ZONE]))
    assert r.status == "fail"


# --- the RFC 5782 self-test ----------------------------------------------------------------


def test_zone_listing_127_0_0_1_fails_the_self_test_and_is_ignored_with_a_warning(server, caplog):
    server.add_zone("everything.test", selftest=False, default=dnsbl_entry(a=["127.0.0.2"]))
    with caplog.at_level(logging.WARNING, logger="r53lb.dnsbl"):
        r = run(spec_for(server, zones=("everything.test", ZONE)))
    # The broken zone "lists" the node, but it is not trusted: the good zone decides.
    assert r.status == "ok" and r.listed_on == ()
    assert r.detail == ("not listed on 1 zone; everything.test: failed the RFC 5782 self-test "
                        "(127.0.0.1 is listed (127.0.0.2)), ignored")
    warnings = [rec for rec in caplog.records if rec.name == "r53lb.dnsbl" and rec.levelno == logging.WARNING]
    assert len(warnings) == 1 and "everything.test" in warnings[0].getMessage()


def test_zone_not_listing_127_0_0_2_fails_the_self_test(server, caplog):
    server.add_zone("empty.test", selftest=False)
    server.list_ip("empty.test", "192.0.2.10")
    with caplog.at_level(logging.WARNING, logger="r53lb.dnsbl"):
        r = run(spec_for(server, zones=("empty.test",)))
    assert r.status == "unknown"  # no trusted zone left: nothing to conclude
    assert r.detail == "empty.test: failed the RFC 5782 self-test (127.0.0.2 is not listed), ignored"
    assert "empty.test" in caplog.text


def test_self_test_is_cached_for_the_interval(server):
    spec = spec_for(server, interval="10m")
    test_point = rfc5782_name("127.0.0.2", ZONE)
    for ip in ("192.0.2.10", "192.0.2.11", "192.0.2.12"):
        assert run(spec, ip).status == "ok"
    assert server.count(test_point) == 1

    again = spec_for(server, interval=0)  # an interval of 0: every check tests again
    run(again)
    run(again)
    assert server.count(test_point) == 3


def test_concurrent_checks_share_one_self_test(server):
    spec = spec_for(server)

    async def many():
        return await asyncio.gather(*(
            dnsbl.probe(Target("mx", f"n{i}", f"192.0.2.{i}", (f"192.0.2.{i}",)), spec, FAST)
            for i in range(1, 41)))

    results = asyncio.run(many())
    assert all(r.status == "ok" for r in results)
    assert server.count(rfc5782_name("127.0.0.2", ZONE)) == 1


def test_failed_self_test_is_not_retried_within_the_interval(server, caplog):
    server.add_zone("empty.test", selftest=False)
    spec = spec_for(server, zones=("empty.test",))
    with caplog.at_level(logging.WARNING, logger="r53lb.dnsbl"):
        run(spec)
        run(spec)
    assert server.count(rfc5782_name("127.0.0.2", "empty.test")) == 1
    assert caplog.text.count("failed the RFC 5782 self-test") == 1  # one warning, not one per check


def test_inconclusive_self_test_is_asked_again(server):
    test_point = rfc5782_name("127.0.0.2", ZONE)
    server.set(test_point, rcode=dns.rcode.SERVFAIL)
    r = run(spec_for(server))
    assert r.status == "unknown" and r.detail == "bl.test: self-test: SERVFAIL"
    server.set(test_point, a=["127.0.0.2"])
    assert run(spec_for(server)).status == "ok"


# --- quarantine with two zones (listed_on_n) -------------------------------------------------


def test_listed_on_n_needs_agreement_of_two_zones(server):
    spec = spec_for(server, zones=(ZONE, ZONE2))
    server.list_ip(ZONE, "192.0.2.10", txt="one")
    r = run(spec)
    assert r.status == "fail" and r.listed_on == (ZONE,)
    assert quarantined(r.listed_on, 1) and not quarantined(r.listed_on, 2)

    server.list_ip(ZONE2, "192.0.2.10", code="127.0.0.3", txt="two")
    r = run(spec)
    assert r.listed_on == (ZONE, ZONE2)
    assert r.detail == "listed on bl.test (127.0.0.2): one; listed on bl2.test (127.0.0.3): two"
    assert quarantined(r.listed_on, 2)


# --- through the runner ------------------------------------------------------------------------


def test_runner_dispatches_dnsbl(server):
    from r53lb.config import Check

    server.list_ip(ZONE, "192.0.2.10")
    check = Check.model_validate({"dnsbl": {"zones": [ZONE], "nameservers": [server.nameserver],
                                            "timeout": "500ms"}})
    r = asyncio.run(run_one(Job(Target("mx", "hlb-1", "192.0.2.10", ("192.0.2.10",)), check, 10.0)))
    assert r.status == "fail" and r.listed_on == (ZONE,)


def dnsbl_entry(**kw):
    from loopback_dns import Entry

    return Entry(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
