"""A loopback authoritative DNS server that serves a moto hosted zone as Route 53 would.

It reads the zone from the moto server with boto3 every `refresh` seconds (ListResourceRecordSets)
and answers with Route 53's documented weighted routing: each answer carries ONE record set of
the (name, type) group, chosen at random with probability weight / sum; a set at weight 0 is
chosen only when every set of the group is at 0, and then all are chosen equally. TTLs come from
the record sets; NXDOMAIN and NOERROR-with-no-data carry the zone's SOA; the apex answers SOA and
NS. With `lag`, it serves the zone as it was that many seconds ago (an authoritative server that
has not caught up yet), so a waiting command can be seen to wait.

    with AuthDNS(moto_server.endpoint_url, "example.com", host="127.0.0.61", lag=2.0) as ns:
        ... r53lb verify --nameserver {ns.nameserver} ...
        ns.lag = 0   # catch up

The UDP and TCP serving is tests/loopback_dns.py's (the DNSBL test server); only the answers differ.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import boto3
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from moto_fixtures.spec import record_sets
from loopback_dns import LoopbackDNS

__all__ = ["AuthDNS", "Zone"]


@dataclass(frozen=True)
class RSet:
    set_identifier: str | None
    weight: int | None  # None: a simple (not weighted) record set
    ttl: int
    values: tuple[str, ...]


@dataclass(frozen=True)
class Zone:
    """The zone as read at one moment: (name, type) -> record sets."""

    origin: dns.name.Name
    groups: dict[tuple[dns.name.Name, int], tuple[RSet, ...]]

    def names(self) -> set[dns.name.Name]:
        return {n for n, _ in self.groups}


def _fqdn(text: str) -> dns.name.Name:
    return dns.name.from_text(text.replace("\\052", "*"))


def read_zone(client: Any, zone_id: str, origin: dns.name.Name) -> Zone:
    groups: dict[tuple[dns.name.Name, int], list[RSet]] = collections.defaultdict(list)
    for rs in record_sets(client, zone_id):
        rtype = dns.rdatatype.from_text(rs["Type"])
        values = tuple(rr["Value"] for rr in rs.get("ResourceRecords") or ())
        if rtype == dns.rdatatype.SOA:
            continue  # moto 5.2.5 stores a mangled SOA value; one is made from the NS set instead
        weight = int(rs["Weight"]) if rs.get("Weight") is not None else None
        groups[(_fqdn(rs["Name"]), rtype)].append(RSet(rs.get("SetIdentifier"), weight, int(rs.get("TTL", 300)), values))
    return Zone(origin, {k: tuple(v) for k, v in groups.items()})


class AuthDNS(LoopbackDNS):
    """Route 53's authoritative behaviour for one moto hosted zone, on 127.0.0.x and a free port."""

    def __init__(self, endpoint_url: str, zone: str, host: str = "127.0.0.1", port: int = 0, *,
                 lag: float = 0.0, refresh: float = 0.1, seed: int | None = None) -> None:
        super().__init__(host, port)
        self.endpoint_url = endpoint_url
        self.origin = dns.name.from_text(zone)
        self.lag = lag  # seconds behind moto; change it at any time
        self.refresh = refresh
        self._random = random.Random(seed)
        self._client = boto3.client("route53", endpoint_url=endpoint_url, region_name="us-east-1")
        self.zone_id = self._find_zone()
        # (monotonic time first seen, zone), appended only when the zone changed. The zone read at
        # start-up counts as always having been there, so a lagging server starts with it.
        self._history: collections.deque[tuple[float, Zone]] = collections.deque(
            [(float("-inf"), read_zone(self._client, self.zone_id, self.origin))])
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def _find_zone(self) -> str:
        resp = self._client.list_hosted_zones_by_name(DNSName=self.origin.to_text())
        for hz in resp["HostedZones"]:
            if dns.name.from_text(hz["Name"]) == self.origin:
                return hz["Id"].rsplit("/", 1)[-1]
        raise KeyError(f"moto has no hosted zone {self.origin}")

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "AuthDNS":
        super().start()
        self._poller = threading.Thread(target=self._poll, name=f"authdns-poll-{self.port}", daemon=True)
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        super().stop()

    def __enter__(self) -> "AuthDNS":
        return self.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.refresh):
            try:
                zone = read_zone(self._client, self.zone_id, self.origin)
            except Exception:  # moto stopping at the end of a test: keep serving what was read
                continue
            with self._lock:
                if zone != self._history[-1][1]:
                    self._history.append((time.monotonic(), zone))
                # Keep only what a lag of up to a minute could still need.
                while len(self._history) > 1 and self._history[1][0] < time.monotonic() - 60 - self.lag:
                    self._history.popleft()

    def weight(self, name: str, rtype: str, set_identifier: str) -> int | None:
        """A set's weight as this server serves it now (None: no such set)."""
        sets = self.zone_now().groups.get((dns.name.from_text(name), dns.rdatatype.from_text(rtype)), ())
        return next((s.weight for s in sets if s.set_identifier == set_identifier), None)

    def zone_now(self) -> Zone:
        """The zone as this server currently serves it (`lag` seconds behind moto)."""
        cutoff = time.monotonic() - self.lag
        with self._lock:
            serving = self._history[0][1]
            for seen, zone in self._history:
                if seen <= cutoff:
                    serving = zone
            return serving

    # --- answering ------------------------------------------------------------------------

    def _pick(self, sets: tuple[RSet, ...]) -> tuple[RSet, ...]:
        weighted = [s for s in sets if s.weight is not None]
        if not weighted:
            return sets
        total = sum(s.weight for s in weighted)  # type: ignore[misc]
        with self._lock:
            if total == 0:
                return (self._random.choice(weighted),)
            return tuple(self._random.choices(weighted, weights=[s.weight for s in weighted]))  # type: ignore[misc]

    def _soa(self, zone: Zone) -> dns.rrset.RRset:
        ns = zone.groups.get((self.origin, dns.rdatatype.NS))
        mname = dns.name.from_text(ns[0].values[0]) if ns else dns.name.from_text("ns", self.origin)
        text = f"{mname} hostmaster.{self.origin} 1 7200 900 1209600 86400"
        return dns.rrset.from_text_list(self.origin, 900, dns.rdataclass.IN, dns.rdatatype.SOA, [text])

    def _respond(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        q = query.question[0]
        with self._lock:
            self.queries.append((q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype), transport))
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        if not q.name.is_subdomain(self.origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        zone = self.zone_now()
        if q.name == self.origin and q.rdtype == dns.rdatatype.SOA:
            response.answer.append(self._soa(zone))
            return response.to_wire()
        for rdtype in (q.rdtype, dns.rdatatype.CNAME):  # a CNAME answers every type asked of its name
            sets = zone.groups.get((q.name, rdtype))
            if sets:
                for s in self._pick(sets):
                    # Route 53 writes names without the final dot: they are absolute all the same.
                    response.answer.append(dns.rrset.from_text_list(q.name, s.ttl, dns.rdataclass.IN, rdtype,
                                                                    list(s.values), origin=dns.name.root,
                                                                    relativize=False))
                return response.to_wire()
        # No data: NOERROR when the name exists (or has names below it), NXDOMAIN otherwise.
        exists = any(n == q.name or n.is_subdomain(q.name) for n in zone.names()) or q.name == self.origin
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self._soa(zone))
        return response.to_wire()
