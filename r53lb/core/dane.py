"""DANE for SMTP (RFC 7672): does a node's certificate chain match the TLSA records of its MX name? Pure: no I/O.

What a DANE-validating sender (Postfix `smtp_tls_security_level = dane`, Exim) does, for
the two usages RFC 7672 allows for SMTP:

- DANE-EE (usage 3): the server's own certificate (selector 0) or its public key (selector
  1) matches; expiry and names are not looked at (RFC 7672 section 3.1.1).
- DANE-TA (usage 2): a certificate of the presented chain matches, the server's certificate
  chains to it by signatures, every certificate up to it is within its validity, and the
  server's certificate names the MX host (RFC 7672 section 3.1.2, RFC 6125 name rules).

Usages 0 and 1 (PKIX-TA, PKIX-EE) are unusable for SMTP (section 3.1.3), as are unknown
selectors and matching types: a TLSA set with no usable record is treated as none (the
sender falls back to unauthenticated TLS, it does not defer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

if TYPE_CHECKING:  # cryptography is imported when a chain is judged: the planner imports this module
    from cryptography import x509

__all__ = ["DANE_MISMATCH", "Tlsa", "DaneVerdict", "parse_tlsa", "tlsa_name", "spki_sha256", "evaluate"]

DANE_MISMATCH = "dane: no TLSA record of"  # how a mismatch's reason begins (the planner's alert keys on it)

DaneState = Literal["match", "mismatch", "none", "unusable", "unknown"]
MAX_CHAIN = 10  # certificates looked at from one server: a chain longer than this is refused


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        data = self.data.hex()
        return f"{self.usage} {self.selector} {self.mtype} {data if len(data) <= 16 else data[:16] + '…'}"

    @property
    def usable(self) -> bool:
        return self.usage in (2, 3) and self.selector in (0, 1) and self.mtype in (0, 1, 2)


@dataclass(frozen=True)
class DaneVerdict:
    """One node's DANE state: `match`, `mismatch` (out), `none`/`unusable` (passes), `unknown` (weight untouched)."""

    state: DaneState
    detail: str
    spki_sha256: str = ""  # the node's key, as `3 1 1` would publish it

    @property
    def ok(self) -> bool:
        return self.state != "mismatch"


def tlsa_name(record: str, port: int = 25) -> str:
    """`_25._tcp.mx.example.com`: where a sender looks up the TLSA records of an MX host."""
    return f"_{port}._tcp.{record.rstrip('.')}"


def parse_tlsa(text: str) -> Tlsa:
    """`3 1 1 <hex>` as Route 53 or a zone file writes it; ValueError with the reason when malformed."""
    parts = text.split()
    if len(parts) < 4:
        raise ValueError(f"TLSA {text[:60]!r}: want 'usage selector matching-type data'")
    try:
        usage, selector, mtype = (int(p) for p in parts[:3])
    except ValueError:
        raise ValueError(f"TLSA {text[:60]!r}: usage, selector and matching type are numbers") from None
    if not all(0 <= n <= 255 for n in (usage, selector, mtype)):
        raise ValueError(f"TLSA {text[:60]!r}: usage, selector and matching type are 0-255")
    hexdata = "".join(parts[3:])
    try:
        data = bytes.fromhex(hexdata)
    except ValueError:
        raise ValueError(f"TLSA {text[:60]!r}: the data is not hexadecimal") from None
    want = {1: 32, 2: 64}.get(mtype)
    if want is not None and len(data) != want:
        raise ValueError(f"TLSA {text[:60]!r}: matching type {mtype} wants {want} bytes, not {len(data)}")
    if not data:
        raise ValueError(f"TLSA {text[:60]!r}: no data")
    return Tlsa(usage, selector, mtype, data)


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if selector == 0:
        return cert.public_bytes(Encoding.DER)
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: int) -> bytes:
    if mtype == 1:
        return hashlib.sha256(data).digest()
    if mtype == 2:
        return hashlib.sha512(data).digest()
    return data


def _matches(cert: x509.Certificate, rec: Tlsa) -> bool:
    return _digest(_selected(cert, rec.selector), rec.mtype) == rec.data


def spki_sha256(der: bytes) -> str:
    """The SHA-256 of a certificate's SubjectPublicKeyInfo, hex: the data of a `3 1 1` record for it."""
    from cryptography import x509

    return hashlib.sha256(_selected(x509.load_der_x509_certificate(der), 1)).hexdigest()


def _name_matches(pattern: str, name: str) -> bool:
    """RFC 6125: exact, or a `*` that is the whole leftmost label and stands for exactly one label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern == name:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:] and rest.count(".") >= 1
    return False


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for: its subjectAltName, else its subject's common name."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, a name mismatch, an unsupported key type: not issued by it
        return False
    return True


def _ta_path(chain: Sequence[x509.Certificate], ta: int, now: datetime) -> str | None:
    """None when the leaf chains by signatures to chain[ta], every link valid at `now`; else why not."""
    current, path = chain[0], [chain[0]]
    for _ in range(MAX_CHAIN):
        if current is chain[ta]:
            break
        nxt = next((c for c in chain[1:] if c not in path and c.subject == current.issuer and _issued_by(current, c)), None)
        if nxt is None:
            return "the chain does not lead to the matched trust anchor"
        path.append(nxt)
        current = nxt
    else:
        return "the chain is too long"
    for c in path:
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            when = "expired" if now > c.not_valid_after_utc else "not yet valid"
            return f"certificate {c.subject.rfc4514_string()[:60]} {when}"
    return None


def evaluate(chain_der: Sequence[bytes], records: Iterable[str], names: Sequence[str], rrset: str,
             now: datetime) -> DaneVerdict:
    """The DANE verdict for one node: its presented chain (leaf first) against the TLSA set `rrset`.

    `records` are the set's values as text; `names` the reference identifiers for DANE-TA
    (the MX host name, then the TLSA base domain). A malformed record is unusable, as a
    sender treats it; when no record is usable the node passes and the detail says why.
    """
    from cryptography import x509

    recs, bad = [], []
    for text in records:
        try:
            recs.append(parse_tlsa(text))
        except ValueError as e:
            bad.append(str(e))
    if not recs and not bad:
        return DaneVerdict("none", f"no TLSA published at {rrset}: DANE not in use, passes")
    usable = [r for r in recs if r.usable]
    if not usable:
        why = "; ".join(bad[:2]) or ", ".join(f"usage {r.usage}" for r in recs[:3])
        return DaneVerdict("unusable", f"no usable TLSA record at {rrset} ({why}): senders fall back to unauthenticated TLS")
    if not chain_der:
        return DaneVerdict("unknown", "no certificate chain seen (no TLS session)")
    if len(chain_der) > MAX_CHAIN:
        chain_der = chain_der[:MAX_CHAIN]
    try:
        chain = [x509.load_der_x509_certificate(d) for d in chain_der]
    except ValueError as e:
        return DaneVerdict("mismatch", f"dane: the server's certificate cannot be parsed: {str(e)[:80]}")
    spki = hashlib.sha256(_selected(chain[0], 1)).hexdigest()
    why_not: list[str] = []
    for rec in usable:
        if rec.usage == 3:
            if _matches(chain[0], rec):
                return DaneVerdict("match", f"dane: {rrset} {rec} matches the server's "
                                            f"{'key' if rec.selector else 'certificate'} (DANE-EE)", spki)
            continue
        for i, cert in enumerate(chain):
            if not _matches(cert, rec):
                continue
            problem = _ta_path(chain, i, now)
            if problem is None:
                names_ok = [n for n in names if any(_name_matches(p, n) for p in cert_names(chain[0]))]
                if names_ok:
                    return DaneVerdict("match", f"dane: {rrset} {rec} matches the trust anchor at depth {i}, "
                                                f"certificate for {names_ok[0]} (DANE-TA)", spki)
                problem = f"the certificate is not for {names[0] if names else '?'} (names: {', '.join(cert_names(chain[0])[:3]) or 'none'})"
            why_not.append(f"{rec}: {problem}")
    extra = f" ({'; '.join(why_not[:2])})" if why_not else ""
    return DaneVerdict("mismatch", f"{DANE_MISMATCH} {rrset} matches: the server's SPKI sha256 is {spki}{extra}", spki)
