"""Hosted zones with weighted pools built from a short spec, and helpers to read them back.

    build(client, {"example.com": {
        "mx.example.com": {"type": "A", "ttl": 60,
                           "sets": {"hlb-1": ("192.0.2.10", 50), "hlb-2": ("192.0.2.11", 50)}},
        # dual-stack: a list of pools under one name
        "smtp.example.com": [{"type": "A", "sets": {...}}, {"type": "AAAA", "sets": {...}}],
    }}) -> {"example.com": "Z..."}

A set's value is one address or a tuple/list of them. Works with any boto3 Route 53 client
(in-process mock_aws, a moto server, or the real thing).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from r53lb.core.records import normalize_name

__all__ = ["build", "weights", "record_sets", "set_weight", "change", "weighted_set"]

_refs = itertools.count(1)
_CHUNK = 500  # CREATEs per batch, under Route 53's 1,000 ResourceRecord elements


def weighted_set(name: str, rtype: str, set_id: str, value: Any, weight: int, ttl: int = 60) -> dict[str, Any]:
    """A ResourceRecordSet mapping for one weighted set."""
    values = [value] if isinstance(value, str) else list(value)
    return {
        "Name": name,
        "Type": rtype,
        "SetIdentifier": set_id,
        "Weight": weight,
        "TTL": ttl,
        "ResourceRecords": [{"Value": v} for v in values],
    }


def _zone_id(client: Any, zone: str) -> str | None:
    resp = client.list_hosted_zones_by_name(DNSName=zone + ".")
    for hz in resp.get("HostedZones", []):
        if normalize_name(hz["Name"]) == zone:
            return hz["Id"].rsplit("/", 1)[-1]
    return None


def build(client: Any, spec: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Create each zone (or reuse one of that name) and its weighted sets; zone name -> id."""
    ids: dict[str, str] = {}
    for zone, pools in spec.items():
        zone = normalize_name(zone)
        zid = _zone_id(client, zone)
        if zid is None:
            hz = client.create_hosted_zone(Name=zone, CallerReference=f"moto-fixtures-{next(_refs)}")
            zid = hz["HostedZone"]["Id"].rsplit("/", 1)[-1]
        ids[zone] = zid
        creates: list[dict[str, Any]] = []
        for name, pool_specs in pools.items():
            for pool in [pool_specs] if isinstance(pool_specs, Mapping) else pool_specs:
                rtype, ttl = pool.get("type", "A"), pool.get("ttl", 60)
                for set_id, (value, weight) in pool["sets"].items():
                    creates.append(weighted_set(name, rtype, set_id, value, weight, ttl))
        for i in range(0, len(creates), _CHUNK):
            change(client, zid, *(("CREATE", rs) for rs in creates[i : i + _CHUNK]))
    return ids


def change(client: Any, zone_id: str, *changes: tuple[str, dict[str, Any]]) -> str:
    """Send (action, ResourceRecordSet) pairs as one batch; returns the change id."""
    resp = client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": a, "ResourceRecordSet": rs} for a, rs in changes]},
    )
    return resp["ChangeInfo"]["Id"]


def record_sets(client: Any, zone_id: str, name: str | None = None, rtype: str | None = None) -> Iterator[dict[str, Any]]:
    """Every record set of the zone (or of one name / name and type), each once, in Route 53's order."""
    want = normalize_name(name) if name else None
    kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "MaxItems": "300"}
    if want:
        kwargs["StartRecordName"] = want + "."
        if rtype:
            kwargs["StartRecordType"] = rtype
    seen: set[tuple[str, str, str | None]] = set()
    while True:
        resp = client.list_resource_record_sets(**kwargs)
        fresh = 0
        for rs in resp["ResourceRecordSets"]:
            rname = normalize_name(rs["Name"])
            if want and (rname != want or (rtype and rs["Type"] != rtype)):
                return
            key = (rname, rs["Type"], rs.get("SetIdentifier"))
            if key in seen:  # plain moto repeats a group when no NextRecordIdentifier came back
                continue
            seen.add(key)
            fresh += 1
            yield rs
        if not resp.get("IsTruncated") or not fresh:
            return
        kwargs["StartRecordName"] = resp["NextRecordName"]
        kwargs["StartRecordType"] = resp["NextRecordType"]
        kwargs.pop("StartRecordIdentifier", None)
        if resp.get("NextRecordIdentifier"):
            kwargs["StartRecordIdentifier"] = resp["NextRecordIdentifier"]


def weights(client: Any, zone_id: str, name: str, rtype: str = "A") -> dict[str, int]:
    """{set identifier: weight} of the weighted sets at name/type."""
    return {
        rs["SetIdentifier"]: int(rs["Weight"])
        for rs in record_sets(client, zone_id, name, rtype)
        if "SetIdentifier" in rs and rs.get("Weight") is not None
    }


def set_weight(client: Any, zone_id: str, name: str, rtype: str, set_id: str, weight: int) -> str:
    """Change one set's weight out of band (UPSERT), as another operator or tool would."""
    for rs in record_sets(client, zone_id, name, rtype):
        if rs.get("SetIdentifier") == set_id:
            return change(client, zone_id, ("UPSERT", {**rs, "Weight": weight}))
    raise KeyError(f"{name} {rtype} {set_id}: no such record set")
