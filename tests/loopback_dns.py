"""A small authoritative DNS server on loopback, for tests and `r53lb demo`.

It serves DNS blocklist zones whose answers the caller sets per name: addresses, TXT,
an error rcode, or silence (the query is dropped, so the client times out). UDP and
TCP on the same port, each in a background thread. Loopback only: it refuses to bind
anywhere else.
"""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Iterable

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.reversename

__all__ = ["LoopbackDNS", "Entry", "rfc5782_name"]


def rfc5782_name(ip: str, zone: str) -> str:
    """The name a DNSBL publishes `ip` under, computed with dnspython's reverse-name code.

    Deliberately independent of r53lb.probes.dnsbl.reverse_name, so tests of one check the other.
    """
    rev = dns.reversename.from_address(ip)
    suffix = dns.reversename.ipv4_reverse_domain if rev.is_subdomain(
        dns.reversename.ipv4_reverse_domain) else dns.reversename.ipv6_reverse_domain
    return rev.relativize(suffix).to_text() + "." + zone.rstrip(".")


@dataclass
class Entry:
    """How the server answers one name."""

    a: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()
    rcode: int | None = None  # answer with this rcode (dns.rcode.SERVFAIL, REFUSED ...)
    drop: bool | tuple[str, ...] = False  # never answer (True, or only these types: ("TXT",))
    truncate: bool = False  # over UDP, answer with TC set and nothing else (forces TCP)
    ptr: tuple[str, ...] = ()  # PTR targets (a reverse zone: FCrDNS tests)
    tlsa: tuple[str, ...] = ()  # TLSA rdata, "3 1 1 <hex>" (DANE tests)


@dataclass
class _Zone:
    name: dns.name.Name
    default: Entry | None = None  # for names without an entry; None: NXDOMAIN
    names: dict[dns.name.Name, Entry] = field(default_factory=dict)


class LoopbackDNS:
    """Authoritative server for a few zones on 127.0.0.1 (or ::1), on a free port.

    Usage::

        with LoopbackDNS() as server:
            server.add_zone("bl.test")          # publishes the RFC 5782 test point
            server.list_ip("bl.test", "192.0.2.1", txt="spam source")
            spec = DnsblCheck(zones=["bl.test"], nameservers=[server.nameserver])
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ttl: int = 60) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{host} is not a loopback address")
        self.host = host
        self.ttl = ttl
        self.ad = False  # set the AD bit on TLSA answers (a validating resolver's "validated")
        self._requested_port = port
        self._zones: dict[dns.name.Name, _Zone] = {}
        self._lock = threading.Lock()
        self._udp: socketserver.BaseServer | None = None
        self._tcp: socketserver.BaseServer | None = None
        self._threads: list[threading.Thread] = []
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []  # (name, type, "udp"|"tcp"), in arrival order

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> "LoopbackDNS":
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server = self

        class Udp(socketserver.ThreadingUDPServer):
            address_family = family
            allow_reuse_address = True
            daemon_threads = True

        class Tcp(socketserver.ThreadingTCPServer):
            address_family = family
            allow_reuse_address = True
            daemon_threads = True

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server._respond(data, "udp")
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class TcpHandler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    head = self.rfile.read(2)
                    if len(head) < 2:
                        return
                    data = self.rfile.read(int.from_bytes(head, "big"))
                    reply = server._respond(data, "tcp")
                    if reply is None:
                        return
                    self.wfile.write(len(reply).to_bytes(2, "big") + reply)

        # TCP first on a free port, then UDP on the same number (retry if UDP's is taken).
        for _ in range(20):
            tcp = Tcp((self.host, self._requested_port), TcpHandler)
            port = tcp.server_address[1]
            try:
                udp = Udp((self.host, port), UdpHandler)
            except OSError:
                tcp.server_close()
                if self._requested_port:
                    raise
                continue
            break
        else:  # pragma: no cover - twenty collisions on loopback
            raise OSError("no free port for both UDP and TCP")
        self._tcp, self._udp, self.port = tcp, udp, port
        for srv in (udp, tcp):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                                 name=f"loopback-dns-{port}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        servers = [srv for srv in (self._udp, self._tcp) if srv is not None]
        # shutdown() waits for the serving thread to notice: stop both at once, not in turn.
        stoppers = [threading.Thread(target=srv.shutdown, daemon=True) for srv in servers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout=2)
        for srv in servers:
            srv.server_close()
        for t in self._threads:
            t.join(timeout=2)
        self._udp = self._tcp = None
        self._threads = []

    def __enter__(self) -> "LoopbackDNS":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def nameserver(self) -> str:
        """This server as a `nameservers:` entry: '127.0.0.1:5353' or '[::1]:5353'."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    # --- content --------------------------------------------------------------------------

    def add_zone(self, zone: str, *, selftest: bool = True, default: Entry | None = None) -> None:
        """Serve `zone`. With `selftest`, publish RFC 5782's test point (127.0.0.2 listed).

        `default` answers every name without its own entry (a zone that drops everything,
        SERVFAILs everything, or lists everything); None means NXDOMAIN.
        """
        name = dns.name.from_text(zone)
        with self._lock:
            self._zones[name] = _Zone(name, default)
        if selftest:
            self.set(rfc5782_name("127.0.0.2", zone), a=("127.0.0.2",),
                     txt=("RFC 5782 test point",))

    def set(self, name: str, *, a: Iterable[str] = (), txt: Iterable[str] = (),
            rcode: int | None = None, drop: bool | Iterable[str] = False,
            truncate: bool = False, ptr: Iterable[str] = (), tlsa: Iterable[str] = ()) -> None:
        """Set how one fully qualified name (inside a served zone) is answered."""
        qname = dns.name.from_text(name)
        dropped = drop if isinstance(drop, bool) else tuple(t.upper() for t in drop)
        entry = Entry(tuple(a), tuple(txt), rcode, dropped, truncate, tuple(ptr), tuple(tlsa))
        with self._lock:
            self._zone_of(qname).names[qname] = entry

    def remove(self, name: str) -> None:
        """Forget a name's entry: it falls back to the zone's default (NXDOMAIN)."""
        qname = dns.name.from_text(name)
        with self._lock:
            self._zone_of(qname).names.pop(qname, None)

    def list_ip(self, zone: str, ip: str, code: str = "127.0.0.2", txt: str | None = None) -> None:
        """List `ip` on `zone` with the answer `code` and an optional TXT reason."""
        self.set(rfc5782_name(ip, zone), a=(code,), txt=(txt,) if txt else ())

    def delist(self, zone: str, ip: str) -> None:
        self.remove(rfc5782_name(ip, zone))

    def count(self, name: str, rdtype: str = "A") -> int:
        """How many queries for `name` of `rdtype` arrived so far."""
        want = dns.name.from_text(name).to_text().lower()
        with self._lock:
            return sum(1 for n, t, _ in self.queries if n == want and t == rdtype)

    def _zone_of(self, qname: dns.name.Name) -> _Zone:
        for zname, zone in self._zones.items():
            if qname.is_subdomain(zname):
                return zone
        raise KeyError(f"{qname} is in no zone this server serves")

    # --- answering ------------------------------------------------------------------------

    def _respond(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None  # garbage: ignore, as a real server may
        if not query.question:
            return None
        q = query.question[0]
        with self._lock:
            self.queries.append((q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype), transport))
            zone = next((z for zn, z in self._zones.items() if q.name.is_subdomain(zn)), None)
            entry = None if zone is None else zone.names.get(q.name, zone.default)
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        if entry is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry.drop is True or (
                isinstance(entry.drop, tuple) and dns.rdatatype.to_text(q.rdtype) in entry.drop):
            return None
        elif entry.rcode is not None:
            response.set_rcode(entry.rcode)
        elif entry.truncate and transport == "udp":
            response.flags |= dns.flags.TC
        elif q.rdtype == dns.rdatatype.A and entry.a:
            response.answer.append(dns.rrset.from_text_list(
                q.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.A, list(entry.a)))
        elif q.rdtype == dns.rdatatype.TLSA and entry.tlsa:
            response.answer.append(dns.rrset.from_text_list(
                q.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.TLSA, list(entry.tlsa)))
            if self.ad:  # as a validating resolver says it: the answer is DNSSEC-validated
                response.flags |= dns.flags.AD
        elif q.rdtype == dns.rdatatype.PTR and entry.ptr:
            response.answer.append(dns.rrset.from_text_list(
                q.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.PTR, [p.rstrip(".") + "." for p in entry.ptr]))
        elif q.rdtype == dns.rdatatype.TXT and entry.txt:
            response.answer.append(dns.rrset.from_text_list(
                q.name, self.ttl, dns.rdataclass.IN, dns.rdatatype.TXT,
                ['"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in entry.txt]))
        # else: the name exists but has no data of this type (NOERROR, empty answer)
        return response.to_wire()
