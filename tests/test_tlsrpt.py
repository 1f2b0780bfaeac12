"""TLS-RPT (RFC 8460): reports in the RFC's format, hostile ones, and the signal through sync and run."""

from __future__ import annotations

import gzip
import json
import resource
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from r53lb.core.tlsrpt import parse_report, tally
from r53lb.demo.loopback import SmtpServer
from r53lb.engine.web import render
from r53lb.probes.tlsrpt import read_reports

from interop.fleet import Zone
from interop.servers import free_port, wait_for

pytestmark = pytest.mark.timeout(120)

NODES = {"a": "127.0.95.1", "b": "127.0.95.2", "c": "127.0.95.3"}


def report(failures: dict[str, dict[str, int]], ok: int = 90, report_id: str = "r1", days_ago: float = 1,
           domain: str = "company-y.example") -> dict[str, Any]:
    """A report shaped as RFC 8460 section 4.8's example; failures: ip -> {result-type: sessions}."""
    end = datetime.now(timezone.utc) - timedelta(days=days_ago)
    return {
        "organization-name": "Company-X",
        "date-range": {"start-datetime": (end - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "end-datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "contact-info": "sts-reporting@company-x.example",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: testing",
                                                               "mx: *.mail.company-y.example", "max_age: 86400"],
                       "policy-domain": domain, "mx-host": ["*.mail.company-y.example"]},
            "summary": {"total-successful-session-count": ok,
                        "total-failure-session-count": sum(sum(t.values()) for t in failures.values())},
            "failure-details": [
                {"result-type": kind, "sending-mta-ip": "2001:db8:abcd:0012::1",
                 "receiving-mx-hostname": "mx1.mail.company-y.example", "receiving-ip": ip,
                 "failed-session-count": n, "additional-information": "https://reports.company-x.example/",
                 "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"}
                for ip, kinds in failures.items() for kind, n in kinds.items()],
        }],
    }


def gzip_bomb(inflated: int, byte: bytes = b" ") -> bytes:
    """gzip of `inflated` bytes, built a MiB at a time (the test never holds them all)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = byte * (1024 * 1024)
    return b"".join(z.compress(chunk) for _ in range(inflated // len(chunk))) + z.flush()


def test_the_rfc_example_is_read_and_attributed_by_receiving_ip() -> None:
    r = parse_report(json.dumps(report({NODES["b"]: {"certificate-host-mismatch": 30, "tlsa-invalid": 3}})).encode())
    assert r.organization == "Company-X" and r.policies == (("company-y.example", 90, 33),)
    now = datetime.now(timezone.utc)
    counts = tally([r, r], {k: [v] for k, v in NODES.items()}, "company-y.example", now - timedelta(days=7), now)
    b = counts["b"]
    assert (b.failed, round(b.sessions), b.reports) == (33, 63, 1)  # the same report twice counts once
    assert b.describe() == "33 of 63 sessions failed (52%): certificate-host-mismatch 30, tlsa-invalid 3"
    assert counts["a"].failed == 0 and counts["a"].share == 0
    # Outside the window, or about another domain: not counted.
    assert tally([r], {"b": [NODES["b"]]}, "other.example", now - timedelta(days=7), now)["b"].failed == 0
    assert tally([r], {"b": [NODES["b"]]}, None, now - timedelta(hours=1), now)["b"].failed == 0


@pytest.mark.parametrize("data, why", [
    (b"{not json", "not JSON"),
    (b"[]", "top level is not an object"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    (json.dumps({"date-range": {"start-datetime": "yesterday", "end-datetime": "x"}, "policies": [{}]}).encode(),
     "not an RFC 3339"),
    (json.dumps({**report({}), "policies": [{"summary": {"total-successful-session-count": -1}}]}).encode(),
     "not a session count"),
    (json.dumps({**report({}), "policies": []}).encode(), "no policies"),
])
def test_malformed_reports_get_a_reason(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_report(data)


def test_hostile_files_are_bounded_in_memory_and_time(tmp_path: Path) -> None:
    (tmp_path / "good.json.gz").write_bytes(gzip.compress(json.dumps(report({NODES["b"]: {"tlsa-invalid": 5}})).encode()))
    (tmp_path / "bomb.json.gz").write_bytes(gzip_bomb(512 * 1024 * 1024))  # 512 MiB of spaces
    (tmp_path / "huge.json").write_bytes(b" " * (9 * 1024 * 1024))
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff" * 100)
    (tmp_path / "fake.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    (tmp_path / "subdir").mkdir()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    got = read_reports(tmp_path)
    took = time.monotonic() - started
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert got.error is None and len(got.reports) == 1
    skipped = "\n".join(got.skipped)
    assert "bomb.json.gz: inflates past 4 MiB (a gzip bomb?)" in skipped
    assert "huge.json: larger than 8 MiB" in skipped
    assert "garbage.json: not JSON" in skipped
    assert "fake.gz: not valid gzip" in skipped
    assert took < 5 and grew_mib < 64, (took, grew_mib)
    assert read_reports(tmp_path / "missing").error is not None


def test_a_node_that_senders_fail_on_is_taken_out_by_sync_and_by_run(moto_server: Any, tmp_path: Path) -> None:
    reports = tmp_path / "tlsrpt"
    reports.mkdir()
    port = free_port(NODES["a"])
    servers = [SmtpServer(ip, port, hostname="mx.rpt.test").start() for ip in NODES.values()]
    try:
        zone = Zone.make(tmp_path, moto_server.endpoint_url, "mx.rpt.test",
                         {n: (ip, [{"smtp": {"port": port}}]) for n, ip in NODES.items()},
                         tlsrpt={"directory": str(reports), "domain": "company-y.example", "threshold": "20%",
                                 "min_count": 10, "interval": "1s"})
        (reports / "company-x!company-y.example!1!2!r1.json.gz").write_bytes(gzip.compress(json.dumps(
            report({NODES["b"]: {"certificate-host-mismatch": 30}, NODES["a"]: {"starttls-not-supported": 2}})).encode()))
        (reports / "bomb.json.gz").write_bytes(gzip_bomb(64 * 1024 * 1024, b"["))
        code, out, err = zone.sync()
        assert code == 0, err
        assert zone.weights() == {"a": 50, "b": 0, "c": 50}
        [change] = out["changes"]
        assert change["reason"] == ("TLS-RPT: 30 of 60 sessions failed (50%): certificate-host-mismatch 30 over 7d "
                                    "(> 20%, 30 >= 10)"), change["reason"]
        assert "bomb.json.gz: inflates past" in err
        doc = json.loads(zone.r53lb("status", "--json").stdout)
        rows = {r["node"]: r for r in doc["nodes"]}
        a = [s for s in rows["a"]["signals"] if s["kind"] == "tlsrpt"][0]
        assert a["reason"].startswith("TLS-RPT: 2 of 32 sessions failed (6%)") and not a["out"]  # 2 < min_count
        page = render(doc)  # the status page shows each node's counts
        assert "TLS-RPT: 2 of 32 sessions failed (6%)" in page and "TLS-RPT: 30 of 60 sessions failed (50%)" in page

        daemon = zone.run()
        try:
            (reports / "company-z!company-y.example!1!2!r2.json").write_text(json.dumps(
                report({NODES["c"]: {"tlsa-invalid": 40}}, ok=10, report_id="r2")))
            wait_for("run to take c out", lambda: zone.weights()["c"] == 0, deadline=30, every=0.2)
            assert daemon.stop() == 0
        finally:
            if daemon.proc.poll() is None:
                daemon.stop()
        assert zone.weights() == {"a": 50, "b": 0, "c": 0}
    finally:
        for s in servers:
            s.stop()
        zone.close()
