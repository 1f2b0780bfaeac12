"""The whole config (`Config`), the status page's settings, and what loads but is likely a mistake."""

from __future__ import annotations

import functools
import os
import re
import socket
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from .aws import AwsConfig, ClusterConfig, PLAUSIBLE_REPLICAS, StateConfig
from .checks import Check
from .fields import _HOSTNAME, _Model, is_zone_id, show
from .notify import NotifyConfig
from .pools import Pool, Tuning, VantageConfig


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
