"""The configuration contract: YAML validated by pydantic, errors that name the key path."""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
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


class ConfigError(Exception):
    """A configuration that cannot be used; the message is one line naming the key path."""


# --- scalar types -------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'250ms', '10s', '5m', '1h', '30d' -> seconds. Bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (use 250ms, 10s, 5m, 1h, 30d)")
    if isinstance(value, (int, float)):
        if value < 0 or math.isnan(value):
            raise ValueError(f"{value!r} is not a duration (must not be negative)")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (use 250ms, 10s, 5m, 1h, 30d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _weight(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    if value > 255:
        raise ValueError(f"{value} is above 255")
    if value < 0:
        raise ValueError(f"{value} is below 0")
    return value


Weight = Annotated[int, BeforeValidator(_weight)]


def _percent(value: Any) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
        if not 0 <= pct <= 100:
            raise ValueError(f"{value!r} is not between 0% and 100%")
        return pct / 100.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"{value!r} is not a percentage (use 5%, 50%)")


Share = Annotated[float, BeforeValidator(_percent)]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)(?:(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\.)*(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\.?$"
)


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _address(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not an address")
    if is_ip(value):
        return str(ipaddress.ip_address(value))
    # A dotted quad that failed IP parsing is a typo, not a hostname.
    if re.fullmatch(r"[\d.]+", value) or not _HOSTNAME.match(value):
        raise ValueError(f"{value!r} is neither an IP address nor a hostname")
    return value.rstrip(".").lower()


Address = Annotated[str, BeforeValidator(_address)]


@functools.lru_cache(maxsize=65536)  # asked per node and per cycle: parse each address once
def record_type_of(address: str) -> str:
    """The record type that publishes an address: A, AAAA, or CNAME for a hostname."""
    if not is_ip(address):
        return "CNAME"
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- checks -------------------------------------------------------------------------------


class SmtpCheck(_Model):
    port: int = Field(25, ge=1, le=65535)
    tls: bool = False  # implicit TLS (port 465)
    starttls: bool = False
    helo: str | None = None
    verify: bool = True
    ca_file: Path | None = None
    server_name: str | None = None
    cert_min_days: int | None = Field(None, ge=0)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _tls_modes(self) -> "SmtpCheck":
        if self.tls and self.starttls:
            raise ValueError("tls (implicit TLS) and starttls cannot both be true")
        return self


StatusSpec = int | str


class HttpCheck(_Model):
    url: str
    method: str = "GET"
    host: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[StatusSpec] = Field(default_factory=lambda: ["200-399"])
    expect_body: str | None = None
    verify: bool = True
    ca_file: Path | None = None
    follow_redirects: bool = False
    timeout: Duration | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"{v!r} must start with http:// or https://")
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
                raise ValueError(f"{v!r} is not a regular expression: {e}") from None
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
    raise ValueError(f"{item!r} is not a status, a range (200-299) or a class (2xx)")


class TcpCheck(_Model):
    port: int = Field(ge=1, le=65535)
    timeout: Duration | None = None


class DnsblCheck(_Model):
    zones: list[str] = Field(min_length=1)
    ip: str | None = None
    interval: Duration = 600.0
    nameservers: list[str] = Field(default_factory=list)
    timeout: Duration | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None and not is_ip(v):
            raise ValueError(f"{v!r} is not an IP address")
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
            raise ValueError(f"{value!r} has a bad port")
        port = int(p)
    else:
        host, port = value, default_port
    if not is_ip(host):
        raise ValueError(f"{value!r} is not an IP address (with an optional :port)")
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r} has a port outside 1-65535")
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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PrometheusCheck(_Model):
    """A PromQL instant query per node; the value is judged by quarantine bounds and scaled to a share."""

    url: str  # the server's base URL; the check calls <url>/api/v1/query
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
            raise ValueError(f"{v!r} must start with http:// or https:// and name a host")
        if "@" in m.group(1):
            # A password in the URL would end up in logs and reasons: it belongs in the environment.
            raise ValueError("must not carry credentials; use basic_auth or bearer_token_env")
        return v.rstrip("/")

    @field_validator("bearer_token_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not an environment variable name")
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
                    raise ValueError(f"basic_auth.{key}: {getattr(self.basic_auth, key)!r} "
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
            raise ValueError(f"unknown check {kind!r} (known: {', '.join(CHECK_KINDS)})")
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


class Warmup(_Model):
    start: datetime
    schedule: tuple[tuple[float, float], ...] = ()
    preset: str | None = None

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> Any:
        if isinstance(v, date) and not isinstance(v, datetime):
            return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            return datetime.fromisoformat(v).replace(tzinfo=timezone.utc)
        return v

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
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
                    f"unknown preset {self.preset!r} (known: {', '.join(WARMUP_PRESETS)})"
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
    id: str = Field(min_length=1, max_length=128)
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
        raise ValueError(f"{value!r} is not listed_on_any or listed_on_n: N")
    return value


class Tuning(_Model):
    """Probe timing, set in `defaults` and overridable per pool."""

    interval: Duration = 10.0
    fastinter: Duration = 2.0
    timeout: Duration = 10.0
    rise: int = Field(3, ge=1, le=100)
    fall: int = Field(3, ge=1, le=100)
    helo: str | None = None
    concurrency: int = Field(512, ge=1, le=100_000)


class Pool(_Model):
    name: str = Field(min_length=1)
    zone: str = Field(min_length=1)
    record: str = Field(min_length=1)
    type: Literal["A", "AAAA", "CNAME"] = "A"
    ttl: int = Field(60, ge=0, le=2147483647)
    mode: Literal["weighted", "failover"] = "weighted"
    min_in_service: int = Field(1, ge=0)
    max_drain_per_cycle: int | str = "50%"
    slow_start: Duration = 0.0
    preempt: bool = True
    preempt_delay: Duration = 0.0
    quarantine: Annotated[Quarantine, BeforeValidator(_quarantine)] = Quarantine()
    checks: tuple[Check, ...] = ()
    nodes: tuple[Node, ...] = Field(min_length=1)
    # Per-pool overrides of `defaults` (None: inherit).
    interval: Duration | None = None
    fastinter: Duration | None = None
    timeout: Duration | None = None
    rise: int | None = Field(None, ge=1, le=100)
    fall: int | None = Field(None, ge=1, le=100)
    helo: str | None = None

    # Filled in by Config from `defaults`.
    tuning: Tuning = Tuning()

    @field_validator("record")
    @classmethod
    def _record(cls, v: str) -> str:
        v = v.rstrip(".").lower()
        if not _HOSTNAME.match(v.replace("*", "x")):
            raise ValueError(f"{v!r} is not a DNS name")
        return v

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        return v if re.fullmatch(r"Z[A-Z0-9]+", v) else v.rstrip(".").lower()

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
        seen: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.id in seen:
                raise ValueError(f"nodes[{i}].id: {node.id!r} appears twice in pool {self.name!r}")
            seen.add(node.id)
            types = set(node.addresses_by_type())
            if self.type == "CNAME" and types != {"CNAME"}:
                raise ValueError(f"nodes[{i}].address: a CNAME pool lists hostnames, not IPs")
            if self.type != "CNAME" and "CNAME" in types:
                raise ValueError(
                    f"nodes[{i}].address: {node.address[0]!r} is a hostname; "
                    f"an {self.type} pool lists IP addresses"
                )
            if not node.checks and not self.checks:
                raise ValueError(f"nodes[{i}].checks: node {node.id!r} has no checks (none on the pool either)")
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
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None


class StateConfig(_Model):
    path: Path | None = None

    def resolved_path(self) -> Path:
        if self.path is not None:
            return Path(os.path.expanduser(str(self.path)))
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return Path(base) / "r53lb" / "state.db"


class Canary(_Model):
    """A target outside the fleet that must answer; if it fails, the controller's own network is suspect."""

    address: Address
    checks: tuple[Check, ...] = Field(min_length=1)


class VantageConfig(_Model):
    canaries: tuple[Canary, ...] = ()


class WebhookConfig(_Model):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 5.0


class SnsConfig(_Model):
    topic_arn: str


class NotifyConfig(_Model):
    webhooks: tuple[WebhookConfig, ...] = ()
    sns: SnsConfig | None = None


class Config(_Model):
    aws: AwsConfig = AwsConfig()
    state: StateConfig = StateConfig()
    defaults: Tuning = Tuning()
    vantage: VantageConfig = VantageConfig()
    notify: NotifyConfig = NotifyConfig()
    pools: tuple[Pool, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _inherit(self) -> "Config":
        seen: set[str] = set()
        for i, pool in enumerate(self.pools):
            if pool.name in seen:
                raise ValueError(f"pools[{i}].name: {pool.name!r} appears twice")
            seen.add(pool.name)
            over = {
                k: getattr(pool, k)
                for k in ("interval", "fastinter", "timeout", "rise", "fall", "helo")
                if getattr(pool, k) is not None
            }
            object.__setattr__(pool, "tuning", self.defaults.model_copy(update=over))
        return self

    def pool(self, name: str) -> Pool | None:
        return self._pools_by_name.get(name)

    @functools.cached_property
    def _pools_by_name(self) -> dict[str, Pool]:
        return {p.name: p for p in self.pools}


# --- loading ------------------------------------------------------------------------------


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and "[" in part:  # pydantic's tagged-union labels
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    kind = err.get("type")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "is required"
    if kind in ("literal_error", "int_parsing", "int_type", "bool_parsing", "string_type",
                "greater_than_equal", "less_than_equal", "too_short", "enum"):
        return f"{err.get('input')!r}: {msg[0].lower() + msg[1:]}"
    return msg


def _format(exc: ValidationError) -> str:
    errors = exc.errors()
    # A failing element also fails its container's length check: report the element only.
    locs = [tuple(e["loc"]) for e in errors]
    errors = [
        e for e in errors
        if not any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in locs)
    ] or errors
    err = errors[0]
    path = _path(tuple(err["loc"]))
    msg = _message(err)
    # Errors raised by a model validator name their own sub-path ("nodes[2].id: ...").
    m = re.match(r"^([A-Za-z_][\w]*(?:\[\d+\])?(?:\.[\w]+(?:\[\d+\])?)*): (.*)$", msg)
    if m and err["type"] == "value_error" and not msg.startswith("'"):
        sub, rest = m.groups()
        path = f"{path}.{sub}" if path else sub
        msg = rest
    more = len(errors) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{path or 'config'}: {msg}{tail}"


def loads(text: str, source: str = "<config>") -> Config:
    try:
        # libyaml's loader when PyYAML has it: the pure-Python one takes seconds on a 10,000-node file.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{source}:{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a `pools` list")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e)) from None


def load(path: str | os.PathLike[str] | None) -> Config:
    path = path or os.environ.get("R53LB_CONFIG")
    if not path:
        raise ConfigError("no config file: pass -c/--config or set R53LB_CONFIG")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    return loads(text, str(path))


def default_helo() -> str:
    return socket.getfqdn() or "localhost"
