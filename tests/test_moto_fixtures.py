"""The strict layer refuses what Route 53 refuses; each test also shows plain moto does not (why it exists)."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from moto_fixtures import build, change, record_sets, set_weight, weighted_set, weights
from moto_fixtures.strict import MAX_CHARS, MAX_RECORDS, layer

SPEC = {
    "example.com": {
        "mx.example.com": {"type": "A", "ttl": 60, "sets": {"hlb-1": ("192.0.2.10", 50), "hlb-2": ("192.0.2.11", 50)}},
        "api.example.com": {"sets": {"hlb-1": ("192.0.2.30", 10)}},
    }
}
MX = "mx.example.com"


def client(endpoint_url: str | None = None):  # noqa: ANN201
    # No client-side retries: a fault injected once must reach the test as it is.
    return boto3.client(
        "route53", region_name="us-east-1", endpoint_url=endpoint_url, config=Config(retries={"total_max_attempts": 1})
    )


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


@pytest.fixture
def r53(mock_route53):  # noqa: ANN001, ANN201
    c = client()
    zid = build(c, SPEC)["example.com"]
    return c, zid


# --- spec ------------------------------------------------------------------------------------


def test_build_spec_makes_weighted_pools_and_route53_like_ids(r53) -> None:  # noqa: ANN001
    c, zid = r53
    assert zid.startswith("Z")
    assert weights(c, zid, MX) == {"hlb-1": 50, "hlb-2": 50}
    assert weights(c, zid, "api.example.com") == {"hlb-1": 10}
    (rs,) = [r for r in record_sets(c, zid, MX) if r["SetIdentifier"] == "hlb-1"]
    assert rs["TTL"] == 60 and rs["ResourceRecords"] == [{"Value": "192.0.2.10"}]


def test_build_dual_stack_and_reuses_zone(r53) -> None:  # noqa: ANN001
    c, zid = r53
    ids = build(c, {"example.com.": {"smtp.example.com": [
        {"type": "A", "sets": {"n1": ("192.0.2.20", 1)}},
        {"type": "AAAA", "sets": {"n1": ("2001:db8::20", 1), "n2": (["2001:db8::21", "2001:db8::22"], 0)}},
    ]}})
    assert ids == {"example.com": zid}
    assert weights(c, zid, "smtp.example.com", "A") == {"n1": 1}
    assert weights(c, zid, "smtp.example.com", "AAAA") == {"n1": 1, "n2": 0}


def test_set_weight_changes_one_set_out_of_band(r53) -> None:  # noqa: ANN001
    c, zid = r53
    set_weight(c, zid, MX, "A", "hlb-2", 7)
    assert weights(c, zid, MX) == {"hlb-1": 50, "hlb-2": 7}
    assert weights(c, zid, "api.example.com") == {"hlb-1": 10}


# --- strict rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [True, False])
def test_delete_must_match_current_weight(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    stale = weighted_set(MX, "A", "hlb-1", "192.0.2.10", 49)  # right value and TTL, wrong weight
    with layer(strict):
        if strict:
            with pytest.raises(ClientError) as e:
                change(c, zid, ("DELETE", stale), ("CREATE", {**stale, "Weight": 0}))
            assert code(e) == "InvalidChangeBatch"
            assert "do not match the current values" in str(e.value)
            assert weights(c, zid, MX) == {"hlb-1": 50, "hlb-2": 50}
        else:  # moto accepts it: a compare-and-swap would silently win against a concurrent change
            change(c, zid, ("DELETE", stale), ("CREATE", {**stale, "Weight": 0}))
            assert weights(c, zid, MX)["hlb-1"] == 0


@pytest.mark.parametrize("strict", [True, False])
def test_delete_of_values_since_replaced_is_refused(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    old = weighted_set(MX, "A", "hlb-1", "192.0.2.10", 50)
    change(c, zid, ("DELETE", old), ("CREATE", {**old, "Weight": 0}))  # someone else's write
    with layer(strict):
        if strict:
            with pytest.raises(ClientError, match="do not match the current values"):
                change(c, zid, ("DELETE", old), ("CREATE", {**old, "Weight": 20}))
            assert weights(c, zid, MX)["hlb-1"] == 0
        else:  # moto only checks that some earlier CREATE in its journal had these values
            change(c, zid, ("DELETE", old), ("CREATE", {**old, "Weight": 20}))
            assert weights(c, zid, MX)["hlb-1"] == 20


def test_delete_of_missing_set_is_refused(r53) -> None:  # noqa: ANN001
    c, zid = r53
    with pytest.raises(ClientError, match="but it was not found") as e:
        change(c, zid, ("DELETE", weighted_set(MX, "A", "hlb-9", "192.0.2.19", 1)))
    assert code(e) == "InvalidChangeBatch"


@pytest.mark.parametrize("strict", [True, False])
def test_duplicate_create_is_refused(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    again = weighted_set(MX, "A", "hlb-1", "192.0.2.10", 51)
    with layer(strict):
        if strict:
            with pytest.raises(ClientError, match="but it already exists") as e:
                change(c, zid, ("CREATE", again))
            assert code(e) == "InvalidChangeBatch"
            assert len([r for r in record_sets(c, zid, MX) if r["SetIdentifier"] == "hlb-1"]) == 1
        else:  # moto keeps two copies of hlb-1
            change(c, zid, ("CREATE", again))
            c.list_resource_record_sets(HostedZoneId=zid)
            copies = [r for r in c.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"]
                      if r.get("SetIdentifier") == "hlb-1" and r["Name"].startswith("mx")]
            assert len(copies) == 2


@pytest.mark.parametrize("strict", [True, False])
def test_weight_above_255_is_refused(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    heavy = weighted_set(MX, "A", "hlb-3", "192.0.2.12", 300)
    with layer(strict):
        if strict:
            with pytest.raises(ClientError, match="less than or equal to 255") as e:
                change(c, zid, ("CREATE", heavy))
            assert code(e) == "InvalidInput"
        else:
            change(c, zid, ("CREATE", heavy))
            assert weights(c, zid, MX)["hlb-3"] == 300


@pytest.mark.parametrize("strict", [True, False])
def test_delete_touches_only_its_own_name(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    mx1 = weighted_set(MX, "A", "hlb-1", "192.0.2.10", 50)
    with layer(strict):
        change(c, zid, ("DELETE", mx1), ("CREATE", {**mx1, "Weight": 0}))
    if strict:
        assert weights(c, zid, "api.example.com") == {"hlb-1": 10}
        assert weights(c, zid, MX) == {"hlb-1": 0, "hlb-2": 50}
    else:  # moto deletes every set called hlb-1 in the zone: another pool loses its node
        assert weights(c, zid, "api.example.com") == {}


@pytest.mark.parametrize("strict", [True, False])
def test_batch_is_all_or_nothing(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    good = weighted_set("new.example.com", "A", "a", "192.0.2.40", 1)
    outside = weighted_set("mx.example.org", "A", "a", "192.0.2.41", 1)
    with layer(strict), pytest.raises(ClientError):
        change(c, zid, ("CREATE", good), ("CREATE", outside))
    # moto applied the first change before failing on the second
    assert weights(c, zid, "new.example.com") == ({} if strict else {"a": 1})


def test_batch_with_one_stale_delete_changes_nothing(r53) -> None:  # noqa: ANN001
    c, zid = r53
    mx1 = weighted_set(MX, "A", "hlb-1", "192.0.2.10", 50)
    mx2 = weighted_set(MX, "A", "hlb-2", "192.0.2.11", 49)  # stale
    with pytest.raises(ClientError) as e:
        change(c, zid, ("DELETE", mx1), ("CREATE", {**mx1, "Weight": 0}),
               ("DELETE", mx2), ("CREATE", {**mx2, "Weight": 0}))
    assert code(e) == "InvalidChangeBatch"
    assert weights(c, zid, MX) == {"hlb-1": 50, "hlb-2": 50}


def test_weighted_and_plain_sets_cannot_share_a_name(r53) -> None:  # noqa: ANN001
    c, zid = r53
    plain = {"Name": MX, "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "192.0.2.99"}]}
    with pytest.raises(ClientError, match="non-weighted|weighted set exists"):
        change(c, zid, ("CREATE", plain))


@pytest.mark.parametrize("strict", [True, False])
def test_txt_strings_of_more_than_255_characters_are_refused(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    fits = {"Name": "_r53lb.example.com", "Type": "TXT", "TTL": 60,
            "ResourceRecords": [{"Value": '"' + "x" * 255 + '" "two strings"'}, {"Value": "single-word"}]}
    long = {**fits, "Name": "long.example.com", "ResourceRecords": [{"Value": '"' + "x" * 256 + '"'}]}
    unterminated = {**fits, "Name": "quote.example.com", "ResourceRecords": [{"Value": '"no end'}]}
    with layer(strict):
        change(c, zid, ("CREATE", fits))
        if strict:
            with pytest.raises(ClientError, match="CharacterStringTooLong"):
                change(c, zid, ("CREATE", long))
            with pytest.raises(ClientError, match="InvalidCharacterString"):
                change(c, zid, ("CREATE", unterminated))
        else:  # moto takes both
            change(c, zid, ("CREATE", long), ("CREATE", unterminated))


def _many(n: int, per_set: int = 1, length: int = 0) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        if length:
            values = ['"' + f"{i:05d}".ljust(length - 2, "x") + '"' for _ in range(per_set)]
            out.append(("CREATE", weighted_set("txt.example.com", "TXT", f"s{i}", values, 1)))
        else:
            values = [f"10.{i // 250}.{i % 250}.{j}" for j in range(per_set)]
            out.append(("CREATE", weighted_set("big.example.com", "A", f"s{i}", values, 1)))
    return out


def test_batch_limit_of_1000_resource_records(r53) -> None:  # noqa: ANN001
    c, zid = r53
    change(c, zid, *_many(500, per_set=2))  # exactly 1,000: accepted
    with pytest.raises(ClientError) as e:
        change(c, zid, *[(a, {**rs, "Name": "big2.example.com"}) for a, rs in _many(MAX_RECORDS + 1)])
    assert code(e) == "InvalidChangeBatch"


@pytest.mark.parametrize("strict", [True, False])
def test_batch_limit_of_32000_characters(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    assert 128 * 250 == MAX_CHARS
    with layer(strict):
        change(c, zid, *_many(128, length=250))  # exactly 32,000: accepted
        too_many = [(a, {**rs, "Name": "txt2.example.com"}) for a, rs in _many(129, length=250)]
        if strict:
            with pytest.raises(ClientError, match="characters") as e:
                change(c, zid, *too_many)
            assert code(e) == "InvalidChangeBatch"
        else:  # moto counts records only
            change(c, zid, *too_many)


@pytest.mark.parametrize("strict", [True, False])
def test_paging_inside_a_group_gives_next_record_identifier(r53, strict: bool) -> None:  # noqa: ANN001
    c, zid = r53
    change(c, zid, *[("CREATE", weighted_set("pool.example.com", "A", f"n{i:02d}", f"192.0.2.{i}", 1)) for i in range(10)])
    with layer(strict):
        page = c.list_resource_record_sets(
            HostedZoneId=zid, StartRecordName="pool.example.com", StartRecordType="A", MaxItems="4"
        )
        assert [r["SetIdentifier"] for r in page["ResourceRecordSets"]] == ["n00", "n01", "n02", "n03"]
        if strict:
            assert page["NextRecordIdentifier"] == "n04"
            nxt = c.list_resource_record_sets(
                HostedZoneId=zid, StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"],
                StartRecordIdentifier=page["NextRecordIdentifier"], MaxItems="4",
            )
            assert [r["SetIdentifier"] for r in nxt["ResourceRecordSets"]] == ["n04", "n05", "n06", "n07"]
        else:  # no identifier: the next page starts the group over
            assert "NextRecordIdentifier" not in page


def test_page_size_is_capped_at_300(r53) -> None:  # noqa: ANN001
    c, zid = r53
    build(c, {"example.com": {"big.example.com": {"sets": {f"s{i}": (f"10.0.{i // 250}.{i % 250}", 1) for i in range(320)}}}})
    page = c.list_resource_record_sets(HostedZoneId=zid, MaxItems="1000")
    assert len(page["ResourceRecordSets"]) == 300 and page["IsTruncated"]
    assert sum(1 for _ in record_sets(c, zid, "big.example.com", "A")) == 320


# --- counting and faults ---------------------------------------------------------------------------


def test_counts_requests_per_operation(r53, mock_route53) -> None:  # noqa: ANN001
    c, zid = r53
    mock_route53.reset()
    weights(c, zid, MX)
    set_weight(c, zid, MX, "A", "hlb-1", 3)
    assert mock_route53.counts["ListResourceRecordSets"] == 2
    assert mock_route53.counts["ChangeResourceRecordSets"] == mock_route53.writes == 1


def test_throttle_fails_the_next_n_calls_with_http_400(r53, mock_route53) -> None:  # noqa: ANN001
    c, zid = r53
    mock_route53.throttle("ChangeResourceRecordSets", 2)
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            set_weight(c, zid, MX, "A", "hlb-1", 3)
        assert code(e) == "Throttling"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert weights(c, zid, MX)["hlb-1"] == 50
    set_weight(c, zid, MX, "A", "hlb-1", 3)
    assert weights(c, zid, MX)["hlb-1"] == 3


def test_fail_injects_server_errors(r53, mock_route53) -> None:  # noqa: ANN001
    c, zid = r53
    mock_route53.fail("ListResourceRecordSets", 1)
    with pytest.raises(ClientError) as e:
        weights(c, zid, MX)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert weights(c, zid, MX) == {"hlb-1": 50, "hlb-2": 50}


def test_before_change_runs_once_just_before_the_next_write(r53, mock_route53) -> None:  # noqa: ANN001
    c, zid = r53
    mock_route53.before_change(lambda: set_weight(c, zid, MX, "A", "hlb-1", 7))
    mx1 = weighted_set(MX, "A", "hlb-1", "192.0.2.10", 50)
    with pytest.raises(ClientError, match="do not match"):
        change(c, zid, ("DELETE", mx1), ("CREATE", {**mx1, "Weight": 0}))
    assert mock_route53.hook_errors == []
    assert weights(c, zid, MX)["hlb-1"] == 7
    set_weight(c, zid, MX, "A", "hlb-2", 1)  # the hook ran once only
    assert weights(c, zid, MX) == {"hlb-1": 7, "hlb-2": 1}


def test_pending_change_status(r53, mock_route53) -> None:  # noqa: ANN001
    c, zid = r53
    mock_route53.pending(2)
    cid = set_weight(c, zid, MX, "A", "hlb-1", 3)
    statuses = [c.get_change(Id=cid)["ChangeInfo"]["Status"] for _ in range(3)]
    assert statuses == ["PENDING", "PENDING", "INSYNC"]


# --- the server ----------------------------------------------------------------------------------


def test_server_is_strict_counts_and_injects_faults(moto_server) -> None:  # noqa: ANN001
    assert moto_server.endpoint_url.startswith("http://127.0.0.1:")
    c = client(moto_server.endpoint_url)
    zid = build(c, SPEC)["example.com"]
    with pytest.raises(ClientError, match="already exists"):
        change(c, zid, ("CREATE", weighted_set(MX, "A", "hlb-1", "192.0.2.10", 1)))
    moto_server.throttle("ChangeResourceRecordSets")
    with pytest.raises(ClientError) as e:
        set_weight(c, zid, MX, "A", "hlb-1", 3)
    assert code(e) == "Throttling"
    moto_server.before_change(lambda: set_weight(c, zid, MX, "A", "hlb-2", 9))
    set_weight(c, zid, MX, "A", "hlb-1", 3)
    assert weights(c, zid, MX) == {"hlb-1": 3, "hlb-2": 9}
    assert moto_server.counts["ChangeResourceRecordSets"] == 5  # build, refused, throttled, hook, write


def test_server_reset_empties_moto(moto_server) -> None:  # noqa: ANN001
    c = client(moto_server.endpoint_url)
    build(c, SPEC)
    moto_server.reset()
    assert c.list_hosted_zones()["HostedZones"] == []
    assert sum(moto_server.counts.values()) == 1
