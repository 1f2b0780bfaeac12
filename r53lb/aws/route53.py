"""The only module that talks to Route 53: read weighted record sets, write weights by compare-and-swap."""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from r53lb.aws.session import NO_CREDENTIALS, Transient, report, with_retries
from r53lb.core.records import RecordChange, RecordKey, RecordSet, normalize_name
from r53lb.errors import R53lbError

if TYPE_CHECKING:  # pydantic and boto3 stay out of `r53lb --help`
    from r53lb.config import AwsConfig

__all__ = ["NO_CREDENTIALS", "ConflictError", "FenceWrite", "Progress", "Route53", "Route53Error", "batches",
           "batch_cost", "fence_set"]

# Route 53's limits for one ChangeResourceRecordSets request.
MAX_RECORDS_PER_BATCH = 1000  # ResourceRecord elements (UPSERT counts twice)
MAX_CHARS_PER_BATCH = 32000  # characters in all Value elements (UPSERT counts twice)
MAX_PAGE = 300  # ListResourceRecordSets returns at most this many sets per page

TimeLeft = Callable[[], float]  # seconds the caller still has (a lease's time left); asked before each attempt

_ZONE_ID = re.compile(r"^(?:/hostedzone/)?(Z[A-Z0-9]{4,})$")


class Route53Error(R53lbError):
    """Route 53 could not be used (after retries); the message is one line, never credentials.

    `code` is the error's class alone (`AccessDenied`, `NoSuchHostedZone`, `Throttling`,
    `ConnectionError`): what /healthz may show without account ids or role ARNs.
    """

    prefix = "route53: "

    def __init__(self, message: str, code: str = "Error") -> None:
        super().__init__(message)
        self.code = code


class ConflictError(Route53Error):
    """Route 53 refused the batch (InvalidChangeBatch): a record set may have changed under us."""

    def __init__(self, message: str, code: str = "InvalidChangeBatch") -> None:
        super().__init__(message, code)


def batch_cost(change: dict[str, Any]) -> tuple[int, int]:
    """(ResourceRecord elements, characters of values) of one Change, counted as Route 53 does."""
    values = [rr.get("Value", "") for rr in change["ResourceRecordSet"].get("ResourceRecords") or ()]
    factor = 2 if change["Action"] == "UPSERT" else 1
    return factor * len(values), factor * sum(len(v) for v in values)


def batches(
    units: Sequence[Sequence[dict[str, Any]]],
    max_records: int = MAX_RECORDS_PER_BATCH,
    max_chars: int = MAX_CHARS_PER_BATCH,
) -> list[list[dict[str, Any]]]:
    """Pack units (a DELETE+CREATE pair stays together) into as few batches as the limits allow."""
    out: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    records = chars = 0
    for unit in units:
        r = c = 0
        for change in unit:
            dr, dc = batch_cost(change)
            r, c = r + dr, c + dc
        if current and (records + r > max_records or chars + c > max_chars):
            out.append(current)
            current, records, chars = [], 0, 0
        current.extend(unit)
        records, chars = records + r, chars + c
    if current:
        out.append(current)
    return out


def _record_set(raw: dict[str, Any]) -> RecordSet:
    return RecordSet(
        name=normalize_name(raw["Name"]),
        type=raw["Type"],
        set_identifier=raw["SetIdentifier"],
        weight=int(raw["Weight"]),
        ttl=int(raw["TTL"]) if raw.get("TTL") is not None else None,
        values=tuple(rr["Value"] for rr in raw.get("ResourceRecords") or ()),
        raw=raw,
    )


@dataclass(frozen=True)
class FenceWrite:
    """The zone's fence for `apply`: the set as read (None: there is none yet) and each batch's next one."""

    read: dict[str, Any] | None
    set: Callable[[int], dict[str, Any]]  # the fence set the k-th batch (from 0) CREATEs


@dataclass
class Progress:
    """How far an `apply` got: the indexes of the changes in each batch, the ids of those acknowledged."""

    batches: list[list[int]] = field(default_factory=list)
    change_ids: list[str] = field(default_factory=list)


def fence_set(name: str, values: Sequence[str], ttl: int) -> dict[str, Any]:
    """The fence as a ResourceRecordSet (a plain TXT set: no set identifier, no weight)."""
    return {"Name": normalize_name(name) + ".", "Type": "TXT", "TTL": ttl,
            "ResourceRecords": [{"Value": v} for v in values]}


class Route53:
    """A Route 53 client with bounded retries, compare-and-swap writes and per-operation counts.

    Retry bounds are parameters so that tests run in milliseconds; the defaults suit a
    cron job or a daemon that shares an account's request rate with others.
    """

    def __init__(
        self,
        aws: AwsConfig,
        *,
        on_request: Callable[[str, str], None] | None = None,
        attempts: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        retry_deadline: float = 60.0,
        botocore_attempts: int = 2,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        page_size: int = MAX_PAGE,
        poll_interval: float = 1.0,
        poll_interval_max: float = 10.0,
    ) -> None:
        self.aws = aws
        self.on_request = on_request
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_deadline = retry_deadline
        self.botocore_attempts = max(1, botocore_attempts)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.poll_interval = poll_interval
        self.poll_interval_max = poll_interval_max
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.last_change_ids: list[str] = []  # every batch of the last apply(), in order
        self._zones: dict[str, str] = {}
        self._client: Any = None
        self._lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (boto3 is imported only then)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        from .session import AwsError, client

        try:
            return client(self.aws, "route53", connect_timeout=self.connect_timeout,
                          read_timeout=self.read_timeout, attempts=self.botocore_attempts)
        except AwsError as e:
            raise Route53Error(str(e), "ProfileNotFound") from None

    def _report(self, operation: str, outcome: str) -> None:
        report(self.on_request, operation, outcome)

    def _attempt(self, operation: str, kwargs: dict[str, Any], time_left: TimeLeft | None = None) -> Any:
        from .session import read_error

        client = self.client
        if time_left is not None and time_left() <= 0:
            # Checked before every attempt, retries included: a retry never outlives the caller's
            # time (a leader's lease), it gives up instead.
            self._report(operation, "error")
            raise Route53Error(f"Route 53 {operation}: no time left for it (the writer's lease ends)", "Deadline")
        method = getattr(client, _snake(operation))
        self.request_counts[operation] += 1
        try:
            result = method(**kwargs)
        except Exception as e:
            f = read_error(e, f"Route 53 {operation}")
            if f is None:
                raise
            if f.transient:
                self._report(operation, "throttled" if f.throttled else "error")
                raise Transient(f.message, f.code) from None
            if f.code == "InvalidChangeBatch":
                self._report(operation, "conflict")
                raise ConflictError(f"Route 53 refused the change batch: {f.message.split(': ', 2)[-1]}") from None
            self._report(operation, "error")
            if f.code == "NoSuchHostedZone":
                zone = kwargs.get("HostedZoneId") or kwargs.get("Id") or "?"
                raise Route53Error(f"hosted zone {zone} not found ({f.message.split(': ', 2)[-1]})", f.code) from None
            raise Route53Error(f.message, f.code) from None
        self._report(operation, "ok")
        return result

    def _call(self, operation: str, *, time_left: TimeLeft | None = None, **kwargs: Any) -> Any:
        """One API call: botocore's own retries, then tenacity's, bounded in attempts and time.

        `time_left` (seconds, asked before each attempt) bounds the retries further: they stop
        when it runs out, whatever `retry_deadline` allows.
        """
        deadline = self.retry_deadline
        if time_left is not None:
            deadline = max(0.0, min(deadline, time_left()))
        return with_retries(self._attempt, operation, kwargs, time_left, attempts=self.attempts, deadline=deadline,
                            backoff=self.backoff, backoff_max=self.backoff_max, give_up=Route53Error)

    # --- public API -----------------------------------------------------------------------

    def zone_id(self, zone: str) -> str:
        """A hosted zone's id from its name (or the id itself), looked up once."""
        m = _ZONE_ID.match(zone.strip())
        if m:
            return m.group(1)
        name = normalize_name(zone)
        if name in self._zones:
            return self._zones[name]
        found: list[dict[str, Any]] = []
        resp = self._call("ListHostedZonesByName", DNSName=name + ".", MaxItems="100")
        for hz in resp.get("HostedZones", []):
            if normalize_name(hz["Name"]) == name:
                found.append(hz)
        if not found:
            raise Route53Error(f"hosted zone {name} not found (is it in this account?)", "NoSuchHostedZone")
        if len(found) > 1:
            kinds = ", ".join(
                f"{hz['Id'].rsplit('/', 1)[-1]} ({'private' if hz.get('Config', {}).get('PrivateZone') else 'public'})"
                for hz in found
            )
            raise Route53Error(f"{len(found)} hosted zones are named {name}: {kinds}; give the zone id in the config",
                               "AmbiguousZone")
        zid = found[0]["Id"].rsplit("/", 1)[-1]
        self._zones[name] = zid
        return zid

    def name_servers(self, zone_id: str) -> tuple[str, ...]:
        """The zone's authoritative name servers (GetHostedZone's delegation set; none for a private zone)."""
        resp = self._call("GetHostedZone", Id=zone_id)
        names = (resp.get("DelegationSet") or {}).get("NameServers") or ()
        return tuple(normalize_name(n) for n in names)

    def read_values(self, zone_id: str, name: str, rtype: str) -> tuple[str, ...]:
        """The values of one plain (not weighted) record set, e.g. a TLSA set; () when there is none.

        One ListResourceRecordSets call of one page starting at (name, type): a DANE check
        costs one small read per pool record per refresh, never a zone scan.
        """
        name, rtype = normalize_name(name), rtype.upper()
        resp = self._call("ListResourceRecordSets", HostedZoneId=zone_id, StartRecordName=name + ".",
                          StartRecordType=rtype, MaxItems="1")
        for raw in resp.get("ResourceRecordSets", [])[:1]:
            if normalize_name(raw["Name"]) == name and raw["Type"] == rtype and "SetIdentifier" not in raw:
                return tuple(rr["Value"] for rr in raw.get("ResourceRecords") or ())
        return ()


    def zone_name(self, zone_id: str) -> str:
        """A hosted zone's name (normalized) from its id: known from `zone_id()`, else one GetHostedZone."""
        for name, zid in self._zones.items():
            if zid == zone_id:
                return name
        resp = self._call("GetHostedZone", Id=zone_id)
        name = normalize_name(resp["HostedZone"]["Name"])
        self._zones.setdefault(name, zone_id)
        return name

    def read(self, zone_id: str, wanted: Iterable[tuple[str, str]], *,
             time_left: TimeLeft | None = None) -> dict[RecordKey, RecordSet]:
        """The weighted record sets of the wanted (name, type) pairs, reading only their pages.

        Names are read in Route 53's listing order and a page serves every wanted name it
        holds: pools whose names sit side by side in a zone share pages instead of costing a
        request each (200 pools in 10 zones: 40 requests, not 200).
        """
        return self.read_fenced(zone_id, wanted, None, time_left=time_left)[0]

    def read_fenced(self, zone_id: str, wanted: Iterable[tuple[str, str]], fence: str | None, *,
                    time_left: TimeLeft | None = None) -> tuple[dict[RecordKey, RecordSet], dict[str, Any] | None]:
        """`read`, and the zone's fence (the TXT set named `fence`, as Route 53 returned it, or None).

        The fence is read first (its own sweep; its page serves the names listed after it): a
        record set read later than the fence is never older than it, so a batch planned from
        this read and DELETEing this fence is refused if any r53lb writer wrote in between.
        """
        by_name: dict[str, set[str]] = collections.defaultdict(set)
        for name, rtype in wanted:
            by_name[normalize_name(name)].add(rtype.upper())
        out: dict[RecordKey, RecordSet] = {}
        plain: dict[tuple[str, str], dict[str, Any]] = {}
        done: set[str] = set()
        order = sorted(by_name, key=_listing_order)
        if fence is not None:
            fence = normalize_name(fence)
            by_name[fence].add("TXT")
            order = [fence, *[n for n in order if n != fence]]
        for name in order:
            if name not in done:
                self._sweep(zone_id, name, by_name, done, out, plain, time_left)
        return out, plain.get((fence, "TXT")) if fence is not None else None

    def _sweep(
        self, zone_id: str, name: str, wanted: dict[str, set[str]], done: set[str], out: dict[RecordKey, RecordSet],
        plain: dict[tuple[str, str], dict[str, Any]], time_left: TimeLeft | None = None,
    ) -> None:
        """Page from `name` on while the listing is inside a wanted name not read yet; mark the names read.

        The listing is sorted (name, then type) and contiguous from the start, so a wanted name
        is read completely once a record past its last wanted type has been seen, or the listing ends.
        """
        start: tuple[str, str, str | None] = (name + ".", min(wanted[name]), None)
        page_size = self.page_size
        seen: set[tuple[str, str, str | None]] = set()
        current: str | None = None  # the wanted name the listing is in
        for _ in range(100_000):  # a guard: each page brings new sets or widens; never loop forever
            kwargs: dict[str, Any] = {
                "HostedZoneId": zone_id,
                "StartRecordName": start[0],
                "StartRecordType": start[1],
                "MaxItems": str(page_size),
            }
            if start[2] is not None:
                kwargs["StartRecordIdentifier"] = start[2]
            resp = self._call("ListResourceRecordSets", time_left=time_left, **kwargs)
            new = 0
            for raw in resp.get("ResourceRecordSets", []):
                rname, rtype = normalize_name(raw["Name"]), raw["Type"]
                if current is not None and (rname != current or rtype > max(wanted[current])):
                    done.add(current)
                    current = None
                types = wanted.get(rname)
                if types is None:
                    continue
                if rname not in done:
                    if rtype > max(types):
                        done.add(rname)  # the listing passed where its wanted types would be: there are none
                    else:
                        current = rname
                ident = (rname, rtype, raw.get("SetIdentifier"))
                if ident not in seen:
                    seen.add(ident)
                    new += 1
                if rtype in types and "SetIdentifier" in raw and raw.get("Weight") is not None:
                    rs = _record_set(raw)
                    out.setdefault(rs.key, rs)
                elif rtype in types and "SetIdentifier" not in raw:
                    plain.setdefault((rname, rtype), raw)
            if not resp.get("IsTruncated"):
                done.add(name)
                if current is not None:
                    done.add(current)
                return
            nxt = (resp["NextRecordName"], resp["NextRecordType"], resp.get("NextRecordIdentifier"))
            nname = normalize_name(nxt[0])
            if nname not in wanted or nname in done or nxt[1] > max(wanted[nname]):
                done.add(name)  # the next page starts past every name this sweep is in
                if current is not None:
                    done.add(current)
                return
            if nxt == start and new == 0:
                # A page ended inside a group of weighted sets and no NextRecordIdentifier came
                # back (moto does this): the same page would come back forever. Ask for a wider
                # page; Route 53 itself always sends the identifier, so this never runs there.
                if page_size >= 8 * MAX_PAGE:
                    raise Route53Error(
                        f"Route 53 ListResourceRecordSets: paging of {nname} {start[1]} makes no progress"
                    )
                page_size *= 2
                continue
            start = nxt
        raise Route53Error(f"Route 53 ListResourceRecordSets: paging of {name} does not end")

    def apply(self, zone_id: str, changes: Sequence[RecordChange], comment: str = "r53lb", *,
              fence: FenceWrite | None = None, time_left: TimeLeft | None = None,
              progress: Progress | None = None) -> str | None:
        """Write new weights as one compare-and-swap batch (split only past Route 53's limits).

        Each change DELETEs the record set exactly as read and CREATEs it with the new weight,
        so Route 53 refuses the whole batch if anyone changed one of them since (ConflictError).
        With a `fence`, every batch also DELETEs the zone's fence as the previous batch left it
        (the first: as read) and CREATEs its next version: then the batch is refused when any
        r53lb writer wrote to the zone since the read, whatever it touched.
        Returns the id of the last batch's change (Route 53 applies a zone's batches in order;
        all ids are in `last_change_ids`), or None when there was nothing to write. A change
        whose weight already holds is skipped. `progress` (the caller's own: zones are written
        from several threads) gets the indexes of `changes` each batch carries, before it is
        sent, and the id of each batch Route 53 acknowledged.
        """
        units: list[list[dict[str, Any]]] = []
        index: list[int] = []
        for i, ch in enumerate(changes):
            if ch.current is not None:
                if ch.current.weight == ch.weight:
                    continue  # nothing to change: never spend a write on it
                old = ch.current.raw or _raw_from(ch.current)
                new = {**old, "Weight": ch.weight}
                units.append([
                    {"Action": "DELETE", "ResourceRecordSet": old},
                    {"Action": "CREATE", "ResourceRecordSet": new},
                ])
            else:
                units.append([{
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": ch.name,
                        "Type": ch.type,
                        "SetIdentifier": ch.set_identifier,
                        "Weight": ch.weight,
                        "TTL": ch.ttl,
                        "ResourceRecords": [{"Value": v} for v in ch.values],
                    },
                }])
            index.append(i)
        self.last_change_ids = []
        progress = progress if progress is not None else Progress()
        if not units:
            return None
        max_records, max_chars = MAX_RECORDS_PER_BATCH, MAX_CHARS_PER_BATCH
        previous = fence.read if fence is not None else None
        if fence is not None:  # room for the fence's DELETE and CREATE in every batch
            r1, c1 = batch_cost({"Action": "CREATE", "ResourceRecordSet": fence.set(0)})
            r0, c0 = batch_cost({"Action": "DELETE", "ResourceRecordSet": previous}) if previous else (0, 0)
            max_records -= max(r0, r1) + r1
            max_chars -= max(c0, c1) + c1 + 64  # sequence numbers may grow by a digit or two
        packed = batches(units, max_records, max_chars)
        pos = 0
        for batch in packed:  # batches() keeps units whole and in order
            n, taken = 0, []
            while n < len(batch):
                n += len(units[pos])
                taken.append(index[pos])
                pos += 1
            progress.batches.append(taken)
        for k, batch in enumerate(packed):
            body = list(batch)
            if fence is not None:
                if previous is not None:
                    body.append({"Action": "DELETE", "ResourceRecordSet": previous})
                previous = fence.set(k)
                body.append({"Action": "CREATE", "ResourceRecordSet": previous})
            resp = self._call(
                "ChangeResourceRecordSets",
                time_left=time_left,
                HostedZoneId=zone_id,
                ChangeBatch={"Comment": comment, "Changes": body},
            )
            self.last_change_ids.append(resp["ChangeInfo"]["Id"])
            progress.change_ids.append(resp["ChangeInfo"]["Id"])
        return progress.change_ids[-1]

    def wait_insync(self, change_id: str, timeout: float = 300) -> float:
        """Poll GetChange until the change is INSYNC on every Route 53 server; seconds taken."""
        started = time.monotonic()
        deadline = started + timeout
        delay = self.poll_interval
        while True:
            resp = self._call("GetChange", Id=change_id)
            if resp["ChangeInfo"]["Status"] == "INSYNC":
                return time.monotonic() - started
            left = deadline - time.monotonic()
            if left <= 0:
                raise Route53Error(f"Route 53 change {change_id} not INSYNC after {timeout:g} s")
            time.sleep(min(delay, left))
            delay = min(delay * 2, self.poll_interval_max)


def _raw_from(rs: RecordSet) -> dict[str, Any]:
    """A ResourceRecordSet mapping for a RecordSet built without `raw` (tests, planners' fixtures)."""
    raw: dict[str, Any] = {
        "Name": rs.name + ".",
        "Type": rs.type,
        "SetIdentifier": rs.set_identifier,
        "Weight": rs.weight,
    }
    if rs.ttl is not None:
        raw["TTL"] = rs.ttl
    raw["ResourceRecords"] = [{"Value": v} for v in rs.values]
    return raw


def _listing_order(name: str) -> str:
    """Route 53 lists a zone by name with its labels reversed ("com.example.mx"), then by type."""
    return ".".join(reversed(name.split(".")))


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
