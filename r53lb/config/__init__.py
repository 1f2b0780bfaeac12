"""The configuration contract: YAML validated by pydantic, errors that name the key path.

One module per area: fields (types every model uses), aws (aws, state, cluster), pools (pools,
nodes, defaults, vantage), checks/ (one module per check kind and gate), notify, model (the
whole Config) and loader (YAML, error formatting). Import from here: `from r53lb.config import X`.
"""

from __future__ import annotations

from .fields import (Address, ConfigError, Duration, DurationOrZero, Headers, HeloName, HttpUrl, MAX_DURATION,
    SHOWN_CHARS, Share, Weight, is_ip, is_zone_id, parse_duration, record_type_of, show, split_hostport)
from .checks.dane import DaneOptions
from .checks.smtp import SmtpCheck, SmtpEnvelope
from .checks.http import HttpCheck, StatusSpec, status_range
from .checks.tcp import TcpCheck
from .checks.dnsbl import DnsblCheck
from .checks.agent import AgentCheck
from .checks.prometheus import BasicAuthEnv, PromScale, PrometheusCheck
from .checks import CHECK_KINDS, Check, SIGNAL_KINDS
from .checks.sending import SendingGates
from .checks.mta_sts import MtaSts
from .checks.tlsrpt import TlsRpt
from .pools import Canary, Node, Pool, Quarantine, Tuning, VantageConfig, WARMUP_PRESETS, Warmup
from .aws import AwsConfig, ClusterConfig, MIN_HEARTBEAT, PLAUSIBLE_REPLICAS, StateConfig
from .notify import NotifyConfig, SnsConfig, WebhookConfig
from .model import Config, StatusPageConfig, config_warnings, default_helo, helo_warnings, status_host
from .loader import ALIAS_FLOOR, ALIAS_RATIO, MAX_CONFIG_BYTES, MAX_DEPTH, MAX_LINE, load, loads

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
