"""One replica's part in a cluster: heartbeat + opinion, the lease, the quorum view.

The daemon calls `beat()` (blocking: boto3) once per heartbeat, or sooner when its opinion
changed. Per beat a replica makes one write (its heartbeat; the holder renews the lease in
the same TransactWriteItems) and one consistent read of the `live` partition (the lease
and every heartbeat). Takeovers (rare) cost one more conditional write.

The engine asks `guard()` right before each Route 53 write and plans with `view`, the
quorum view: the writer never plans with its own probes alone; and with `out_view`, the
quorum's say on the signal checks that take a node out (agent down/maint, metric out).

A heartbeat carries the config's digest: only replicas whose digest is the writer's vote;
`mismatch` names the fresh replicas whose digest differs from the lease holder's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ..core.health import NodeHealth, Transition
from ..core.lease import Held, LeaseRecord, Observed, held_from, may_take, may_write, observe, takeover_at
from ..core.quorum import Beat, Opinion, Votes, fresh, mismatched, quorum_health, quorum_out, track

if TYPE_CHECKING:
    from ..config import ClusterConfig, Config
    from .cycle import Controller
    from ..state.dynamodb import DynamoStore, Heartbeat

__all__ = ["BeatOutcome", "Cluster", "Heartbeat", "Replica", "boottime", "open_cluster", "stale_after"]

log = logging.getLogger("r53lb.cluster")

NodeKey = tuple[str, str]


_BOOT: int | None = getattr(time, "CLOCK_BOOTTIME", None)


def boottime() -> float:
    """Seconds on a clock that keeps counting while the machine is suspended (Linux
    CLOCK_BOOTTIME); elsewhere the monotonic clock. A VM resumed from a suspend or a
    hibernation then sees its lease ran out, as every other replica does."""
    return time.clock_gettime(_BOOT) if _BOOT is not None else time.monotonic()


def stale_after(heartbeat: float) -> float:
    """A replica whose heartbeat has not moved for this long (on our clock) no longer counts."""
    return 3 * heartbeat + 1.0


@dataclass(frozen=True)
class BeatOutcome:
    took: bool = False  # this beat took the lease
    lost: str | None = None  # this beat found the lease lost, and why
    error: str | None = None  # DynamoDB could not be used this beat


class Cluster:
    def __init__(self, cfg: "ClusterConfig", store: "DynamoStore", *,
                 monotonic: Callable[[], float] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.replica = cfg.replica
        self.monotonic = monotonic or boottime  # the lease and freshness clock: counts suspend
        self.held: Held | None = None
        self.observed: Observed | None = None
        self.beats: dict[str, Beat] = {}
        self.heartbeats: dict[str, "Heartbeat"] = {}
        self.opinions: list[Opinion] = []
        self.view: dict[NodeKey, NodeHealth] = {}
        self.votes: dict[NodeKey, Votes] = {}
        self.out_view: dict[NodeKey, str | None] = {}  # the quorum's say on signals: reason out, or None
        self.local_out: dict[NodeKey, str] = {}  # this replica's own signals that take a node out
        self.out_moved: set[NodeKey] = set()  # nodes the quorum took out or let in at the last decide
        self.mismatch: list[str] = []  # fresh replicas whose config digest is not the lease holder's
        self._mismatch_told: dict[str, str] = {}  # replica -> digest already alerted about
        self._drains_known: tuple[str, str] | None = None
        self._drains_news: set[str] = set()
        self.seq = 0
        self.epoch_seen = 0
        self.owner_seen: str | None = None
        self.error: str | None = None
        self.closed = False  # on its way out: this process renews a lease it holds, never takes one

    # --- asked by the engine --------------------------------------------------------------

    def is_leader(self) -> bool:
        held = self.held
        return held is not None and held.deadline > self.monotonic()

    def guard(self) -> str | None:
        """A reason not to write Route 53 now, or None (the lease is ours with time for the write)."""
        return may_write(self.held, self.monotonic(), self.cfg.lease)

    def time_left(self) -> float:
        """Seconds the lease has left on our clock (0 when not held): a Route 53 retry must end before."""
        held = self.held
        return max(0.0, held.deadline - self.monotonic()) if held is not None else 0.0

    def comment(self) -> str:
        held = self.held
        return f"r53lb replica={self.replica} epoch={held.epoch if held else 0}"

    @property
    def epoch(self) -> int:
        held = self.held
        return held.epoch if held is not None else self.epoch_seen

    def fresh_count(self) -> int:
        return len(self.opinions)

    def next_beat_in(self) -> float:
        """Seconds until the next beat: a heartbeat, or sooner when the lease we see may be taken."""
        wait = self.cfg.heartbeat
        obs = self.observed
        if self.held is None and obs is not None and obs.record is not None:
            wait = min(wait, max(0.0, takeover_at(obs, self.cfg.lease) - self.monotonic()) + 0.01)
        return wait

    # --- one beat (blocking) ---------------------------------------------------------------

    def beat(self, local: Mapping[NodeKey, NodeHealth], voting: bool, now: datetime,
             out: Mapping[NodeKey, str] | None = None) -> BeatOutcome:
        from ..aws.dynamodb import ConditionFailed, DynamoDBError

        self.seq += 1
        # News first: the reasons of nodes the view still has up travel before the rest (a
        # heartbeat carries a bounded number of reasons; every node's vote travels whatever).
        down = sorted(((k, h.reason) for k, h in local.items() if not h.up),
                      key=lambda kv: (not (self.view.get(kv[0]) or local[kv[0]]).up, kv[0]))
        self.local_out = dict(out or {})
        op = Opinion(self.replica, self.seq, voting, dict(down), self.store.digest, self.local_out)
        lease = self.cfg.lease
        lost: str | None = None
        held = self.held
        rev = uuid.uuid4().hex
        counting = tuple(o.replica for o in self.opinions) or (self.replica,)  # as of the last beat, for `status`
        unsure: str | None = None  # the renewal got no answer: it may have landed
        # Before the first attempt leaves: whichever attempt lands, the others read it later than this.
        first_sent = self.monotonic()
        try:
            if held is not None and held.deadline <= first_sent:
                lost = "the lease ran out before it could be renewed (paused, suspended, or DynamoDB too slow)"
                held = self.held = None
            if held is not None:
                try:
                    # Retrying past the deadline is useless: the lease would be gone anyway.
                    self.store.heartbeat(op, now, renew=(held.epoch, held.rev), rev=rev,
                                         deadline=max(0.1, held.deadline - first_sent), counting=counting)
                    self.held = held_from(held.epoch, rev, first_sent, lease)
                except ConditionFailed:
                    lost = f"another replica holds the lease (epoch {held.epoch} is old)"
                    self.held = None
                    self.store.heartbeat(op, now, deadline=min(lease, 5.0), counting=counting)
                except DynamoDBError as e:
                    unsure = str(e)  # settled by the read below
            else:
                self.store.heartbeat(op, now, deadline=min(lease, 5.0), counting=counting)
            record, beats = self.store.read_live()
        except Exception as e:  # DynamoDBError, or anything else: the beat fails, the lease ticks down
            return self._failed(str(e), lost)
        if unsure is not None and held is not None:
            if record is not None and (record.owner, record.epoch, record.rev) == (self.replica, held.epoch, rev):
                self.held = held_from(held.epoch, rev, first_sent, lease)  # it landed; its answer was lost
            else:
                return self._failed(unsure, lost)  # it did not land: the lease ticks down from the last renewal
        self.error = None
        t = self.monotonic()
        self.observed = observe(self.observed, record, t)
        if record is not None:
            self.epoch_seen, self.owner_seen = record.epoch, record.owner
        if self.held is not None and (record is None or record.owner != self.replica or record.epoch != self.held.epoch):
            lost = f"the lease moved to {record.owner if record else 'nobody'} (epoch {record.epoch if record else 0})"
            self.held = None
        took = False
        if self.held is None and not self.closed and may_take(self.observed, t, lease):
            took = self._take(record, now)
        self.store.epoch = self.held.epoch if self.held is not None else None
        others = [hb.opinion for r, hb in beats.items() if r != self.replica]
        self.heartbeats = beats
        self.beats = track(self.beats, others, t)
        alive = fresh(self.beats, t, stale_after(self.cfg.heartbeat))
        self.opinions = [op] + [o for o in others if o.replica in alive]
        self._check_config(record, beats, alive)
        seen = self.store.drains_seen
        if seen != self._drains_known:
            if self._drains_known is not None or self.seq > 1:
                self._drains_news.add(seen[1] if seen is not None else "")
            self._drains_known = seen
        self._lost_log(lost)
        return BeatOutcome(took=took, lost=lost)

    def _failed(self, error: str, lost: str | None) -> BeatOutcome:
        # No log line per failed beat: the daemon says once that DynamoDB fails, and once that it answers.
        self.error = error
        self._lost_log(lost)
        return BeatOutcome(lost=lost, error=error)

    def _take(self, seen: LeaseRecord | None, now: datetime) -> bool:
        from ..aws.dynamodb import ConditionFailed, DynamoDBError

        rev = uuid.uuid4().hex
        sent: list[float] = []
        first_sent = self.monotonic()
        try:
            epoch = self.store.take_lease(seen, rev, now, sent=sent, deadline=min(self.cfg.lease, 5.0))
        except DynamoDBError as e:
            # Refused at the first attempt: another replica was faster (we read it next beat). Any
            # other end is ambiguous (an attempt may have landed, its answer lost, and a retry then
            # refused by our own write): the item says whether the lease is ours.
            settled = None if isinstance(e, ConditionFailed) and len(sent) <= 1 else self._ours(rev)
            if settled is None:
                if not isinstance(e, ConditionFailed):
                    log.error("cluster: could not take the lease: %s", e)
                return False
            epoch = settled
        self.held = held_from(epoch, rev, first_sent, self.cfg.lease)
        self.epoch_seen, self.owner_seen = epoch, self.replica
        prev = seen.owner if seen is not None else None
        log.info("cluster: %s holds the lease, epoch %d%s", self.replica, epoch,
                 f" (after {prev})" if prev else "")
        return True

    def _ours(self, rev: str) -> int | None:
        """The epoch of the lease item when it holds our write `rev` (an ambiguous take landed), else None."""
        try:
            record, _ = self.store.read_live()
        except Exception:
            return None
        if record is not None and record.owner == self.replica and record.rev == rev:
            return record.epoch
        return None

    def release(self, now: datetime) -> None:
        """On the way out (SIGTERM), after the last write and the last beat: free the lease so another
        replica takes it at its next beat instead of a whole lease later. Blocking; failures only
        cost that wait. After this the replica never takes the lease again."""
        self.closed = True
        held, self.held = self.held, None
        if held is None or held.deadline <= self.monotonic():
            return
        try:
            self.store.release_lease(held.epoch, uuid.uuid4().hex, now)
            log.info("cluster: %s released the lease (epoch %d)", self.replica, held.epoch)
        except Exception as e:  # ConditionFailed (already lost) or DynamoDB away: it expires by itself
            log.warning("cluster: could not release the lease (it expires by itself): %s", e)

    def _check_config(self, record: LeaseRecord | None, beats: Mapping[str, "Heartbeat"], alive: set[str]) -> None:
        """Which fresh replicas run another config than the lease holder's (they do not vote)."""
        mine = self.store.digest
        leader = beats.get(record.owner) if record is not None and record.owner != self.replica else None
        reference = leader.opinion.digest if leader is not None and leader.opinion.digest else mine
        others = [o for o in self.opinions if o.replica in alive or o.replica == self.replica]
        self.mismatch = mismatched(others, reference)
        if self.replica in self.mismatch and self._mismatch_told.get(self.replica) != mine:
            self._mismatch_told[self.replica] = mine
            log.warning("cluster: %s runs another config (digest %s) than the lease holder %s (%s): "
                        "its opinion does not count", self.replica, mine, record.owner if record else "?", reference)
        for r in list(self._mismatch_told):
            if r not in self.mismatch:
                del self._mismatch_told[r]

    def drain_news(self) -> set[str]:
        """The pools whose drains changed (`r53lb drain`/`enable` on any host) since the last call:
        the writer applies them at once instead of at its next resync."""
        news, self._drains_news = self._drains_news, set()
        return news

    def new_mismatches(self) -> list[tuple[str, str]]:
        """For the lease holder's alert, once per replica and digest: (replica, its digest or '')."""
        if not self.is_leader():
            return []
        out = []
        for o in self.opinions:
            if o.replica in self.mismatch and self._mismatch_told.get(o.replica) != o.digest:
                self._mismatch_told[o.replica] = o.digest
                out.append((o.replica, o.digest))
        return out

    def _lost_log(self, lost: str | None) -> None:
        if lost:
            log.warning("cluster: %s steps down, writes nothing more: %s", self.replica, lost)

    # --- the quorum view -------------------------------------------------------------------

    def decide(self, local: Mapping[NodeKey, NodeHealth], now: datetime) -> list[tuple[NodeKey, Transition]]:
        """Fold the fresh opinions into the view; a node first seen here starts from local health."""
        prev = {k: self.view.get(k) or local[k] for k in local}
        self.view, self.votes, transitions = quorum_health(prev, self.opinions, self.cfg.quorum, now)
        was = {k: self.out_view[k] if k in self.out_view else self.local_out.get(k) for k in local}
        self.out_view = quorum_out(was, self.opinions, self.cfg.quorum)
        self.out_moved = {k for k, v in self.out_view.items() if (v is None) != (was.get(k) is None)}
        return transitions

    def adopt_view(self, stored: Mapping[NodeKey, NodeHealth]) -> None:
        """A new writer starts from the view the last writer stored (slow start keeps its start)."""
        for k, h in stored.items():
            if k in self.view:
                self.view[k] = replace(h)

    def planning_health(self, local: Mapping[NodeKey, NodeHealth]) -> dict[NodeKey, NodeHealth]:
        """The health map the writer plans with: the quorum view, local health where it has none."""
        return {k: self.view.get(k, h) for k, h in local.items()}


# --- the heartbeat loop a running replica schedules ---------------------------------------------

# The loop's lines keep the daemon's logger: operators filter on it, and `run` said them there.
beat_log = logging.getLogger("r53lb.daemon")


class Replica(Protocol):
    """What the heartbeat reads of a running replica (engine/daemon.py's Daemon is one)."""

    cfg: "Config"
    zones: Mapping[str, Any]
    notifier: Callable[[str, str, dict[str, Any]], None] | None
    metrics: Any  # engine/metrics.py's Metrics: node_votes_down

    @property
    def ctl(self) -> "Controller": ...

    def clock(self) -> datetime: ...

    def request_reconcile(self, zone: str) -> None: ...


def open_cluster(cfg: "Config", metrics: Any) -> Cluster:
    """The replica's Cluster on the config's table, its gauges wired to the metrics."""
    from ..state.dynamodb import open_store

    assert cfg.cluster is not None
    store = open_store(cfg, on_request=metrics.dynamodb_request)
    cluster = Cluster(cfg.cluster, store)
    metrics.leader.set_function(lambda: 1.0 if cluster.is_leader() else 0.0)
    metrics.lease_epoch.set_function(lambda: float(cluster.epoch))
    metrics.replicas_fresh.set_function(lambda: float(cluster.fresh_count()))
    metrics.replicas_config_mismatch.set_function(lambda: float(len(cluster.mismatch)))
    beat_log.info("cluster: replica %s, table %s, lease %gs, heartbeat %gs, quorum %s", cluster.replica,
                  cfg.cluster.table, cfg.cluster.lease, cfg.cluster.heartbeat, cfg.cluster.quorum)
    return cluster


class Heartbeat:
    """One heartbeat per `heartbeat` (sooner on a change of opinion or when the lease may be taken),
    what each beat learns passed on to the replica, and DynamoDB's trouble told once."""

    def __init__(self, cluster: Cluster, replica: Replica, voting: Callable[[], bool],
                 lease_pool: Executor, table_pool: Executor) -> None:
        self.cluster = cluster
        self.replica = replica
        self.voting = voting  # this replica has an opinion worth counting
        self.lease_pool = lease_pool  # beats, takes, the release
        self.table_pool = table_pool  # the writer's view and events after a quorum decision
        self.wake: asyncio.Event | None = None  # set: beat now
        self.task: asyncio.Task[None] | None = None
        self.beating = True  # the heartbeat outlives the writes in flight, and ends before the release
        self.table_failing: tuple[float, bool] | None = None  # (monotonic since, alert sent)

    def start(self, spawn: Callable[[Any], "asyncio.Task[Any]"]) -> asyncio.Event:
        """Start the loop (on the running event loop); the event wakes it for a beat now."""
        self.wake = asyncio.Event()
        self.task = spawn(self.loop())
        return self.wake

    async def loop(self) -> None:
        cluster, wake = self.cluster, self.wake
        assert cluster is not None and wake is not None
        while self.beating:
            wake.clear()
            try:
                await self.beat(cluster)
            except Exception:  # the loop must outlive any one beat
                beat_log.exception("cluster: beat failed")
            if not self.beating:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), cluster.next_beat_in())

    async def stop(self, grace: float) -> None:
        """End the heartbeat loop and wait for a beat in flight (its thread cannot be cancelled)."""
        self.beating = False
        if self.wake is not None:
            self.wake.set()
        task = self.task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=grace)

    async def beat(self, cluster: Cluster) -> None:
        d = self.replica
        ctl = d.ctl
        local = dict(ctl.health)
        says_out = {k: ns.out for k, ns in ctl.last_signals.items() if ns.out is not None}
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self.lease_pool, cluster.beat, local, self.voting(), d.clock(), says_out)
        self.watch_table(cluster, out.error)
        for pool_name in cluster.drain_news():  # a drain or enable in the table: apply it now
            for zone in {p.zone for p in d.cfg.pools if p.name == pool_name or not pool_name}:
                if zone in d.zones:
                    d.request_reconcile(zone)
        for name, digest in cluster.new_mismatches():
            if digest:
                message = (f"cluster: replica {name} runs another config than the lease holder {cluster.replica} "
                           f"(digest {digest}, not {cluster.store.digest}): its opinion does not count")
            else:
                message = (f"cluster: the lease holder {cluster.replica} cannot read the heartbeat of replica {name} "
                           "(another version?): its opinion does not count")
            beat_log.error("%s", message)
            if d.notifier is not None:
                d.notifier("alert", message, {"replica": name, "digest": digest})
        if out.took:
            stored = await loop.run_in_executor(self.table_pool, cluster.store.health)
            cluster.decide(local, d.clock())
            cluster.adopt_view(stored)
        now = d.clock()
        transitions = cluster.decide(dict(ctl.health), now)
        for key, v in cluster.votes.items():
            d.metrics.node_votes_down.labels(*key).set(v.down)
        if not cluster.is_leader():
            return
        if transitions:
            views = {key: cluster.view[key] for key, _ in transitions}

            def persist() -> None:
                for key, t in transitions:
                    frm, to = ("down", "up") if t.up else ("up", "down")
                    cluster.store.put_view(key[0], key[1], views[key])
                    cluster.store.add_event(now, key[0], key[1], "quorum", frm, to, t.reason)

            # Not awaited: a slow table delays the record of the decision, never the next beat
            # nor the write (one thread keeps the records in order).
            stored = loop.run_in_executor(self.table_pool, persist)
            stored.add_done_callback(self._view_stored)
            for key, t in transitions:
                beat_log.info("%s/%s: quorum: %s: %s", key[0], key[1], "up" if t.up else "down", t.reason)
        moved = {k[0] for k, _ in transitions} | {k[0] for k in cluster.out_moved}  # health or signals by quorum
        zones = {p.zone for p in d.cfg.pools if p.name in moved}
        for zone in (d.zones if out.took else zones):
            d.request_reconcile(zone)

    def _view_stored(self, fut: "asyncio.Future[None]") -> None:
        e = None if fut.cancelled() else fut.exception()
        if e is not None:
            self.store_error("the quorum view not stored", e)

    def watch_table(self, cluster: Cluster, error: str | None) -> None:
        """DynamoDB's trouble told once: one line when it fails, one alert if it lasts a lease (no
        replica can write; DNS keeps its weights), one line when it answers again. Not one per beat."""
        notifier = self.replica.notifier
        now = time.monotonic()
        if error is None:
            if self.table_failing is not None:
                since, told = self.table_failing
                message = f"cluster: DynamoDB answers {cluster.replica} again after {now - since:.0f}s"
                beat_log.info("%s", message)
                if told and notifier is not None:
                    notifier("recovery", message, {"replica": cluster.replica})
            self.table_failing = None
            return
        if self.table_failing is None:
            beat_log.error("cluster: %s cannot use DynamoDB: %s (said once; a line follows when it answers again)",
                           cluster.replica, error)
            self.table_failing = (now, False)
        since, told = self.table_failing
        if not told and now - since >= cluster.cfg.lease:
            message = (f"cluster: {cluster.replica} cannot use DynamoDB for {now - since:.0f}s: it cannot hold the "
                       f"lease, Route 53 writes stop and DNS keeps its weights ({error})")
            beat_log.error("%s", message)
            if notifier is not None:
                notifier("alert", message, {"replica": cluster.replica, "error": error})
            self.table_failing = (since, True)

    def store_error(self, what: str, e: BaseException | str) -> None:
        """A state store error away from the heartbeat: the first one of an outage (whoever meets
        it first, the heartbeat included) is the only line; the heartbeat says when DynamoDB answers again."""
        if self.table_failing is None:
            beat_log.error("cluster: %s cannot use DynamoDB: %s: %s (said once; a line follows when it answers again)",
                           self.cluster.replica, what, e)
            self.table_failing = (time.monotonic(), False)
