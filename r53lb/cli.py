"""The command line: parse, call, render. Heavy imports happen inside the commands."""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

if TYPE_CHECKING:
    from .config import Config
    from .engine.cycle import Controller
    from .state.sqlite import StateStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_HOLD = 0, 1, 2, 3


_LOG_FORMAT = {"format": "text"}  # --log-format of this run: how errors and messages are written


def json_lines() -> bool:
    """--log-format json: every line on stdout and stderr is one JSON object."""
    return _LOG_FORMAT["format"] == "json"


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def say(text: str, *, err: bool = False, level: str = "info", **fields: Any) -> None:
    """One line for the operator: the text, or with --log-format json one JSON object with `fields`."""
    if json_lines():
        msg = text.removeprefix("r53lb: ")  # the logger field says who speaks
        click.echo(json.dumps({"ts": _now_iso(), "level": level, "logger": "r53lb.cli", "msg": msg, **fields},
                              default=str), err=err)
    else:
        click.echo(text, err=err)


class Fail(click.ClickException):
    """One clear line on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED, lines: list[str] | None = None, **fields: Any):
        super().__init__(message)
        self.exit_code = code
        self.fields = fields
        self.lines = lines or [message]  # several errors (a config's): one line each

    def show(self, file: Any = None) -> None:
        for line in self.lines:
            if json_lines():
                say(line, err=True, level="error", exit_code=self.exit_code, **self.fields)
            else:
                click.echo(f"r53lb: {line}", err=True)


# A LogRecord's own attributes; anything else on a record came as `extra=` and is an event field.
_RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from datetime import datetime, timezone

        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _RECORD_KEYS and not k.startswith("_")})
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _Reported(logging.Filter):
    """Drops the log lines of events the command reports itself in its one exit line."""

    events: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "event", None) not in self.events


def setup_logging(verbose: int, log_format: str) -> None:
    _LOG_FORMAT["format"] = log_format
    if verbose:
        _Reported.events.clear()  # -v: every log line, even those the exit line repeats
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Reported())
    root = logging.getLogger("r53lb")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


def report_myself(*events: str) -> None:
    """This command states these events in its own exit line: no log line repeats them (unless -v)."""
    if not logging.getLogger("r53lb").isEnabledFor(logging.DEBUG):
        _Reported.events.update(events)


def errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's errors into one line and an exit code; a traceback only with -v."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import R53lbError

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise Fail("interrupted", 130) from None
        except R53lbError as e:
            if click.get_current_context().obj.get("verbose") and not e.plain:
                raise
            hint = ""
            if getattr(e, "code", None) == "ResourceNotFoundException":
                hint = " (create it with `r53lb cluster init`)"
            raise Fail(e.line() + hint, e.exit_code, lines=getattr(e, "lines", None)) from None
        except Exception as e:
            if click.get_current_context().obj.get("verbose"):
                raise
            raise Fail(f"{type(e).__name__}: {e}") from None

    return wrapper


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # a subcommand's bad option: with JSON logs, one JSON object too
            if json_lines():
                raise Fail(e.format_message(), e.exit_code) from None
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", envvar="R53LB_CONFIG", type=click.Path(dir_okay=False),
              help="Config file (or R53LB_CONFIG).")
@click.option("-v", "--verbose", count=True, help="More logging; tracebacks on errors.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.version_option(package_name="r53lb")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int, log_format: str) -> None:
    """Keep Route 53 weighted records in line with the measured health of mail servers."""
    if ctx.invoked_subcommand == "run":
        import signal

        # Held (not lost) until the daemon's handler is in place: an early SIGHUP must not kill `run`.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    ctx.ensure_object(dict)
    ctx.obj.update(config_path=config_path, verbose=verbose)
    _Reported.events.clear()  # a fresh invocation (tests run several in one process)
    setup_logging(verbose, log_format)


def load_config(ctx: click.Context) -> "Config":
    from .config import load

    if "cfg" not in ctx.obj:
        ctx.obj["cfg"] = load(ctx.obj["config_path"])
    return ctx.obj["cfg"]


def open_state(cfg: "Config", readonly: bool = False) -> "StateStore":
    """The state store; `readonly` (status, plan, history, --dry-run): an in-memory copy, nothing on disk touched."""
    if cfg.cluster is not None:
        from .state.dynamodb import open_store

        cluster_store = open_store(cfg)
        return cluster_store.snapshot() if readonly else cluster_store  # type: ignore[return-value]
    from .state.sqlite import StateStore

    if readonly:
        return StateStore.open_readonly(cfg.state.resolved_path())
    report_myself("state_rebuilt")  # said once, as the warning below
    store = StateStore.open(cfg.state.resolved_path())
    if store.rebuilt:
        say(f"r53lb: warning: {store.rebuilt}", err=True, level="warning", event="state_rebuilt")
    return store


def make_controller(cfg: "Config", store: "StateStore | None", with_route53: bool = True,
                    interactive: bool = False) -> "Controller":
    from .engine.commands import make_controller

    return make_controller(cfg, store, with_route53, interactive)


def warn_helo(cfg: "Config") -> None:
    """A warning on stderr per likely mistake (a HELO name without a dot, ...); the exit code does not change."""
    from .config import config_warnings, helo_warnings

    for line in [*config_warnings(cfg), *helo_warnings(cfg)]:
        say(f"r53lb: warning: {line}", err=True, level="warning", event="config_warning")


def emit_json(data: Any) -> None:
    if json_lines():  # every line one object: the document on one line
        click.echo(json.dumps(data, default=str))
    else:
        click.echo(json.dumps(data, indent=2, default=str))


def resolve_node(cfg: "Config", ref: str) -> tuple[str, str]:
    pool_name, sep, node_id = ref.partition("/")
    pool = cfg.pool(pool_name)
    if not sep or pool is None or pool.node(node_id) is None:
        known = ", ".join(f"{p.name}/{n.id}" for p in cfg.pools for n in p.nodes)
        raise Fail(f"unknown node {ref!r} (known: {known})", EXIT_USAGE)
    return pool_name, node_id


def _complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """POOL/NODE from the config (-c before or after the subcommand, or R53LB_CONFIG)."""
    import os

    from click.shell_completion import CompletionItem

    from .config import load

    path = (ctx.obj or {}).get("config_path") or ctx.find_root().params.get("config_path") or \
        os.environ.get("R53LB_CONFIG")
    try:
        cfg = load(path)
    except Exception:  # noqa: BLE001 - a completion never prints an error into the shell
        return []
    refs = [f"{p.name}/{n.id}" for p in cfg.pools for n in p.nodes]
    if param.name == "pool_name":
        refs = [p.name for p in cfg.pools]
    return [CompletionItem(r) for r in refs if r.startswith(incomplete)]


# --- commands -----------------------------------------------------------------------------


@main.command()
@click.pass_context
@errors
def validate(ctx: click.Context) -> None:
    """Load and check the config."""
    cfg = load_config(ctx)
    warn_helo(cfg)
    nodes = sum(len(p.nodes) for p in cfg.pools)
    say(f"ok: {len(cfg.pools)} pool(s), {nodes} node(s)", event="valid", pools=len(cfg.pools), nodes=nodes)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_context
@errors
def probe(ctx: click.Context, as_json: bool) -> None:
    """Run every check once; change nothing. Exit 3 when some check failed."""
    from .engine.commands import probe_once

    cfg = load_config(ctx)
    warn_helo(cfg)
    report = probe_once(cfg)  # probe touches neither the state nor Route 53
    if as_json or json_lines():
        emit_json({"results": report.results})
    else:
        from .render import probe_table

        probe_table(report.rows)
    ctx.exit(EXIT_HOLD if report.failed else EXIT_OK)


def zone_errors(result: Any) -> list[str]:
    """One phrase per zone that could not be read or written."""
    return [f"zone {z.zone}: {z.error}" for z in result.zones if z.error]


def _error_classes(result: Any) -> str:
    return ",".join(sorted({z.error_class or "Error" for z in result.zones if z.error}))


def show_cycle(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result.to_json())
    else:
        from .render import plan_view

        plan_view(result)


def _cycle(ctx: click.Context, *, dry_run: bool, create_missing: bool, wait: bool, snapshot: bool) -> Any:
    import gc

    from . import eventloop

    cfg = load_config(ctx)
    # A one-shot command: the config and the modules live until it exits, so the cyclic
    # collector's passes need not walk them again while the fleet is probed.
    gc.freeze()
    if snapshot:
        store = open_state(cfg, readonly=True)  # plan and --dry-run record nothing
        return eventloop.run(make_controller(cfg, store).cycle(dry_run=True, create_missing=create_missing))
    store = open_state(cfg)
    with store.exclusive(wait=30.0):
        ctl = make_controller(cfg, store)

        async def cycle_and_tell() -> Any:
            # Alerts go out on changes only: the watcher's state is kept in the state store.
            from .notify import Notifier

            notifier = Notifier(cfg.notify, cfg.aws).start()
            ctl.notify = notifier
            try:
                return await ctl.cycle(dry_run=dry_run, create_missing=create_missing, wait=wait)
            finally:
                await notifier.close(timeout=30.0)

        return eventloop.run(cycle_and_tell())


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when changes are pending, 0 when none.")
@click.option("--create-missing", is_flag=True, help="Plan to create record sets that do not exist.")
@click.pass_context
@errors
def plan(ctx: click.Context, as_json: bool, detailed_exitcode: bool, create_missing: bool) -> None:
    """Probe, then show the changes a sync would make.

    Exit 0 ok, 1 error (Route 53 unreadable), 2 invalid config; with --detailed-exitcode as
    Terraform: 0 no changes, 2 changes pending, 1 any error (an invalid config included).
    """
    from .config import ConfigError

    try:
        load_config(ctx)
    except ConfigError as e:
        raise Fail(e.line(), EXIT_FAILED if detailed_exitcode else e.exit_code, lines=e.lines) from None
    report_myself("zone_unreadable")
    result = _cycle(ctx, dry_run=True, create_missing=create_missing, wait=False, snapshot=True)
    failed = zone_errors(result)
    if failed:  # a plan it could not establish is never shown, nor "no changes"
        raise Fail("plan: " + "; ".join(failed), EXIT_FAILED, error_class=_error_classes(result))
    show_cycle(result, as_json or json_lines())
    if detailed_exitcode and result.plan.changes:
        ctx.exit(2)
    ctx.exit(EXIT_OK)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.option("--dry-run", is_flag=True, help="Plan only; write nothing to Route 53 or the state.")
@click.option("--create-missing", is_flag=True, help="Create record sets that do not exist yet.")
@click.option("--wait", is_flag=True, help="Wait until Route 53 reports the change INSYNC.")
@click.pass_context
@errors
def sync(ctx: click.Context, as_json: bool, dry_run: bool, create_missing: bool, wait: bool) -> None:
    """One reconcile cycle (for cron). Exit 0 ok, 1 apply failed, 3 hold."""
    if not dry_run and load_config(ctx).cluster is not None:
        raise Fail("sync: with `cluster` the `r53lb run` replicas write (the lease holder alone); "
                   "use `r53lb plan` or `r53lb sync --dry-run`", EXIT_USAGE)
    report_myself("zone_unreadable", "apply_failed", "apply_reminder", "hold", "plan_error", "drift")
    result = _cycle(ctx, dry_run=dry_run, create_missing=create_missing, wait=wait, snapshot=dry_run)
    failed = zone_errors(result)
    if as_json or json_lines():
        show_cycle(result, True)
    elif not failed or result.plan.changes:  # an error is never "no changes"; what other zones did still shows
        show_cycle(result, False)
    for err in result.plan.errors:
        say(f"r53lb: {err}", err=True, level="error", event="plan_error")
    if result.plan.hold:
        say(f"r53lb: hold: {result.plan.hold}; nothing written", err=True, level="error", event="hold",
            reason=result.plan.hold)
    if failed:
        raise Fail(("sync: " if dry_run else "apply failed: ") + "; ".join(failed), EXIT_FAILED,
                   error_class=_error_classes(result))
    ctx.exit(result.exit_code)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.pass_context
@errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Route 53 weights beside stored health, per node. Exit 1 when Route 53 cannot be read."""
    from .engine.status import collect

    cfg = load_config(ctx)
    store = open_state(cfg, readonly=True)
    doc = collect(make_controller(cfg, store, interactive=True))
    cluster = None
    if cfg.cluster is not None:
        from .engine.status import cluster_view

        cluster = cluster_view(cfg, store, doc["nodes"])  # type: ignore[arg-type]
        doc["cluster"] = cluster
    if as_json or json_lines():
        emit_json(doc)
    else:
        from .render import cluster_table, fence_lines, status_table

        status_table(doc["nodes"])
        fence_lines(doc.get("fences", []))
        if cluster:
            cluster_table(cluster)


def _nameserver_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--nameserver and --samples, shared by verify and drain/enable --wait."""
    fn = click.option("--samples", default=200, show_default=True, type=click.IntRange(1, 100_000),
                      help="Queries per name server and record type.")(fn)
    return click.option("--nameserver", "nameservers", multiple=True, metavar="ADDR[:PORT]",
                        help="Ask this server instead of the zone's delegation set (repeatable; "
                             "private zones, tests).")(fn)


def _wait_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = _nameserver_options(fn)
    fn = click.option("--timeout", "wait_timeout", default="5m", show_default=True, callback=_wait_timeout,
                      metavar="DURATION",
                      help="Give up --wait after this long (exit 1, naming the step).")(fn)
    return click.option("--wait", is_flag=True,
                        help="Apply it now, then return once DNS serves it: Route 53 INSYNC, the "
                             "authoritative servers agree, the record's TTL passed.")(fn)


def _wait_timeout(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from .config import parse_duration

    try:
        seconds = parse_duration(float(value) if value.replace(".", "", 1).isdigit() else value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r}: give a duration above 0")
    return seconds


def name_servers(ctl: "Controller", pool: Any, given: tuple[str, ...]) -> list[Any]:
    """--nameserver as given, else the zone's delegation set resolved with dnspython."""
    from .engine.commands import NameServerError, name_servers

    try:
        return name_servers(ctl, pool, given)
    except NameServerError as e:
        raise Fail(str(e)) from None


def _step_line(step: Any) -> None:
    say(f"{step.name} {step.seconds:.1f} s {step.detail}", event="wait_step", step=step.name,
        seconds=round(step.seconds, 3), detail=step.detail)


def _wait_served(ctl: "Controller", pool_name: str, node_id: str, *, drained: bool, nameservers: tuple[str, ...],
                 samples: int, timeout: float) -> None:
    import time

    from .engine.maintenance import WaitFailed, apply_and_wait
    from .render import wait_step
    from .core.verify import Tolerance

    pool = ctl.cfg.pool(pool_name)
    node = pool.node(node_id) if pool else None
    assert pool is not None and node is not None
    servers = name_servers(ctl, pool, nameservers)
    started = time.monotonic()
    try:
        apply_and_wait(ctl, pool, node, drained=drained, servers=servers, samples=samples, tolerance=Tolerance(),
                       timeout=timeout, on_step=_step_line if json_lines() else wait_step)
    except WaitFailed as e:
        raise Fail(f"{pool_name}/{node_id}: step {e.step} did not finish "
                   f"(after {time.monotonic() - started:.1f} s, --timeout {timeout:g} s): {e.detail}") from None
    total = time.monotonic() - started
    if drained:
        say(f"{pool_name}/{node_id} is out of DNS after {total:.1f} s: the name servers no longer hand it "
            "out and resolvers' caches have expired", event="served", pool=pool_name, node=node_id, drained=True,
            seconds=round(total, 3))
    else:
        say(f"{pool_name}/{node_id} is back in DNS after {total:.1f} s: every name server hands it out",
            event="served", pool=pool_name, node=node_id, drained=False, seconds=round(total, 3))


@main.command()
@click.argument("ref", metavar="POOL/NODE", shell_complete=_complete_nodes)
@click.option("--reason", required=True, help="Why; shown in status and history.")
@click.option("--force", is_flag=True, help="Drain even the last healthy node of a pool while another is down.")
@_wait_options
@click.pass_context
@errors
def drain(ctx: click.Context, ref: str, reason: str, force: bool, wait: bool, wait_timeout: float,
          nameservers: tuple[str, ...], samples: int) -> None:
    """Hold a node at weight 0 until `r53lb enable` (applied by the next sync, or now with --wait).

    Refuses (exit 1) to drain the last healthy node of a pool while another node is down: the pool
    would fail open onto the dead node. --force drains it anyway.
    """
    from .engine.cycle import utcnow
    from .engine.maintenance import last_healthy

    cfg = load_config(ctx)
    pool, node = resolve_node(cfg, ref)
    store = open_state(cfg)
    danger = last_healthy(cfg.pool(pool), node, store.health(), store.drains())  # type: ignore[arg-type]
    if danger and not force:
        raise Fail(f"{danger}; nothing recorded (--force drains it anyway)", EXIT_FAILED, event="drain_refused",
                   pool=pool, node=node)
    if danger:
        say(f"r53lb: warning: {danger}; drained as --force asks", err=True, level="warning", event="drain_forced",
            pool=pool, node=node)
    ctl = make_controller(cfg, store) if wait else None
    if ctl is not None:
        name_servers(ctl, cfg.pool(pool), nameservers)  # an unusable server fails before anything is recorded
    store.drain(pool, node, reason, utcnow())
    if ctl is None:
        say(f"{pool}/{node} drained: {reason} (the next sync sets its weight to 0)", event="drain", pool=pool,
            node=node, reason=reason)
        return
    say(f"{pool}/{node} drained: {reason}; applying it and waiting for DNS", event="drain", pool=pool, node=node,
        reason=reason)
    _wait_served(ctl, pool, node, drained=True, nameservers=nameservers, samples=samples, timeout=wait_timeout)


@main.command()
@click.argument("ref", metavar="POOL/NODE", shell_complete=_complete_nodes)
@_wait_options
@click.pass_context
@errors
def enable(ctx: click.Context, ref: str, wait: bool, wait_timeout: float, nameservers: tuple[str, ...],
           samples: int) -> None:
    """Undo a drain (applied by the next sync, or now with --wait)."""
    from .engine.cycle import utcnow

    cfg = load_config(ctx)
    pool, node = resolve_node(cfg, ref)
    store = open_state(cfg)
    ctl = make_controller(cfg, store) if wait else None
    if ctl is not None:
        name_servers(ctl, cfg.pool(pool), nameservers)
    was_drained = store.enable(pool, node, utcnow())
    if ctl is None:
        say(f"{pool}/{node} enabled (the next sync gives it its weight back)" if was_drained
            else f"{pool}/{node} was not drained", event="enable", pool=pool, node=node, was_drained=was_drained)
        return
    say(f"{pool}/{node} {'enabled' if was_drained else 'was not drained'}; applying it and waiting for DNS",
        event="enable", pool=pool, node=node, was_drained=was_drained)
    _wait_served(ctl, pool, node, drained=False, nameservers=nameservers, samples=samples, timeout=wait_timeout)


@main.command()
@click.argument("pool_name", metavar="[POOL]", required=False, shell_complete=_complete_nodes)
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@_nameserver_options
@click.option("--timeout", "wait_timeout", default="1m", show_default=True, callback=_wait_timeout,
              metavar="DURATION", help="Ask no name server after this long (what was not asked counts as unknown).")
@click.pass_context
@errors
def verify(ctx: click.Context, pool_name: str | None, as_json: bool, nameservers: tuple[str, ...],
           samples: int, wait_timeout: float) -> None:
    """Compare what the authoritative name servers hand out with Route 53's weights.

    Finds the zone's servers from its delegation set (or --nameserver), samples each, and checks
    that a node at weight 0 never appears (unless the whole pool is at 0) and that every share is
    within the printed tolerance. Exit 0 when DNS serves what Route 53 holds, 1 otherwise.
    """
    import time

    from .engine.commands import verify_served
    from .core.verify import Tolerance

    deadline = time.monotonic() + wait_timeout
    cfg = load_config(ctx)
    if pool_name is not None and cfg.pool(pool_name) is None:
        raise Fail(f"unknown pool {pool_name!r} (known: {', '.join(p.name for p in cfg.pools)})", EXIT_USAGE)
    pools = [cfg.pool(pool_name)] if pool_name else list(cfg.pools)
    ctl = make_controller(cfg, store=None, interactive=True)  # verify reads Route 53 and DNS; it records nothing
    tolerance = Tolerance()
    checks = []
    servers_by_zone: dict[str, list[Any]] = {}
    for pool in pools:
        zone_id = ctl.zone_id(pool)
        if zone_id not in servers_by_zone:
            servers_by_zone[zone_id] = name_servers(ctl, pool, nameservers)
        for v in verify_served(ctl, pool, servers_by_zone[zone_id], samples, tolerance, deadline=deadline):
            checks.append((pool.name, v))
    ok = all(v.ok for _, v in checks)
    # The text states the widest band any row uses: that of the server with the fewest answers.
    counted = [v.answered for _, v in checks if v.answered]
    described = tolerance.describe(min(counted) if counted else samples)
    if as_json or json_lines():
        emit_json({"ok": ok, "samples": samples, "tolerance": {**tolerance.to_json(), "text": described},
                   "checks": [{"pool": p, **v.to_json()} for p, v in checks]})
    else:
        from .render import verify_table

        verify_table(checks, described, ok)
    ctx.exit(EXIT_OK if ok else EXIT_FAILED)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--node", "ref", default=None, metavar="POOL/NODE", shell_complete=_complete_nodes,
              help="Only this node.")
@click.option("--pool", "pool_name", default=None, metavar="POOL", help="Only this pool.")
@click.pass_context
@errors
def history(ctx: click.Context, as_json: bool, limit: int, ref: str | None, pool_name: str | None) -> None:
    """State changes with reasons and times: the table newest first (as the status page);
    --json in the order they happened, weights also as integers (from_weight, to_weight)."""
    cfg = load_config(ctx)
    pool, node = resolve_node(cfg, ref) if ref else (None, None)
    if pool_name is not None:
        if cfg.pool(pool_name) is None:
            raise Fail(f"history: no pool {pool_name!r} in the config", EXIT_USAGE)
        if pool is not None and pool != pool_name:
            raise Fail(f"history: --node {ref} is not in --pool {pool_name}", EXIT_USAGE)
        pool = pool_name
    events = open_state(cfg, readonly=True).events(limit=limit, pool=pool, node=node)
    if as_json or json_lines():
        emit_json({"events": [_event_json(e) for e in events]})
    else:
        from .render import history_table

        history_table(list(reversed(events)))


def _event_json(e: Any) -> dict[str, Any]:
    d = e.to_json()
    if e.kind == "weight":  # "from"/"to" stay text (a contract); the weights as numbers beside them
        for key in ("from", "to"):
            value = d.get(key)
            d[f"{key}_weight"] = int(value) if isinstance(value, str) and value.isdigit() else None
    return d


def _metrics_addr(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    from .engine.metrics import parse_addr

    try:
        return parse_addr(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _duration_seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from .config import parse_duration

    try:
        seconds = parse_duration(float(value) if value.replace(".", "", 1).isdigit() else value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if not 10 <= seconds <= 3600:
        raise click.BadParameter(f"{value!r}: give between 10s and 1h")
    return seconds


@main.command()
@click.option("--duration", default="35s", show_default=True, callback=_duration_seconds,
              help="About how long it runs (10s-1h, e.g. 20s, 2m; the story needs ~18s): scales slow start, preempt delay, pauses.")
@click.option("--serve", is_flag=True, help="After the story, keep the fleet and its status page up until Ctrl-C.")
@click.option("--page-addr", default="127.0.0.1:0", show_default=True, callback=_metrics_addr, metavar="HOST:PORT",
              help="Serve the status page here (port 0: any free port; the URL is printed).")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 5),
              help="Above 1: several `r53lb run` replicas on one DynamoDB table; the leader is killed mid-story.")
@click.pass_context
@errors
def demo(ctx: click.Context, duration: float, serve: bool, page_addr: tuple[str, int], replicas: int) -> None:
    """The embedded demonstration: moto Route 53, loopback mail servers, the real controller."""
    from .demo import DemoFailed, run

    if serve and replicas > 1:
        raise Fail("demo: --serve shows one controller's status page; it works with --replicas 1 only", EXIT_USAGE)
    try:
        if replicas > 1:
            from .demo.cluster import run as run_cluster

            run_cluster(replicas=replicas, verbose=ctx.obj["verbose"])
        else:
            run(duration=duration, verbose=ctx.obj["verbose"], serve=serve, page_addr=page_addr)
    except DemoFailed as e:
        raise Fail(f"demo failed: {e}") from None


def _positive_duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from .config import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if not 0 < seconds <= 86400:
        raise click.BadParameter(f"{value!r}: give a duration above 0 and at most 1d")
    return seconds


def _allowed_hosts(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    from .config import status_host

    try:
        return tuple(status_host(v) for v in value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.option("--metrics-addr", default="127.0.0.1:9464", show_default=True, callback=_metrics_addr,
              metavar="HOST:PORT", help="Serve the status page (http://HOST:PORT/), /api/status, /metrics and "
                                        "/healthz here; the URL is logged at start-up.")
@click.option("--no-metrics", is_flag=True, help="No metrics endpoint.")
@click.option("--resync", default="30s", show_default=True, callback=_positive_duration, metavar="DURATION",
              help="Re-read and reconcile each zone this often even without a health change.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME", callback=_allowed_hosts,
              help="Answer HTTP requests for this Host name too (repeatable; with the config's "
                   "status_page.hosts). The bind address, localhost and IP literals always are.")
@click.pass_context
@errors
def run(ctx: click.Context, metrics_addr: tuple[str, int], no_metrics: bool, resync: float,
        allowed_hosts: tuple[str, ...]) -> None:
    """Long-running controller: probe, reconcile, alert. SIGTERM exits 0; SIGHUP reloads the config.

    Its status page is at http://127.0.0.1:9464/ (--metrics-addr), beside /api/status, /metrics, /healthz.
    """
    from .engine.daemon import run as run_daemon
    from .engine.metrics import MetricsError

    try:
        code = run_daemon(ctx.obj["config_path"], None if no_metrics else metrics_addr, resync=resync,
                          allowed_hosts=allowed_hosts)
    except MetricsError as e:
        raise Fail(str(e)) from None
    ctx.exit(code)


@main.group()
def cluster() -> None:
    """Several `r53lb run` replicas on one DynamoDB table (the config's `cluster`)."""


@cluster.command("init")
@click.pass_context
@errors
def cluster_init(ctx: click.Context) -> None:
    """Create the cluster's DynamoDB table when it does not exist (idempotent); check an existing one."""
    from .engine.commands import cluster_init as init_table

    cfg = load_config(ctx)
    if cfg.cluster is None:
        raise Fail("cluster init: the config has no `cluster` section", EXIT_USAGE)
    created, problems = init_table(cfg)
    if problems:
        raise Fail(f"cluster init: table {cfg.cluster.table} exists but cannot serve r53lb: " + "; ".join(problems))
    say(f"table {cfg.cluster.table}: {'created' if created else 'exists already'}", event="cluster_init",
        table=cfg.cluster.table, created=created)


# --- global options after the subcommand, completion ------------------------------------


def _late_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["config_path"] = value
        ctx.obj.pop("cfg", None)


def _late_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        obj = ctx.ensure_object(dict)
        obj["verbose"] = obj.get("verbose", 0) + value
        setup_logging(obj["verbose"], _LOG_FORMAT["format"])


def _late_log_format(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        setup_logging(ctx.ensure_object(dict).get("verbose", 0), value)


def _global_params() -> list[click.Parameter]:
    """-c, -v and --log-format, also accepted after the subcommand (`r53lb validate -c f`)."""
    return [
        click.Option(["-c", "--config", "late_config"], type=click.Path(dir_okay=False), expose_value=False,
                     callback=_late_config, is_eager=True, help="Config file (or R53LB_CONFIG)."),
        click.Option(["-v", "--verbose", "late_verbose"], count=True, expose_value=False, callback=_late_verbose,
                     help="Debug logging; tracebacks on errors."),
        click.Option(["--log-format", "late_log_format"], type=click.Choice(["text", "json"]), default=None,
                     expose_value=False, callback=_late_log_format, is_eager=True,
                     help="json: every line on stdout and stderr one JSON object."),
    ]


def _finish(group: click.Group) -> None:
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _finish(cmd)
            continue
        cmd.params.extend(_global_params())


_finish(main)
