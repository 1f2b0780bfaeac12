"""End to end: `r53lb` in a subprocess against a strict moto server and real loopback servers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml

from moto_fixtures.spec import build, set_weight, weighted_set, change, weights
from r53lb.demo.loopback import HttpServer, SmtpServer

pytestmark = pytest.mark.timeout(180)

MX = {"hlb-1": "127.0.0.21", "hlb-2": "127.0.0.22", "hlb-3": "127.0.0.23"}
MX2 = {"hlb-1": "127.0.0.24", "hlb-2": "127.0.0.25"}  # same node ids, another pool in the same zone
HA = {"primary": "127.0.0.31", "standby": "127.0.0.32"}
API = {"api-1": "127.0.0.41", "api-2": "127.0.0.42"}
DUAL = {"ds-1": ("127.0.0.51", "2001:db8::51"), "ds-2": ("127.0.0.52", "2001:db8::52")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Fleet:
    dir: Path
    config: Path
    endpoint: str
    zone_id: str
    smtp: dict[str, SmtpServer]
    http: dict[str, HttpServer]
    server: object

    def r53lb(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "r53lb", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=timeout)

    def sync(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
        p = self.r53lb("sync", "--json", *args)
        return p, json.loads(p.stdout) if p.stdout.strip() else {}

    @property
    def client(self):
        return boto3.client("route53", endpoint_url=self.endpoint, region_name="us-east-1")

    def weights(self, name: str, rtype: str = "A") -> dict[str, int]:
        return weights(self.client, self.zone_id, name, rtype)

    def writes(self) -> int:
        return self.server.counts["ChangeResourceRecordSets"]


@pytest.fixture
def fleet(tmp_path, moto_server):
    port, http_port = free_port(), free_port()
    client = boto3.client("route53", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")
    zones = build(client, {"example.com": {
        "mx.example.com": {"type": "A", "sets": {k: (v, 50) for k, v in MX.items()}},
        "mx2.example.com": {"type": "A", "sets": {k: (v, 20) for k, v in MX2.items()}},
        "smtp.example.com": {"type": "A", "sets": {"primary": (HA["primary"], 1), "standby": (HA["standby"], 0)}},
        "api.example.com": {"type": "A", "sets": {k: (v, 10) for k, v in API.items()}},
        "dual.example.com": [{"type": "A", "sets": {k: (v4, 30) for k, (v4, _) in DUAL.items()}},
                             {"type": "AAAA", "sets": {k: (v6, 30) for k, (_, v6) in DUAL.items()}}],
    }})
    moto_server.controls.reset()  # count only what r53lb does
    smtp = {f"{pool}/{k}": SmtpServer(v, port).start()
            for pool, nodes in (("mx", MX), ("mx2", MX2), ("ha", HA)) for k, v in nodes.items()}
    smtp.update({f"dual/{k}": SmtpServer(v4, port).start() for k, (v4, _) in DUAL.items()})
    http = {f"api/{k}": HttpServer(v, http_port).start() for k, v in API.items()}

    def pool(name, record, nodes, weight, checks, **kw):
        return {"name": name, "zone": "example.com", "record": record, "checks": checks,
                "nodes": [{"id": k, "address": v, "weight": weight} for k, v in nodes.items()], **kw}

    smtp_check = [{"smtp": {"port": port}}]
    config = tmp_path / "r53lb.yaml"
    config.write_text(yaml.safe_dump({
        "aws": {"endpoint_url": moto_server.endpoint_url, "region": "us-east-1"},
        "state": {"path": str(tmp_path / "state.db")},
        "defaults": {"timeout": "1s", "fastinter": "50ms", "rise": 2, "fall": 2, "helo": "probe.r53lb.test"},
        "pools": [
            pool("mx", "mx.example.com", MX, 50, smtp_check),
            pool("mx2", "mx2.example.com", MX2, 20, smtp_check),
            pool("ha", "smtp.example.com", HA, 1, smtp_check, mode="failover"),
            pool("api", "api.example.com", API, 10, [{"http": {"url": f"http://{{address}}:{http_port}/health"}}]),
            pool("dual", "dual.example.com", {k: list(v) for k, v in DUAL.items()}, 30, smtp_check),
        ],
    }))
    f = Fleet(tmp_path, config, moto_server.endpoint_url, zones["example.com"], smtp, http, moto_server)
    yield f
    for s in [*smtp.values(), *http.values()]:
        s.stop()


def history(fleet: Fleet, ref: str) -> list[dict]:
    p = fleet.r53lb("history", "--json", "--node", ref)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["events"]


def test_steady_state_writes_nothing(fleet):
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert out["changes"] == [] and out["hold"] is None
    p, out = fleet.sync()
    assert p.returncode == 0 and out["changes"] == []
    assert fleet.writes() == 0
    # Reads are targeted, never a zone scan per pool: the fleet's five names sit side by side
    # in one zone and share one page, so one ListResourceRecordSets per sync.
    assert fleet.server.counts["ListResourceRecordSets"] == 2 * 1


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_name(request, monkeypatch) -> str:
    """r53lb runs on uvloop; R53LB_EVENT_LOOP=asyncio runs it on asyncio's own loop: the same verdicts either way."""
    from r53lb import eventloop

    monkeypatch.setenv(eventloop.ENV, request.param)
    assert eventloop.name() == request.param
    return request.param


def test_node_dies_then_recovers(fleet, event_loop_name):
    fleet.sync()
    fleet.smtp["mx/hlb-2"].set_mode("421")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com") == {"hlb-1": 50, "hlb-2": 0, "hlb-3": 50}
    [c] = out["changes"]
    assert (c["node"], c["from_weight"], c["to_weight"], c["set_identifier"]) == ("hlb-2", 50, 0, "hlb-2")
    assert c["reason"].startswith("down: smtp: greeting 421")
    events = history(fleet, "mx/hlb-2")
    assert [(e["kind"], e["from"], e["to"]) for e in events] == [("health", "up", "down"), ("weight", "50", "0")]
    assert "421" in events[1]["reason"]
    assert fleet.writes() == 1

    fleet.smtp["mx/hlb-2"].set_mode("ok")
    p, out = fleet.sync()  # rise 2: confirmed at fastinter inside this one run
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com")["hlb-2"] == 50
    assert history(fleet, "mx/hlb-2")[-2:][0]["to"] == "up"
    # A sync with nothing new makes no write call.
    before = fleet.writes()
    p, out = fleet.sync()
    assert p.returncode == 0 and out["changes"] == [] and fleet.writes() == before


def test_failover_pair_swaps_and_fails_back(fleet):
    fleet.smtp["ha/primary"].set_mode("refuse")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("smtp.example.com") == {"primary": 0, "standby": 1}
    assert fleet.writes() == 1  # the swap is one batch
    fleet.smtp["ha/primary"].set_mode("ok")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("smtp.example.com") == {"primary": 1, "standby": 0}


def test_whole_pool_dead_fails_open(fleet, event_loop_name):
    fleet.sync()
    fleet.smtp["mx/hlb-1"].set_mode("refuse")
    p, _ = fleet.sync()
    assert fleet.weights("mx.example.com")["hlb-1"] == 0
    for k in ("mx/hlb-1", "mx/hlb-2", "mx/hlb-3"):
        fleet.smtp[k].set_mode("refuse")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com") == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}
    assert "no healthy node; failing open" in p.stderr
    assert any("failing open" in a for a in out["alerts"])


def test_every_check_failing_is_a_hold(fleet):
    fleet.sync()
    for s in [*fleet.smtp.values(), *fleet.http.values()]:
        s.set_mode("refuse")
    p, out = fleet.sync()
    assert p.returncode == 3
    assert out["hold"].startswith("every check of every node failed")
    assert "hold:" in p.stderr and "nothing written" in p.stderr
    assert fleet.writes() == 0
    assert fleet.weights("mx.example.com") == {"hlb-1": 50, "hlb-2": 50, "hlb-3": 50}


def test_record_changed_between_read_and_write_is_refused_and_replanned(fleet):
    fleet.sync()
    client = fleet.client

    def someone_else():
        set_weight(client, fleet.zone_id, "mx.example.com", "A", "hlb-2", 7)

    fleet.server.before_change(someone_else)
    fleet.smtp["mx/hlb-2"].set_mode("554")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert out["conflicts"] == 1
    assert "batch refused" in p.stderr
    # After the re-read r53lb planned from 7, not from the 50 it first saw.
    assert fleet.weights("mx.example.com")["hlb-2"] == 0
    assert [c["from_weight"] for c in out["changes"]] == [7]


def test_throttled_calls_are_retried(fleet):
    fleet.sync()
    fleet.server.throttle("ChangeResourceRecordSets", 2)
    fleet.server.throttle("ListResourceRecordSets", 1)
    fleet.smtp["mx/hlb-3"].set_mode("refuse")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com")["hlb-3"] == 0
    assert fleet.writes() == 3  # two throttled, one accepted


def test_pools_sharing_node_ids_do_not_disturb_each_other(fleet):
    fleet.sync()
    fleet.smtp["mx/hlb-1"].set_mode("refuse")
    p, _ = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("mx.example.com")["hlb-1"] == 0
    assert fleet.weights("mx2.example.com") == {"hlb-1": 20, "hlb-2": 20}


def test_drift_is_reported_and_not_written(fleet):
    fleet.sync()
    client = fleet.client
    change(client, fleet.zone_id,
           ("DELETE", weighted_set("mx.example.com", "A", "hlb-3", MX["hlb-3"], 50)),
           ("CREATE", weighted_set("mx.example.com", "A", "hlb-3", "198.51.100.7", 50)))
    fleet.smtp["mx/hlb-3"].set_mode("refuse")
    p, out = fleet.sync()
    assert p.returncode == 1
    assert "drift: Route 53 holds 198.51.100.7, config says 127.0.0.23; not written" in p.stderr
    assert fleet.weights("mx.example.com")["hlb-3"] == 50


def test_drain_and_enable(fleet):
    fleet.sync()
    p = fleet.r53lb("drain", "mx/hlb-1", "--reason", "kernel upgrade")
    assert p.returncode == 0, p.stderr
    p, out = fleet.sync()
    assert fleet.weights("mx.example.com")["hlb-1"] == 0
    assert out["changes"][0]["reason"] == "drained: kernel upgrade"
    status = json.loads(fleet.r53lb("status", "--json").stdout)["nodes"]
    row = next(r for r in status if r["pool"] == "mx" and r["node"] == "hlb-1")
    assert row["drained"] == "kernel upgrade" and row["weight"] == 0
    assert fleet.r53lb("enable", "mx/hlb-1").returncode == 0
    fleet.sync()
    assert fleet.weights("mx.example.com")["hlb-1"] == 50
    p = fleet.r53lb("drain", "mx/nope", "--reason", "x")
    assert p.returncode == 2 and "unknown node 'mx/nope'" in p.stderr


def test_plan_and_dry_run_write_nothing(fleet):
    fleet.sync()
    fleet.http["api/api-1"].set_mode("500")
    p = fleet.r53lb("plan", "--json", "--detailed-exitcode")
    assert p.returncode == 2, p.stderr
    [c] = json.loads(p.stdout)["changes"]
    assert c["node"] == "api-1" and "500" in c["reason"]
    p, out = fleet.sync("--dry-run")
    assert p.returncode == 0 and out["applied"] is False and len(out["changes"]) == 1
    assert fleet.writes() == 0
    assert history(fleet, "api/api-1") == []  # plan and dry-run record nothing


def test_wait_reports_insync(fleet):
    fleet.sync()
    fleet.server.pending(2)
    fleet.smtp["mx/hlb-1"].set_mode("refuse")
    p, out = fleet.sync("--wait")
    assert p.returncode == 0, p.stderr
    assert out["insync_seconds"] >= 0
    assert fleet.server.counts["GetChange"] >= 3


def test_corrupted_state_file_is_rebuilt_from_route53(fleet):
    fleet.sync()
    state = fleet.dir / "state.db"
    state.write_bytes(b"\x00garbage" * 1000)
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert "unreadable" in p.stderr and "rebuilt from Route 53" in p.stderr
    assert out["changes"] == []  # first sight again: adopted from Route 53, nothing changed
    assert list(fleet.dir.glob("state.db.corrupt-*"))


def test_validate_and_missing_credentials(fleet, tmp_path):
    assert fleet.r53lb("validate").returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(fleet.config.read_text().replace("weight: 50", "weight: 300", 1))
    p = subprocess.run([sys.executable, "-m", "r53lb", "-c", str(bad), "validate"], capture_output=True, text=True)
    assert p.returncode == 2
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "weight: 300" in text)
    assert p.stderr.strip() == f"r53lb: {bad}:{line}: pools[0].nodes[0].weight: 300 is above 255"  # the YAML line too


def test_probe_needs_no_aws(fleet):
    fleet.smtp["mx/hlb-2"].set_mode("421")
    p = fleet.r53lb("probe", "--json")
    assert p.returncode == 3
    results = {(r["pool"], r["node"]): r for r in json.loads(p.stdout)["results"]}
    assert results[("mx", "hlb-1")]["ok"] is True
    assert results[("mx", "hlb-2")]["ok"] is False and "421" in results[("mx", "hlb-2")]["detail"]
    assert fleet.server.counts["ListResourceRecordSets"] == 0


def test_dual_stack_node_moves_a_and_aaaa_together(fleet):
    fleet.sync()
    fleet.smtp["dual/ds-2"].set_mode("refuse")
    p, out = fleet.sync()
    assert p.returncode == 0, p.stderr
    assert fleet.weights("dual.example.com", "A") == {"ds-1": 30, "ds-2": 0}
    assert fleet.weights("dual.example.com", "AAAA") == {"ds-1": 30, "ds-2": 0}
    assert sorted(c["type"] for c in out["changes"]) == ["A", "AAAA"]
    assert fleet.writes() == 1  # one batch for the zone


def test_failed_vantage_canary_is_a_hold(fleet, tmp_path):
    canary = SmtpServer("127.0.0.99", free_port()).start()
    try:
        cfg = yaml.safe_load(fleet.config.read_text())
        cfg["vantage"] = {"canaries": [{"address": "127.0.0.99", "checks": [{"tcp": {"port": canary.port}}]}]}
        fleet.config.write_text(yaml.safe_dump(cfg))
        p, out = fleet.sync()
        assert p.returncode == 0 and out["hold"] is None, p.stderr
        canary.set_mode("refuse")
        fleet.smtp["mx/hlb-1"].set_mode("refuse")
        p, out = fleet.sync()
        assert p.returncode == 3
        assert out["hold"].startswith("vantage canary failed: canary-0 tcp")
        assert fleet.writes() == 0 and fleet.weights("mx.example.com")["hlb-1"] == 50
    finally:
        canary.stop()


def test_two_syncs_at_once_one_waits_nothing_corrupts(fleet):
    fleet.sync()
    fleet.smtp["mx/hlb-2"].set_mode("refuse")
    cmd = [sys.executable, "-m", "r53lb", "-c", str(fleet.config), "sync", "--json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert fleet.weights("mx.example.com")["hlb-2"] == 0
    assert fleet.writes() == 1  # the second run waited, re-read, and found nothing to do
    weight_events = [e for e in history(fleet, "mx/hlb-2") if e["kind"] == "weight"]
    assert len(weight_events) == 1

