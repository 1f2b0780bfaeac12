"""route53.py against strict moto: paged reads, compare-and-swap writes, limits, retries, in-sync waits."""

from __future__ import annotations

import socket
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config

from moto_fixtures import build, record_sets, set_weight, weighted_set, weights
from moto_fixtures.spec import change
from moto_fixtures.strict import layer
from r53lb.config import AwsConfig
from r53lb.core.records import RecordChange, RecordSet
from r53lb.aws.route53 import (
    NO_CREDENTIALS,
    ConflictError,
    Route53,
    Route53Error,
    batch_cost,
    batches,
)

MX = "mx.example.com"
SPEC = {
    "example.com": {
        MX: {"type": "A", "ttl": 60, "sets": {"hlb-1": ("192.0.2.10", 50), "hlb-2": ("192.0.2.11", 50)}},
        "api.example.com": {"sets": {"hlb-1": ("192.0.2.30", 10), "hlb-2": ("192.0.2.31", 10)}},
    }
}
FAST = {"attempts": 4, "backoff": 0.001, "backoff_max": 0.005, "botocore_attempts": 1, "poll_interval": 0.001}


def fast(aws: AwsConfig | None = None, **kw) -> Route53:  # noqa: ANN003
    return Route53(aws or AwsConfig(region="us-east-1"), **{**FAST, **kw})


def boto(endpoint_url: str | None = None):  # noqa: ANN201
    return boto3.client("route53", region_name="us-east-1", endpoint_url=endpoint_url,
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def zone(mock_route53):  # noqa: ANN001, ANN201
    c = boto()
    return c, build(c, SPEC)["example.com"]


def key(name: str, set_id: str, rtype: str = "A") -> tuple[str, str, str]:
    return (name, rtype, set_id)


# --- zone id -------------------------------------------------------------------------------------


def test_zone_id_by_name_is_cached_and_ids_pass_through(zone, mock_route53) -> None:  # noqa: ANN001
    _, zid = zone
    r53 = fast()
    assert r53.zone_id("Example.COM.") == zid
    assert r53.zone_id("example.com") == zid
    assert r53.zone_id(zid) == zid and r53.zone_id(f"/hostedzone/{zid}") == zid
    assert r53.request_counts == {"ListHostedZonesByName": 1}


def test_zone_id_not_found_and_ambiguous(zone) -> None:  # noqa: ANN001
    c, _ = zone
    with pytest.raises(Route53Error, match=r"hosted zone example\.org not found"):
        fast().zone_id("example.org")
    c.create_hosted_zone(Name="example.com", CallerReference="second")
    with pytest.raises(Route53Error, match="2 hosted zones are named example.com.*zone id"):
        fast().zone_id("example.com")


# --- read ----------------------------------------------------------------------------------------


def test_read_returns_only_the_wanted_weighted_sets(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    change(c, zid, ("CREATE", {"Name": "plain.example.com", "Type": "A", "TTL": 300,
                               "ResourceRecords": [{"Value": "192.0.2.1"}]}))
    r53 = fast()
    got = r53.read(zid, [("MX.Example.com.", "A"), ("plain.example.com", "A")])
    assert set(got) == {key(MX, "hlb-1"), key(MX, "hlb-2")}
    rs = got[key(MX, "hlb-1")]
    assert (rs.name, rs.type, rs.weight, rs.ttl, rs.values) == (MX, "A", 50, 60, ("192.0.2.10",))
    assert rs.raw["SetIdentifier"] == "hlb-1" and rs.raw["Name"] == "mx.example.com."
    assert r53.request_counts["ListResourceRecordSets"] == 1  # both names fit one page


def _big_zone(c, zid: str, n: int) -> None:  # noqa: ANN001
    # Names sort by reversed labels: a.example.com < mx.example.com < zz.example.com.
    build(c, {"example.com": {
        "a.example.com": {"sets": {f"a{i}": (f"10.1.0.{i}", 1) for i in range(20)}},
        MX: {"sets": {f"n{i:03d}": (f"10.0.{i // 250}.{i % 250}", 1 + i % 200) for i in range(n)}},
        "zz.example.com": {"sets": {f"z{i}": (f"10.2.0.{i}", 1) for i in range(400)}},
    }})


def test_read_pages_through_a_group_straddling_page_boundaries(zone) -> None:  # noqa: ANN001
    c, zid = zone
    _big_zone(c, zid, 350)  # mx has 352 sets: one group over two pages of 300
    r53 = fast()
    got = r53.read(zid, [(MX, "A")])
    assert len(got) == 352
    assert got[key(MX, "n349")].weight == 1 + 349 % 200
    assert r53.request_counts["ListResourceRecordSets"] == 2  # and not the 400 sets of zz after it

    small = fast(page_size=7)
    assert small.read(zid, [(MX, "A")]) == got
    assert small.request_counts["ListResourceRecordSets"] == -(-352 // 7)


def test_read_shares_pages_between_names_side_by_side(zone) -> None:  # noqa: ANN001
    c, zid = zone
    names = [f"p{i:02d}.pools.example.com" for i in range(30)]
    build(c, {"example.com": {
        **{n: {"sets": {f"s{j}": (f"10.3.{i}.{j}", 1) for j in range(20)}} for i, n in enumerate(names)},
        "zz.example.com": {"sets": {f"z{i}": (f"10.2.0.{i}", 1) for i in range(400)}},
    }})
    r53 = fast()
    got = r53.read(zid, [(n, "A") for n in names] + [("zz.example.com", "A")])
    assert len(got) == 30 * 20 + 400
    # 600 sets side by side: 2 or 3 pages of 300, not one request per name; zz: 2 pages of its own.
    assert r53.request_counts["ListResourceRecordSets"] <= 5
    r53 = fast()
    assert len(r53.read(zid, [(names[0], "A"), (names[29], "A")])) == 40
    assert r53.request_counts["ListResourceRecordSets"] == 2  # never a sweep through the 28 between


def test_read_survives_plain_moto_paging_without_identifiers(zone) -> None:  # noqa: ANN001
    c, zid = zone
    _big_zone(c, zid, 40)
    with layer(False):  # moto starts a group over when a page ends inside it
        r53 = fast(page_size=7)
        got = r53.read(zid, [(MX, "A")])
    assert len(got) == 42
    assert r53.request_counts["ListResourceRecordSets"] < 20


def test_read_dual_stack_a_and_aaaa_together(zone) -> None:  # noqa: ANN001
    c, zid = zone
    build(c, {"example.com": {"smtp.example.com": [
        {"type": "A", "sets": {"n1": ("192.0.2.20", 5), "n2": ("192.0.2.21", 5)}},
        {"type": "AAAA", "sets": {"n1": ("2001:db8::20", 5), "n2": ("2001:db8::21", 0)}},
        {"type": "TXT", "sets": {"n1": ('"x"', 1)}},
    ]}})
    r53 = fast()
    got = r53.read(zid, [("smtp.example.com", "A"), ("smtp.example.com", "AAAA")])
    assert {k: v.weight for k, v in got.items()} == {
        key("smtp.example.com", "n1"): 5, key("smtp.example.com", "n2"): 5,
        key("smtp.example.com", "n1", "AAAA"): 5, key("smtp.example.com", "n2", "AAAA"): 0,
    }
    assert r53.request_counts["ListResourceRecordSets"] == 1
    only6 = r53.read(zid, [("smtp.example.com", "AAAA")])
    assert set(only6) == {key("smtp.example.com", "n1", "AAAA"), key("smtp.example.com", "n2", "AAAA")}


def test_read_of_a_missing_name_is_empty(zone) -> None:  # noqa: ANN001
    _, zid = zone
    assert fast().read(zid, [("nothing.example.com", "A")]) == {}


# --- apply ---------------------------------------------------------------------------------------


def _change(zid: str, current: RecordSet, weight: int) -> RecordChange:
    return RecordChange(zid, current.name, current.type, current.set_identifier, weight, current)


def test_apply_is_one_compare_and_swap_batch(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.reset()
    cid = r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0), _change(zid, cur[key(MX, "hlb-2")], 100)])
    assert cid and cid.startswith("/change/")
    assert mock_route53.writes == 1
    assert weights(c, zid, MX) == {"hlb-1": 0, "hlb-2": 100}
    (rs,) = [r for r in record_sets(c, zid, MX) if r["SetIdentifier"] == "hlb-1"]
    assert rs["TTL"] == 60 and rs["ResourceRecords"] == [{"Value": "192.0.2.10"}]


def test_two_names_sharing_set_ids_are_not_disturbed(zone) -> None:  # noqa: ANN001
    c, zid = zone
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0)])
    assert weights(c, zid, "api.example.com") == {"hlb-1": 10, "hlb-2": 10}
    assert weights(c, zid, MX) == {"hlb-1": 0, "hlb-2": 50}


def test_apply_creates_a_missing_set(zone) -> None:  # noqa: ANN001
    c, zid = zone
    r53 = fast()
    r53.apply(zid, [RecordChange(zid, MX, "A", "hlb-3", 20, None, ttl=30, values=("192.0.2.12",))])
    got = r53.read(zid, [(MX, "A")])[key(MX, "hlb-3")]
    assert (got.weight, got.ttl, got.values) == (20, 30, ("192.0.2.12",))
    with pytest.raises(ConflictError, match="already exists"):
        r53.apply(zid, [RecordChange(zid, MX, "A", "hlb-3", 20, None, ttl=30, values=("192.0.2.12",))])


def test_conflict_between_read_and_write_is_refused_whole(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.before_change(lambda: set_weight(c, zid, MX, "A", "hlb-1", 7))
    with pytest.raises(ConflictError) as e:
        r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0), _change(zid, cur[key(MX, "hlb-2")], 0)])
    assert "\n" not in str(e.value) and "do not match the current values" in str(e.value)
    assert weights(c, zid, MX) == {"hlb-1": 7, "hlb-2": 50}  # hlb-2 untouched: all or nothing
    assert r53.request_counts["ChangeResourceRecordSets"] == 1  # a conflict is not retried here
    # Re-read, re-plan, write: goes through.
    cur = r53.read(zid, [(MX, "A")])
    r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0)])
    assert weights(c, zid, MX) == {"hlb-1": 0, "hlb-2": 50}


def test_no_changes_make_no_call(zone, mock_route53) -> None:  # noqa: ANN001
    _, zid = zone
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.reset()
    assert r53.apply(zid, []) is None
    assert r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 50)]) is None  # same weight
    assert mock_route53.counts == {} and r53.request_counts["ChangeResourceRecordSets"] == 0


def test_apply_splits_only_past_the_record_limit(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    _big_zone(c, zid, 600)
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.reset()
    r53.apply(zid, [_change(zid, rs, 0) for rs in cur.values()])  # 602 pairs = 1,204 records
    assert mock_route53.writes == 2 and len(r53.last_change_ids) == 2
    assert set(weights(c, zid, MX).values()) == {0}

    cur = r53.read(zid, [(MX, "A")])
    mock_route53.reset()
    r53.apply(zid, [_change(zid, rs, 1) for rs in list(cur.values())[:500]])  # exactly 1,000
    assert mock_route53.writes == 1


def test_every_batch_carries_the_fence_and_a_split_moves_it_once_per_batch(zone, mock_route53) -> None:  # noqa: ANN001
    from r53lb.aws.route53 import FenceWrite, Progress, fence_set

    c, zid = zone
    _big_zone(c, zid, 600)
    r53 = fast()
    fence = "_r53lb.example.com"
    cur, read = r53.read_fenced(zid, [(MX, "A")], fence)
    assert read is None  # no fence yet
    versions = [fence_set(fence, [f'"v{k}"'], 60) for k in range(3)]
    progress = Progress()
    mock_route53.reset()
    # 602 pairs = 1,204 records: two batches; the first CREATEs v0, the second DELETEs v0, CREATEs v1.
    r53.apply(zid, [_change(zid, rs, 0) for rs in cur.values()], fence=FenceWrite(None, versions.__getitem__),
              progress=progress)
    assert mock_route53.writes == 2 and len(progress.batches) == 2 and len(progress.change_ids) == 2
    assert sorted(i for b in progress.batches for i in b) == list(range(602))
    cur, read = r53.read_fenced(zid, [(MX, "A")], fence)
    assert read is not None and [rr["Value"] for rr in read["ResourceRecords"]] == ['"v1"']
    assert set(weights(c, zid, MX).values()) == {0}
    # A batch planned from a fence that has moved since is refused whole, whatever it touches.
    stale = FenceWrite(versions[0], lambda k: versions[2])
    with pytest.raises(ConflictError):
        r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 9)], fence=stale)
    assert weights(c, zid, MX)["hlb-1"] == 0


def test_apply_splits_past_the_character_limit(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    build(c, {"example.com": {"txt.example.com": {"type": "TXT", "sets": {
        f"s{i:03d}": ('"' + f"{i:03d}".ljust(248, "x") + '"', 1) for i in range(100)}}}})
    r53 = fast()
    cur = r53.read(zid, [("txt.example.com", "TXT")])
    mock_route53.reset()
    r53.apply(zid, [_change(zid, rs, 2) for rs in cur.values()])  # 100 pairs x 500 chars = 50,000
    assert mock_route53.writes == 2
    assert set(weights(c, zid, "txt.example.com", "TXT").values()) == {2}


def test_batches_counts_as_route53_does() -> None:
    pair = [{"Action": "DELETE", "ResourceRecordSet": weighted_set(MX, "A", "a", ["1.2.3.4", "5.6.7.8"], 1)},
            {"Action": "CREATE", "ResourceRecordSet": weighted_set(MX, "A", "a", ["1.2.3.4", "5.6.7.8"], 2)}]
    assert batch_cost(pair[0]) == (2, 14)
    assert batch_cost({**pair[0], "Action": "UPSERT"}) == (4, 28)
    assert [len(b) for b in batches([pair] * 250)] == [500]  # 1,000 records: one batch
    assert [len(b) for b in batches([pair] * 251)] == [500, 2]  # pairs never split
    assert batches([]) == []


# --- retries and errors --------------------------------------------------------------------------


def test_throttling_is_retried_with_backoff(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    seen: list[tuple[str, str]] = []
    r53 = fast(on_request=lambda op, outcome: seen.append((op, outcome)))
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.throttle("ChangeResourceRecordSets", 2)
    r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0)])
    assert weights(c, zid, MX)["hlb-1"] == 0
    assert r53.request_counts["ChangeResourceRecordSets"] == 3
    assert [o for op, o in seen if op == "ChangeResourceRecordSets"] == ["throttled", "throttled", "ok"]


@pytest.mark.parametrize("code,status", [("PriorRequestNotComplete", 400), ("ThrottlingException", 400),
                                         ("ServiceUnavailable", 503), ("InternalFailure", 500)])
def test_transient_errors_are_retried(zone, mock_route53, code: str, status: int) -> None:  # noqa: ANN001
    _, zid = zone
    mock_route53.fail("ListResourceRecordSets", 3, code=code, status=status)
    r53 = fast()
    assert len(r53.read(zid, [(MX, "A")])) == 2
    assert r53.request_counts["ListResourceRecordSets"] == 4


def test_retries_are_bounded(zone, mock_route53) -> None:  # noqa: ANN001
    c, zid = zone
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.reset()
    mock_route53.throttle("ChangeResourceRecordSets", 10)
    with pytest.raises(Route53Error, match=r"ChangeResourceRecordSets: Throttling: Rate exceeded \(gave up after 4 attempts\)"):
        r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0)])
    assert mock_route53.writes == 4
    assert weights(c, zid, MX)["hlb-1"] == 50


def test_other_errors_are_not_retried(zone, mock_route53) -> None:  # noqa: ANN001
    _, zid = zone
    mock_route53.fail("ListResourceRecordSets", 1, code="AccessDenied", status=403, message="not authorized")
    r53 = fast()
    with pytest.raises(Route53Error, match="^Route 53 ListResourceRecordSets: AccessDenied: not authorized$"):
        r53.read(zid, [(MX, "A")])
    assert r53.request_counts["ListResourceRecordSets"] == 1


def test_unknown_zone_is_a_clear_error(mock_route53) -> None:  # noqa: ANN001
    with pytest.raises(Route53Error, match="hosted zone ZNOTHERE123 not found"):
        fast().read("ZNOTHERE123", [(MX, "A")])


def test_unreachable_endpoint_gives_up_with_one_line(aws_env) -> None:  # noqa: ANN001
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r53 = fast(AwsConfig(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}"), attempts=2)
    with pytest.raises(Route53Error) as e:
        r53.read("ZABCDEF", [(MX, "A")])
    assert "Could not connect" in str(e.value) and "gave up after 2 attempts" in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_credentials(moto_server, monkeypatch) -> None:  # noqa: ANN001
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    r53 = fast(AwsConfig(region="us-east-1", endpoint_url=moto_server.endpoint_url))
    with pytest.raises(Route53Error) as e:
        r53.zone_id("example.com")
    assert str(e.value) == NO_CREDENTIALS


def test_unknown_profile(aws_env) -> None:  # noqa: ANN001
    with pytest.raises(Route53Error, match="AWS profile 'nope'"):
        fast(AwsConfig(profile="nope")).zone_id("example.com")


# --- wait for INSYNC ---------------------------------------------------------------------------------


def test_wait_insync_polls_until_insync(zone, mock_route53) -> None:  # noqa: ANN001
    _, zid = zone
    r53 = fast()
    cur = r53.read(zid, [(MX, "A")])
    mock_route53.pending(2)
    cid = r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0)])
    assert r53.wait_insync(cid) >= 0
    assert r53.request_counts["GetChange"] == 3  # two PENDING, then INSYNC


def test_wait_insync_times_out(zone, mock_route53) -> None:  # noqa: ANN001
    mock_route53.pending(10_000)
    r53 = fast(poll_interval=0.01)
    with pytest.raises(Route53Error, match="not INSYNC after 0.05 s"):
        r53.wait_insync("/change/C1", timeout=0.05)


# --- end to end through the server ---------------------------------------------------------------------


def test_through_the_moto_server(moto_server) -> None:  # noqa: ANN001
    c = boto(moto_server.endpoint_url)
    build(c, SPEC)
    r53 = fast(AwsConfig(region="us-east-1", endpoint_url=moto_server.endpoint_url))
    zid = r53.zone_id("example.com")
    cur = r53.read(zid, [(MX, "A"), ("api.example.com", "A")])
    assert len(cur) == 4
    moto_server.throttle("ChangeResourceRecordSets", 1)
    moto_server.before_change(lambda: set_weight(c, zid, MX, "A", "hlb-2", 1))
    with pytest.raises(ConflictError):
        r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0), _change(zid, cur[key(MX, "hlb-2")], 0)])
    cur = r53.read(zid, [(MX, "A")])
    cid = r53.apply(zid, [_change(zid, cur[key(MX, "hlb-1")], 0), _change(zid, cur[key(MX, "hlb-2")], 0)])
    assert r53.wait_insync(cid) >= 0
    assert weights(c, zid, MX) == {"hlb-1": 0, "hlb-2": 0}
    assert weights(c, zid, "api.example.com") == {"hlb-1": 10, "hlb-2": 10}


def test_import_stays_cheap() -> None:
    code = "import sys, r53lb.aws.route53; print(sorted(m for m in ('boto3', 'botocore', 'tenacity', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=".")
    assert out.stdout.strip() == "[]"
