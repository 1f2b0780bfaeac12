"""prometheus: a PromQL instant query per node, judged by the check's rules.

The query is templated by plain substitution of `{id}`, `{address}` and `{pool}` (nothing
else: a selector's own braces stay as written), sent to `<url>/api/v1/query`, and its one
value judged: outside `quarantine_above`/`quarantine_below` is a failure with the value in
the reason; `scale` maps the value to a share of the node's weight. No data, several
series, NaN, an error answer, or Prometheus unreachable is *unknown*: a rule that cannot
be read never changes a weight.

Credentials come from environment variables named in the config, read at each check (so a
rotated token is picked up) and never put in a reason or a log line.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx

from ..config import PrometheusCheck, PromScale
from .base import Failure, ProbeResult, Status, Target, fmt_duration, tls_context, trim
from .http import _error

__all__ = ["probe", "render_query", "parse_response", "evaluate", "scale_share", "Reading", "Verdict"]

# A one-series answer is a few hundred bytes; a query that matches a whole fleet is a
# mistake to report, not a document to download.
MAX_RESPONSE_BYTES = 1024 * 1024


# --- pure -----------------------------------------------------------------------------------


def _promql_string(text: str) -> str:
    # The names usually land inside a label matcher's quotes: keep them a valid string there.
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_query(template: str, target: Target) -> str:
    """`{id}`, `{address}`, `{pool}` -> the node's values; every other brace is left as written."""
    return (template.replace("{id}", _promql_string(target.node))
            .replace("{address}", _promql_string(target.address))
            .replace("{pool}", _promql_string(target.pool)))


@dataclass(frozen=True)
class Reading:
    """What one query answer says: a value, or why there is none."""

    value: float | None
    error: str = ""  # set when value is None


def _number(text: Any) -> float | None:
    try:
        return float(text)  # Prometheus sends samples as strings: "0.083", "NaN", "+Inf"
    except (TypeError, ValueError):
        return None


def parse_response(body: Any) -> Reading:
    """A decoded /api/v1/query answer -> its single value, or the reason there is none."""
    if not isinstance(body, dict):
        return Reading(None, "answer is not a Prometheus API object")
    if body.get("status") != "success":
        kind = trim(str(body.get("errorType") or "error"), 40)  # Prometheus's few words, or anything a proxy sends
        return Reading(None, f"{kind}: {trim(str(body.get('error') or 'no error text'), 160)}")
    data = body.get("data")
    if not isinstance(data, dict):
        return Reading(None, "answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return Reading(None, "no data (the query matched no series)")
        if len(result) > 1:
            labels = [trim(_labels(r.get("metric") if isinstance(r, dict) else None), 60) for r in result[:2]]
            return Reading(None, f"{len(result)} series (expected one; aggregate with max()/sum() "
                                 f"or narrow the selector): {', '.join(labels)}{', ...' if len(result) > 2 else ''}")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    elif kind == "matrix":
        return Reading(None, "the query returns a range vector; wrap it in a function such as avg_over_time()")
    else:
        return Reading(None, f"unexpected result type {trim(str(kind), 20)!r}")
    if not (isinstance(sample, list) and len(sample) == 2):
        return Reading(None, "malformed sample")
    value = _number(sample[1])
    if value is None:
        return Reading(None, f"sample {trim(str(sample[1]), 30)!r} is not a number")
    if math.isnan(value):
        return Reading(None, "value is NaN (a ratio of zero to zero?)")
    return Reading(value)


def _labels(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "{}"
    name = metric.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in metric.items() if k != "__name__")
    return f"{name}{{{rest}}}"


def scale_share(value: float, scale: PromScale) -> float:
    """The linear map from `scale.from_` to `scale.to`, clamped at both ends (a share 0.0-1.0)."""
    (v1, v2), (s1, s2) = scale.from_, scale.to
    t = (value - v1) / (v2 - v1)
    t = min(1.0, max(0.0, t)) if not math.isnan(t) else 0.0
    return round(s1 + t * (s2 - s1), 6)


@dataclass(frozen=True)
class Verdict:
    status: Status
    detail: str
    share: float | None = None


def evaluate(value: float, spec: PrometheusCheck, query: str | None = None) -> Verdict:
    """The check's rules applied to one value (not NaN): out of bounds fails, else a share when scaled.

    The reason names the rule by the check's `name`, else by the query as sent (`query`).
    """
    label = trim(spec.name or query or spec.query, 80)
    if spec.quarantine_above is not None and value > spec.quarantine_above:
        return Verdict("fail", f"{label} {value:g} > {spec.quarantine_above:g}")
    if spec.quarantine_below is not None and value < spec.quarantine_below:
        return Verdict("fail", f"{label} {value:g} < {spec.quarantine_below:g}")
    if spec.scale is not None:
        share = scale_share(value, spec.scale)
        return Verdict("ok", f"{label} {value:g} -> {share * 100:g}%", share)
    return Verdict("ok", f"{label} {value:g}")


# --- the check ------------------------------------------------------------------------------


def _auth(spec: PrometheusCheck) -> tuple[dict[str, str], httpx.Auth | None, str]:
    """Headers and auth from the environment; the third item names a missing variable."""
    if spec.bearer_token_env:
        token = os.environ.get(spec.bearer_token_env)
        if not token:
            return {}, None, spec.bearer_token_env
        return {"Authorization": f"Bearer {token}"}, None, ""
    if spec.basic_auth is not None:
        user = os.environ.get(spec.basic_auth.username_env)
        password = os.environ.get(spec.basic_auth.password_env)
        if user is None:
            return {}, None, spec.basic_auth.username_env
        if password is None:
            return {}, None, spec.basic_auth.password_env
        return {}, httpx.BasicAuth(user, password), ""
    return {}, None, ""


async def probe(target: Target, spec: PrometheusCheck, timeout: float) -> ProbeResult:
    started = time.perf_counter()
    phase = "query"

    def result(status: Status, detail: str, value: float | None = None, share: float | None = None) -> ProbeResult:
        ms = (time.perf_counter() - started) * 1000
        return ProbeResult(target.pool, target.node, "prometheus", status, ms, detail, phase,
                           phases={"query": ms}, value=value, share=share,
                           failure=Failure.SIGNAL if status == "fail" else None)

    headers, auth, missing = _auth(spec)
    if missing:
        return result("unknown", f"prometheus: environment variable {missing} is not set")
    headers.update({"User-Agent": "r53lb-probe", "Accept": "application/json", "Accept-Encoding": "identity"})
    query = render_query(spec.query, target)
    # Prometheus stops evaluating at its own timeout; ours covers the network as well.
    # A token in the URL's query string goes to the server, never into a reason or a log.
    base, _, url_query = spec.url.partition("?")
    params = {**dict(parse_qsl(url_query, keep_blank_values=True)),
              "query": query, "timeout": f"{max(1, int(timeout * 1000))}ms"}
    where = base + ("?…" if url_query else "")
    code: int | None = None
    try:
        async with asyncio.timeout(timeout):
            async with httpx.AsyncClient(
                verify=tls_context(spec.verify, str(spec.ca_file) if spec.ca_file else None),
                timeout=httpx.Timeout(timeout),
                limits=httpx.Limits(max_keepalive_connections=0),
                trust_env=False,
            ) as client:
                async with client.stream("GET", f"{base.rstrip('/')}/api/v1/query", params=params,
                                         headers=headers, auth=auth) as response:
                    code = response.status_code
                    body = bytearray()
                    async for chunk in response.aiter_raw():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            return result("unknown", f"prometheus {where}: answer larger than "
                                                     f"{MAX_RESPONSE_BYTES // 1024} KiB (the query matches too much)")
    except (TimeoutError, httpx.TimeoutException):
        return result("unknown", f"prometheus {where}: no answer within {fmt_duration(timeout)}")
    except (httpx.HTTPError, OSError, ValueError) as e:
        return result("unknown", f"prometheus {where}: {_error(e)}")
    try:
        decoded: Any = json.loads(body)
    except ValueError:
        decoded = None
    if decoded is None and code != 200:
        return result("unknown", f"prometheus {where}: HTTP {code}")
    reading = parse_response(decoded)
    if reading.value is None:
        status_text = f"HTTP {code}, " if code != 200 else ""
        return result("unknown", f"prometheus {where}: {status_text}{trim(spec.name or query, 80)}: {reading.error}")
    verdict = evaluate(reading.value, spec, query)
    return result(verdict.status, verdict.detail, reading.value, verdict.share)
