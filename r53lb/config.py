"""The configuration contract: YAML validated by pydantic, errors that name the key path."""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
import reprlib
import socket
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import R53lbError

__all__ = [
    "ConfigError",
    "Config",
    "Pool",
    "Node",
    "Check",
    "SmtpCheck",
    "HttpCheck",
    "TcpCheck",
    "DnsblCheck",
    "AgentCheck",
    "PrometheusCheck",
    "load",
    "loads",
    "parse_duration",
    "record_type_of",
]


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
    if is_ip(value):
        return str(ipaddress.ip_address(value))
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


# --- checks -------------------------------------------------------------------------------


def _mailbox(value: Any, null_ok: bool) -> str:
    """'postmaster@example.com' or '<postmaster@example.com>' -> 'postmaster@example.com'; '<>' kept."""
    if not isinstance(value, str):
        raise ValueError(f"{show(value)} is not a mail address")
    v = value.strip()
    if v in ("<>", "") and null_ok:
        return "<>"
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1]
    # No spaces, brackets or line breaks: the address goes into an SMTP command line as it is.
    if not re.fullmatch(r"[^\s<>@\"\\]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*", v) or not v.isascii():
        extra = ', or "<>" for the null sender' if null_ok else ""
        raise ValueError(f"{show(value)} is not a mail address (local@domain{extra})")
    return v


class SmtpEnvelope(_Model):
    """MAIL FROM and RCPT TO after EHLO, then RSET and QUIT: never DATA, nothing is delivered."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    sender: str = Field("<>", alias="from")
    to: str
    expect: list[int] = Field(default_factory=lambda: [250, 251], min_length=1)

    @field_validator("sender", mode="before")
    @classmethod
    def _sender(cls, v: Any) -> str:
        return _mailbox(v, null_ok=True)

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, v: Any) -> str:
        return _mailbox(v, null_ok=False)

    @field_validator("expect")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        for code in v:
            if not 200 <= code <= 299:
                raise ValueError(f"{show(code)} is not a positive SMTP reply code (2xx)")
        return v


class DaneOptions(_Model):
    """`dane: true` on an smtp check, or these options: RFC 7672 against the pool record's TLSA set."""

    refresh: Duration = 60.0  # how long the TLSA set read from Route 53 is used before it is read again
    on_mismatch: Literal["out", "warn"] = "out"  # warn: the node stays in, the mismatch is logged and shown
    # A validating resolver (host[:port]) to read the TLSA set through instead of Route 53; its
    # answers count only with the AD bit (DNSSEC-validated), as a DANE sender requires.
    resolver: list[str] = Field(default_factory=list)


def _dane(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value


class SmtpCheck(_Model):
    port: int = Field(25, ge=1, le=65535)
    tls: bool = False  # implicit TLS (port 465)
    starttls: bool = False
    helo: HeloName | None = None
    verify: bool = True
    ca_file: Path | None = None
    server_name: str | None = None
    cert_min_days: int | None = Field(None, ge=0)
    envelope: SmtpEnvelope | None = None
    dane: Annotated[DaneOptions | None, BeforeValidator(_dane)] = None
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _tls_modes(self) -> "SmtpCheck":
        if self.tls and self.starttls:
            raise ValueError("tls (implicit TLS) and starttls cannot both be true")
        if self.dane is not None and not (self.tls or self.starttls):
            raise ValueError("dane needs a TLS session: set starttls: true (or tls: true)")
        return self


StatusSpec = int | str


class HttpCheck(_Model):
    url: HttpUrl
    method: str = Field("GET", pattern=r"^[A-Z]{1,16}$")
    host: str | None = None
    headers: Headers = Field(default_factory=dict)
    expect_status: list[StatusSpec] = Field(default_factory=lambda: ["200-399"])
    expect_body: str | None = None
    verify: bool = True
    ca_file: Path | None = None
    follow_redirects: bool = False
    # Redirects are followed only while they stay on the node (the probe URL's scheme, host
    # and port) or go to one of these URL prefixes; anywhere else the probe would judge
    # another server, so that is a failure naming where it was sent.
    allow_redirects_to: list[str] = Field(default_factory=list)
    timeout: Duration | None = None

    @field_validator("allow_redirects_to")
    @classmethod
    def _redirect_targets(cls, v: list[str]) -> list[str]:
        for item in v:
            if not re.match(r"^https?://[^/?#\s]+", item):
                raise ValueError(f"{show(item)} must be a URL prefix starting with http:// or https://")
        return v

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, v: list[StatusSpec]) -> list[StatusSpec]:
        for item in v:
            status_range(item)
        return v

    @field_validator("expect_body")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"{show(v)} is not a regular expression: {e}") from None
        return v

    def status_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in map(status_range, self.expect_status))


def status_range(item: StatusSpec) -> tuple[int, int]:
    """200 -> (200, 200); '200-399' -> (200, 399); '2xx' -> (200, 299)."""
    if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
        return item, item
    if isinstance(item, str):
        s = item.strip().lower()
        if re.fullmatch(r"[1-5]xx", s):
            base = int(s[0]) * 100
            return base, base + 99
        m = re.fullmatch(r"(\d{3})\s*-\s*(\d{3})", s)
        if m and 100 <= int(m.group(1)) <= int(m.group(2)) <= 599:
            return int(m.group(1)), int(m.group(2))
        if re.fullmatch(r"\d{3}", s) and 100 <= int(s) <= 599:
            return int(s), int(s)
    raise ValueError(f"{show(item)} is not a status, a range (200-299) or a class (2xx)")


class TcpCheck(_Model):
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None


class DnsblCheck(_Model):
    zones: list[str] = Field(min_length=1)
    ip: str | None = None
    interval: DurationOrZero = 600.0  # how long a verdict is reused; 0s: look up at every probe
    nameservers: list[str] = Field(default_factory=list)
    timeout: Duration | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None and not is_ip(v):
            raise ValueError(f"{show(v)} is not an IP address")
        return v

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, v: list[str]) -> list[str]:
        for ns in v:
            split_hostport(ns, 53)
        return v


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


class AgentCheck(_Model):
    """HAProxy's agent-check: the node reports its own share and state on a TCP port."""

    port: int = Field(ge=1, le=65535)
    send: str | None = None  # HAProxy's agent-send: written verbatim on connect (add "\n" if the agent wants a line)
    interval: Duration | None = None  # default: the pool's interval
    timeout: Duration | None = None
    name: str | None = Field(None, min_length=1, max_length=64)  # how gates and reasons refer to it

    @field_validator("send")
    @classmethod
    def _send(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode("utf-8")) > 1024:
            raise ValueError("is longer than 1024 bytes")
        return v


class BasicAuthEnv(_Model):
    """Basic auth whose username and password come from the environment, never from the file."""

    username_env: str = Field(min_length=1)
    password_env: str = Field(min_length=1)


class PromScale(_Model):
    """A linear map from a metric value to a share of weight, clamped at both ends."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: tuple[float, float] = Field(alias="from")
    to: tuple[Share, Share]

    @model_validator(mode="after")
    def _span(self) -> "PromScale":
        if any(math.isnan(v) or math.isinf(v) for v in self.from_):
            raise ValueError("from: values must be finite numbers")
        if self.from_[0] == self.from_[1]:
            raise ValueError(f"from: {list(self.from_)} spans nothing (give two different values)")
        return self


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class PrometheusCheck(_Model):
    """A PromQL instant query per node; the value is judged by quarantine bounds and scaled to a share."""

    url: HttpUrl  # the server's base URL; the check calls <url>/api/v1/query
    query: str = Field(min_length=1)
    quarantine_above: float | None = None
    quarantine_below: float | None = None
    scale: PromScale | None = None
    interval: Duration = 60.0
    timeout: Duration | None = None
    name: str | None = Field(None, min_length=1, max_length=64)
    bearer_token_env: str | None = None
    basic_auth: BasicAuthEnv | None = None
    verify: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        m = re.match(r"^https?://([^/?#]*)", v)
        if not m or not m.group(1):
            raise ValueError(f"{show(v)} must start with http:// or https:// and name a host")
        if "@" in m.group(1):
            # A password in the URL would end up in logs and reasons: it belongs in the environment.
            raise ValueError("must not carry credentials; use basic_auth or bearer_token_env")
        return v.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{show(str(v))} is not a file (the CA bundle to verify the Prometheus server with)")
        return v

    @field_validator("bearer_token_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(f"{show(v)} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "PrometheusCheck":
        for key in ("quarantine_above", "quarantine_below"):
            v = getattr(self, key)
            if v is not None and math.isnan(v):
                raise ValueError(f"{key}: must be a number")
        if (self.quarantine_above is not None and self.quarantine_below is not None
                and self.quarantine_below > self.quarantine_above):
            raise ValueError(
                f"quarantine_below ({self.quarantine_below:g}) is above quarantine_above "
                f"({self.quarantine_above:g}): no value would pass")
        if self.bearer_token_env and self.basic_auth:
            raise ValueError("give either bearer_token_env or basic_auth, not both")
        if self.basic_auth is not None:
            for key in ("username_env", "password_env"):
                if not _ENV_NAME.match(getattr(self.basic_auth, key)):
                    raise ValueError(f"basic_auth.{key}: {show(getattr(self.basic_auth, key))} "
                                     "is not an environment variable name")
        return self

    @property
    def label(self) -> str:
        """How reasons and metrics name this rule: `name`, else the query."""
        return self.name or self.query


CHECK_KINDS = ("smtp", "http", "tcp", "dnsbl", "agent", "prometheus")
# Checks that are signals rather than liveness: when they cannot be read the result is
# unknown (never a failure), and unknown never changes a weight.
SIGNAL_KINDS = ("dnsbl", "agent", "prometheus")


class Check(_Model):
    """One entry of a `checks:` list: a mapping with exactly one key naming the kind."""

    smtp: SmtpCheck | None = None
    http: HttpCheck | None = None
    tcp: TcpCheck | None = None
    dnsbl: DnsblCheck | None = None
    agent: AgentCheck | None = None
    prometheus: PrometheusCheck | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if isinstance(data, str) and data in ("smtp",):
            return {data: {}}
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError("a check is a mapping with exactly one of: " + ", ".join(CHECK_KINDS))
        (kind, body), = data.items()
        if kind not in CHECK_KINDS:
            raise ValueError(f"unknown check {show(kind)} (known: {', '.join(CHECK_KINDS)})")
        return {kind: {} if body is None else body}

    @property
    def kind(self) -> str:
        return next(k for k in CHECK_KINDS if getattr(self, k) is not None)

    @property
    def spec(self) -> SmtpCheck | HttpCheck | TcpCheck | DnsblCheck | AgentCheck | PrometheusCheck:
        return getattr(self, self.kind)


# --- warm-up ------------------------------------------------------------------------------

WARMUP_PRESETS: dict[str, dict[str, str]] = {
    # Common IP warm-up curves for mail: roughly doubling volume every few days.
    "7d": {"0d": "10%", "2d": "25%", "4d": "50%", "7d": "100%"},
    "14d": {"0d": "5%", "3d": "20%", "7d": "50%", "14d": "100%"},
    "30d": {"0d": "2%", "5d": "10%", "10d": "25%", "20d": "60%", "30d": "100%"},
    "45d": {"0d": "1%", "7d": "5%", "14d": "15%", "28d": "50%", "45d": "100%"},
}


class SendingGates(_Model):
    """`warmup.require`: a new sending IP's credentials, checked before warm-up gives it any weight."""

    fcrdns: bool = True  # the address's PTR name resolves back to it
    spf: str | None = None  # a sender domain whose SPF policy must authorise the address
    nameservers: list[str] = Field(default_factory=list)  # default: the system resolver
    interval: Duration = 3600.0  # DNS facts, not health: re-checked slowly
    timeout: Duration | None = None

    @field_validator("spf")
    @classmethod
    def _spf(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.rstrip(".").lower()
        if not _HOSTNAME.match(v):
            raise ValueError(f"{show(v)} is not a DNS name")
        return v


class Warmup(_Model):
    start: datetime
    schedule: tuple[tuple[float, float], ...] = ()
    preset: str | None = None
    # Gates: while one is closed the schedule stands still. `reputation` (listed on a
    # blocklist) or the `name` of one of the node's agent/prometheus checks (failing).
    hold_when: tuple[str, ...] = ()
    require: SendingGates | None = None  # FCrDNS and SPF: until they hold, the node is held at 0

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", v):
            # The YAML loader hands an impossible date (2026-13-45) over as a string.
            try:
                y, m, d = map(int, v.split("-"))
                return datetime(y, m, d, tzinfo=timezone.utc)
            except ValueError as e:
                raise ValueError(f"{show(v)} is not a date ({e})") from None
        return v

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        # Far-off years overflow once the schedule's offsets are added to them.
        if not 1970 <= v.year <= 2999:
            raise ValueError(f"{show(v.isoformat())}: give a year between 1970 and 2999")
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v: Any) -> Any:
        if isinstance(v, dict):
            points = sorted((parse_duration(k), _percent(s)) for k, s in v.items())
            return tuple(points)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "Warmup":
        if self.preset is not None:
            if self.schedule:
                raise ValueError("give either schedule or preset, not both")
            if self.preset not in WARMUP_PRESETS:
                raise ValueError(
                    f"unknown preset {show(self.preset)} (known: {', '.join(WARMUP_PRESETS)})"
                )
            points = tuple(
                sorted((parse_duration(k), _percent(s)) for k, s in WARMUP_PRESETS[self.preset].items())
            )
            object.__setattr__(self, "schedule", points)
        if not self.schedule:
            raise ValueError("a warmup needs a schedule or a preset")
        shares = [s for _, s in self.schedule]
        if shares != sorted(shares):
            raise ValueError("warmup shares must not decrease over time")
        if shares[-1] < 1.0:
            raise ValueError("a warmup schedule must end at 100%")
        return self


# --- nodes and pools ----------------------------------------------------------------------


class Node(_Model):
    id: Annotated[str, _name("node id")] = Field(min_length=1, max_length=128)
    address: tuple[Address, ...]
    probe_address: Address | None = None
    weight: Weight = 1
    warmup: Warmup | None = None
    checks: tuple[Check, ...] | None = None

    @field_validator("address", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, str):
            return (v,)
        if isinstance(v, list) and not v:
            raise ValueError("a node needs at least one address")
        return v

    @model_validator(mode="after")
    def _families(self) -> "Node":
        kinds = [record_type_of(a) for a in self.address]
        if len(set(kinds)) != len(kinds):
            raise ValueError(
                "address: a node has at most one address per family (one IPv4, one IPv6) "
                "or a single hostname"
            )
        if "CNAME" in kinds and len(kinds) > 1:
            raise ValueError("address: a hostname (CNAME) cannot be mixed with IP addresses")
        return self

    @property
    def target(self) -> str:
        """The address probes connect to."""
        return self.probe_address or self.address[0]

    def addresses_by_type(self) -> dict[str, str]:
        return {record_type_of(a): a for a in self.address}


class Quarantine(_Model):
    listed_on_n: int = Field(1, ge=1)


def _quarantine(value: Any) -> Any:
    if value is None or value == "listed_on_any":
        return {"listed_on_n": 1}
    if isinstance(value, str):
        m = re.fullmatch(r"listed_on_n\s*:\s*(\d+)", value.strip())
        if m:
            return {"listed_on_n": int(m.group(1))}
        raise ValueError(f"{show(value)} is not listed_on_any or listed_on_n: N")
    return value


def _probe_workers(value: Any) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    if isinstance(value, str) and value.isdigit() and 1 <= int(value) <= 64:
        return int(value)
    raise ValueError(f"{show(value)} is neither auto nor a number of processes from 1 to 64")


class Tuning(_Model):
    """Probe timing, set in `defaults` and overridable per pool."""

    interval: Duration = 10.0
    fastinter: Duration = 2.0
    timeout: Duration = 10.0
    rise: int = Field(3, ge=1, le=100)
    fall: int = Field(3, ge=1, le=100)
    helo: HeloName | None = None
    concurrency: int = Field(512, ge=1, le=100_000)
    # Processes that probe (`r53lb run`): this one and probe_workers - 1 workers; `auto`: one per
    # 2,500 probes/s asked, at most one per core (probes/workers.py).
    probe_workers: Annotated[int | str, BeforeValidator(_probe_workers)] = "auto"


class MtaSts(_Model):
    """`mta_sts` on a pool: the domain's MTA-STS policy (RFC 8461) against the pool's record and nodes."""

    domain: str = Field(min_length=1)
    nameservers: list[str] = Field(default_factory=list)  # for the `_mta-sts` TXT; default: the system resolver
    # Where to fetch the policy instead of mta-sts.<domain>:443 (host:port; the TLS name stays mta-sts.<domain>).
    policy_address: str | None = None
    ca_file: Path | None = None  # trust for the policy server and the nodes' certificates; default: system CAs
    port: int = Field(25, ge=1, le=65535)  # the nodes' SMTP port whose certificate a sender sees
    interval: Duration = 3600.0  # how often the TXT id and each node's certificate are checked
    timeout: Duration | None = None

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        v = v.rstrip(".").lower()
        if not _HOSTNAME.match(v):
            raise ValueError(f"{show(v)} is not a DNS name")
        return v


class TlsRpt(_Model):
    """`tlsrpt` on a pool: senders' TLS-RPT reports (RFC 8460) in a directory, failures judged per node."""

    directory: Path
    domain: str | None = None  # the policy-domain the reports are about; default: every policy in them
    window: Duration = 7 * 86400.0  # reports whose date range ends within this long ago
    threshold: Annotated[float, BeforeValidator(_percent)] = 0.05  # a node's failure share above this ...
    min_count: int = Field(10, ge=1)  # ... with at least this many failed sessions
    action: Literal["out", "alert"] = "out"  # alert: the node stays in, an alert says why
    interval: Duration = 300.0  # how often the directory is read

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.rstrip(".").lower()
        if not _HOSTNAME.match(v):
            raise ValueError(f"{show(v)} is not a DNS name")
        return v


class Pool(_Model):
    name: Annotated[str, _name("pool name")] = Field(min_length=1, max_length=128)
    zone: str = Field(min_length=1)
    record: str = Field(min_length=1)
    type: Literal["A", "AAAA", "CNAME"] = "A"
    ttl: int = Field(60, ge=0, le=2147483647)
    mode: Literal["weighted", "failover"] = "weighted"
    min_in_service: int = Field(1, ge=0)
    max_drain_per_cycle: int | str = "50%"
    slow_start: DurationOrZero = 0.0  # 0s: off
    preempt: bool = True
    preempt_delay: DurationOrZero = 0.0  # 0s: fail back at once
    quarantine: Annotated[Quarantine, BeforeValidator(_quarantine)] = Quarantine()
    mta_sts: MtaSts | None = None
    tlsrpt: TlsRpt | None = None
    checks: tuple[Check, ...] = ()
    nodes: tuple[Node, ...] = Field(min_length=1)
    # Per-pool overrides of `defaults` (None: inherit).
    interval: Duration | None = None
    fastinter: Duration | None = None
    timeout: Duration | None = None
    rise: int | None = Field(None, ge=1, le=100)
    fall: int | None = Field(None, ge=1, le=100)
    helo: HeloName | None = None

    # Filled in by Config from `defaults`.
    tuning: Tuning = Tuning()

    @field_validator("record")
    @classmethod
    def _record(cls, v: str) -> str:
        v = v.rstrip(".").lower()
        # `*` is a wildcard only as the whole leftmost label; elsewhere Route 53 takes it literally.
        bare = v[2:] if v.startswith("*.") else v
        if not _HOSTNAME.match(bare):
            raise ValueError(f"{show(v)} is not a DNS name (a `*` only as the whole first label: *.example.com)")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        if re.fullmatch(r"Z[A-Z0-9]+", v):
            return v
        if not _HOSTNAME.match(v):
            raise ValueError(f"{show(v)} is neither a hosted zone id (Z...) nor a zone name")
        return v.rstrip(".").lower()

    @field_validator("max_drain_per_cycle")
    @classmethod
    def _max_drain(cls, v: int | str) -> int | str:
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"{v} is below 1 (a pool must be able to drain a node)")
            return v
        _percent(v)
        return v

    @model_validator(mode="after")
    def _nodes(self) -> "Pool":
        if not is_zone_id(self.zone) and self.record != self.zone and not self.record.endswith("." + self.zone):
            raise ValueError(f"record: {show(self.record)} is not in the zone {show(self.zone)}")
        if self.min_in_service > len(self.nodes):
            raise ValueError(
                f"min_in_service: {self.min_in_service} is above the pool's {len(self.nodes)} node(s): "
                "the pool would be in panic for good"
            )
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.id in seen:
                raise ValueError(f"nodes[{i}].id: {show(node.id)} appears twice in pool {show(self.name)}")
            seen.add(node.id)
            types = set(node.addresses_by_type())
            if self.type == "CNAME" and types != {"CNAME"}:
                raise ValueError(f"nodes[{i}].address: a CNAME pool lists hostnames, not IPs")
            if self.type != "CNAME" and "CNAME" in types:
                raise ValueError(
                    f"nodes[{i}].address: {show(node.address[0])} is a hostname; "
                    f"an {self.type} pool lists IP addresses"
                )
            # The pool's type names the family every node publishes; the other family of a
            # dual-stack node is published beside it.
            if self.type == "A" and "A" not in types:
                raise ValueError(
                    f"nodes[{i}].address: {show(node.address[0])} is IPv6; an A pool needs an IPv4 address "
                    "for every node (dual-stack: [192.0.2.10, '2001:db8::10']), or type: AAAA"
                )
            if self.type == "AAAA" and "AAAA" not in types:
                raise ValueError(
                    f"nodes[{i}].address: {show(node.address[0])} is IPv4; an AAAA pool needs an IPv6 address "
                    "for every node (dual-stack: [192.0.2.10, '2001:db8::10']), or type: A"
                )
            if not node.checks and not self.checks:
                raise ValueError(f"nodes[{i}].checks: node {show(node.id)} has no checks (none on the pool either)")
            if node.warmup is not None and node.warmup.hold_when:
                checks = self.checks_for(node)
                known = (["reputation"] if any(c.kind == "dnsbl" for c in checks) else []) + [
                    c.spec.name for c in checks if c.kind in ("agent", "prometheus") and c.spec.name]
                for j, gate in enumerate(node.warmup.hold_when):
                    if gate not in known:
                        why = ("needs a dnsbl check on the node" if gate == "reputation"
                               else "names no agent or prometheus check of the node (give the check a `name`)")
                        raise ValueError(f"nodes[{i}].warmup.hold_when[{j}]: {show(gate)} {why}"
                                         f" (known: {', '.join(known) or 'none'})")
        return self

    def max_drain(self) -> int:
        """How many nodes may be newly drained in one cycle (never less than 1)."""
        v = self.max_drain_per_cycle
        if isinstance(v, int):
            return v
        return max(1, math.floor(_percent(v) * len(self.nodes)))

    def checks_for(self, node: Node) -> tuple[Check, ...]:
        return node.checks if node.checks else self.checks

    def record_types(self) -> list[str]:
        """Every record type this pool's nodes are published under (A and AAAA for dual-stack)."""
        order = ("A", "AAAA", "CNAME")
        found = {t for n in self.nodes for t in n.addresses_by_type()}
        return [t for t in order if t in found]

    def node(self, node_id: str) -> Node | None:
        return self._nodes_by_id.get(node_id)

    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}


class AwsConfig(_Model):
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
    endpoint_url: HttpUrl | None = None
    profile: str | None = None


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise ValueError(f"{show(value)} contains a NUL byte")
    return value


class StateConfig(_Model):
    path: Annotated[Path, BeforeValidator(_no_nul)] | None = None

    def resolved_path(self) -> Path:
        if self.path is not None:
            return Path(os.path.expanduser(str(self.path)))
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return Path(base) / "r53lb" / "state.db"


_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def _quorum(value: Any) -> Any:
    if value == "majority":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not `majority` nor a number of replicas (1 or more)")
    return value


MIN_HEARTBEAT = 0.1
PLAUSIBLE_REPLICAS = 9  # a quorum above this many replicas is more likely a typo than a fleet


class ClusterConfig(_Model):
    """Several `r53lb run` replicas sharing one DynamoDB table: all probe, the lease holder writes."""

    backend: Literal["dynamodb"] = "dynamodb"
    table: str
    region: str | None = Field(None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")  # default: aws.region, then boto3's chain
    replica: str = Field(default_factory=lambda: socket.gethostname() or "r53lb", min_length=1, max_length=128)
    lease: Duration = 15.0
    heartbeat: Duration = 1.0
    quorum: Annotated[Literal["majority"] | int, BeforeValidator(_quorum)] = "majority"

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _TABLE.match(v):
            raise ValueError(f"{v!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
        return v

    @field_validator("heartbeat")
    @classmethod
    def _heartbeat(cls, v: float) -> float:
        # Every heartbeat is a DynamoDB write per replica: 1e-7s would be millions a second.
        if v < MIN_HEARTBEAT:
            raise ValueError(f"{v:g}s is below {MIN_HEARTBEAT * 1000:g}ms (each heartbeat is a DynamoDB write)")
        return v

    @model_validator(mode="after")
    def _timing(self) -> "ClusterConfig":
        # The leader renews at each heartbeat: a lease of fewer than 3 heartbeats is lost to one slow write.
        if self.lease < 3 * self.heartbeat:
            raise ValueError(f"lease: {self.lease:g}s is shorter than 3 heartbeats ({3 * self.heartbeat:g}s)")
        return self


class Canary(_Model):
    """A target outside the fleet that must answer; if it fails, the controller's own network is suspect."""

    address: Address
    checks: tuple[Check, ...] = Field(min_length=1)


class VantageConfig(_Model):
    canaries: tuple[Canary, ...] = ()


class WebhookConfig(_Model):
    """A JSON POST per alert. Its secret (a Slack URL, a token header) may come from the environment."""

    url: HttpUrl | None = None
    url_env: str | None = None  # the URL is read from this environment variable when an alert is sent
    headers: Headers = Field(default_factory=dict)
    headers_env: dict[str, str] = Field(default_factory=dict)  # header name -> environment variable with its value
    timeout: Duration = 5.0

    @model_validator(mode="after")
    def _where(self) -> "WebhookConfig":
        if (self.url is None) == (self.url_env is None):
            raise ValueError("url: give url or url_env (an environment variable holding the URL), one of them")
        for name in [self.url_env or "", *self.headers_env.values()]:
            if name and not _ENV_NAME.match(name):
                raise ValueError(f"{show(name)} is not an environment variable name")
        for header in self.headers_env:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}", header):
                raise ValueError(f"headers_env: {show(header)} is not a header name")
        return self

    def resolved(self, environ: Any = os.environ) -> tuple[str, dict[str, str]]:
        """(URL, headers) with the environment's values; KeyError names a variable that is not set."""
        url = self.url if self.url is not None else environ[self.url_env]
        extra = {}
        for header, name in self.headers_env.items():
            value = environ[name]
            if "\r" in value or "\n" in value:
                raise KeyError(name)
            extra[header] = value
        return url, {**self.headers, **extra}


class SnsConfig(_Model):
    topic_arn: str = Field(pattern=r"^arn:[a-z-]+:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


class NotifyConfig(_Model):
    webhooks: tuple[WebhookConfig, ...] = ()
    sns: SnsConfig | None = None


def status_host(v: str) -> str:
    """A name the status server answers for (its Host header): a DNS name, lower case, no port."""
    if not isinstance(v, str) or not _HOSTNAME.match(v) or re.fullmatch(r"[\d.]+", v):
        raise ValueError(f"{show(v)} is not a host name (IP addresses are always answered; give names only)")
    return v.rstrip(".").lower()


class StatusPageConfig(_Model):
    """The status server (`r53lb run`'s HTTP port): the Host names it answers besides the bind
    address, localhost and IP literals (a DNS-rebinding page names a host of its own)."""

    hosts: tuple[Annotated[str, BeforeValidator(status_host)], ...] = ()


class Config(_Model):
    aws: AwsConfig = AwsConfig()
    state: StateConfig = StateConfig()
    defaults: Tuning = Tuning()
    vantage: VantageConfig = VantageConfig()
    notify: NotifyConfig = NotifyConfig()
    cluster: ClusterConfig | None = None
    status_page: StatusPageConfig = StatusPageConfig()
    pools: tuple[Pool, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _inherit(self) -> "Config":
        if self.cluster is not None and "state" in self.model_fields_set:
            raise ValueError("cluster: `cluster` and `state` are exclusive (with a cluster the state lives "
                             "in the DynamoDB table); remove one")
        seen: set[str] = set()
        for i, pool in enumerate(self.pools):
            if pool.name in seen:
                raise ValueError(f"pools[{i}].name: {show(pool.name)} appears twice")
            seen.add(pool.name)
            over = {
                k: getattr(pool, k)
                for k in ("interval", "fastinter", "timeout", "rise", "fall", "helo")
                if getattr(pool, k) is not None
            }
            object.__setattr__(pool, "tuning", self.defaults.model_copy(update=over))
        self._one_owner_per_record_set()
        return self

    def _one_owner_per_record_set(self) -> None:
        """Two pools writing one record set would refuse each other's writes for ever."""
        owners: dict[tuple[str, str, str], tuple[int, Pool]] = {}
        for i, pool in enumerate(self.pools):
            for j, node in enumerate(pool.nodes):
                for rtype in node.addresses_by_type():
                    key = (pool.record, rtype, node.id)
                    if key in owners:
                        k, other = owners[key]
                        # One zone named two ways (name and id) cannot be told apart here.
                        if other.zone == pool.zone or is_zone_id(other.zone) != is_zone_id(pool.zone):
                            raise ValueError(
                                f"pools[{i}].nodes[{j}].id: pool {show(pool.name)} and pool {show(other.name)} "
                                f"(pools[{k}]) both manage {pool.record} {rtype} set {show(node.id)}: "
                                "Route 53 holds one record set per name, type and set identifier"
                            )
                    owners[key] = (i, pool)

    def pool(self, name: str) -> Pool | None:
        return self._pools_by_name.get(name)

    @functools.cached_property
    def _pools_by_name(self) -> dict[str, Pool]:
        return {p.name: p for p in self.pools}


# --- loading ------------------------------------------------------------------------------


def _key(part: str) -> str:
    """One key of a path as written, or quoted and cut when it is odd (hostile input)."""
    return part if re.fullmatch(r"[\w.@-]{1,64}", part) else show(part)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" in part:  # pydantic's tagged-union labels
            continue
        else:
            out += ("." if out else "") + _key(str(part))
    return out


_PATTERNS = {  # a field's pattern, said in words (pydantic would quote the regular expression)
    r"^[a-z]{2}(-[a-z]+)+-[0-9]+$": "is not an AWS region name (like us-east-1)",
    r"^[A-Z]{1,16}$": "is not an HTTP method (like GET, HEAD)",
}


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    kind = err.get("type")
    ctx = err.get("ctx") or {}
    shown = show(err.get("input"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return f"{shown} {_PATTERNS.get(str(ctx.get('pattern')), 'does not have the expected form')}"
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}" if not isinstance(err.get("input"), str) \
            else f"{shown} is shorter than {n} character{'s' if n != 1 else ''}"
    if kind == "too_long":
        n = ctx.get("max_length")
        return f"{shown} is longer than {n}" + ("" if isinstance(err.get("input"), str) else " items")
    if kind == "greater_than_equal":
        return f"{shown} is below {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{shown} is above {ctx.get('le')}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{shown} is not a whole number"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{shown} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{shown} is not true or false"
    if kind in ("string_type",):
        return f"{shown} is not a string"
    if kind in ("literal_error", "enum"):
        return f"{shown}: {msg[0].lower() + msg[1:]}".replace("input should be", "must be")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{shown} is not a mapping (key: value)"
    if kind in ("tuple_type", "list_type"):
        return f"{shown} is not a list"
    return msg.replace("Input should be", "must be").replace("input should be", "must be")


MAX_LINE = 400  # a backstop: every part of the line is cut already


def _one_line(text: str) -> str:
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


_SUBPATH = re.compile(r"^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[\w]+(?:\[\d+\])?)*): (.*)$")


def _steps(sub: str) -> list[Any]:
    """'nodes[2].id' -> ['nodes', 2, 'id']"""
    out: list[Any] = []
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", sub):
        out.append(name if name else int(index))
    return out


def _field_names() -> frozenset[str]:
    """Every key the schema knows, for did-you-mean."""
    names: set[str] = set()
    seen: set[type] = set()
    todo: list[Any] = [Config]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t in seen:
                continue
            seen.add(t)
            for name, f in t.model_fields.items():
                names.add(f.alias or name)
                todo.append(f.annotation)
        for arg in getattr(t, "__args__", ()) or ():
            todo.append(arg)
        origin = getattr(t, "__origin__", None)
        if origin is not None:
            todo.append(origin)
        for meta in getattr(t, "__metadata__", ()) or ():
            todo.append(meta)
    return frozenset(names)


def _errors(exc: ValidationError) -> list[tuple[list[Any], str]]:
    """Every error as (key path steps, message), the innermost only, in document order."""
    errors = exc.errors()
    # A failing element also fails its container's length check: report the element only.
    locs = [tuple(e["loc"]) for e in errors]
    errors = [
        e for e in errors
        if not any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in locs)
    ] or errors
    out: list[tuple[list[Any], str]] = []
    for err in errors:
        steps = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]  # tagged-union labels
        msg = _message(err)
        # Errors raised by a model validator name their own sub-path ("nodes[2].id: ...").
        m = _SUBPATH.match(msg)
        if m and err["type"] == "value_error" and not msg.startswith("'"):
            sub, msg = m.groups()
            steps += _steps(sub)
        if err["type"] == "extra_forbidden" and steps and isinstance(steps[-1], str):
            import difflib

            near = difflib.get_close_matches(steps[-1], sorted(_field_names()), n=1, cutoff=0.75)
            if near:
                msg += f" (did you mean {near[0]}?)"
        if (steps, msg) not in out:
            out.append((steps, msg))
    return out


def _yaml_line(root: yaml.Node | None, steps: list[Any]) -> int | None:
    """The line of the deepest node of the composed document on this key path."""
    node, line = root, None
    for step in steps:
        if node is None:
            break
        line = _line(node)
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(step):
                    nxt, line = v, _line(k)
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        else:
            node = None
    if node is not None:
        line = _line(node)
    return line


def _format(exc: ValidationError, root: yaml.Node | None = None, source: str = "<config>") -> tuple[str, list[str]]:
    """The first error as one line (key path: message), and every error with its file and YAML line."""
    found = []
    for steps, msg in _errors(exc):
        text = _one_line(f"{_path(tuple(steps)) or 'config'}: {msg}")
        line = _yaml_line(root, steps) if root is not None else None
        found.append((line or 0, text, _one_line(f"{source}:{line}: {text}" if line else f"{source}: {text}")))
    found.sort(key=lambda f: f[0])  # in the order of the file
    return found[0][1], [f[2] for f in found]


# --- YAML ---------------------------------------------------------------------------------

MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a 10,000-node config is about 1 MB
MAX_DEPTH = 64  # the schema nests 8 deep; a deeper document is an attack on the recursion limit
# Aliases may repeat parts of the document (a shared `checks` list), but the expanded
# document may hold at most this many nodes beyond 10x the nodes written: a "billion laughs"
# of 600 bytes expands to 10^9 nodes and would take minutes and gigabytes to validate.
ALIAS_FLOOR = 100_000
ALIAS_RATIO = 10

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10,000 nodes in well under a second


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader, except that an impossible date (2026-13-45) stays a string, so
    that the schema reports it with its key path."""


def _timestamp(loader: Any, node: yaml.Node) -> Any:
    try:
        return yaml.constructor.SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        return loader.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)

_MERGE = "tag:yaml.org,2002:merge"


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _inspect(root: yaml.Node, source: str) -> None:
    """Walk the composed document once, before anything is built from it: refuse duplicate
    keys (with their key path), nesting past MAX_DEPTH, an alias inside its own anchor, and
    aliases that expand the document past its budget. Iterative: no recursion to exhaust.
    Paths are linked lists (parent, step) turned into text only for an error line."""
    cap = 10**12
    size: dict[int, int] = {}  # id(node) -> nodes once every alias in it is expanded
    open_: set[int] = set()  # nodes whose children are being walked (for alias cycles)
    stack: list[tuple[yaml.Node, Any, int, bool]] = [(root, None, 0, False)]
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode
    while stack:
        node, trail, depth, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            if isinstance(node, sequence):
                total = 1 + sum(size[id(c)] for c in node.value)
            else:
                total = 1 + sum(size[id(k)] + size[id(v)] for k, v in node.value)
            size[key] = total if total < cap else cap
            continue
        if key in size:
            continue
        if isinstance(node, scalar):
            size[key] = 1
            continue
        if key in open_:
            raise ConfigError(_one_line(
                f"{source}: {_trail(trail)}: line {_line(node)}: an alias refers to a node that contains it"
            ))
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: line {_line(node)}: nested more than {MAX_DEPTH} levels deep")
        open_.add(key)
        stack.append((node, trail, depth, True))
        if isinstance(node, sequence):
            for i in range(len(node.value) - 1, -1, -1):
                stack.append((node.value[i], (trail, i), depth + 1, False))
            continue
        seen: dict[tuple[str, str], yaml.Node] = {}
        for k, v in node.value:
            if isinstance(k, scalar):
                ident = (k.tag, k.value)
                if ident in seen and k.tag != _MERGE:
                    raise ConfigError(_one_line(
                        f"{source}: {_trail((trail, k.value))}: the key appears twice "
                        f"(lines {_line(seen[ident])} and {_line(k)})"
                    ))
                seen[ident] = k
                size[id(k)] = 1
                step = k.value
            else:
                stack.append((k, (trail, "?"), depth + 1, False))
                step = "?"
            stack.append((v, (trail, step), depth + 1, False))
    expanded, written = size[id(root)], len(size)
    if expanded > ALIAS_FLOOR + ALIAS_RATIO * written:
        raise ConfigError(
            f"{source}: YAML aliases expand {written} nodes to {'over 10^12' if expanded >= cap else expanded}: "
            f"refused (at most {ALIAS_RATIO}x the document plus {ALIAS_FLOOR:,})"
        )


def _trail(trail: Any) -> str:
    steps: list[Any] = []
    while trail is not None:
        trail, step = trail
        steps.append(step)
    out = ""
    for step in reversed(steps):
        out += f"[{step}]" if isinstance(step, int) else ("." if out else "") + _key(str(step))
    return out or "config"


def _parse(text: str, source: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _inspect(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def loads(text: str, source: str = "<config>") -> Config:
    try:
        data = _parse(text, source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(_one_line(f"{source}:{where}: not valid YAML: {problem}")) from None
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - PyYAML's constructors fail in many ways on odd scalars (!!int abc, !!int "")
        raise ConfigError(_one_line(f"{source}: not valid YAML: {type(e).__name__}: {e}")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a `pools` list")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        try:
            root = yaml.compose(text, Loader=_Loader)  # only now: lines cost nothing on a good config
        except Exception:  # noqa: BLE001 - it parsed once; without lines the errors still name key paths
            root = None
        first, lines = _format(e, root, source)
        raise ConfigError(first, lines) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        # A validator that failed in a way pydantic does not wrap: still one line, never a traceback.
        raise ConfigError(_one_line(f"{source}: cannot use this config: {type(e).__name__}: {e}")) from None


def load(path: str | os.PathLike[str] | None) -> Config:
    path = path or os.environ.get("R53LB_CONFIG")
    if not path:
        raise ConfigError("no config file: pass -c/--config or set R53LB_CONFIG")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # bounded: `-c /dev/zero` must not eat the memory
    except OSError as e:
        raise ConfigError(_one_line(f"{path}: cannot read: {e.strerror or e}")) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: not a config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8"
        ) from None
    return loads(text, str(path))


def default_helo() -> str:
    return socket.getfqdn() or "localhost"


def config_warnings(cfg: Config, environ: Any = os.environ) -> list[str]:
    """What loads but is likely a mistake: a quorum no cluster reaches, a secret's variable not set here."""
    out = []
    if cfg.cluster is not None and isinstance(cfg.cluster.quorum, int) and cfg.cluster.quorum > PLAUSIBLE_REPLICAS:
        out.append(f"cluster.quorum: {cfg.cluster.quorum} replicas must agree before a node is drained or "
                   f"restored: with fewer running, no weight ever changes (give `majority` or a count of "
                   f"at most {PLAUSIBLE_REPLICAS})")
    for i, hook in enumerate(cfg.notify.webhooks):
        for name in [hook.url_env, *hook.headers_env.values()]:
            if name and name not in environ:
                out.append(f"notify.webhooks[{i}]: environment variable {name} is not set here "
                           "(the controller's environment must have it)")
    return out


def helo_warnings(cfg: Config, machine: str | None = None) -> list[str]:
    """One line per HELO name without a dot that an smtp check would send.

    Postfix's reject_non_fqdn_helo_hostname (and many receivers' equivalents) refuse such a
    name, and the node would be drained for it; socket.getfqdn() is `localhost` on many hosts.
    """
    found: dict[str, str] = {}  # name -> where it comes from

    def note(name: str, where: str) -> None:
        # An address literal ([IPv6:2001:db8::1]) is fully qualified as it is.
        if "." not in name.strip(".") and not name.startswith("[") and name not in found:
            found[name] = where

    def checks(prefix: str, items: tuple[Check, ...], fallback: tuple[str, str]) -> None:
        for j, check in enumerate(items):
            if check.smtp is not None:
                if check.smtp.helo:
                    note(check.smtp.helo, f"{prefix}[{j}].smtp.helo")
                else:
                    note(*fallback)

    if cfg.defaults.helo:
        base = (cfg.defaults.helo, "defaults.helo")
    else:
        base = (machine or default_helo(), "this machine's name, socket.getfqdn()")
    for i, pool in enumerate(cfg.pools):
        fallback = (pool.helo, f"pools[{i}].helo") if pool.helo else base
        checks(f"pools[{i}].checks", pool.checks, fallback)
        for k, node in enumerate(pool.nodes):
            checks(f"pools[{i}].nodes[{k}].checks", node.checks or (), fallback)
    for i, canary in enumerate(cfg.vantage.canaries):
        checks(f"vantage.canaries[{i}].checks", canary.checks, base)
    return [
        f"HELO name {name!r} ({where}) has no dot: mail servers that require a fully-qualified "
        f"HELO (Postfix's reject_non_fqdn_helo_hostname) refuse the probe; "
        f"set defaults.helo (or a pool's or a check's helo) to a name like probe.example.com"
        for name, where in found.items()
    ]
