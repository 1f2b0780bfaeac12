"""Make moto's Route 53 refuse what Route 53 refuses, count requests, and inject faults.

moto 5.2.5 is lax where r53lb's safety depends on Route 53 being strict (see DESIGN.md,
"Tests"): it accepts a DELETE whose weight or values no longer match the record set (it
only checks that *some* earlier CREATE in its journal had that name, TTL and values),
accepts a duplicate CREATE (two copies), accepts weight 300, deletes *every* set in the
zone with the same SetIdentifier whatever its name, applies half a batch when a later
change fails, takes TXT strings of any length, and sends no NextRecordIdentifier (nor honours StartRecordIdentifier) when a
page ends inside a group of weighted sets.

The patches go on moto's Route 53 classes, so they hold for `mock_aws` in-process and for
a ThreadedMotoServer in the same process alike. They are installed once and switched by
`controls.strict`; `layer()` turns them on for a block (and `layer(False)` off).

    with mock_aws(), layer() as controls:
        controls.throttle("ChangeResourceRecordSets", 2)
        controls.before_change(lambda: set_weight(client, zid, "mx.example.com", "A", "hlb-1", 7))
        ...
        assert controls.counts["ChangeResourceRecordSets"] == 3
"""

from __future__ import annotations

import collections
import contextlib
import copy
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.route53 import models as _models
from moto.route53 import responses as _responses
from moto.route53.exceptions import DnsNameInvalidForZone, InvalidActionValue, InvalidInput, Route53ClientError
from moto.route53.models import RecordSet as _MotoRecordSet
from moto.route53.models import Route53Backend

__all__ = ["Controls", "controls", "install", "layer", "MAX_RECORDS", "MAX_CHARS"]

MAX_RECORDS = 1000  # ResourceRecord elements per ChangeResourceRecordSets (UPSERT counts twice)
MAX_CHARS = 32000  # characters of all Value elements per request (UPSERT counts twice)
MAX_CHANGES = 1000
MAX_PAGE = 300

_Route53Response = _responses.Route53


@dataclass(frozen=True)
class Fault:
    code: str
    status: int
    message: str

    def response(self) -> tuple[int, dict[str, str], str]:
        body = (
            '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
            f"<Error><Type>{'Sender' if self.status < 500 else 'Receiver'}</Type><Code>{self.code}</Code>"
            f"<Message>{self.message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        )
        return self.status, {"Content-Type": "text/xml", "status": str(self.status)}, body


class Controls:
    """Counters and fault injection for moto's Route 53 (one per process: moto's state is too)."""

    def __init__(self) -> None:
        self.strict = False
        self.counts: collections.Counter[str] = collections.Counter()
        self.comments: list[str | None] = []  # each ChangeResourceRecordSets' Comment, in order
        self.hook_errors: list[BaseException] = []
        self._faults: dict[str, collections.deque[Fault]] = collections.defaultdict(collections.deque)
        self._hooks: list[Callable[[], Any]] = []
        self._pending = 0
        self._lost: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget counts, queued faults, hooks and pending GetChange answers (not `strict`)."""
        with self._lock:
            self.counts.clear()
            self.comments.clear()
            self.hook_errors.clear()
            self._faults.clear()
            self._hooks.clear()
            self._pending = 0
            self._lost.clear()

    def throttle(self, operation: str, n: int = 1) -> None:
        """The next n calls of `operation` fail with HTTP 400 Throttling, as Route 53 does under load."""
        self.fail(operation, n, code="Throttling", status=400, message="Rate exceeded")

    def fail(
        self,
        operation: str,
        n: int = 1,
        *,
        code: str = "ServiceUnavailable",
        status: int = 503,
        message: str = "Service is unavailable, try again later",
    ) -> None:
        """The next n calls of `operation` (e.g. 'ChangeResourceRecordSets') fail with this error."""
        with self._lock:
            self._faults[operation].extend(Fault(code, status, message) for _ in range(n))

    def lose_answer(self, operation: str, n: int = 1) -> None:
        """The next n calls of `operation` are carried out, but the client gets a 500 instead
        of the answer (the connection dropped after Route 53 applied the change)."""
        with self._lock:
            self._lost[operation] += n

    def _take_lost(self, action: str) -> bool:
        with self._lock:
            if self._lost[action] > 0:
                self._lost[action] -= 1
                return True
            return False

    def before_change(self, callback: Callable[[], Any]) -> None:
        """Run `callback` once, just before the next ChangeResourceRecordSets is applied."""
        with self._lock:
            self._hooks.append(callback)

    def pending(self, n: int) -> None:
        """The next n GetChange calls answer PENDING instead of INSYNC."""
        with self._lock:
            self._pending += n

    @property
    def writes(self) -> int:
        return self.counts["ChangeResourceRecordSets"]

    # --- used by the patches ---

    def _on_request(self, action: str) -> Fault | None:
        with self._lock:
            self.counts[action] += 1
            queue = self._faults.get(action)
            if queue:
                return queue.popleft()
            return None

    def _take_hooks(self) -> list[Callable[[], Any]]:
        with self._lock:
            hooks, self._hooks = self._hooks, []
            return hooks

    def _take_pending(self) -> bool:
        with self._lock:
            if self._pending > 0:
                self._pending -= 1
                return True
            return False


controls = Controls()
_commit_lock = threading.RLock()
_change_ids = itertools.count(1)
_orig: dict[str, Any] = {}


# --- the rules ------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("\\052", "*").rstrip(".").lower()


def _key(name: str, rtype: str | None, set_id: str | None) -> tuple[str, str | None, str | None]:
    return (_norm(name), rtype, set_id)


def _obj_key(rs: _MotoRecordSet) -> tuple[str, str | None, str | None]:
    return _key(rs.name, rs.type, rs.set_identifier)


def _describe(rs: dict[str, Any]) -> str:
    name = rs["Name"] if rs["Name"].endswith(".") else rs["Name"] + "."
    sid = f", set-identifier='{rs['SetIdentifier']}'" if rs.get("SetIdentifier") is not None else ""
    return f"[name='{name}', type='{rs['Type']}'{sid}]"


def _ttl(value: Any) -> int | None:
    return None if value is None else int(value)


def _matches(obj: _MotoRecordSet, rs: dict[str, Any]) -> bool:
    """A DELETE must give exactly the record set's current contents."""
    values = sorted(rr["Value"] for rr in rs.get("ResourceRecords") or ())
    weight = rs.get("Weight")
    return (
        _ttl(obj.ttl) == _ttl(rs.get("TTL"))
        and sorted(obj.records or ()) == values
        and (None if obj.weight is None else int(obj.weight)) == (None if weight is None else int(weight))
        and (obj.alias_target or None) == (rs.get("AliasTarget") or None)
        and obj.health_check_id == rs.get("HealthCheckId")
        and obj.region == rs.get("Region")
        and obj.failover == rs.get("Failover")
        and (obj.geo_location or None) == (rs.get("GeoLocation") or None)
        and obj.multi_value_answer == rs.get("MultiValueAnswer")
    )


def _check_limits(change_list: list[dict[str, Any]]) -> None:
    if len(change_list) > MAX_CHANGES:
        raise Route53ClientError("InvalidChangeBatch", f"Number of changes limit of {MAX_CHANGES} exceeded.")
    records = chars = 0
    for change in change_list:
        values = [rr.get("Value", "") for rr in change["ResourceRecordSet"].get("ResourceRecords") or ()]
        factor = 2 if change["Action"] == "UPSERT" else 1
        records += factor * len(values)
        chars += factor * sum(len(v) for v in values)
    if records > MAX_RECORDS:
        raise Route53ClientError("InvalidChangeBatch", f"Number of records limit of {MAX_RECORDS} exceeded.")
    if chars > MAX_CHARS:
        raise Route53ClientError("InvalidChangeBatch", f"Number of characters limit of {MAX_CHARS} exceeded.")


def _validate_shape(i: int, rs: dict[str, Any]) -> None:
    weight = rs.get("Weight")
    where = f"changeBatch.changes.{i}.member.resourceRecordSet"
    if weight is not None and not 0 <= int(weight) <= 255:
        bound = "less than or equal to 255" if int(weight) > 255 else "greater than or equal to 0"
        raise InvalidInput(
            f"1 validation error detected: Value '{weight}' at '{where}.weight' "
            f"failed to satisfy constraint: Member must have value {bound}"
        )
    if (weight is None) != (rs.get("SetIdentifier") is None) and rs.get("Failover") is None and rs.get("Region") is None \
            and rs.get("GeoLocation") is None and rs.get("MultiValueAnswer") is None:
        raise InvalidInput(f"Invalid request: {where}: a weighted set needs both SetIdentifier and Weight")


_TXT_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))')


def _validate_txt(rs: dict[str, Any]) -> None:
    """Route 53's TXT values: character-strings of at most 255 characters, quotes closed."""
    if rs.get("Type") not in ("TXT", "SPF"):
        return
    for rr in rs.get("ResourceRecords") or ():
        value, pos = rr.get("Value", ""), 0
        while pos < len(value.rstrip()):
            m = _TXT_TOKEN.match(value, pos)
            if m is None or m.end() == pos:
                raise Route53ClientError("InvalidChangeBatch", "[Invalid Resource Record: 'FATAL problem: "
                                         "InvalidCharacterString (unterminated quotation mark) "
                                         f"encountered with '{value[:40]}'']")
            text = m.group(1) if m.group(1) is not None else m.group(2)
            if len(re.sub(r"\\(\d{3}|.)", "x", text)) > 255:
                raise Route53ClientError("InvalidChangeBatch", "[Invalid Resource Record: 'FATAL problem: "
                                         "CharacterStringTooLong (Value is too long) encountered with "
                                         f"'{value[:40]}'']")
            pos = m.end()


def _moto_record(rs: dict[str, Any]) -> _MotoRecordSet:
    kw = copy.deepcopy(rs)
    if not kw["Name"].endswith("."):
        kw["Name"] += "."
    if "ResourceRecords" in kw:
        kw["ResourceRecords"] = [rr["Value"] for rr in kw["ResourceRecords"]]
    return _MotoRecordSet(kw)


def strict_change_resource_record_sets(self: Route53Backend, zoneid: str, change_list: list[dict[str, Any]]) -> None:
    """Route 53's semantics: exact DELETE, no duplicate CREATE, limits, all or nothing."""
    if not controls.strict:
        return _orig["backend_change"](self, zoneid, change_list)
    zone = self.get_hosted_zone(zoneid)
    _check_limits(change_list)
    zone_name = _norm(zone.name)
    for i, change in enumerate(change_list, 1):
        if change["Action"] not in ("CREATE", "UPSERT", "DELETE"):
            raise InvalidActionValue(change["Action"])
        rs = change["ResourceRecordSet"]
        name = _norm(rs["Name"])
        if name != zone_name and not name.endswith("." + zone_name):
            raise DnsNameInvalidForZone(name=rs["Name"], zone_name=zone.name)
        _validate_shape(i, rs)
        _validate_txt(rs)
    with _commit_lock:
        # Work on a copy, indexed by (name, type, set identifier): the zone changes only if
        # every change is valid. Copies plain moto may have left behind stay as they are.
        sets: dict[tuple[str, str | None, str | None], _MotoRecordSet] = {}
        extras: list[_MotoRecordSet] = []
        groups: dict[tuple[str, str | None], set[str | None]] = collections.defaultdict(set)
        for obj in zone.rrsets:
            k = _obj_key(obj)
            if k in sets:
                extras.append(obj)
            else:
                sets[k] = obj
                groups[k[:2]].add(k[2])
        errors: list[str] = []
        for change in change_list:
            action, rs = change["Action"], change["ResourceRecordSet"]
            key = _key(rs["Name"], rs["Type"], rs.get("SetIdentifier"))
            current = sets.get(key)
            if action == "DELETE":
                if current is None:
                    errors.append(f"Tried to delete resource record set {_describe(rs)} but it was not found")
                elif not _matches(current, rs):
                    errors.append(
                        f"Tried to delete resource record set {_describe(rs)} "
                        "but the values provided do not match the current values"
                    )
                else:
                    del sets[key]
                    groups[key[:2]].discard(key[2])
                continue
            weighted = key[2] is not None
            if any((other is not None) != weighted for other in groups[key[:2]]):
                kind = "non-weighted" if weighted else "weighted"
                errors.append(
                    f"RRSet with DNS name {rs['Name']}, type {rs['Type']} cannot be created "
                    f"as a {kind} set exists with the same name and type."
                )
                continue
            if action == "CREATE" and current is not None:
                errors.append(f"Tried to create resource record set {_describe(rs)} but it already exists")
                continue
            sets[key] = _moto_record(rs)  # CREATE, or UPSERT in place
            groups[key[:2]].add(key[2])
        if errors:
            raise Route53ClientError("InvalidChangeBatch", "[" + ", ".join(errors) + "]")
        zone.rrsets = list(sets.values()) + extras
        for change in change_list:
            zone.rr_changes.append(copy.deepcopy(change))
    return None


def _sort_name(name: str) -> str:
    # Route 53 sorts by the name with its labels reversed, as ASCII text: "com.example.www."
    return ".".join(reversed(_norm(name).split("."))) + "."


def _order(rs: _MotoRecordSet) -> tuple[str, str, str]:
    """Route 53's listing order: reversed name, then type, then set identifier."""
    return (_sort_name(rs.name), rs.type or "", rs.set_identifier or "")


def strict_list_resource_record_sets(self: Any) -> ActionResult:
    """Paging as Route 53 pages: at most 300 per page, NextRecordIdentifier inside a group."""
    if not controls.strict:
        return _orig["list"](self)
    zoneid = self._get_param("HostedZoneId")
    start_name = self._get_param("StartRecordName")
    start_type = self._get_param("StartRecordType")
    start_id = self._get_param("StartRecordIdentifier")
    max_items = min(self._get_int_param("MaxItems", MAX_PAGE), MAX_PAGE)
    if (start_type and not start_name) or (start_id and not start_type):
        raise InvalidInput("The input is not valid")
    zone = self.backend.get_hosted_zone(zoneid)
    ordered = sorted(zone.rrsets, key=_order)
    if start_name:
        floor = (_sort_name(start_name), start_type or "", start_id or "")
        ordered = [rs for rs in ordered if _order(rs) >= floor]
    page, rest = ordered[:max_items], ordered[max_items:]
    nxt = rest[0] if rest else None
    result = {
        "ResourceRecordSets": page,
        "IsTruncated": nxt is not None,
        "NextRecordName": nxt.name if nxt else None,
        "NextRecordType": nxt.type if nxt else None,
        "NextRecordIdentifier": nxt.set_identifier if nxt else None,
        "MaxItems": max_items,
    }
    return ActionResult(result)


def counted_call_action(self: Any) -> Any:
    """Count every Route 53 request, answer queued faults, run before-change hooks."""
    try:
        action = self._get_action() or "?"
    except Exception:
        action = "?"
    fault = controls._on_request(action)
    if fault is not None:
        return fault.response()
    if action == "ChangeResourceRecordSets":
        controls.comments.append(_comment(self))
        for hook in controls._take_hooks():
            try:
                hook()
            except Exception as e:  # keep the request going; the test inspects hook_errors
                controls.hook_errors.append(e)
    result = _orig["call_action"](self)
    if controls._take_lost(action):
        return Fault("InternalFailure", 500, "the answer was lost on the way back").response()
    return result


def _comment(response: Any) -> str | None:
    """The change batch's Comment (r53lb puts the writer's replica and lease epoch there)."""
    body = response.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    m = re.search(r"<Comment>(.*?)</Comment>", body or "", re.S)
    return m.group(1) if m else None


def strict_change_response(self: Any) -> Any:
    result = _orig["change"](self)
    if controls.strict and isinstance(result, ActionResult) and isinstance(result.result, dict):
        # Route 53 gives each change its own id; moto repeats one.
        result.result["ChangeInfo"]["Id"] = f"/change/C{next(_change_ids):012d}"
        result.result["ChangeInfo"]["Status"] = "PENDING" if controls._pending else "INSYNC"
    return result


def pending_get_change(self: Any) -> Any:
    if controls._take_pending():
        change_id = self._get_param("Id")
        return ActionResult({"ChangeInfo": {"Id": change_id, "Status": "PENDING", "SubmittedAt": utcnow()}})
    return _orig["get_change"](self)


def route53_like_zone_id(*args: Any, **kwargs: Any) -> str:
    """Route 53's zone ids start with Z (r53lb's config tells ids from names by it); moto's need not."""
    zid = _orig["zone_id"](*args, **kwargs)
    return "Z" + zid[1:] if controls.strict and not zid.startswith("Z") else zid


def install() -> Controls:
    """Patch moto's Route 53 once (idempotent); behaviour then follows `controls.strict`."""
    with _commit_lock:
        if not _orig:
            _orig["call_action"] = _Route53Response.call_action
            _orig["list"] = _Route53Response.list_resource_record_sets
            _orig["change"] = _Route53Response.change_resource_record_sets
            _orig["get_change"] = _Route53Response.get_change
            _orig["backend_change"] = Route53Backend.change_resource_record_sets
            _orig["zone_id"] = _models.create_route53_zone_id
            _models.create_route53_zone_id = route53_like_zone_id
            _Route53Response.call_action = counted_call_action  # type: ignore[method-assign]
            _Route53Response.list_resource_record_sets = strict_list_resource_record_sets  # type: ignore[method-assign]
            _Route53Response.change_resource_record_sets = strict_change_response  # type: ignore[method-assign]
            _Route53Response.get_change = pending_get_change  # type: ignore[method-assign]
            Route53Backend.change_resource_record_sets = strict_change_resource_record_sets  # type: ignore[method-assign]
    return controls


@contextlib.contextmanager
def layer(enabled: bool = True) -> Iterator[Controls]:
    """Within the block moto's Route 53 is strict (or, with False, plain moto); counters always work."""
    install()
    before = controls.strict
    controls.strict = enabled
    try:
        yield controls
    finally:
        controls.strict = before
