"""DANE (RFC 7672) against Debian's Postfix, judged beside OpenSSL's own DANE verification.

Three Postfix instances serve three certificates: `ee` a key published as `3 1 1`, `ta` a
leaf under an intermediate published as `2 0 1` (the chain sent with it), `rogue` a key in
no TLSA record (the node whose key was rolled before its TLSA was published). r53lb's
verdict must agree with `openssl s_client -dane_tlsa_rrdata` on every case, and `sync` and
`run` must take a mismatching node out with a reason naming the record set and its key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from r53lb.config import SmtpCheck
from r53lb.core.dane import evaluate
from r53lb.engine.web import render
from r53lb.probes.base import Target
from r53lb.probes.smtp import probe

from programs import require

from .fleet import HELO, Zone
from .servers import Postfix, wait_for, world_readable_dir

pytestmark = pytest.mark.timeout(180)

RECORD = "mx.dane.test"
RRSET = "_25._tcp.mx.dane.test"
HOSTS = {"ee": "127.0.91.1", "ta": "127.0.91.2", "rogue": "127.0.91.3"}


@dataclass(frozen=True)
class Served:
    """One node's certificate files and the TLSA data that would match it."""

    cert_file: Path
    key_file: Path
    leaf_der: bytes
    issuer_der: bytes | None  # the intermediate sent with the leaf (DANE-TA)

    @property
    def spki_sha256(self) -> str:
        cert = x509.load_der_x509_certificate(self.leaf_der)
        return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()

    @property
    def ee(self) -> str:
        return f"3 1 1 {self.spki_sha256}"

    @property
    def ta(self) -> str:
        assert self.issuer_der is not None
        return f"2 0 1 {hashlib.sha256(self.issuer_der).hexdigest()}"


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def _serve(root: Path, name: str, leaf: trustme.LeafCert) -> Served:
    cert, key = root / f"{name}.pem", root / f"{name}.key"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o644)  # Postfix's own user reads it; a throwaway test key
    chain = [_der(p.bytes()) for p in leaf.cert_chain_pems]
    return Served(cert, key, chain[0], chain[1] if len(chain) > 1 else None)


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, tuple[Postfix, Served]]]:
    with world_readable_dir("r53lb-dane-") as root:
        ca = trustme.CA()
        intermediate = ca.create_child_ca()
        served = {
            # DANE-EE: expiry and name do not matter, so this one is expired and for another name.
            "ee": _serve(root, "ee", ca.issue_cert("elsewhere.test", not_after=datetime(2020, 1, 1, tzinfo=timezone.utc),
                                                   not_before=datetime(2019, 1, 1, tzinfo=timezone.utc))),
            "ta": _serve(root, "ta", intermediate.issue_cert(RECORD)),
            "rogue": _serve(root, "rogue", ca.issue_cert(RECORD)),
        }
        instances = {k: (Postfix(root, HOSTS[k], {"smtp": ("smtpd", {})}, cert=(s.cert_file, s.key_file)), s)
                     for k, s in served.items()}
        try:
            with ThreadPoolExecutor(len(instances)) as ex:
                list(ex.map(lambda pf: pf[0].start(), instances.values()))
            yield instances
        finally:
            for pf, _ in instances.values():
                pf.stop()


def _chain(pf: Postfix) -> tuple[bytes, ...]:
    spec = SmtpCheck(port=pf.ports["smtp"], starttls=True, dane=True)
    r = asyncio.run(probe(Target("mx", "n", pf.host, helo=HELO), spec, 5.0))
    assert r.ok, r.detail
    return r.tls_chain


def _openssl(pf: Postfix, rrdata: str, domain: str = RECORD) -> bool:
    """OpenSSL's DANE verdict: the handshake verifies against the one TLSA record given.

    `-dane_ee_no_namechecks` is what an SMTP DANE client sets (Postfix does): RFC 7672
    section 3.1.1, DANE-EE checks no name.
    """
    openssl = require("openssl")
    p = subprocess.run(
        [openssl, "s_client", "-brief", "-starttls", "smtp", "-name", "probe.dane.test",
         "-connect", f"{pf.host}:{pf.ports['smtp']}", "-dane_tlsa_domain", domain,
         "-dane_tlsa_rrdata", rrdata, "-dane_ee_no_namechecks", "-verify_return_error"],
        input="QUIT\r\n", capture_output=True, text=True, timeout=30)
    return p.returncode == 0 and "Verification: OK" in p.stderr


def test_r53lb_agrees_with_openssl_on_every_case(fleet: dict[str, tuple[Postfix, Served]]) -> None:
    now = datetime.now(timezone.utc)
    records = {"3 1 1 ee": fleet["ee"][1].ee, "2 0 1 ta": fleet["ta"][1].ta,
               "3 1 1 rogue": fleet["rogue"][1].ee, "3 0 1 ee": f"3 0 1 {hashlib.sha256(fleet['ee'][1].leaf_der).hexdigest()}",
               "3 1 2 ta": "3 1 2 " + hashlib.sha512(x509.load_der_x509_certificate(fleet["ta"][1].leaf_der).public_key()
                                                    .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()}
    seen = []
    for node, (pf, _) in fleet.items():
        chain = _chain(pf)
        for label, rrdata in records.items():
            for domain in (RECORD, "other.dane.test"):
                ours = evaluate(chain, [rrdata], (domain,), RRSET, now)
                theirs = _openssl(pf, rrdata, domain)
                assert ours.ok == theirs and ours.state in ("match", "mismatch"), (node, label, domain, ours, theirs)
                seen.append((node, label, domain, theirs))
    # The cases that matter are all there: EE ignores name and expiry, TA needs the name.
    assert ("ee", "3 1 1 ee", "other.dane.test", True) in seen
    assert ("ta", "2 0 1 ta", RECORD, True) in seen
    assert ("ta", "2 0 1 ta", "other.dane.test", False) in seen
    assert ("rogue", "2 0 1 ta", RECORD, False) in seen
    assert ("rogue", "3 1 1 ee", RECORD, False) in seen


def _put_tlsa(zone: Zone, values: list[str]) -> None:
    client = boto3.client("route53", endpoint_url=zone.endpoint, region_name="us-east-1")
    rrset = {"Name": RRSET, "Type": "TLSA", "TTL": 300, "ResourceRecords": [{"Value": v} for v in values]}
    client.change_resource_record_sets(HostedZoneId=zone.zone_id,
                                       ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]})


def test_a_mismatching_node_is_taken_out_by_sync_and_by_run(
    fleet: dict[str, tuple[Postfix, Served]], moto_server: Any, tmp_path: Path,
) -> None:
    def check(pf: Postfix) -> list[dict[str, Any]]:
        return [{"smtp": {"port": pf.ports["smtp"], "starttls": True, "dane": {"refresh": "1s"}}}]

    zone = Zone.make(tmp_path, moto_server.endpoint_url, RECORD,
                     {k: (HOSTS[k], check(pf)) for k, (pf, _) in fleet.items()}, max_drain_per_cycle=3)
    ee, ta, rogue = (fleet[k][1] for k in ("ee", "ta", "rogue"))
    try:
        # No TLSA published: every node passes, and says so.
        code, out, err = zone.sync()
        assert (code, out.get("changes")) == (0, []), err
        status = zone.r53lb("status", "--json")
        assert {r["node"]: r["dane"]["state"] for r in json.loads(status.stdout)["nodes"]} == \
            {"ee": "none", "ta": "none", "rogue": "none"}, status.stderr

        _put_tlsa(zone, [ee.ee, ta.ta])
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"ee": 50, "ta": 50, "rogue": 0}
        [change] = out["changes"]
        assert change["node"] == "rogue"
        assert change["reason"].startswith(f"down: smtp: dane: no TLSA record of {RRSET} matches: "
                                           f"the server's SPKI sha256 is {rogue.spki_sha256}"), change["reason"]
        status = zone.r53lb("status", "--json")
        doc = json.loads(status.stdout)
        states = {r["node"]: r["dane"]["state"] for r in doc["nodes"]}
        assert states == {"ee": "match", "ta": "match", "rogue": "mismatch"}
        page = render(doc)  # the status page shows each node's DANE state
        assert page.count("DANE ok") == 2 and f"DANE mismatch: dane: no TLSA record of {RRSET} matches" in page

        # run: the rogue key gets published (it comes back), then a rollover that matches no node.
        daemon = zone.run()
        try:
            _put_tlsa(zone, [ee.ee, ta.ta, rogue.ee])
            wait_for("run to restore rogue", lambda: zone.weights()["rogue"] == 50, deadline=30, every=0.2)
            _put_tlsa(zone, ["3 1 1 " + "00" * 32])
            # Never all zero: every node fails DANE, the pool fails open, and the alert says what it means.
            wait_for("the DANE alert", lambda: "DANE senders will defer everything" in daemon.log(), deadline=30, every=0.2)
            assert zone.weights() == {"ee": 50, "ta": 50, "rogue": 50}
            assert re.search(rf"no node matches the TLSA records of {re.escape(RRSET)}", daemon.log())
            assert daemon.stop() == 0
        finally:
            if daemon.proc.poll() is None:
                daemon.stop()
    finally:
        zone.close()
