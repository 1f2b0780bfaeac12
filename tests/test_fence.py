"""The zone's fence (safety rule 6) and the drain budget derived from it (rule 10).

Several Controllers on one strict moto stand for several writers: each has its own memory,
state file and monotonic clock, as two hosts (or a restarted process, or a new leader) do.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moto_fixtures.spec import build, change, record_sets, weights
from r53lb.aws.route53 import Route53, Route53Error
from r53lb.config import Config, loads
from r53lb.core.fence import MAX_STRING, Fence, FenceError, aged, carry, fence_name, first, fit, young
from r53lb.core.health import NodeHealth
from r53lb.engine.cycle import Controller
from r53lb.state.sqlite import StateStore

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ZONE = "example.com"
FENCE = "_r53lb.example.com"
FAST = {"attempts": 3, "backoff": 0.001, "backoff_max": 0.005, "botocore_attempts": 1}


def config(nodes: str = "ab", interval: str = "60s", max_drain: int = 1, min_in_service: int = 1) -> Config:
    lines = "\n".join(f"      - {{id: {n}, address: 192.0.2.{i + 1}, weight: 50}}" for i, n in enumerate(nodes))
    return loads(textwrap.dedent("""
        pools:
          - name: mx
            zone: example.com
            record: mx.example.com
            interval: {interval}
            max_drain_per_cycle: {max_drain}
            min_in_service: {min_in_service}
            checks: [{{tcp: {{port: 25}}}}]
            nodes:
    """).format(interval=interval, max_drain=max_drain, min_in_service=min_in_service) + lines + "\n")


class Clock:
    """A monotonic clock with its own origin (each process has one) that a test moves."""

    def __init__(self, origin: float) -> None:
        self.t = origin

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def zone(mock_route53: Any) -> Iterator[tuple[Any, str]]:
    client = boto3.client("route53", region_name="us-east-1")
    yield client, build(client, {ZONE: {"mx.example.com": {"type": "A", "sets": {
        n: (f"192.0.2.{i + 1}", 50) for i, n in enumerate("abcdef")}}}})[ZONE]


def writer(cfg: Config, tmp: Path, name: str, clock: Clock | None = None,
           wall: Any = None) -> Controller:
    store = StateStore.open(tmp / f"{name}.db")
    return Controller(cfg, store, Route53(cfg.aws, **FAST), monotonic=clock or Clock(1000.0),
                      clock=wall or (lambda: T0))


def view(cfg: Config, down: str) -> dict[tuple[str, str], NodeHealth]:
    return {("mx", n.id): NodeHealth(n.id not in down, T0) for n in cfg.pools[0].nodes}


def fence_of(client: Any, zid: str) -> Fence | None:
    for rs in record_sets(client, zid, FENCE, "TXT"):
        return Fence.parse(rr["Value"] for rr in rs["ResourceRecords"])
    return None


def mx(client: Any, zid: str, nodes: str) -> dict[str, int]:
    return {k: v for k, v in weights(client, zid, "mx.example.com").items() if k in nodes}


# --- the value itself ----------------------------------------------------------------------------


def test_the_value_reads_back_and_keeps_to_route53s_txt_strings() -> None:
    f = Fence(7, 42, "ctl eu/1 \"x\"", "3f9c2a10", {"smtp-inbound": tuple(range(0, 90_000, 1000)), "api": (5,)})
    values = f.values()
    for v in values:
        assert v.startswith('"') and v.endswith('"') and '"' not in v[1:-1]
        assert len(v) - 2 <= MAX_STRING
    assert len(values) > 2  # the long list went into several strings
    assert Fence.parse(values) == f
    assert Fence.parse(reversed(values)) == f  # Route 53 does not keep the order of a set's values


@settings(max_examples=100, deadline=None)
@given(epoch=st.integers(0, 10**9), seq=st.integers(1, 10**12), replica=st.text(min_size=1, max_size=64),
       ages=st.dictionaries(st.text(min_size=1, max_size=40), st.lists(st.integers(0, 10**7), max_size=60),
                            max_size=5))
def test_any_fence_reads_back(epoch: int, seq: int, replica: str, ages: dict[str, list[int]]) -> None:
    f = Fence(epoch, seq, replica, "0a1b2c3d", {p: tuple(a) for p, a in ages.items() if a})
    values = f.values()
    assert all(len(v) - 2 <= MAX_STRING for v in values)
    # A name whose escaped form would not fit a TXT string is named by its digest (`fit`).
    assert Fence.parse(values) == Fence(epoch, seq, fit(replica), "0a1b2c3d",
                                        {fit(p): tuple(a) for p, a in ages.items() if a})


def test_a_long_pool_name_keeps_its_drain_budget() -> None:
    pool = "пул-" * 40  # a valid pool name whose escaped form is far past 255 characters
    written = first(0, "ctl", "t", carry({}, {pool: 1}, {pool: 60.0}, {pool: 1}))
    values = written.values()
    assert all(len(v) - 2 <= MAX_STRING for v in values)
    read = Fence.parse(values)
    assert young(aged(read, 1.0).get(fit(pool), []), 60) == 1  # the budget is spent, not reset
    assert carry(aged(read, 1.0), {}, {pool: 60.0}, {pool: 1}) == {pool: [1000]}


@pytest.mark.parametrize("values, message", [
    (['"r53lb-fence v=2 epoch=1 seq=1 replica=x id=1"'], "version '2'"),
    (['"v=spf1 -all"'], "unreadable"),
    (['"r53lb-drains pool=mx part=0 ms=1"'], "no r53lb-fence value"),
    (['"r53lb-fence v=1 epoch=x seq=1 replica=x id=1"'], "lacks epoch"),
])
def test_a_value_r53lb_does_not_write_is_refused(values: list[str], message: str) -> None:
    with pytest.raises(FenceError, match=message):
        Fence.parse(values)


def test_ages_are_a_lower_bound_and_the_list_stays_bounded() -> None:
    f = Fence(1, 1, "a", "t", {"mx": (500, 59_000), "gone": (1,)})
    assert aged(f, 2.0) == {"mx": [2.5, 61.0], "gone": [2.001]}
    assert young(aged(f, 2.0)["mx"], 60) == 1
    # Two new drains, the young one kept, the old one out of the window, a pool not in the config dropped.
    assert carry(aged(f, 2.0), {"mx": 2}, {"mx": 60.0}, {"mx": 5}) == {"mx": [0, 0, 2500]}
    # Never more than max_drain per pool: the youngest tell the budget as well as all of them.
    assert carry({"mx": [1.0, 2.0, 3.0]}, {"mx": 1}, {"mx": 60.0}, {"mx": 2}) == {"mx": [0, 1000]}


# --- in Route 53 ---------------------------------------------------------------------------------


def test_missing_fence_is_created_then_moved_by_every_batch(zone: tuple[Any, str], tmp_path: Path,
                                                             mock_route53: Any) -> None:
    client, zid = zone
    cfg = config("ab")
    ctl = writer(cfg, tmp_path, "one")
    out = ctl.reconcile_zone(ZONE, health=view(cfg, "a"))
    assert out.error is None and [c.node for c in out.applied] == ["a"]
    f = fence_of(client, zid)
    assert f is not None and (f.epoch, f.seq, f.replica) == (0, 1, ctl.replica)
    assert f.drains == {"mx": (0,)}
    out = ctl.reconcile_zone(ZONE, health=view(cfg, ""))  # a is back
    assert out.error is None and mx(client, zid, "ab") == {"a": 50, "b": 50}
    g = fence_of(client, zid)
    assert g is not None and g.seq == 2 and g.token != f.token
    writes = mock_route53.writes
    assert ctl.reconcile_zone(ZONE, health=view(cfg, "")).applied == []
    assert mock_route53.writes == writes  # nothing to change: no write, the fence stays


def test_a_racing_create_of_the_fence_is_refused_whole(zone: tuple[Any, str], tmp_path: Path) -> None:
    client, zid = zone
    cfg = config("ab")
    one, two = writer(cfg, tmp_path, "one"), writer(cfg, tmp_path, "two")
    r1, r2 = one.read(cfg.pools), two.read(cfg.pools)  # both see no fence
    assert one.reconcile_zone(ZONE, health=view(cfg, "a"), records=r1).error is None
    out = two.reconcile_zone(ZONE, health=view(cfg, "b"), records=r2)
    assert out.conflicts == 1
    assert mx(client, zid, "ab") != {"a": 0, "b": 0}


@pytest.mark.parametrize("nodes, min_in_service", [("ab", 1), ("abc", 1)])
def test_two_writers_planning_from_one_read_never_empty_the_pool(zone: tuple[Any, str], tmp_path: Path,
                                                                 nodes: str, min_in_service: int) -> None:
    """One drains a, the other b, both from the same zone version: the second batch is refused
    whole (it touches only b, which nobody changed), re-read and re-planned."""
    client, zid = zone
    cfg = config(nodes, max_drain=1, min_in_service=min_in_service)
    one, two = writer(cfg, tmp_path, "one"), writer(cfg, tmp_path, "two")
    one.reconcile_zone(ZONE, health=view(cfg, ""))  # the zone has a fence already (nothing to change)
    r1, r2 = one.read(cfg.pools), two.read(cfg.pools)
    first = one.reconcile_zone(ZONE, health=view(cfg, "a"), records=r1, interval_cycles=True)
    assert [c.node for c in first.applied] == ["a"]
    second = two.reconcile_zone(ZONE, health=view(cfg, "b"), records=r2, interval_cycles=True)
    final = mx(client, zid, nodes)
    assert any(w > 0 for w in final.values()), final  # never all zero
    # Blast radius: the two writers together drained one node in this interval, not two.
    assert sum(1 for w in final.values() if w == 0) <= 1, final
    assert second.conflicts == 1 and second.error is None


def test_a_stale_epoch_writes_nothing(zone: tuple[Any, str], tmp_path: Path, mock_route53: Any) -> None:
    client, zid = zone
    cfg = config("ab")
    new, old = writer(cfg, tmp_path, "new"), writer(cfg, tmp_path, "old")
    assert new.reconcile_zone(ZONE, health=view(cfg, "a"), epoch=5, replica="ctl-new").error is None
    writes = mock_route53.writes
    out = old.reconcile_zone(ZONE, health=view(cfg, "b"), epoch=4, replica="ctl-old")
    assert out.superseded == 5 and out.applied == [] and not out.plan.applied
    assert out.error_class == "Superseded" and "epoch 5 (replica ctl-new), above this writer's 4" in (out.error or "")
    assert mock_route53.writes == writes
    assert mx(client, zid, "ab") == {"a": 0, "b": 50}
    # A writer without a cluster (epoch 0) is told how to take the zone back.
    out = writer(cfg, tmp_path, "cron").reconcile_zone(ZONE, health=view(cfg, ""))
    assert out.superseded == 5 and "delete the TXT record _r53lb.example.com" in (out.error or "")


def test_a_lost_answer_is_recognised_by_the_fence(zone: tuple[Any, str], tmp_path: Path,
                                                   mock_route53: Any) -> None:
    client, zid = zone
    cfg = config("ab")
    ctl = writer(cfg, tmp_path, "one")
    ctl.reconcile_zone(ZONE, health=view(cfg, ""))
    mock_route53.lose_answer("ChangeResourceRecordSets")
    out = ctl.reconcile_zone(ZONE, health=view(cfg, "b"))
    assert out.error is None and out.conflicts == 0 and [c.node for c in out.applied] == ["b"]
    assert mx(client, zid, "ab") == {"a": 50, "b": 0}
    events = [e for e in ctl.store.events(limit=10) if e.kind == "weight"]  # type: ignore[union-attr]
    assert len(events) == 1  # recorded once


def test_an_unreadable_fence_stops_the_writes_with_one_line(zone: tuple[Any, str], tmp_path: Path) -> None:
    client, zid = zone
    change(client, zid, ("CREATE", {"Name": FENCE, "Type": "TXT", "TTL": 60,
                                     "ResourceRecords": [{"Value": '"hello"'}]}))
    cfg = config("ab")
    out = writer(cfg, tmp_path, "one").reconcile_zone(ZONE, health=view(cfg, "a"))
    assert out.error_class == "FenceUnreadable" and "\n" not in (out.error or "")
    assert "_r53lb.example.com" in (out.error or "") and mx(client, zid, "ab") == {"a": 50, "b": 50}


# --- the drain budget comes from the fence ------------------------------------------------------


def test_three_leaders_in_one_interval_drain_at_most_max_drain(zone: tuple[Any, str], tmp_path: Path) -> None:
    """A rolling deploy: three processes with fresh memory, state and monotonic clocks, each
    writing once within the pool's 60 s interval while four nodes are down."""
    client, zid = zone
    cfg = config("abcdef", interval="60s", max_drain=1)
    down = "abcd"
    drained = []
    for i, origin in enumerate((1000.0, 5.0, 77777.0)):
        ctl = writer(cfg, tmp_path, f"leader{i}", Clock(origin))
        out = ctl.reconcile_zone(ZONE, health=view(cfg, down), interval_cycles=True, epoch=i + 1,
                                 replica=f"ctl-{i}")
        assert out.error is None
        drained += [c.node for c in out.applied if c.to_weight == 0]
    assert len(drained) == 1, drained
    assert sum(1 for w in mx(client, zid, "abcdef").values() if w == 0) == 1
    # The last leader, one interval after it first read the fence, may drain the next one.
    ctl.monotonic.t += 60.0  # type: ignore[attr-defined]
    out = ctl.reconcile_zone(ZONE, health=view(cfg, down), interval_cycles=True, epoch=3, replica="ctl-2")
    assert [c.node for c in out.applied if c.to_weight == 0] != []
    assert sum(1 for w in mx(client, zid, "abcdef").values() if w == 0) == 2


def test_a_wall_clock_step_back_of_an_hour_does_not_block_drains(zone: tuple[Any, str], tmp_path: Path) -> None:
    client, zid = zone
    cfg = config("abcdef", interval="10s", max_drain=1)
    mono = Clock(500.0)
    wall = [T0]
    ctl = writer(cfg, tmp_path, "one", mono, wall=lambda: wall[0])
    out = ctl.reconcile_zone(ZONE, health=view(cfg, "ab"), interval_cycles=True)
    assert len([c for c in out.applied if c.to_weight == 0]) == 1
    wall[0] = T0 - timedelta(hours=1)  # NTP steps the clock back
    mono.t += 11.0  # one interval later, on the clock that does not step
    out = ctl.reconcile_zone(ZONE, health=view(cfg, "ab"), interval_cycles=True)
    assert len([c for c in out.applied if c.to_weight == 0]) == 1
    assert mx(client, zid, "abcdef") == {"a": 0, "b": 0, "c": 50, "d": 50, "e": 50, "f": 50}


def test_within_the_interval_the_budget_holds_across_reconciles(zone: tuple[Any, str], tmp_path: Path) -> None:
    client, zid = zone
    cfg = config("abcdef", interval="10s", max_drain=1)
    mono = Clock(0.0)
    ctl = writer(cfg, tmp_path, "one", mono)
    ctl.reconcile_zone(ZONE, health=view(cfg, "ab"), interval_cycles=True)
    mono.t += 9.0
    out = ctl.reconcile_zone(ZONE, health=view(cfg, "ab"), interval_cycles=True)
    assert [c for c in out.applied if c.to_weight == 0] == [] and out.plan.pools[0].deferred == 1


# --- time left: Route 53 retries never outlive the caller's lease ------------------------------


def test_no_request_once_the_time_is_up(zone: tuple[Any, str], tmp_path: Path, mock_route53: Any) -> None:
    client, zid = zone
    cfg = config("ab")
    ctl = writer(cfg, tmp_path, "one")
    ctl.reconcile_zone(ZONE, health=view(cfg, ""))
    mock_route53.throttle("ChangeResourceRecordSets", 1)
    writes = mock_route53.writes
    # The lease runs out while the first (throttled) attempt is on its way.
    out = ctl.reconcile_zone(ZONE, health=view(cfg, "a"),
                             time_left=lambda: 10.0 if mock_route53.writes == writes else 0.0)
    assert out.error_class == "Deadline" and "no time left" in (out.error or ""), out.error
    # The throttled attempt and nothing after it: the retry would have outlived the lease.
    assert mock_route53.writes - writes == 1
    assert mx(client, zid, "ab") == {"a": 50, "b": 50}


def test_retries_stop_at_the_time_left_not_at_the_retry_deadline(zone: tuple[Any, str],
                                                                  mock_route53: Any) -> None:
    import time

    _, zid = zone
    r53 = Route53(config().aws, attempts=50, backoff=0.05, backoff_max=0.05, botocore_attempts=1,
                  retry_deadline=60)
    mock_route53.throttle("ListResourceRecordSets", 1000)
    end = time.monotonic() + 0.3
    started = time.monotonic()
    with pytest.raises(Route53Error):
        r53.read(zid, [("mx.example.com", "A")], time_left=lambda: end - time.monotonic())
    assert time.monotonic() - started < 2.0
    with pytest.raises(Route53Error) as e:
        r53.read(zid, [("mx.example.com", "A")], time_left=lambda: 0.0)
    assert e.value.code == "Deadline"


# --- status shows it -----------------------------------------------------------------------------


def test_status_shows_the_fence_in_text_and_json(zone: tuple[Any, str], tmp_path: Path) -> None:
    import json

    import yaml
    from click.testing import CliRunner

    from r53lb.cli import main

    path = tmp_path / "r53lb.yaml"
    doc = {"aws": {"region": "us-east-1"}, "state": {"path": str(tmp_path / "state.db")},
           "pools": [{"name": "mx", "zone": ZONE, "record": "mx.example.com", "max_drain_per_cycle": 1,
                      "checks": [{"tcp": {"port": 25}}],
                      "nodes": [{"id": n, "address": f"192.0.2.{i + 1}", "weight": 50} for i, n in enumerate("ab")]}]}
    path.write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    out = json.loads(runner.invoke(main, ["-c", str(path), "status", "--json"]).output)
    assert out["fences"] == [{"zone": ZONE, "name": FENCE, "epoch": None, "seq": None, "replica": None,
                              "error": None, "drains": {}}]
    text = runner.invoke(main, ["-c", str(path), "status"]).output
    assert "fence _r53lb.example.com: none yet" in text
    cfg = loads(path.read_text())
    ctl = Controller(cfg, StateStore.open(tmp_path / "state.db"), Route53(cfg.aws, **FAST))
    ctl.reconcile_zone(ZONE, health=view(cfg, "a"), epoch=3, replica="ctl-eu-1")
    ctl.store.close()  # type: ignore[union-attr]
    out = json.loads(runner.invoke(main, ["-c", str(path), "status", "--json"]).output)
    (f,) = out["fences"]
    assert (f["epoch"], f["seq"], f["replica"], list(f["drains"])) == (3, 1, "ctl-eu-1", ["mx"])
    text = runner.invoke(main, ["-c", str(path), "status"]).output
    assert "fence _r53lb.example.com: epoch 3, seq 1, replica ctl-eu-1; recent drains mx: 1" in text


@settings(max_examples=300, deadline=None)
@given(
    max_drain=st.integers(1, 3),
    steps=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 40), st.integers(0, 4), st.floats(0, 3)),
                   min_size=1, max_size=40),
    origins=st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4),
)
def test_no_interval_ever_holds_more_drains_than_the_budget(max_drain: int, steps: list[tuple[int, float, int, float]],
                                                           origins: list[float]) -> None:
    """Any sequence of writers (each its own monotonic origin and memory), time steps, wanted
    drains and read latencies: in every window of one interval, at most max_drain drains landed."""
    window = 30.0
    t = 0.0  # real time
    fence: Fence | None = None
    first_seen: dict[int, dict[str, float]] = {w: {} for w in range(4)}  # writer -> token -> its clock
    landed: list[float] = []
    for n, (w, advance, want, latency) in enumerate(steps):
        t += advance
        clock = t + origins[w]  # this writer's monotonic clock
        seen_at = first_seen[w].setdefault(fence.token, clock) if fence else clock
        ages = aged(fence, clock - seen_at).get("mx", [])
        budget = max(0, max_drain - young(ages, window))
        drains = min(budget, want)
        if drains:
            kept = carry({"mx": ages}, {"mx": drains}, {"mx": window}, {"mx": max_drain})
            token = f"t{n}"
            t += latency  # the batch lands a little later; the writer notes its own version then
            fence = Fence(0, n + 1, str(w), token, {p: tuple(a) for p, a in kept.items()})
            first_seen[w][token] = t + origins[w]
            landed += [t] * drains
    for start in landed:
        assert sum(1 for x in landed if start <= x < start + window) <= max_drain, landed
