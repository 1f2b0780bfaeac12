"""Signals as values (core/signals.py) and the gated warm-up clock (core/weights.py): pure, no I/O."""

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from r53lb.config import Warmup
from r53lb.core.signals import (NO_SIGNALS, AgentState, MetricVerdict, NodeSignals, agent_signal, fold_agent,
                                fold_metric, metric_signal)
from r53lb.core.weights import WarmupClock, step_warmup_clock, warmup_next_step, warmup_share
from r53lb.probes.agent import parse_line

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
DAY = timedelta(days=1)


# --- unknown never changes a weight: it keeps the previous state ------------------------------

def test_unknown_agent_keeps_the_previous_state() -> None:
    down = fold_agent(None, "fail", parse_line("down#disk full"))
    assert (down.status, down.reason) == ("fail", "agent: down (disk full)")
    assert fold_agent(down, "unknown", None) == down
    assert fold_agent(None, "unknown", None) == AgentState()  # never heard from: ready, up, 100%


def test_agent_words_left_out_keep_their_value() -> None:
    s = fold_agent(None, "ok", parse_line("drain"))
    s = fold_agent(s, "ok", parse_line("50%"))
    assert (s.admin, s.share, s.weight_share) == ("drain", 0.5, 0.0)  # 50% alone does not end a drain
    s = fold_agent(s, "ok", parse_line("ready"))
    assert s.weight_share == 0.5


def test_unknown_metric_keeps_the_previous_verdict() -> None:
    out = fold_metric(None, "fail", 0.083, None, "deferral 0.083 > 0.05")
    kept = fold_metric(out, "unknown", None, None, "prometheus http://p: connection refused")
    assert (kept.status, kept.value, kept.detail) == ("fail", 0.083, "deferral 0.083 > 0.05")
    assert kept.last_unknown.endswith("connection refused")
    never = fold_metric(None, "unknown", None, None, "no data")
    assert metric_signal("q", never).share == 1.0 and metric_signal("q", never).out is None


@given(st.sampled_from(["ok", "fail"]), st.floats(0, 1e6, allow_nan=False), st.one_of(st.none(), st.floats(0, 1)),
       st.text(max_size=20))
def test_property_unknown_changes_nothing(status: str, value: float, share: float | None, why: str) -> None:
    before = fold_metric(None, status, value, share, "rule")
    after = fold_metric(before, "unknown", None, None, why)
    assert metric_signal("q", after) == metric_signal("q", before)
    assert MetricVerdict.from_json(after.to_json()) == after


# --- what the planner reads ---------------------------------------------------------------------

def test_node_signals_lowest_share_wins_and_out_beats_everything() -> None:
    agent = agent_signal("agent", fold_agent(None, "ok", parse_line("50%")))
    queue = metric_signal("queue", MetricVerdict("ok", 10500, 0.55, "queue 10500 -> 55%"))
    sig = NodeSignals((agent, queue))
    assert (sig.share, sig.lowest().reason, sig.out, sig.drain) == (0.5, "agent: 50%", None, None)
    rule = metric_signal("deferral", MetricVerdict("fail", 0.083, None, "deferral 0.083 > 0.05"))
    sig = NodeSignals((agent, rule))
    assert sig.out == "quarantined by metric: deferral 0.083 > 0.05"
    assert sig.closed_gates(["deferral", "agent"]) == ["deferral: deferral 0.083 > 0.05"]
    assert sig.closed_gates(["reputation"], ["zen.spamhaus.org"]) == ["listed on zen.spamhaus.org"]
    assert NO_SIGNALS.share == 1.0 and NO_SIGNALS.out is None


def test_agent_drain_and_zero_percent_drain() -> None:
    for line in ("drain", "0%"):
        s = agent_signal("a", fold_agent(None, "ok", parse_line(line)))
        assert s.drain and s.out is None and s.share == 0.0, line
    assert NodeSignals((agent_signal("a", fold_agent(None, "ok", parse_line("drain"))),)).drain == "agent: drain"
    maint = agent_signal("a", fold_agent(None, "fail", parse_line("maint # kernel upgrade")))
    assert maint.out == "agent: maint (kernel upgrade)" and not maint.drain


# --- gated warm-up ------------------------------------------------------------------------------

WARMUP = Warmup(start=T0, schedule={"0d": "10%", "10d": "100%"}, hold_when=("reputation",))


def test_gate_stops_the_day_counter_and_keeps_the_current_share() -> None:
    assert warmup_share(WARMUP, T0 + 2 * DAY) == 0.28
    clock = step_warmup_clock(None, ["listed on zen.spamhaus.org"], WARMUP, T0 + 2 * DAY)
    assert clock.paused_since == T0 + 2 * DAY and clock.reason == "listed on zen.spamhaus.org"
    # Three days later, still listed: the share in force is still day 2's.
    clock = step_warmup_clock(clock, ["listed on zen.spamhaus.org"], WARMUP, T0 + 5 * DAY)
    assert clock.paused_since == T0 + 2 * DAY
    assert warmup_share(WARMUP, T0 + 5 * DAY, clock.paused(T0 + 5 * DAY)) == 0.28
    # Delisted at day 5: the schedule runs again from day 2's point.
    clock = step_warmup_clock(clock, [], WARMUP, T0 + 5 * DAY)
    assert (clock.paused_since, clock.paused_seconds, clock.reason) == (None, 3 * 86400, "")
    assert warmup_share(WARMUP, T0 + 6 * DAY, clock.paused(T0 + 6 * DAY)) == warmup_share(WARMUP, T0 + 3 * DAY)
    at, share = warmup_next_step(WARMUP, T0 + 6 * DAY, clock.paused(T0 + 6 * DAY))
    assert (at, share) == (T0 + 13 * DAY, 1.0)  # the last step moves later by the 3 days stood still
    assert WarmupClock.from_json(clock.to_json()) == clock


def test_gate_closed_before_the_start_pauses_from_the_start() -> None:
    clock = step_warmup_clock(None, ["deferral: 0.1 > 0.05"], WARMUP, T0 - DAY)
    assert clock.paused(T0 - DAY) == 0 and clock.paused(T0 + DAY) == 86400
    assert warmup_share(WARMUP, T0 - DAY, clock.paused(T0 - DAY)) == 0.0  # not started is not started


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5 * 86400)), max_size=12))
def test_property_a_paused_schedule_never_goes_back(steps: list[tuple[bool, int]]) -> None:
    now, clock, last = T0, None, warmup_share(WARMUP, T0)
    for closed, dt in steps:
        clock = step_warmup_clock(clock, ["x"] if closed else [], WARMUP, now)
        now += timedelta(seconds=dt)
        share = warmup_share(WARMUP, now, clock.paused(now))
        assert share >= last  # the share holds (no drop to a previous step) or grows
        if closed:
            assert share == last  # while closed it does not advance
        last = share


def test_readme_signals_example_is_a_valid_config() -> None:
    from pathlib import Path

    from r53lb.config import loads

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme[readme.index("## Steering by what the mail says"):].split("```yaml")[1].split("```")[0]
    cfg = loads("pools:\n  - name: outbound\n    zone: example.com\n    record: relay.example.com\n" + block)
    warmup = cfg.pools[0].nodes[0].warmup
    assert warmup is not None and warmup.hold_when == ("reputation", "deferral")


def test_hold_when_names_must_exist() -> None:
    import pytest

    from r53lb.config import ConfigError, loads

    def config(gates: str, checks: str = "") -> str:
        return f"""
pools:
  - name: mx
    zone: example.com
    record: mx.example.com
    checks:
      - smtp: {{port: 25}}
      - prometheus: {{url: "http://127.0.0.1:9090", query: "x", name: deferral, quarantine_above: 0.05}}
      - prometheus: {{url: "http://127.0.0.1:9090", query: "y"}}
      - agent: {{port: 5555, name: queue-agent}}{checks}
    nodes:
      - {{id: a, address: 192.0.2.1}}
      - {{id: b, address: 192.0.2.2, warmup: {{start: 2026-11-20, preset: 14d, hold_when: {gates}}}}}
"""

    assert loads(config("[deferral, queue-agent]")).pools[0].nodes[1].warmup.hold_when == ("deferral", "queue-agent")
    assert loads(config("[reputation]", "\n      - dnsbl: {zones: [bl.example]}")).pools[0].nodes[1].warmup
    with pytest.raises(ConfigError) as e:
        loads(config("[deferal]"))
    assert str(e.value) == ("pools[0].nodes[1].warmup.hold_when[0]: 'deferal' names no agent or prometheus check "
                            "of the node (give the check a `name`) (known: deferral, queue-agent)")
    with pytest.raises(ConfigError) as e:
        loads(config("[reputation]"))
    assert str(e.value).startswith("pools[0].nodes[1].warmup.hold_when[0]: 'reputation' needs a dnsbl check")


def test_status_table_says_why_a_warmup_is_paused_and_what_the_signals_say(capsys: pytest.CaptureFixture[str]) -> None:
    from r53lb import render

    row = {"pool": "mx", "node": "b", "type": "A", "health": "up", "weight": 0, "desired_weight": 0,
           "reason": "quarantined by metric: deferral 0.09 > 0.05", "drained": None, "quarantined": False,
           "listed_on": [], "listed_detail": None, "warmup_share": 0.28, "warmup_next": None,
           "warmup_paused": "deferral: deferral 0.09 > 0.05", "warmup_paused_seconds": 12,
           "signals": [{"check": "deferral", "kind": "prometheus", "share": 1.0, "drain": False,
                        "out": "quarantined by metric: deferral 0.09 > 0.05", "reason": "deferral 0.09 > 0.05",
                        "value": 0.09},
                       {"check": "agent:2", "kind": "agent", "share": 0.5, "drain": False, "out": None,
                        "reason": "agent: 50%", "value": None}],
           "panic": False, "active": None, "last_result": "smtp ok", "since": "2026-11-25T00:00:00+00:00"}
    old = render.console
    render.console = type(old)(width=400, highlight=False, soft_wrap=True, color_system=None)
    try:
        with render.console.capture() as captured:
            render.status_table([row])
    finally:
        render.console = old
    text = captured.get() + capsys.readouterr().out  # off a terminal the table is plain columns on stdout
    assert "warm-up 28%, paused: deferral: deferral 0.09 > 0.05" in text
    assert "quarantined by metric: deferral 0.09 > 0.05" in text and "agent: 50%" in text
