"""core/mta_sts.py: the TXT record, the policy file and mx matching (RFC 8461); the pool's `mta_sts` key."""

from __future__ import annotations

import pytest

from r53lb.config import ConfigError, loads
from r53lb.core.mta_sts import mx_matches, parse_policy, parse_txt


def test_txt_id() -> None:
    assert parse_txt(["v=spf1 -all", "v=STSv1; id=20260101T000000"]) == "20260101T000000"
    with pytest.raises(ValueError, match="no TXT record beginning v=STSv1"):
        parse_txt(["v=spf1 -all"])
    with pytest.raises(ValueError, match="2 TXT records begin v=STSv1"):
        parse_txt(["v=STSv1; id=1", "v=STSv1; id=2"])
    with pytest.raises(ValueError, match="id must be"):
        parse_txt(["v=STSv1; id=not-alnum!"])


def test_policy() -> None:
    p = parse_policy(b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
    assert (p.mode, p.mx, p.max_age) == ("enforce", ("mx1.example.com", "*.example.net"), 604800)
    assert p.matches("mx1.example.com") and p.matches("a.example.net") and not p.matches("example.net")
    assert parse_policy(b"version: STSv1\nmode: none\nmax_age: 0\n").mode == "none"


@pytest.mark.parametrize("body, why", [
    (b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", "version"),
    (b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", "mode 'strict'"),
    (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "without any mx"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 99999999999\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a*.b.c\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\ngarbage line\n", "not 'key: value'"),
    (b"\xff\xfe", "not UTF-8"),
    (b"x" * 70000, "larger than 64 KiB"),
])
def test_bad_policies_get_a_reason(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_policy(body)


def test_mx_patterns() -> None:
    assert mx_matches("*.example.com", "mx.example.com")
    assert not mx_matches("*.example.com", "a.mx.example.com")  # one label only
    assert not mx_matches("*.example.com", "example.com")
    assert mx_matches("MX.Example.com.", "mx.example.com")


def test_config_mta_sts() -> None:
    doc = """
pools:
  - name: mx
    zone: example.com
    record: mx.example.com
    mta_sts: {domain: Example.COM, interval: 10m}
    checks: [smtp]
    nodes: [{id: a, address: 192.0.2.1, weight: 10}]
"""
    spec = loads(doc).pools[0].mta_sts
    assert spec is not None and (spec.domain, spec.interval, spec.port) == ("example.com", 600, 25)
    with pytest.raises(ConfigError, match="is not a DNS name"):
        loads(doc.replace("Example.COM", "'not a name'"))
    with pytest.raises(ConfigError, match="mta_sts"):
        loads(doc.replace("interval: 10m", "mode: enforce"))
