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
