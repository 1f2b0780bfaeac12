"""Rise/fall, first sight, slow start and warm-up: pure functions, time passed in."""

from datetime import datetime, timedelta, timezone

from r53lb.config import Warmup
from r53lb.core.health import first_sight, observe
from r53lb.core.weights import effective_weight, slow_start_share, warmup_next_step, warmup_share

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def test_fall_needs_consecutive_failures_and_rise_consecutive_successes():
    h = first_sight(True, T0)
    assert h.up and not h.pending
    h, t = observe(h, False, "no greeting", T0, rise=2, fall=3)
    assert t is None and h.pending
    h, t = observe(h, True, "ok", T0, rise=2, fall=3)  # a success resets the failure count
    assert t is None and h.failures == 0 and not h.pending
    for i in range(3):
        h, t = observe(h, False, "no greeting", T0 + timedelta(seconds=i), rise=2, fall=3)
    assert t is not None and not t.up and not h.up and h.since == T0 + timedelta(seconds=2)
    h, t = observe(h, True, "ok", T0, rise=2, fall=3)
    assert t is None and h.pending
    h, t = observe(h, True, "ok", T0 + timedelta(seconds=9), rise=2, fall=3)
    assert t is not None and t.up and h.recovered_at == T0 + timedelta(seconds=9)


def test_first_sight_adopts_route53():
    assert not first_sight(False, T0).up
    assert first_sight(False, T0).recovered_at is None  # no slow start for an adopted node


def test_slow_start_ramps_from_ten_percent():
    assert slow_start_share(None, 300, T0) == 1.0
    assert slow_start_share(T0, 0, T0) == 1.0
    assert slow_start_share(T0, 300, T0) == 0.1
    assert abs(slow_start_share(T0, 300, T0 + timedelta(seconds=150)) - 0.55) < 1e-9
    assert slow_start_share(T0, 300, T0 + timedelta(seconds=300)) == 1.0


def test_warmup_linear_between_points_and_next_step():
    w = Warmup.model_validate({"start": "2026-11-20", "schedule": {"0d": "5%", "3d": "20%", "7d": "50%", "14d": "100%"}})
    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    assert warmup_share(w, start - timedelta(days=1)) == 0.0
    assert warmup_share(w, start) == 0.05
    assert abs(warmup_share(w, start + timedelta(days=1.5)) - 0.125) < 1e-9
    assert warmup_share(w, start + timedelta(days=3)) == 0.2
    assert warmup_share(w, start + timedelta(days=30)) == 1.0
    at, share = warmup_next_step(w, start + timedelta(days=4))
    assert at == start + timedelta(days=7) and share == 0.5
    assert warmup_next_step(w, start + timedelta(days=15)) is None


def test_warmup_preset():
    w = Warmup.model_validate({"start": "2026-11-01", "preset": "30d"})
    assert w.schedule[0] == (0.0, 0.02) and w.schedule[-1][1] == 1.0


def test_effective_weight_never_rounds_a_share_to_zero():
    assert effective_weight(50, 0.001) == 1
    assert effective_weight(50, 0.5) == 25
    assert effective_weight(0, 1.0) == 0
    assert effective_weight(50, 0.0) == 0
    assert effective_weight(255, 1.0) == 255
