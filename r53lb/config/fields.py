"""The config's field types: errors, durations, weights, shares, addresses, names, URLs."""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import reprlib
from typing import Annotated, Any

from pydantic import BaseModel, AfterValidator, BeforeValidator, ConfigDict

from ..errors import R53lbError


class ConfigError(R53lbError):
    """A configuration that cannot be used; the message is one line naming the key path.

    `lines` holds every error found (one line each); the message is the first, and says how
    many more there are.
    """

    plain = True

    exit_code = 2  # a config that cannot be used: the usage error of every command

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        more = len(lines) - 1 if lines else 0
        super().__init__(message + (f" (and {more} more error{'s' if more > 1 else ''})" if more else ""))
        self.lines = lines or [message]


# --- scalar types -------------------------------------------------------------------------

SHOWN_CHARS = 80  # a value quoted in an error line is cut to this: the input may be hostile


def show(value: Any) -> str:
    """repr() of a value for an error line: bounded in size and work, whatever the value."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 4
_REPR.maxlevel = 2

_DURATION = re.compile(r"^\s*([-+]?)((?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+)\Z")  # 10s, 1m30s, 1h 5m
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Past a year a duration is a typo, and far past it the event loop's timers overflow.
MAX_DURATION = 365 * 86400.0


def parse_duration(value: Any) -> float:
    """'250ms', '10s', '5m', '1h', '30d', '1m30s' -> seconds (bare numbers are seconds); 0 to 365d."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer too big for a float
            seconds = math.inf
    elif isinstance(value, str):
        m = _DURATION.match(value) if len(value) <= 1000 else None
        if m:
            # 400 digits: inf, caught below
            seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(m.group(2))) * (-1 if m.group(1) == "-" else 1)
    if seconds is None:
        raise ValueError(f"{show(value)} is not a duration (use 250ms, 10s, 5m, 1m30s, 1h, 30d)")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{show(value)} is not a duration (not a finite number)")
    if seconds < 0:
        raise ValueError(f"{show(value)} is negative (a duration is 0s or more)")
    if seconds > MAX_DURATION:
        raise ValueError(f"{show(value)} is above 365d")
    return seconds


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{show(value)} must be above 0s")
    return seconds


# Intervals, timeouts and heartbeats: a zero would spin a loop or time out at once.
Duration = Annotated[float, BeforeValidator(_positive_duration)]
# Delays where 0s means "off" or "at once" (slow_start, preempt_delay).
DurationOrZero = Annotated[float, BeforeValidator(parse_duration)]


def _weight(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{show(value)} is not a whole number")
    if value > 255:
        raise ValueError(f"{show(value)} is above 255")
    if value < 0:
        raise ValueError(f"{show(value)} is below 0")
    return value


Weight = Annotated[int, BeforeValidator(_weight)]


def _percent(value: Any) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"{show(value)} is not a percentage") from None
        if not 0 <= pct <= 100:  # also refuses nan% and inf%
            raise ValueError(f"{show(value)} is not between 0% and 100%")
        return pct / 100.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"{show(value)} is not a percentage (use 5%, 50%)")


Share = Annotated[float, BeforeValidator(_percent)]

# \Z, not $: `$` also matches before a final newline, which would let "mx.example.com\n" in.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?\Z)(?:(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\.?\Z"
)
# RFC 5321's Domain for EHLO: letters, digits and hyphens only, no trailing dot.
_EHLO_DOMAIN = re.compile(r"(?=.{1,253}\Z)(?:(?!-)[A-Za-z0-9-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def dns_name(v: str) -> str:
    """A DNS name as a config key holds it: lowercase, no trailing dot."""
    v = v.rstrip(".").lower()
    if not _HOSTNAME.match(v):
        raise ValueError(f"{show(v)} is not a DNS name")
    return v


DnsName = Annotated[str, AfterValidator(dns_name)]


def is_ip(value: str) -> bool:
    """An IP address Route 53 can publish: IPv4 or IPv6, without a zone (`%eth0`)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return "%" not in value


def _address(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{show(value)} is not an address")
    if "%" in value and is_ip(value.split("%", 1)[0]):
        raise ValueError(f"{show(value)} is a scoped address (%zone): Route 53 publishes no scope, "
                         "and one interface's link-local address means nothing to others")
    try:  # parsed once: a 10,000-node config has 10,000 of these
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    # A dotted quad that failed IP parsing is a typo, not a hostname.
    if re.fullmatch(r"[\d.]+", value) or not _HOSTNAME.match(value):
        raise ValueError(f"{show(value)} is neither an IP address nor a hostname")
    return value.rstrip(".").lower()


Address = Annotated[str, BeforeValidator(_address)]


def _helo(value: Any) -> Any:
    """The EHLO argument: a host name, or an address literal ([192.0.2.1], [IPv6:2001:db8::1])."""
    if isinstance(value, str):
        literal = re.fullmatch(r"\[(IPv6:)?([0-9A-Fa-f:.]+)\]", value, re.IGNORECASE)
        if literal and is_ip(literal.group(2)) and bool(literal.group(1)) == (":" in literal.group(2)):
            return value
        if _EHLO_DOMAIN.fullmatch(value):
            return value
    raise ValueError(f"{show(value)} is not a host name for EHLO "
                     "(letters, digits, '-' and dots, such as probe.example.com, or [192.0.2.1])")


HeloName = Annotated[str, BeforeValidator(_helo)]


def _name(what: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            if "/" in value:
                raise ValueError(f"{show(value)}: a {what} contains no '/' (commands take POOL/NODE)")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise ValueError(f"{show(value)}: a {what} contains no control characters")
        return value

    return BeforeValidator(check)


def _http_url(value: Any) -> Any:
    """An absolute http(s) URL with a host, and nothing that could split a request line."""
    if isinstance(value, str):
        if not re.match(r"^https?://[^/?#\s]", value, re.IGNORECASE):
            raise ValueError(f"{show(value)} must start with http:// or https:// and name a host")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError(f"{show(value)} contains a space or a control character")
    return value


HttpUrl = Annotated[str, BeforeValidator(_http_url)]


def _headers(value: Any) -> Any:
    """Header names are tokens; values carry no CR/LF (a header injection otherwise)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", k):
                raise ValueError(f"{show(k)} is not a header name")
            if isinstance(v, str) and any(c in v for c in "\r\n\0"):
                raise ValueError(f"header {show(k)}: the value {show(v)} contains CR, LF or NUL")
    return value


Headers = Annotated[dict[str, str], BeforeValidator(_headers)]


def is_zone_id(zone: str) -> bool:
    return re.fullmatch(r"Z[A-Z0-9]+", zone) is not None


@functools.lru_cache(maxsize=65536)  # asked per node and per cycle: parse each address once
def record_type_of(address: str) -> str:
    """The record type that publishes an address: A, AAAA, or CNAME for a hostname."""
    if not is_ip(address):
        return "CNAME"
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def split_hostport(value: str, default_port: int) -> tuple[str, int]:
    """'127.0.0.1:5353' / '[::1]:5353' / '::1' / '10.0.0.1' -> (host, port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", value)
    if m:
        host, port = m.group(1), int(m.group(2) or default_port)
    elif value.count(":") == 1:
        host, _, p = value.partition(":")
        if not p.isdigit():
            raise ValueError(f"{show(value)} has a bad port")
        port = int(p)
    else:
        host, port = value, default_port
    if not is_ip(host):
        raise ValueError(f"{show(value)} is not an IP address (with an optional :port)")
    if not 1 <= port <= 65535:
        raise ValueError(f"{show(value)} has a port outside 1-65535")
    return host, port
