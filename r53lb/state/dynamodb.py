"""The cluster's state store: one DynamoDB table shared by every replica.

The same public methods as the SQLite store (state/sqlite.py), so the engine does not know
which one it has, plus the cluster's own items: the lease, each replica's heartbeat with
its opinion (the nodes it sees down), and the quorum view the writer plans with.

| pk            | sk                     | what                                               |
|---------------|------------------------|----------------------------------------------------|
| live          | lease                  | owner, epoch, rev: the one writer                  |
| live          | replica#NAME           | heartbeat + opinion: seq, voting, config digest,   |
|               |                        | down/out bitmaps, capped reason codes (≤ 64 KB)    |
| view          | ["pool","node"]        | the quorum view (up, since, recovered_at), epoch   |
| drain         | ["pool","node"]        | reason, at: `r53lb drain` on any replica           |
| live          | drains                 | rev, pool: the last `drain`/`enable` (the writer   |
|               |                        | sees it at its next heartbeat read)                |
| check         | ["replica","pool",     | a replica's own signal verdicts (dnsbl, agent, …): |
|               |  "node","slot"]        | read by the prefix ["replica", (one Query)         |
| event         | ISO-time#replica#n     | history, with replica and epoch; TTL 90 days       |
| event         | pool#["p"]#time…,      | the same event again, keyed for `history --pool`   |
|               | node#["p","n"]#time…   | and `--node` (a Query by prefix, not a scan)       |
| meta#NAME     | key                    | a replica's small values (its alert watcher)       |

`live` is one partition on purpose: one consistent Query reads the lease and every
heartbeat, the only read a replica makes per heartbeat.

A heartbeat is bounded whatever the outage: the nodes a replica sees down (and the nodes its
signal checks take out) are bitmaps over the config's node order (`node_order`: the same on
every replica whose config digest matches, and only those vote), so every node's vote is
exact at any fleet size; the reasons travel as short codes (`CODE_LEN`) for at most
what the bitmaps leave of `BEAT_BYTES`, the rest as a count ("down, reason not carried").
10,000 nodes cost 1.7 KB per bitmap. An item that cannot be read (another version, garbage) stands for its
replica as a non-voting opinion (logged once): it never fails the whole read.

Check state is per replica (its name leads the sort key): each replica runs its own checks,
so two never overwrite each other; the engine reads its own items once, keeps them in memory.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import threading
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterator

from ..core.health import NodeHealth
from ..core.lease import LeaseRecord
from ..core.quorum import Opinion
from .base import Event, StateError

if TYPE_CHECKING:
    from ..aws.dynamodb import DynamoDB

__all__ = ["DynamoStore", "Heartbeat", "config_digest", "node_order"]

log = logging.getLogger("r53lb.cluster")

EVENT_TTL = timedelta(days=90)
HEARTBEAT_TTL = timedelta(days=1)  # a replica gone for good leaves the table by itself
LIVE = "live"
LEASE = "lease"
DRAINS = "drains"
BEAT_VERSION = 2  # the heartbeat item's format; another is read as an opinion that does not vote
CODE_LEN = 40  # a reason travels cut to this many characters
BEAT_BYTES = 60_000  # a heartbeat item at most (under 64 KB): the bitmaps, then reasons in what is left

NodeKey = tuple[str, str]


def config_digest(cfg: Any) -> str:
    """The config's identity, from the loaded model (not the file's bytes: comments, order and
    spelling of durations do not matter): what decides health and weights. The replica's own
    name, its region, AWS credentials, state and notification settings are left out."""
    data = cfg.model_dump(mode="json", include={"defaults", "vantage", "pools", "cluster"})
    if data.get("cluster"):
        data["cluster"] = {k: v for k, v in data["cluster"].items() if k not in ("replica", "region")}
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def node_order(cfg: Any) -> tuple[NodeKey, ...]:
    """Every node in config order: the positions of a heartbeat's bitmaps."""
    return tuple((p.name, n.id) for p in cfg.pools for n in p.nodes)


def _bits(keys: Any, index: dict[NodeKey, int], n: int) -> str:
    b = bytearray((n + 7) // 8)
    for k in keys:
        i = index.get(k)
        if i is not None:
            b[i >> 3] |= 1 << (i & 7)
    return base64.b64encode(bytes(b)).decode()


def _unbits(raw: str, order: tuple[NodeKey, ...]) -> list[int]:
    b = base64.b64decode(raw.encode(), validate=True)
    if len(b) != (len(order) + 7) // 8:
        raise ValueError(f"a bitmap of {len(b)} bytes for {len(order)} nodes")
    return [i for i in range(len(order)) if b[i >> 3] >> (i & 7) & 1]


def _codes(reasons: Any, index: dict[NodeKey, int], budget: int) -> tuple[str, int]:
    """The reasons in their given order (the writer puts news first), cut to CODE_LEN, within
    `budget` bytes; and how many were left out."""
    out, size, left = [], 2, 0
    for k, r in reasons.items():
        i = index.get(k)
        if i is None:
            continue
        entry = json.dumps([i, str(r)[:CODE_LEN]], separators=(",", ":"))
        if size + len(entry.encode()) + 1 > budget:
            left += 1
            continue
        out.append(entry)
        size += len(entry.encode()) + 1
    return "[" + ",".join(out) + "]", left


def _uncodes(bits: list[int], raw: str, order: tuple[NodeKey, ...], left: int) -> dict[NodeKey, str]:
    codes = {int(i): str(r) for i, r in json.loads(raw or "[]")}
    rest = f"down (reason not carried: {left} more)" if left else "down"
    return {order[i]: codes.get(i, rest) for i in bits}


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(timezone.utc).isoformat()


def _dt(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


def _key(*parts: str) -> str:
    return json.dumps(list(parts), separators=(",", ":"))


class Heartbeat:
    """A replica's heartbeat item as read (for the daemon, `status` and the metrics)."""

    def __init__(self, opinion: Opinion, at: datetime | None, counting: tuple[str, ...] = ()) -> None:
        self.opinion = opinion
        self.at = at  # the writer's wall clock: shown as an age by `status`, never used to decide
        self.counting = counting  # the replicas it counted as fresh at its last beat (itself included)


class DynamoStore:
    """Open with `DynamoStore(db, table, replica)`; `r53lb cluster init` creates the table."""

    rebuilt: str | None = None  # a table is never rebuilt behind the operator's back

    def __init__(self, db: "DynamoDB", table: str, replica: str, *, read_only: bool = False) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self.db = db
        self.table = table
        self.replica = replica
        self.read_only = read_only  # `plan`, `status`: every write is dropped
        self.epoch: int | None = None  # set while this replica holds the lease: stamped on its events
        self._ser, self._de = TypeSerializer(), TypeDeserializer()
        self._n = itertools.count()
        self._meta: dict[str, str] = {}
        self._lock = threading.Lock()
        # The cluster's heartbeat content: the config's identity and its node order (open_store).
        self.digest = ""
        self.order: tuple[NodeKey, ...] = ()
        self._told_unreadable: set[str] = set()
        self.drains_seen: tuple[str, str] | None = None  # (rev, pool) of the last drain/enable, as last read

    # --- plumbing -----------------------------------------------------------------------

    def _item(self, **attrs: Any) -> dict[str, Any]:
        return {k: self._ser.serialize(v) for k, v in attrs.items() if v is not None}

    def _plain(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: self._de.deserialize(v) for k, v in item.items()}

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """A store call: DynamoDB's failure becomes a StateError (the store interface's one error)."""
        from ..aws.dynamodb import DynamoDBError

        try:
            return self.db.call(operation, **kwargs)
        except DynamoDBError as e:
            hint = " (create it: `r53lb cluster init`)" if e.code == "ResourceNotFoundException" else ""
            raise StateError(f"state: DynamoDB table {self.table}: {e}{hint}") from None

    def _put(self, **attrs: Any) -> None:
        if not self.read_only:
            self._call("PutItem", TableName=self.table, Item=self._item(**attrs))

    def _delete(self, pk: str, sk: str) -> bool:
        if self.read_only:
            return False
        out = self._call("DeleteItem", TableName=self.table, Key=self._item(pk=pk, sk=sk), ReturnValues="ALL_OLD")
        return bool(out.get("Attributes"))

    def _query(self, pk: str, *, limit: int | None = None, newest_first: bool = False,
               consistent: bool = False, prefix: str | None = None, below: str | None = None) -> Iterator[dict[str, Any]]:
        """The items of one partition; `prefix`: only sort keys that begin with it, `below`: below it."""
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}}, "ScanIndexForward": not newest_first,
            "ConsistentRead": consistent,
        }
        if prefix is not None:
            kwargs["KeyConditionExpression"] += " AND begins_with(sk, :sk)"
            kwargs["ExpressionAttributeValues"][":sk"] = {"S": prefix}
        elif below is not None:
            kwargs["KeyConditionExpression"] += " AND sk < :sk"
            kwargs["ExpressionAttributeValues"][":sk"] = {"S": below}
        if limit:
            kwargs["Limit"] = limit
        while True:
            page = self._call("Query", **kwargs)
            for item in page.get("Items", []):
                yield self._plain(item)
            if not page.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- the store interface (as state/sqlite.py) -----------------------------------------

    def snapshot(self) -> "DynamoStore":
        """A view that reads the table and writes nothing (`plan`, `status`, `--dry-run`)."""
        copy = DynamoStore(self.db, self.table, self.replica, read_only=True)
        copy._meta = dict(self._meta)
        copy.digest, copy.order = self.digest, self.order
        return copy

    def close(self) -> None:
        pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # Each item is written on its own: every write here stands alone (an event, a drain).
        yield

    @contextmanager
    def exclusive(self, wait: float = 0.0) -> Iterator[None]:
        """Never granted: in a cluster the lease holder alone writes Route 53. So `drain --wait`
        (which writes itself when it gets the store) waits for the leader's write instead."""
        raise StateError(f"state: DynamoDB table {self.table}: with a cluster only the lease holder "
                         "(an `r53lb run` replica) writes Route 53")
        yield  # pragma: no cover

    def get_meta(self, key: str) -> str | None:
        if key in self._meta:
            return self._meta[key]
        for item in self._query(f"meta#{self.replica}"):
            self._meta.setdefault(str(item["sk"]), str(item["value"]))
        return self._meta.get(key)

    def put_meta(self, key: str, value: str | None) -> None:
        if key in self._meta and self._meta.get(key) == value:
            return
        if value is None:
            self._meta.pop(key, None)
            self._delete(f"meta#{self.replica}", key)
            return
        self._meta[key] = value
        self._put(pk=f"meta#{self.replica}", sk=key, value=value)

    def state_lost(self) -> str | None:
        # A table is never rebuilt behind the operator's back (deletion protection, PITR): no
        # "state was lost" marker. A table made anew is an empty cluster; first sight applies.
        return None

    def clear_state_lost(self) -> None:
        pass

    def health(self) -> dict[tuple[str, str], NodeHealth]:
        """The cluster's quorum view, as the writer last stored it (a replica starts from it)."""
        out = {}
        for item in self._query("view"):
            out[(str(item["pool"]), str(item["node"]))] = NodeHealth(
                up=bool(item["up"]), since=_dt(item["since"]) or datetime.now(timezone.utc),
                reason=str(item.get("reason", "")), recovered_at=_dt(item.get("recovered_at")))
        return out

    def put_health(self, pool: str, node: str, h: NodeHealth) -> None:
        # A replica's rise/fall counters stay in its memory (written per probe they would cost a
        # write per probe); its opinion goes out with its heartbeat, the writer stores the view.
        pass

    def put_view(self, pool: str, node: str, h: NodeHealth) -> None:
        """The writer stores a change of the quorum view (so the next writer starts from it)."""
        self._put(pk="view", sk=_key(pool, node), pool=pool, node=node, up=h.up, since=_ts(h.since),
                  reason=h.reason[:1000], recovered_at=_ts(h.recovered_at), epoch=self.epoch)

    def drains(self) -> dict[tuple[str, str], tuple[str, datetime]]:
        return {(str(i["pool"]), str(i["node"])): (str(i["reason"]), _dt(i["at"]))  # type: ignore[misc]
                for i in self._query("drain", consistent=True)}

    def drain(self, pool: str, node: str, reason: str, now: datetime) -> None:
        self._put(pk="drain", sk=_key(pool, node), pool=pool, node=node, reason=reason, at=_ts(now))
        self._drains_moved(pool, now)
        self.add_event(now, pool, node, "drain", None, "drained", reason)

    def enable(self, pool: str, node: str, now: datetime) -> bool:
        removed = self._delete("drain", _key(pool, node))
        if removed:
            self._drains_moved(pool, now)
            self.add_event(now, pool, node, "enable", "drained", "enabled", "enabled by operator")
        return removed

    def _drains_moved(self, pool: str, now: datetime) -> None:
        """Tell the writer: the `live` partition it reads at every heartbeat holds the last change."""
        self._put(pk=LIVE, sk=DRAINS, rev=uuid.uuid4().hex, pool=pool, at=_ts(now))

    def check_results(self) -> dict[tuple[str, str, str], tuple[datetime, dict[str, Any]]]:
        """This replica's own check state (one Query of its items, not the other replicas'). A
        read-only view (`status`, `plan`, from any host) shows the lease holder's: the writer's."""
        who = self.replica
        if self.read_only:
            lease = next(self._query(LIVE, prefix=LEASE), None)
            who = str(lease["owner"]) if lease is not None and lease.get("owner") else who
        prefix = _key(who)[:-1] + ","
        return {(str(i["pool"]), str(i["node"]), str(i["slot"])): (_dt(i["at"]), json.loads(i["result"]))  # type: ignore[misc]
                for i in self._query("check", prefix=prefix) if i.get("replica") == who}

    def put_check_result(self, pool: str, node: str, slot: str, at: datetime, result: dict[str, Any]) -> None:
        self._put(pk="check", sk=_key(self.replica, pool, node, slot), replica=self.replica, pool=pool, node=node,
                  slot=slot, at=_ts(at), result=json.dumps(result, default=str))

    def add_event(self, at: datetime, pool: str, node: str, kind: str,
                  from_state: str | None, to_state: str | None, reason: str) -> None:
        sk = f"{_ts(at)}#{self.replica}#{next(self._n):08d}"
        expires = int((at + EVENT_TTL).timestamp())
        # Three items: the history, the pool's and the node's (events are changes: rare).
        for key in (sk, f"pool#{_key(pool)}#{sk}", f"node#{_key(pool, node)}#{sk}"):
            self._put(pk="event", sk=key, at=_ts(at), pool=pool, node=node, kind=kind, from_state=from_state,
                      to_state=to_state, reason=reason[:2000], replica=self.replica, epoch=self.epoch, expires=expires)

    def events(self, limit: int = 50, pool: str | None = None, node: str | None = None) -> list[Event]:
        """The newest `limit` events, of a pool or a node by key (its own sort-key prefix, not a scan)."""
        out = []
        if pool is not None:
            items = self._query("event", newest_first=True, limit=limit,
                                prefix=f"node#{_key(pool, node)}#" if node is not None else f"pool#{_key(pool)}#")
        else:  # the history itself: sort keys that begin with the time (digits sort below "node#", "pool#")
            items = self._query("event", newest_first=True, limit=None if node else limit, below="A")
        for i in items:
            if node and i["node"] != node:
                continue
            out.append(Event(_dt(i["at"]), str(i["pool"]), str(i["node"]), str(i["kind"]),  # type: ignore[arg-type]
                             i.get("from_state"), i.get("to_state"), str(i["reason"]),
                             replica=i.get("replica"), epoch=None if i.get("epoch") is None else int(i["epoch"])))
            if len(out) >= limit:
                break
        return list(reversed(out))

    # --- the cluster's live items ---------------------------------------------------------

    def read_live(self) -> tuple[LeaseRecord | None, dict[str, Heartbeat]]:
        """The lease and every heartbeat, in one consistent read. A heartbeat that cannot be read
        stands for its replica as an opinion that does not vote (logged once), never fails the read."""
        lease = None
        beats: dict[str, Heartbeat] = {}
        for i in self._query(LIVE, consistent=True):
            if i["sk"] == LEASE:
                lease = LeaseRecord(str(i["owner"]), int(i["epoch"]), str(i["rev"]))
            elif i["sk"] == DRAINS:
                self.drains_seen = (str(i.get("rev")), str(i.get("pool")))
            elif str(i["sk"]).startswith("replica#"):
                name = str(i["sk"]).removeprefix("replica#")
                try:
                    beats[name] = self._read_beat(name, i)
                    self._told_unreadable.discard(name)
                except Exception as e:  # another version's item, or garbage: this replica only
                    if name not in self._told_unreadable:
                        self._told_unreadable.add(name)
                        log.warning("cluster: the heartbeat of %s cannot be read, it does not vote: %s: %s",
                                    name, type(e).__name__, str(e)[:200])
                    # Its freshness follows the item's content: a live replica of another version
                    # counts towards the majority, a dead one goes stale.
                    seq = int(hashlib.sha256(repr(sorted(i.items())).encode()).hexdigest()[:12], 16)
                    beats[name] = Heartbeat(Opinion(name, seq, False, {}), None, ())
        return lease, beats

    def _read_beat(self, name: str, i: dict[str, Any]) -> Heartbeat:
        if int(i.get("v", 1)) != BEAT_VERSION:
            raise ValueError(f"heartbeat format {i.get('v', 1)}, this version reads {BEAT_VERSION}")
        if str(i["replica"]) != name:
            raise ValueError(f"the item names replica {i['replica']!r}")
        digest = str(i["config"])
        counting = tuple(str(r) for r in json.loads(i.get("counting") or "[]"))
        at, seq, voting = _dt(i.get("at")), int(i["seq"]), bool(i["voting"])
        if digest != self.digest or int(i["n"]) != len(self.order):
            # Another config: its positions are not ours. It counts, it does not vote.
            return Heartbeat(Opinion(name, seq, False, {}, digest), at, counting)
        order = self.order
        down = _uncodes(_unbits(str(i["down"]), order), str(i.get("why") or "[]"), order, int(i.get("more", 0)))
        out = _uncodes(_unbits(str(i["out"]), order), str(i.get("whyout") or "[]"), order, 0)
        return Heartbeat(Opinion(name, seq, voting, down, digest, out), at, counting)

    def _beat_item(self, op: Opinion, now: datetime, counting: tuple[str, ...]) -> dict[str, Any]:
        order = self.order
        index = {k: i for i, k in enumerate(order)}
        down, out = _bits(op.down, index, len(order)), _bits(op.out, index, len(order))
        # What the bitmaps leave (names, counters and the `counting` list take ~1 KB at most).
        left = max(0, BEAT_BYTES - len(down) - len(out) - 1000 - 130 * len(counting))
        why, more = _codes(op.down, index, left * 3 // 4)
        whyout, _ = _codes(op.out, index, left - len(why.encode()))
        return self._item(pk=LIVE, sk=f"replica#{op.replica}", replica=op.replica, seq=op.seq, voting=op.voting,
                          v=BEAT_VERSION, config=self.digest, n=len(order), down=down,
                          why=why, more=more, out=out, whyout=whyout,
                          counting=json.dumps(sorted(counting)), at=_ts(now),
                          expires=int((now + HEARTBEAT_TTL).timestamp()))

    def heartbeat(self, op: Opinion, now: datetime, *, renew: tuple[int, str] | None = None,
                  rev: str = "", sent: list[float] | None = None, deadline: float | None = None,
                  counting: tuple[str, ...] = ()) -> None:
        """Publish this replica's heartbeat and opinion: one request. A holder (`renew`: its epoch
        and the revision it last wrote) renews the lease in the same request, on condition that
        it still holds it; ConditionFailed means it does not."""
        if renew is None:
            self.db.call("PutItem", TableName=self.table, Item=self._beat_item(op, now, counting), sent=sent, deadline=deadline)
            return
        epoch, _ = renew
        self.db.call("TransactWriteItems", sent=sent, deadline=deadline, TransactItems=[
            {"Update": {
                "TableName": self.table, "Key": self._item(pk=LIVE, sk=LEASE),
                "UpdateExpression": "SET rev = :rev, #at = :at",
                "ConditionExpression": "#owner = :me AND epoch = :epoch",
                "ExpressionAttributeNames": {"#owner": "owner", "#at": "at"},
                "ExpressionAttributeValues": self._item(**{":rev": rev, ":at": _ts(now), ":me": self.replica,
                                                          ":epoch": epoch}),
            }},
            {"Put": {"TableName": self.table, "Item": self._beat_item(op, now, counting)}},
        ])

    def release_lease(self, epoch: int, rev: str, now: datetime) -> None:
        """A holder on its way out frees the lease (same epoch: the next owner takes epoch + 1)."""
        self.db.call("UpdateItem", deadline=2.0, TableName=self.table, Key=self._item(pk=LIVE, sk=LEASE),
                     UpdateExpression="SET #owner = :free, rev = :rev, #at = :at",
                     ConditionExpression="#owner = :me AND epoch = :epoch",
                     ExpressionAttributeNames={"#owner": "owner", "#at": "at"},
                     ExpressionAttributeValues=self._item(**{":free": "", ":rev": rev, ":at": _ts(now),
                                                             ":me": self.replica, ":epoch": epoch}))

    def take_lease(self, seen: LeaseRecord | None, rev: str, now: datetime, *,
                   sent: list[float] | None = None, deadline: float | None = None) -> int:
        """Take the lease seen free or expired; the epoch won. ConditionFailed: someone was faster."""
        epoch = (seen.epoch if seen is not None else 0) + 1
        values = {":me": self.replica, ":epoch": epoch, ":rev": rev, ":at": _ts(now)}
        if seen is None:
            cond = "attribute_not_exists(pk)"
        else:
            cond = "rev = :seen AND epoch = :seen_epoch"
            values.update({":seen": seen.rev, ":seen_epoch": seen.epoch})
        self.db.call("UpdateItem", sent=sent, deadline=deadline, TableName=self.table,
                     Key=self._item(pk=LIVE, sk=LEASE),
                     UpdateExpression="SET #owner = :me, epoch = :epoch, rev = :rev, #at = :at",
                     ConditionExpression=cond, ExpressionAttributeNames={"#owner": "owner", "#at": "at"},
                     ExpressionAttributeValues=self._item(**values))
        return epoch


def open_store(cfg: Any, on_request: Any = None) -> DynamoStore:
    """The cluster's store for a config with `cluster:` (the table must exist: `r53lb cluster init`)."""
    from ..aws.dynamodb import DynamoDB

    db = DynamoDB(cfg.aws, cfg.cluster.region or cfg.aws.region, on_request=on_request)
    store = DynamoStore(db, cfg.cluster.table, cfg.cluster.replica)
    store.digest, store.order = config_digest(cfg), node_order(cfg)
    return store
