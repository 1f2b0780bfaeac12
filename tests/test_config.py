"""The config contract: valid files load; every bad input is one line naming the key path."""

import textwrap

import pytest

from r53lb.config import ConfigError, load, loads, parse_duration

GOOD = textwrap.dedent("""
    defaults: {interval: 10s, fastinter: 2s, timeout: 10s, rise: 3, fall: 3}
    pools:
      - name: smtp-inbound
        zone: example.com
        record: mx.example.com
        slow_start: 5m
        checks:
          - smtp: {port: 25, starttls: true, helo: probe.example.com}
        nodes:
          - id: hlb-1
            address: 192.0.2.10
            weight: 50
          - id: hlb-2
            address: [192.0.2.11, "2001:db8::11"]
            probe_address: 10.0.0.11
            weight: 50
            warmup: {start: 2026-11-20, schedule: {0d: 5%, 3d: 20%, 7d: 50%, 14d: 100%}}
            checks:
              - smtp: {port: 25}
              - dnsbl: {zones: [zen.spamhaus.org], interval: 10m, nameservers: ["127.0.0.1:5353"]}
      - name: api
        zone: Z0123456789ABC
        record: api.example.com
        interval: 5s
        checks:
          - http: {url: "https://{address}/health", host: api.example.com, expect_status: [200, "2xx"]}
        nodes:
          - {id: a, address: 192.0.2.30}
      - name: mta-ha
        zone: example.com
        record: smtp.example.com
        mode: failover
        preempt_delay: 5m
        checks: [{tcp: {port: 25}}]
        nodes:
          - {id: primary, address: 192.0.2.20}
          - {id: standby, address: 192.0.2.21}
""")


def test_good_config_loads_with_inheritance():
    cfg = loads(GOOD)
    inbound, api, ha = cfg.pools
    assert inbound.slow_start == 300
    assert inbound.record_types() == ["A", "AAAA"]
    assert inbound.nodes[1].target == "10.0.0.11"
    assert inbound.nodes[1].warmup.schedule[1] == (3 * 86400, 0.2)
    assert api.tuning.interval == 5 and api.tuning.rise == 3
    assert api.zone == "Z0123456789ABC"
    assert ha.mode == "failover" and ha.preempt and ha.preempt_delay == 300
    assert inbound.checks_for(inbound.nodes[1])[1].kind == "dnsbl"


@pytest.mark.parametrize("old,new,message", [
    ("weight: 50\n      - id: hlb-2", "weight: 300\n      - id: hlb-2", "pools[0].nodes[0].weight: 300 is above 255"),
    ("weight: 50\n      - id: hlb-2", "weight: -1\n      - id: hlb-2", "pools[0].nodes[0].weight: -1 is below 0"),
    ("slow_start: 5m", "slow_start: 5 minutes", "pools[0].slow_start: '5 minutes' is not a duration"),
    ("mode: failover", "mode: roundrobin", "pools[2].mode: 'roundrobin'"),
    ("id: hlb-2", "id: hlb-1", "pools[0].nodes[1].id: 'hlb-1' appears twice"),
    ("name: api", "name: smtp-inbound", "pools[1].name: 'smtp-inbound' appears twice"),
    ("192.0.2.10", "192.0.2.300", "pools[0].nodes[0].address[0]: '192.0.2.300' is neither an IP address nor a hostname"),
    ("192.0.2.10", "not a host!", "is neither an IP address nor a hostname"),
    ("slow_start: 5m", "slowstart: 5m", "pools[0].slowstart: unknown key"),
    ("tcp: {port: 25}", "icmp: {}", "pools[2].checks[0]: unknown check 'icmp'"),
    ("tcp: {port: 25}", "tcp: {port: 70000}", "pools[2].checks[0].tcp.port: 70000"),
    ("interval: 10s,", "interval: soon,", "defaults.interval: 'soon' is not a duration"),
    ("0d: 5%", "0d: 500%", "pools[0].nodes[1].warmup.schedule"),
    ("192.0.2.10", "mail.example.com", "pools[0].nodes[0].address: 'mail.example.com' is a hostname"),
    ("127.0.0.1:5353", "127.0.0.1:99999", "nameservers"),
    ("expect_status: [200, \"2xx\"]", "expect_status: [\"twohundred\"]", "expect_status"),
])
def test_bad_config_names_the_key_path(old, new, message):
    assert old in GOOD
    with pytest.raises(ConfigError) as e:
        loads(GOOD.replace(old, new, 1))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_top_level_key_and_bad_yaml_and_empty():
    with pytest.raises(ConfigError, match=r"^bogus: unknown key"):
        loads(GOOD + "bogus: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        loads("pools: [\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        loads("")


def test_missing_file_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("R53LB_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no config file"):
        load(None)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.yaml")
    p = tmp_path / "c.yaml"
    p.write_text(GOOD)
    monkeypatch.setenv("R53LB_CONFIG", str(p))
    assert load(None).pools[0].name == "smtp-inbound"


@pytest.mark.parametrize("text,seconds", [("250ms", 0.25), ("10s", 10), ("5m", 300), ("1h", 3600), ("30d", 2592000), (3, 3.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_max_drain_percentages():
    cfg = loads(GOOD)
    assert cfg.pools[0].max_drain() == 1  # 50% of 2
    three = GOOD.replace("- {id: a, address: 192.0.2.30}", "- {id: a, address: 192.0.2.30}\n      - {id: b, address: 192.0.2.31}\n      - {id: c, address: 192.0.2.32}")
    three = three.replace("interval: 5s", "interval: 5s\n    max_drain_per_cycle: 2")
    assert loads(three).pools[1].max_drain() == 2


# --- issue 10: bad input is one line with the key path, exit 2 -----------------------------

def refused(text: str) -> str:
    """The one-line message a config is refused with."""
    with pytest.raises(ConfigError) as e:
        loads(text)
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg and len(msg) <= 400, msg
    return msg


@pytest.mark.parametrize("old,new,message", [
    ("interval: 10s,", "interval: 0s,", "defaults.interval: '0s' must be above 0s"),
    ("interval: 10s,", "interval: -5s,", "defaults.interval: '-5s' is negative"),
    ("interval: 10s,", "interval: -5,", "defaults.interval: -5 is negative"),
    ("interval: 10s,", "interval: .inf,", "defaults.interval: inf is not a duration (not a finite number)"),
    ("interval: 10s,", "interval: .nan,", "defaults.interval: nan is not a duration (not a finite number)"),
    ("interval: 10s,", "interval: " + "9" * 400 + "d,", "defaults.interval: '99999"),
    ("interval: 10s,", "interval: " + "9" * 400 + ",", "defaults.interval: 99999"),
    ("interval: 10s,", "interval: 400d,", "defaults.interval: '400d' is above 365d"),
    ("fastinter: 2s,", "fastinter: 0ms,", "defaults.fastinter: '0ms' must be above 0s"),
    ("timeout: 10s,", "timeout: 0,", "defaults.timeout: 0 must be above 0s"),
    ("interval: 5s", "interval: 0s", "pools[1].interval: '0s' must be above 0s"),
    ("tcp: {port: 25}", "tcp: {port: 25, timeout: 0s}", "pools[2].checks[0].tcp.timeout: '0s' must be above 0s"),
    ("interval: 10m,", "interval: -1s,", "pools[0].nodes[1].checks[1].dnsbl.interval: '-1s' is negative"),
    ("slow_start: 5m", "slow_start: -1m", "pools[0].slow_start: '-1m' is negative"),
    ("preempt_delay: 5m", "preempt_delay: .inf", "pools[2].preempt_delay: inf is not a duration"),
])
def test_durations_are_positive_and_finite(old, new, message):
    assert old in GOOD
    msg = refused(GOOD.replace(old, new, 1))
    assert msg.startswith(message), msg


def test_zero_means_off_where_it_makes_sense():
    cfg = loads(GOOD.replace("slow_start: 5m", "slow_start: 0s").replace("preempt_delay: 5m", "preempt_delay: 0s"))
    assert cfg.pools[0].slow_start == 0 and cfg.pools[2].preempt_delay == 0
    with pytest.raises(ValueError, match="above 365d"):
        parse_duration("366d")


def test_two_pools_sharing_a_record_set_are_refused():
    twin = textwrap.indent(textwrap.dedent("""
      - name: twin
        zone: Example.COM.
        record: MX.example.com.
        checks: [{tcp: {port: 25}}]
        nodes:
          - {id: other, address: 192.0.2.99}
          - {id: hlb-2, address: 192.0.2.98}
    """), "  ")
    msg = refused(GOOD + twin)
    assert msg == ("pools[3].nodes[1].id: pool 'twin' and pool 'smtp-inbound' (pools[0]) both manage "
                   "mx.example.com A set 'hlb-2': Route 53 holds one record set per name, type and set identifier")
    # Another set identifier, another record or another zone (both named by id) is fine.
    assert loads(GOOD + twin.replace("id: hlb-2", "id: hlb-9"))
    assert loads(GOOD + twin.replace("MX.example.com.", "mx-b.example.com"))
    other_zone = GOOD.replace("zone: example.com\n    record: mx", "zone: Z111\n    record: mx", 1)
    assert loads(other_zone + twin.replace("Example.COM.", "Z222"))
    # One zone written as a name in one pool and as an id in the other cannot be told apart.
    assert "both manage" in refused(GOOD + twin.replace("Example.COM.", "Z222"))


BOMB = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
    + ["pools: *i"]
)


def test_yaml_alias_bomb_is_refused_quickly():
    import time

    assert len(BOMB) < 600
    started = time.perf_counter()
    msg = refused(BOMB)
    assert time.perf_counter() - started < 2
    assert msg.startswith("<config>: YAML aliases expand ") and "refused" in msg
    # Aliases that share a part of the document stay welcome.
    shared = GOOD.replace("checks: [{tcp: {port: 25}}]", "checks: &port25 [{tcp: {port: 25}}]")
    shared += "  - {name: extra, zone: example.com, record: x.example.com, checks: *port25, nodes: [{id: x, address: 192.0.2.77}]}\n"
    assert loads(shared).pools[3].checks[0].tcp.port == 25


def test_cyclic_and_deep_yaml_is_refused():
    assert "an alias refers to a node that contains it" in refused("pools: &p [*p]\n")
    assert "nested more than 64 levels deep" in refused("pools: " + "[" * 500 + "]" * 500 + "\n")


def test_error_lines_never_carry_unbounded_input():
    huge = "x" * 100_000
    msg = refused(GOOD.replace("mode: failover", f"mode: {huge}"))
    assert msg.startswith("pools[2].mode: 'xxxx") and len(msg) < 250
    msg = refused(GOOD.replace("slow_start: 5m", f"{huge[:1000]}: 5m"))  # libyaml: keys < 1024
    assert msg.startswith("pools[0].'xxxx") and msg.endswith("xxx': unknown key") and len(msg) < 120
    msg = refused(GOOD.replace("192.0.2.10", "a\nb" * 1000))
    assert len(msg) < 250


def test_a_file_that_is_not_utf8(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(GOOD.replace("smtp-inbound", "entrée").encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load(p)
    assert str(e.value).startswith(f"{p}: line 4: not UTF-8 text (byte 0xe9")


def test_impossible_date():
    msg = refused(GOOD.replace("start: 2026-11-20", "start: 2026-13-45"))
    assert msg.startswith("pools[0].nodes[1].warmup.start: '2026-13-45' is not a date (month must be in 1..12)"), msg
    assert "give a year between" in refused(GOOD.replace("start: 2026-11-20", "start: 9999-12-31"))


def test_duplicate_keys():
    msg = refused(GOOD.replace("weight: 50\n      - id: hlb-2", "weight: 50\n        weight: 0\n      - id: hlb-2"))
    assert msg == "<config>: pools[0].nodes[0].weight: the key appears twice (lines 13 and 14)"
    assert "pools: the key appears twice" in refused(GOOD + "pools: []\n")
    # YAML merge keys override by design: not duplicates.
    merged = GOOD.replace("- {id: standby, address: 192.0.2.21}", "- {<<: {weight: 3}, id: standby, address: 192.0.2.21}")
    assert loads(merged).pools[2].nodes[1].weight == 3


@pytest.mark.parametrize("helo,message", [
    ('"probe.example.com\\r\\nMAIL FROM:<a@b>"', "is not a host name for EHLO"),
    ('"not a host"', "'not a host' is not a host name for EHLO"),
    ('"probe_1.example.com"', "is not a host name for EHLO"),
    ('"[192.0.2.300]"', "is not a host name for EHLO"),
])
def test_helo_is_a_host_name(helo, message):
    msg = refused(GOOD.replace("helo: probe.example.com", f"helo: {helo}"))
    assert msg.startswith("pools[0].checks[0].smtp.helo: ") and message in msg, msg
    assert refused(GOOD.replace("rise: 3,", f"rise: 3, helo: {helo},")).startswith("defaults.helo: ")
    for good in ("probe.example.com", "localhost", "[192.0.2.1]", "[IPv6:2001:db8::1]"):
        assert loads(GOOD.replace("helo: probe.example.com", f"helo: '{good}'")).pools[0].checks[0].smtp.helo == good


def test_address_family_must_match_the_pool_type():
    msg = refused(GOOD.replace("address: 192.0.2.10", 'address: "2001:db8::10"'))
    assert msg.startswith("pools[0].nodes[0].address: '2001:db8::10' is IPv6; an A pool needs an IPv4 address")
    aaaa = GOOD.replace("record: mx.example.com", "record: mx.example.com\n    type: AAAA")
    msg = refused(aaaa)
    assert msg.startswith("pools[0].nodes[0].address: '192.0.2.10' is IPv4; an AAAA pool needs an IPv6 address")
    # Dual-stack nodes belong in either; their other family is published beside.
    dual = aaaa.replace("address: 192.0.2.10", 'address: [192.0.2.10, "2001:db8::10"]')
    assert loads(dual).pools[0].record_types() == ["A", "AAAA"]


def test_scoped_address_is_refused():
    msg = refused(GOOD.replace('"2001:db8::11"', '"fe80::1%eth0"'))
    assert msg.startswith("pools[0].nodes[1].address[1]: 'fe80::1%eth0' is a scoped address"), msg
    assert "scoped address" in refused(GOOD.replace("probe_address: 10.0.0.11", 'probe_address: "fe80::1%eth0"'))
    assert "is not an IP address" in refused(GOOD.replace("127.0.0.1:5353", "[fe80::1%eth0]:53"))


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "hooks.example.com/x", "http://", "https://a b/"])
def test_webhook_url_is_http(url):
    msg = refused(GOOD + f"notify:\n  webhooks:\n    - url: '{url}'\n")
    assert msg.startswith("notify.webhooks[0].url: "), msg
    ok = loads(GOOD + "notify:\n  webhooks:\n    - url: https://hooks.example.com/x\n")
    assert ok.notify.webhooks[0].url == "https://hooks.example.com/x"
    assert refused(GOOD + "notify:\n  webhooks:\n    - {url: 'https://h.example.com/', headers: {X-A: \"a\\r\\nb\"}}\n") \
        .startswith("notify.webhooks[0].headers: header 'X-A'")


def test_min_in_service_above_the_node_count():
    msg = refused(GOOD.replace("slow_start: 5m", "slow_start: 5m\n    min_in_service: 3"))
    assert msg.startswith("pools[0].min_in_service: 3 is above the pool's 2 node(s)"), msg
    assert loads(GOOD.replace("slow_start: 5m", "slow_start: 5m\n    min_in_service: 2"))


def test_names_without_slash_and_no_magic_names():
    assert refused(GOOD.replace("name: api", "name: api/v2")).startswith("pools[1].name: 'api/v2': a pool name contains no '/'")
    assert refused(GOOD.replace("id: primary", "id: pri/mary")).startswith("pools[2].nodes[0].id: 'pri/mary': a node id contains no '/'")
    # Canary results are typed (they never travel under a pool's name): any pool name is fine.
    assert loads(GOOD.replace("name: api", "name: vantage")).pool("vantage") is not None


def test_siblings_record_zone_region_arn():
    assert "is not in the zone" in refused(GOOD.replace("record: smtp.example.com", "record: smtp.example.org"))
    assert "a `*` only as the whole first label" in refused(GOOD.replace("record: smtp.example.com", "record: a*.example.com"))
    assert loads(GOOD.replace("record: smtp.example.com", "record: '*.example.com'")).pools[2].record == "*.example.com"
    assert refused(GOOD + "aws: {endpoint_url: 'localhost:5000'}\n").startswith("aws.endpoint_url: ")
    assert refused(GOOD + "aws: {region: 'us east'}\n").startswith("aws.region: 'us east'")
    assert refused(GOOD + "notify: {sns: {topic_arn: 'my-topic'}}\n").startswith("notify.sns.topic_arn: 'my-topic'")
    assert refused(GOOD + "state: {path: \"/tmp/a\\0b\"}\n").startswith("state.path: ")
    assert refused("pools: [1, !!int abc]\n").startswith("<config>: not valid YAML: ValueError")


def test_cli_validate_refuses_in_one_line_with_exit_2(tmp_path):
    from click.testing import CliRunner

    from r53lb.cli import main

    cases = {
        "bomb.yaml": BOMB.encode(),
        "latin1.yaml": GOOD.replace("smtp-inbound", "entrée").encode("latin-1"),
        "date.yaml": GOOD.replace("start: 2026-11-20", "start: 2026-13-45").encode(),
        "zero.yaml": GOOD.replace("interval: 10s,", "interval: 0s,").encode(),
        "big.yaml": GOOD.replace("interval: 10s,", f"interval: {10**400},").encode(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        result = CliRunner().invoke(main, ["-c", str(tmp_path / name), "validate"])
        assert result.exit_code == 2, (name, result.output, result.exception)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("r53lb: ") and "Traceback" not in result.stderr, (name, lines)
