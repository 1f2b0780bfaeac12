"""The SQLite state store: real files, corruption, two runs at once."""

import multiprocessing
from datetime import datetime, timezone

import pytest

from r53lb.core.health import NodeHealth
from r53lb.state.sqlite import StateError, StateStore

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def test_roundtrip(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    h = NodeHealth(False, T0, 0, 3, "no greeting", None)
    with store.transaction():
        store.put_health("p", "n", h)
    store.drain("p", "n", "maintenance", T0)
    store.put_check_result("p", "n", "dnsbl:0", T0, {"status": "fail", "listed_on": ["bl.example"]})
    store.close()
    again = StateStore.open(tmp_path / "s.db")
    assert again.health()[("p", "n")] == h
    assert again.drains()[("p", "n")] == ("maintenance", T0)
    assert again.check_results()[("p", "n", "dnsbl:0")][1]["listed_on"] == ["bl.example"]
    assert again.enable("p", "n", T0) and not again.enable("p", "n", T0)
    assert [e.kind for e in again.events()] == ["drain", "enable"]


def test_corrupted_file_is_moved_aside_and_rebuilt_loudly(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    store = StateStore.open(path, now=T0)
    assert store.rebuilt and "unreadable" in store.rebuilt and "rebuilt from Route 53" in store.rebuilt
    assert list(tmp_path.glob("s.db.corrupt-*"))  # nothing lost: the old file is kept
    assert store.events()[0].kind == "state"


def test_snapshot_records_nothing(tmp_path):
    store = StateStore.open(tmp_path / "s.db")
    snap = store.snapshot()
    snap.drain("p", "n", "x", T0)
    assert store.drains() == {} and snap.drains()


def _hold(path, ready, release):
    store = StateStore.open(path)
    with store.exclusive():
        ready.set()
        release.wait(30)


def test_second_run_waits_then_fails_clearly(tmp_path):
    path = tmp_path / "s.db"
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(path, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        store = StateStore.open(path)
        with pytest.raises(StateError, match="another r53lb run holds"):
            with store.exclusive(wait=0.2):
                pass
        release.set()
        proc.join(30)
        with store.exclusive(wait=5):
            pass
    finally:
        release.set()
        proc.join(30)
