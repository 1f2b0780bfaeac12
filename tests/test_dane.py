"""core/dane.py: RFC 7672 matching, pure (chains from trustme, no network); the config's `dane` key."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from r53lb.config import ConfigError, loads
from r53lb.core.dane import DANE_MISMATCH, evaluate, parse_tlsa, spki_sha256

RRSET = "_25._tcp.mx.example.com"
NAMES = ("mx.example.com",)
NOW = datetime.now(timezone.utc)


def _chain(leaf: trustme.LeafCert) -> tuple[bytes, ...]:
    return tuple(x509.load_pem_x509_certificate(p.bytes()).public_bytes(Encoding.DER) for p in leaf.cert_chain_pems)


@pytest.fixture(scope="module")
def pki() -> dict[str, tuple[bytes, ...]]:
    ca = trustme.CA()
    inter = ca.create_child_ca()
    return {
        "ca": (x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(Encoding.DER),),
        "leaf": _chain(inter.issue_cert("mx.example.com")),  # leaf, intermediate
        "wild": _chain(inter.issue_cert("*.example.com")),
        "expired": _chain(inter.issue_cert("mx.example.com", not_before=NOW - timedelta(days=30),
                                           not_after=NOW - timedelta(days=1))),
        "other": _chain(ca.issue_cert("mx.example.com")),
    }


def test_dane_ee_matches_the_key_alone_ignoring_name_and_expiry(pki: dict[str, tuple[bytes, ...]]) -> None:
    leaf = pki["expired"][0]
    v = evaluate(pki["expired"], [f"3 1 1 {spki_sha256(leaf)}"], ("elsewhere.example",), RRSET, NOW)
    assert (v.state, v.ok) == ("match", True)
    assert "DANE-EE" in v.detail
    full = evaluate(pki["leaf"], [f"3 0 0 {pki['leaf'][0].hex()}"], NAMES, RRSET, NOW)
    assert full.state == "match"


def test_dane_ta_needs_the_chain_the_name_and_validity(pki: dict[str, tuple[bytes, ...]]) -> None:
    ta = f"2 0 1 {hashlib.sha256(pki['leaf'][1]).hexdigest()}"
    assert evaluate(pki["leaf"], [ta], NAMES, RRSET, NOW).state == "match"
    assert evaluate(pki["wild"], [ta], NAMES, RRSET, NOW).state == "match"  # *.example.com covers mx
    wrong_name = evaluate(pki["leaf"], [ta], ("mail.other.test",), RRSET, NOW)
    assert wrong_name.state == "mismatch" and "not for mail.other.test" in wrong_name.detail
    expired = evaluate(pki["expired"], [ta], NAMES, RRSET, NOW)
    assert expired.state == "mismatch" and "expired" in expired.detail
    # The server forgot its intermediate: the TA is not in what it sent.
    assert evaluate(pki["leaf"][:1], [ta], NAMES, RRSET, NOW).state == "mismatch"
    # A TA record of a certificate that did not issue the leaf.
    forged = evaluate(pki["other"] + pki["leaf"][1:], [ta], NAMES, RRSET, NOW)
    assert forged.state == "mismatch" and "does not lead" in forged.detail


def test_a_mismatch_names_the_record_set_and_the_spki_digest(pki: dict[str, tuple[bytes, ...]]) -> None:
    v = evaluate(pki["leaf"], [f"3 1 1 {spki_sha256(pki['other'][0])}"], NAMES, RRSET, NOW)
    assert v.state == "mismatch" and not v.ok
    assert v.detail.startswith(f"{DANE_MISMATCH} {RRSET} matches: the server's SPKI sha256 is {spki_sha256(pki['leaf'][0])}")


def test_none_published_passes_and_says_so(pki: dict[str, tuple[bytes, ...]]) -> None:
    v = evaluate(pki["leaf"], [], NAMES, RRSET, NOW)
    assert (v.state, v.ok) == ("none", True) and f"no TLSA published at {RRSET}" in v.detail


def test_unusable_and_malformed_records_are_as_none_with_a_reason(pki: dict[str, tuple[bytes, ...]]) -> None:
    # PKIX usages are unusable for SMTP (RFC 7672 3.1.3); a malformed record is unusable too.
    v = evaluate(pki["leaf"], [f"1 1 1 {'ab' * 32}", "3 1 1 zz", "3 1 1 abcd", "3 1"], NAMES, RRSET, NOW)
    assert (v.state, v.ok) == ("unusable", True)
    assert "not hexadecimal" in v.detail
    # One usable record among bad ones decides.
    v = evaluate(pki["leaf"], ["3 1 1 zz", f"3 1 1 {'ab' * 32}"], NAMES, RRSET, NOW)
    assert v.state == "mismatch"


@pytest.mark.parametrize("text, why", [
    ("3 1 1", "want 'usage selector matching-type data'"),
    ("x 1 1 ab", "are numbers"),
    ("3 1 1 abc", "not hexadecimal"),
    ("3 1 1 abcd", "wants 32 bytes, not 2"),
    ("3 1 999 ab", "0-255"),
])
def test_malformed_tlsa_gets_a_clear_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_tlsa(text)


def test_hostile_chains_are_bounded(pki: dict[str, tuple[bytes, ...]]) -> None:
    rec = [f"3 1 1 {'ab' * 32}"]
    assert evaluate((b"garbage",), rec, NAMES, RRSET, NOW).state == "mismatch"
    assert evaluate((), rec, NAMES, RRSET, NOW).state == "unknown"
    long = pki["leaf"] * 50  # only the first ten are looked at
    assert evaluate(long, [f"3 1 1 {spki_sha256(pki['leaf'][0])}"], NAMES, RRSET, NOW).state == "match"


def _cfg(smtp: str) -> str:
    return f"""
pools:
  - name: mx
    zone: example.com
    record: mx.example.com
    checks: [{{smtp: {smtp}}}]
    nodes: [{{id: a, address: 192.0.2.1, weight: 10}}]
"""


def test_config_dane_true_or_options_and_needs_tls() -> None:
    assert loads(_cfg("{starttls: true, dane: true}")).pools[0].checks[0].smtp.dane.refresh == 60
    opts = loads(_cfg("{starttls: true, dane: {refresh: 5m, on_mismatch: warn}}")).pools[0].checks[0].smtp.dane
    assert (opts.refresh, opts.on_mismatch) == (300, "warn")
    assert loads(_cfg("{starttls: true, dane: false}")).pools[0].checks[0].smtp.dane is None
    with pytest.raises(ConfigError, match="dane needs a TLS session"):
        loads(_cfg("{dane: true}"))
    with pytest.raises(ConfigError, match="on_mismatch"):
        loads(_cfg("{starttls: true, dane: {on_mismatch: drain}}"))
