"""The ``sovereign-hub`` command. Errors are one line and a non-zero exit, never a traceback."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import click
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from . import logs
from . import operations as ops
from .api_schemas import MAX_DAYS, DeliverySchema, StatsSchema, stats_answer
from .config import ConfigProblems, load_config
from .dates import parse_duration
from .errors import UnknownDestination
from .plugins import collect, describe, make_manager
from .report import loads_json
from .samples import NAMES as SAMPLE_NAMES
from .redaction import in_play, mask_phone, redact, scrub
from .schema import SchemaError
from .store import DEAD, RUNNING, STATUSES, SUCCEEDED

CONFIG_ENV = "SOVEREIGN_HUB_CONFIG"
DEFAULT_CONFIG = "hub.toml"
ANALYSIS_PROMPT = [
    {"role": "system",
     "content": "Analyze the call transcript according to the provided schema. Return valid JSON matching the schema."},
    {"role": "user",
     "content": "Schema: {{schema}}\n\nTranscript: {{transcript}}\n\nCall ended because: {{ended_reason}}"},
]


class HubGroup(click.Group):
    """Turns the errors a user can cause into one line on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigProblems as exc:
            for line in str(exc).splitlines():
                click.secho(f"error: {line}", err=True, fg="red")
            ctx.exit(1)
        except (UnknownDestination, SchemaError) as exc:
            click.secho(f"error: {redact(str(exc))}", err=True, fg="red")
            ctx.exit(1)
        except SQLAlchemyError as exc:
            click.secho(f"error: the store is not reachable: {redact(str(exc).splitlines()[0])}", err=True, fg="red")
            ctx.exit(1)


def find_config(given: str | None) -> str:
    """The configuration file: ``-c``, else ``$SOVEREIGN_HUB_CONFIG``, else ``./hub.toml``.

    A file named by the variable must exist (it is never silently passed over); when none is
    named and ``./hub.toml`` is absent, the error names all three places."""
    if given:
        return given
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        if not Path(from_env).is_file():
            raise ConfigProblems([f"configuration file not found: {from_env} (named by {CONFIG_ENV})"])
        return from_env
    if Path(DEFAULT_CONFIG).is_file():
        return DEFAULT_CONFIG
    raise ConfigProblems([f"no configuration file: give one with -c/--config FILE, set {CONFIG_ENV}, "
                          f"or create ./{DEFAULT_CONFIG} (config.example.toml is one to start from)"])


def config_option(func):
    return click.option("-c", "--config", "config_path", callback=lambda _ctx, _param, value: find_config(value),
                        type=click.Path(dir_okay=False),
                        help=f"The TOML configuration file (default: ${CONFIG_ENV}, else ./{DEFAULT_CONFIG}).")(func)


def load_settings(config_path: str):
    """The validated configuration alone: for commands that only read it (no store, no broker)."""
    return load_config(config_path, collect(make_manager()))


def load_hub(config_path: str, *, wait_for_schema: bool = False):
    from .core import Hub

    return Hub.from_path(config_path, wait_for_schema=wait_for_schema)


def _passing_hub(view):
    """A decorator for click commands: adds ``-c/--config``, loads the Hub, passes ``view(hub)`` first."""

    def decorate(func):
        @config_option
        @functools.wraps(func)
        def wrapper(config_path, *args, **kwargs):
            core = load_hub(config_path)
            try:
                return func(view(core), *args, **kwargs)
            finally:
                core.close()

        return wrapper

    return decorate


#: for plugins' commands (``hub.pass_hub``): passes the ``PluginHub``, the hub's public surface
pass_hub = _passing_hub(lambda core: core.plugin_hub)
#: for the CLI's own commands: passes the core ``Hub``
pass_core_hub = _passing_hub(lambda core: core)


def parse_since(text: str | None) -> datetime | None:
    """``24h``, ``7d``, ``30m`` or an ISO date/time, as an aware UTC datetime."""
    if not text:
        return None
    try:
        return datetime.now(timezone.utc) - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a duration like 24h, 7d, 30m or an ISO date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@click.group(cls=HubGroup)
@click.version_option(package_name="sovereign-hub")
def cli():
    """Sovereign Hub: HMS Sovereign call reports, verified, stored and delivered."""


# --- running ----------------------------------------------------------------------------

@cli.command()
@config_option
@click.option("--host", help="Listen address (default: [server] host).")
@click.option("--port", type=int, help="Listen port (default: [server] port).")
@click.option("--workers", type=int, help="HTTP worker processes (default: [server] workers).")
@click.option("--web-only", is_flag=True,
              help="Run the receiver only; deliveries are left to `sovereign-hub worker` processes elsewhere.")
def serve(config_path, host, port, workers, web_only):
    """Run the receiver (gunicorn) and a dispatcher (`sovereign-hub worker`), each in its own process.

    The dispatcher is the embedded one, or a Celery worker with the sweeper when
    [dispatch] backend = "celery"; --web-only leaves it out (a web node of a larger setup).
    """
    config = load_settings(config_path)  # fail here, in one line, before any child starts
    # The schema first, once, in a process of its own, before any web worker or dispatcher:
    # upgraded (auto_migrate, not --web-only) or checked (waiting for an upgrade under way).
    schema_cmd = (["upgrade"] if config.store.auto_migrate and not web_only else ["check", "--wait"])
    migrated = subprocess.run([sys.executable, "-m", "hub", "db", *schema_cmd, "-c", config_path], check=False)
    if migrated.returncode != 0:
        sys.exit(migrated.returncode)
    server, grace = config.server, config.dispatch.shutdown_grace_seconds
    host, port, workers = host or server.host, port or server.port, workers or server.workers
    resolved = str(Path(config_path).resolve())
    # gunicorn's master loads the app and forks the workers from it, so they share its pages
    # (hub/gunicorn_config.py); for gevent, the standard library is patched before anything
    # is imported, the master included (psycopg and requests must see it patched at import)
    patched = ["-m", "gevent.monkey", "--module"] if server.worker_class == "gevent" else ["-m"]
    web_cmd = [sys.executable, *patched, "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
               "--worker-class", server.worker_class, "--keep-alive", str(server.header_timeout_seconds),
               "--graceful-timeout", str(int(grace)), "--timeout", "30", "--log-level", "warning", "--preload",
               "--config", str(Path(__file__).with_name("gunicorn_config.py")), "hub.wsgi:app"]
    worker_cmd = [sys.executable, "-m", "hub", "worker", "-c", resolved]
    spec = {"commands": [web_cmd] if web_only else [worker_cmd, web_cmd],
            "names": ["web"] if web_only else ["dispatcher", "web"],
            "note": "no dispatcher, " if web_only else "", "url": f"http://{host}:{port}", "grace": grace,
            "metrics_dir": os.path.join(tempfile.gettempdir(), f"sovereign-hub-metrics-{os.getpid()}")}
    # From here on this process only watches: it becomes the lean supervisor (same pid, a few MB).
    os.environ[CONFIG_ENV] = resolved
    supervisor = str(Path(__file__).with_name("supervisor.py"))
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-I", "-S", supervisor, json.dumps(spec)])


@cli.command()
@config_option
@click.option("--workers", type=int, help="Delivery threads (default: [dispatch] workers).")
@click.option("--sweeper/--no-sweeper", default=True, show_default=True,
              help='backend = "celery": also run the sweeper (an embedded Celery beat).')
def worker(config_path, workers, sweeper):
    """Run the dispatcher only: deliver due deliveries until SIGTERM/SIGINT.

    With [dispatch] backend = "celery", a Celery worker for [dispatch] broker_url and queue,
    with --workers threads, and the sweeper that sends forgotten deliveries again.
    """
    logs.configure()  # before the Hub: its start-up warnings (allow_unsigned) are logged in full
    hub = load_hub(config_path, wait_for_schema=True)
    logs.configure(hub.config.logging.level)
    if hub.config.dispatch.backend == "celery":
        sys.exit(_celery_worker(hub, workers or hub.config.dispatch.workers, sweeper))
    # the handler only appends: it runs in the main thread between any two of its bytecodes, so a
    # lock it took (an Event's) could be one that thread already holds
    signalled: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: signalled.append(signum))
    hub.dispatcher.start(workers or hub.config.dispatch.workers)
    schedulers = _start_schedules(hub)
    # A short sleep, again and again: CPython runs a signal's handler in the main thread the next
    # time that thread runs Python code, and a signal the kernel gave another thread (a delivery
    # thread) does not interrupt the main thread's wait. Waiting on an Event for ever, a Ctrl-C
    # was missed now and then, and the dispatcher went on claiming until serve killed it.
    while not signalled:
        time.sleep(0.2)
    # claim nothing more from this moment: a scheduled job still running (a prune, a reconcile)
    # may take a while to stop, and a thread that finished its attempt meanwhile must not start
    # the next delivery
    hub.dispatcher.stop_claiming()
    for scheduler in schedulers:
        scheduler.stop(timeout=hub.config.dispatch.shutdown_grace_seconds)
    hub.dispatcher.stop(hub.config.dispatch.shutdown_grace_seconds)
    hub.close()


def _start_schedules(hub) -> list:
    """The scheduled reconcile and prune, offered from every dispatcher process (the store's
    lease makes each run once across all of them), and the queued erasures at the destinations
    (each row leased to one process)."""
    from . import erasures, reconcile, retention

    found = [reconcile.scheduler_for(hub), retention.scheduler_for(hub), erasures.runner_for(hub)]
    return [scheduler.start() for scheduler in found if scheduler is not None]


def _celery_worker(hub, concurrency: int, sweeper: bool) -> int:
    from .celery_app import BrokerUnreachable
    from .celery_worker import run_worker

    _start_schedules(hub)  # daemon threads: they end with the worker
    try:
        return run_worker(hub, concurrency=concurrency, beat=sweeper)
    except BrokerUnreachable as exc:
        raise click.ClickException(redact(str(exc))) from None
    finally:
        hub.close()


# --- checking -----------------------------------------------------------------------------

@cli.command("check-config")
@config_option
def check_config(config_path):
    """Validate the configuration: every problem, one line each, naming the key; then reach the
    store (and its schema revision) and the broker."""
    from . import schema

    config = load_settings(config_path)
    found = schema.state(config.store.url)
    if config.dispatch.backend == "celery":
        _ping_broker(config)
    for warning in config.warnings:
        click.secho(f"warning: {warning}", err=True, fg="yellow")
    if not found.current:
        when = ("`serve` applies it when it starts (auto_migrate)" if config.store.auto_migrate
                else f"run `{schema.UPGRADE_COMMAND}` before starting the hub")
        click.secho(f"warning: store: {found.summary}: {when}", err=True, fg="yellow")
    enabled = config.enabled_destinations()
    click.echo(f"{config_path}: OK ({len(enabled)} enabled destination(s): "
               f"{', '.join(f'{d.name} ({d.type})' for d in enabled) or 'none'})")


def _ping_broker(config) -> None:
    try:
        from .celery_app import BrokerUnreachable, create_celery, ping
    except ImportError as exc:
        raise click.ClickException(f'dispatch.backend: "celery" needs the celery package ({exc}); '
                                   f'pip install "sovereign-hub[celery]"') from None
    try:
        ping(create_celery(config.dispatch))
    except BrokerUnreachable as exc:
        raise click.ClickException(redact(str(exc))) from None


# --- the store's schema and backups -----------------------------------------------------------

@cli.group()
def db():
    """The store's schema (migrations) and backups."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path):
    """Apply every pending migration (idempotent; two at once run one after the other)."""
    from . import schema

    url = load_settings(config_path).store.url
    done = schema.upgrade(url)
    where = schema.describe(url)
    if not done.applied and not done.adopted:
        click.echo(f"{where}: schema revision {done.after}, the newest; nothing to do")
        return
    adopted = " (release 0.1.0's tables recorded as revision 0001)" if done.adopted else ""
    click.echo(f"{where}: upgraded to schema revision {done.after}{adopted}; applied: "
               f"{', '.join(done.applied) or 'none'}", err=True)


@db.command("current")
@config_option
def db_current(config_path):
    """The schema revision of the database and of this release."""
    from . import schema

    url = load_settings(config_path).store.url
    found = schema.state(url)
    click.echo(f"database: {found.summary}  ({schema.describe(url)})")
    click.echo(f"code:     schema revision {found.code}")


@db.command("history")
@config_option
def db_history(config_path):
    """Every schema revision this release knows, oldest first; the database's is marked."""
    from . import schema

    found = schema.state(load_settings(config_path).store.url)
    for revision in schema.history():
        mark = "  <- the database" if revision.id == found.database else ""
        click.echo(f"{revision.id}  {revision.description}{mark}")


@db.command("check")
@config_option
@click.option("--wait", is_flag=True, help="Wait up to [store] schema_wait_seconds for a schema that is behind.")
def db_check(config_path, wait):
    """Exit 0 when the database's schema is this release's; otherwise one line and exit 1."""
    from . import schema

    config = load_settings(config_path)
    schema.require_current(config.store.url, wait_seconds=config.store.schema_wait_seconds if wait else 0)


@db.command("backup")
@config_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(config_path, file):
    """Write a consistent copy of a SQLite store to FILE, while the hub runs (PostgreSQL: pg_dump)."""
    from .backup import BackupError, backup

    try:
        done = backup(load_settings(config_path).store.url, file)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{file}: {done.reports} report(s), {done.deliveries} deliver{'y' if done.deliveries == 1 else 'ies'}, "
               f"schema revision {done.revision or 'none'}, {done.size_bytes:,} bytes")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(as_json):
    """List installed plugins: version, hooks, destination types, and any that failed to load."""
    rows = describe(make_manager())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row.get("error"):
            click.secho(f"{row['name']}: FAILED TO LOAD: {row['error']}", fg="red")
            continue
        provides = [f"types: {', '.join(row['destination_types'])}"] if row["destination_types"] else []
        provides += [f"sources: {', '.join(row['sources'])}"] if row["sources"] else []
        click.echo(f"{row['name']} {row['version']} ({row['distribution']})  {'  '.join(provides) or '-'}  "
                   f"hooks: {', '.join(row['hooks'])}")
        for type_name, buckets in row["rate_limits"].items():
            shown = ", ".join(f"{bucket} {rate or 'unlimited'}" for bucket, rate in buckets.items())
            click.echo(f"  {type_name} rate limits: {shown}")


# --- reading ------------------------------------------------------------------------------

@cli.group()
def reports():
    """Stored reports."""


@reports.command("list")
@pass_core_hub
@click.option("--since", help="e.g. 24h, 7d, or an ISO date.")
@click.option("--limit", type=int, default=50, show_default=True)
def reports_list(hub, since, limit):
    """The newest reports first."""
    found = ops.list_reports(hub, since=parse_since(since), limit=limit).reports
    if not found:
        click.echo(f"no reports{f' since {since}' if since else ''}", err=True)
    for report in found:
        sentiment = (report.analysis or {}).get("sentiment", "-")
        click.echo(f"{report.id}  {report.received_at:%Y-%m-%d %H:%M:%S}  {report.event:<19} "
                   f"{report.call.direction:<8} {mask_phone(report.customer.number) or '-':<15} "
                   f"{report.duration_seconds if report.duration_seconds is not None else '-':>5}s  "
                   f"sentiment {sentiment}")


@reports.command("show")
@pass_core_hub
@click.argument("report_id")
def reports_show(hub, report_id):
    """One report as JSON, with its deliveries and their attempts (the API's form)."""
    detail = _operation(lambda: ops.get_report(hub, report_id))
    out = detail.report.data | {"deliveries": DeliverySchema(many=True).dump(detail.deliveries)}
    click.echo(json.dumps(out, indent=2, ensure_ascii=False))


@cli.group()
def deliveries():
    """Deliveries and their attempts."""


@deliveries.command("list")
@pass_core_hub
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--destination")
@click.option("--report", "report_id")
@click.option("--limit", type=int, default=50, show_default=True)
def deliveries_list(hub, status, destination, report_id, limit):
    """Newest first; ``--status dead`` lists the dead letters."""
    found = ops.list_deliveries(hub, status=status, destination=destination, report_id=report_id, limit=limit)
    if not found:
        asked = [f"{name} {value}" for name, value in
                 (("status", status), ("destination", destination), ("report", report_id)) if value]
        click.echo(f"no deliveries{' with ' + ', '.join(asked) if asked else ''}", err=True)
    for d in found:
        click.echo(f"{d.id}  {d.status:<9} {d.destination:<20} report {d.report_id}  attempts {d.attempts}  "
                   f"{d.last_error or d.result or ''}"[:240])


@cli.group()
def destinations():
    """The configured destinations: list, pause and resume one, test one."""


def _destination_line(state: ops.DestinationState) -> str:
    paused = f"paused since {state.paused_at:%Y-%m-%d %H:%M:%S} UTC" if state.paused else "active"
    return f"{state.name:<20} {state.type:<12} {paused}"


@destinations.command("list")
@pass_core_hub
def destinations_list(hub):
    """Every enabled destination, its type, and whether it is paused."""
    for state in ops.list_destinations(hub):
        click.echo(_destination_line(state))


@cli.group()
def tools():
    """The tools the platform's LLM can call (tool-calls events, docs/answers.md)."""


@tools.command("export")
@pass_core_hub
def tools_export(hub):
    """Print the tool definitions to paste into the assistant's llm_config.tools (JSON)."""
    click.echo(json.dumps(_operation(lambda: ops.export_tools(hub)), indent=2))


@cli.group()
def answers():
    """Live answers to assistant-request (docs/answers.md)."""


@answers.command("test")
@pass_core_hub
@click.argument("number")
def answers_test(hub, number):
    """Print the assistant-request answer the hub would give a call from NUMBER now (a dry run
    through the real CRM lookup; nothing stored)."""
    tried = _operation(lambda: ops.try_answer(hub, number))
    click.echo(json.dumps({"answer": tried.answer, "outcome": tried.outcome, "lookup": tried.lookup,
                           "detail": tried.detail, "latency_ms": round(tried.latency_ms, 1)}, indent=2))


@destinations.command("pause")
@pass_core_hub
@click.argument("name")
def destinations_pause(hub, name):
    """Attempt nothing more for NAME (on every node) until it is resumed; new reports still queue."""
    click.echo(_destination_line(_operation(lambda: ops.pause_destination(hub, name))))


@destinations.command("resume")
@pass_core_hub
@click.argument("name")
def destinations_resume(hub, name):
    """Deliver NAME's waiting deliveries again."""
    click.echo(_destination_line(_operation(lambda: ops.resume_destination(hub, name))))


def _operation(action):
    """Run an operation; its error becomes one line and exit code 1."""
    try:
        return action()
    except ops.NotFound as exc:
        raise click.ClickException(f"no {exc.kind} {exc.id}") from None
    except ops.OperationError as exc:
        raise click.ClickException(exc.message) from None


def _queued(ids: list[str]) -> str:
    return (f"{len(ids)} deliver{'y' if len(ids) == 1 else 'ies'} queued; a running dispatcher picks "
            f"{'it' if len(ids) == 1 else 'them'} up")


@cli.command()
@pass_core_hub
@click.argument("report_id")
@click.option("--destination", help="Only this (enabled) destination.")
def replay(hub, report_id, destination):
    """Deliver a report again (state kept, so nothing is created twice): every delivery it has,
    or to --destination (an enabled one).

    A failed delivery is tried again with `retry` (one, or --dead for all).
    """
    outcome = _operation(lambda: ops.replay_report(hub, report_id, destination))
    click.echo(_queued([d.id for d in outcome.deliveries]))
    if outcome.skipped_running:
        click.echo(f"skipped (being attempted right now): {', '.join(outcome.skipped_running)}", err=True)


@cli.command()
@pass_core_hub
@click.argument("delivery_id", required=False)
@click.option("--dead", is_flag=True, help="Every dead delivery of the enabled destinations (or of --destination).")
@click.option("--destination", help="With --dead: only this (enabled) destination's.")
def retry(hub, delivery_id, dead, destination):
    """Try a failed delivery again, due now with a fresh attempt budget (its state is kept); or,
    with --dead, every dead delivery.

    The same rules as the API's: only enabled destinations, and --dead leaves the dead
    deliveries of destinations that are no longer configured alone.
    """
    if bool(delivery_id) == dead:
        raise click.UsageError("give a DELIVERY_ID or --dead (not both)")
    if destination and not dead:
        raise click.UsageError("--destination goes with --dead")
    if delivery_id:
        outcome = _operation(lambda: ops.retry_delivery(hub, delivery_id))
        click.echo(_queued([outcome.delivery.id]))
        return
    outcome = _operation(lambda: ops.retry_dead(hub, destination))
    click.echo(_queued(outcome.delivery_ids))
    for name, count in outcome.skipped_unconfigured.items():
        click.echo(f"left alone: {count} dead deliver{'y' if count == 1 else 'ies'} of {name!r}, "
                   f"which is no longer configured", err=True)


@cli.command()
@pass_core_hub
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=30, show_default=True)
@click.option("--line", help="Analytics of this line only (E.164).")
@click.option("--assistant", help="Analytics of this assistant only (its name, else id).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON form, analytics included.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every analytics figure as figure,key,value rows.")
def stats(hub, days, line, assistant, as_json, as_csv):
    """Deliveries per destination and status; reports and average sentiment per UTC day (--json
    and --csv: the analytics page's figures too)."""
    from .analytics import to_csv

    figures = ops.stats(hub, days)
    if as_json or as_csv:
        analytics = _operation(lambda: ops.analytics(hub, days, line=line, assistant=assistant))
        click.echo(to_csv(analytics) if as_csv else json.dumps(StatsSchema().dump(stats_answer(figures, analytics)),
                                                               indent=2), nl=not as_csv)
        return
    for name, counts in figures.deliveries.items():
        paused = "  (paused)" if name in figures.paused else ""
        click.echo(f"{name:<20} " + "  ".join(f"{status} {n}" for status, n in counts.items()) + paused)
    for day in figures.per_day:
        average = "-" if day.average_sentiment is None else day.average_sentiment
        click.echo(f"{day.date}  reports {day.reports:>5}  average sentiment {average}")


# --- sending ------------------------------------------------------------------------------

@destinations.command("test")
@pass_core_hub
@click.argument("name")
def destinations_test(hub, name):
    """One cheap authenticated call to NAME: exit 0 if delivery can work, else one line saying
    what is wrong (bad token, missing scope, unknown channel, unreachable) and exit 1."""
    outcome = _operation(lambda: ops.check_connection(hub, name))
    if not outcome.ok:
        raise click.ClickException(f"{name} ({outcome.type}): {outcome.problem.replace('_', ' ')}: {outcome.message}")
    click.echo(f"{name} ({outcome.type}): ok: {outcome.message}")


@cli.command("send-test")
@config_option
@click.argument("destination")
@click.option("--dry-run", is_flag=True, help="Build the requests and print them; send nothing.")
@click.option("--sample", default="end-of-call-report-full", show_default=True,
              type=click.Choice(SAMPLE_NAMES))
def send_test(config_path, destination, dry_run, sample):
    """Send a sample report through one destination (not via the store, which it does not open)."""
    from .errors import DeliveryError, Permanent
    from .normalize import Normalizer
    from .samples import load_sample

    registry = collect(make_manager())
    settings = load_config(config_path, registry)
    config = settings.destinations.get(destination)
    if config is None:
        raise click.ClickException(f"no destination named {destination!r} in {settings.path} "
                                   f"(configured: {', '.join(settings.destinations) or 'none'})")
    raw = load_sample(sample)
    source = registry.sources["hms"]
    report = source.normalize(source.schema.load(raw), raw=raw, report_id="send-test",
                              received_at=datetime.now(timezone.utc),
                              normalizer=Normalizer(settings.phone.default_region, settings.analysis.schema))
    instance = config.cls(config.name, config.options, settings.settings)
    ctx = instance.context(delivery_id=f"send-test-{int(time.time())}", dry_run=dry_run)
    if config.when is not None and not config.when.matches(report):
        click.secho(f"note: the rule when = {config.when.expression!r} does not match this sample; "
                    f"sending anyway", err=True, fg="yellow")
    try:
        with in_play([report.customer.number]):  # errors scrubbed as the dispatcher scrubs them
            try:
                result = instance.deliver(report, ctx)
            except DeliveryError as exc:
                kind = "permanent" if isinstance(exc, Permanent) else "retryable"
                raise click.ClickException(f"{kind} error: {scrub(exc.reason)}") from None
            except Exception as exc:  # noqa: BLE001 - a plugin's bug: one line, as the dispatcher would record it
                raise click.ClickException(f"unexpected {type(exc).__name__} in destination {destination!r}: "
                                           f"{scrub(str(exc))}") from None
    finally:
        instance.close()
    if dry_run:
        click.echo(json.dumps([r.to_dict() for r in ctx.sent], indent=2, ensure_ascii=False))
    click.echo(f"{'dry run: ' if dry_run else ''}{result.message}", err=dry_run)


def _payloads(path: Path):
    """One payload, a JSON array of payloads, or JSON lines."""
    text = path.read_text()
    try:
        data = loads_json(text)
    except ValueError:
        data = [loads_json(line) for line in text.splitlines() if line.strip()]
    return data if isinstance(data, list) else [data]


@cli.command()
@pass_core_hub
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", default="hms", show_default=True)
def ingest(hub, files, source):
    """Feed saved payloads through the receiver's path (minus the signature check)."""
    if source not in hub.sources:
        raise click.ClickException(f"no source named {source!r}")
    src = hub.sources[source]
    items = []
    for path in files:
        try:
            items.extend((path, n, payload) for n, payload in enumerate(_payloads(path), 1))
        except (ValueError, RecursionError) as exc:
            raise click.ClickException(f"{path}: not JSON or JSON lines ({exc})") from None
        except OSError as exc:
            raise click.ClickException(f"{path}: cannot read it ({exc.strerror})") from None
    counts: dict[str, int] = {}
    problems = []
    with click.progressbar(items, label="ingesting", file=sys.stderr, show_pos=True) as bar:
        for path, n, payload in bar:
            try:
                parsed = src.schema.load(payload)
            except ValidationError as exc:
                problems.append(f"{path}#{n}: invalid payload: {json.dumps(exc.messages)}")
                counts["invalid"] = counts.get("invalid", 0) + 1
                continue
            status = hub.ingest(source, parsed, payload).status
            counts[status] = counts.get(status, 0) + 1
    for problem in problems:
        click.secho(problem, err=True, fg="red")
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if problems:
        sys.exit(1)


@cli.command()
@pass_core_hub
@click.option("--since", default="24h", show_default=True,
              help="Reconcile calls that started since: 24h, 7d, 30m or an ISO date/time.")
@click.option("--dry-run", is_flag=True, help="Count what would be ingested; store nothing.")
def reconcile(hub, since, dry_run):
    """Fetch back from the platform's calls API every ended call the hub has no report of.

    Each becomes an end-of-call report, through the receiver's path minus the signature:
    stored, deduplicated, delivered. Needs [sources.hms] api_key.
    """
    from .reconcile import CallsApiError, api_for, reconcile as run

    start, end = parse_since(since), datetime.now(timezone.utc)

    def progress(outcome, total):
        if outcome.seen % 100 == 0 or outcome.seen == total:
            click.echo(f"reconcile: {outcome.seen}/{total} calls, {outcome.ingested} "
                       f"{'to ingest' if dry_run else 'ingested'}", err=True)

    try:
        api = api_for(hub)
        try:
            outcome = run(hub, api, start, end, dry_run=dry_run, progress=progress)
        finally:
            api.close()
    except CallsApiError as exc:
        raise click.ClickException(redact(str(exc))) from None
    for call_id, reason in outcome.skipped:
        click.secho(f"skipped {call_id}: {reason}", err=True, fg="yellow")
    verb = "would ingest" if dry_run else "ingested"
    click.echo(f"{outcome.seen} calls seen, {outcome.already_received} already received, {outcome.ingested} "
               f"{verb}, {len(outcome.skipped)} skipped{' (dry run: nothing stored)' if dry_run else ''}")


# --- personal data ------------------------------------------------------------------------

def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {table}" for table, n in counts.items())


@cli.command()
@pass_core_hub
@click.option("--dry-run", is_flag=True, help="Count what would be removed; remove nothing.")
def prune(hub, dry_run):
    """Delete reports older than [privacy] retention_days, with their deliveries and attempts.

    A report with a delivery still pending or running is kept until it ends.
    """
    outcome = _operation(lambda: ops.prune(hub, dry_run=dry_run))
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {_counted(outcome.counts)} (calls before {outcome.before.isoformat(timespec='seconds')})")


@cli.command()
@pass_core_hub
@click.argument("number")
@click.option("--destinations", is_flag=True,
              help="Also queue the erasure at every enabled destination whose type can (HubSpot: GDPR delete; "
                   "Salesforce: delete); the running hub (`serve` or `worker`) runs each like a delivery.")
@click.option("--wait", is_flag=True, help="With --destinations: wait until each queued erasure has succeeded or "
                                           "is dead, printing each attempt's outcome (Ctrl-C stops waiting only).")
@click.option("--timeout", type=click.FloatRange(min=0), help="With --wait: stop waiting after this many seconds.")
def forget(hub, number, destinations, wait, timeout):
    """Erase one caller: every report, event, delivery, attempt and stored state of NUMBER.

    NUMBER in any form (+31612345678, 0612345678 with [phone] default_region, 0031612345678).
    A record of the erasure (when, by whom, how many rows) is kept without the number.
    """
    if (wait or timeout is not None) and not destinations:
        raise click.UsageError("--wait and --timeout follow the destinations' erasures: add --destinations")
    if timeout is not None and not wait:
        raise click.UsageError("--timeout limits --wait: add --wait")
    outcome = _operation(lambda: ops.forget(hub, number, actor="cli", destinations=destinations))
    click.echo(f"erased {outcome.number}: {_counted(outcome.counts)} (erasure {outcome.erasure.id})")
    for name, said in outcome.destinations.items():
        click.echo(f"  {name}: {said}")
    if not outcome.erasure.queued:
        return
    if not wait:
        click.echo(f"the running hub erases at the destinations; follow them with "
                   f"`sovereign-hub erasures {outcome.erasure.id}`")
        return
    record = ops.wait_for_erasure(hub, outcome.erasure.id, timeout=timeout,
                                  on_change=lambda job: click.echo(f"  {job.destination}: {_erasure_state(job)}"))
    _exit_for(record)


@cli.command()
@pass_core_hub
@click.argument("erasure_id", type=int, required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="How many records.")
def erasures(hub, erasure_id, limit):
    """The kept erasure records (newest first), or one with every attempt, with each destination's
    erasure: pending, running, erased or dead. With ERASURE_ID, exits 1 when one of its is dead."""
    found = [_operation(lambda: ops.get_erasure(hub, erasure_id))] if erasure_id is not None else \
        _operation(lambda: ops.list_erasures(hub, limit=limit))
    if not found:
        click.echo("no erasures recorded")
        return
    for record in found:
        click.echo(f"erasure {record.id} at {record.erased_at.isoformat(timespec='seconds')} by {record.actor}: "
                   f"{_counted(record.counts)}")
        queued = {job.destination: job for job in record.queued}
        for name, said in sorted(record.destinations.items()):
            click.echo(f"  {name}: {_erasure_state(queued[name]) if name in queued else said}")
            if erasure_id is not None and name in queued:
                for entry in queued[name].attempt_log:
                    click.echo(f"    attempt {entry.number} at {entry.started_at.isoformat(timespec='seconds')}: "
                               f"{entry.outcome}{f' ({entry.error})' if entry.error else ''}")
    if erasure_id is not None and any(job.status == DEAD for job in found[0].queued):
        sys.exit(1)


def _erasure_state(job) -> str:
    """One line for a queued erasure: what it came to, or when it is next tried."""
    tried = f"{job.attempts} attempt{'' if job.attempts == 1 else 's'}"
    if job.status == SUCCEEDED:
        return f"erased ({tried}): {job.result}"
    if job.status == DEAD:
        return f"dead after {tried}: {job.last_error}"
    if job.held:
        return f"{job.status}, held: {job.held}"
    if job.status == RUNNING:
        return f"running (attempt {job.attempts})"
    last = f"; last error: {job.last_error}" if job.last_error else ""
    return f"pending ({tried} so far), next attempt {job.next_attempt_at.isoformat(timespec='seconds')}{last}"


def _exit_for(record) -> None:
    """Exit 1 when a queued erasure is dead, 2 when --timeout ended the wait first."""
    if any(job.status == DEAD for job in record.queued):
        sys.exit(1)
    if not record.ended:
        click.echo("stopped waiting: the hub goes on with the erasures still pending", err=True)
        sys.exit(2)


@cli.command("export-customer")
@pass_core_hub
@click.argument("number")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON to this file (readable by its owner only) instead of stdout.")
def export_customer(hub, number, output):
    """Everything the hub holds about one caller as JSON: reports, events, deliveries, attempts."""
    from .api_schemas import CustomerExportSchema
    from .files import open_private

    outcome = _operation(lambda: ops.export_customer(hub, number))
    text = json.dumps(CustomerExportSchema().dump(outcome), indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
        return
    with open_private(output) as handle:
        handle.truncate(0)
        handle.write((text + "\n").encode())
    click.echo(f"wrote {len(outcome.reports)} reports of {mask_phone(outcome.number)} to {output}", err=True)


@cli.command("analysis-plan")
@config_option
def analysis_plan(config_path):
    """Print the analysis_plan JSON to paste into the assistant, built from [analysis]."""
    analysis = load_settings(config_path).analysis
    if not analysis.schema:
        raise click.ClickException(f"{config_path}: [analysis] schema is not set; add the JSON Schema the "
                                   f"assistant should fill in")
    plan = {"analysis_plan": {
        "structured_data_plan": {"enabled": True, "schema": analysis.schema,
                                 "messages": analysis.messages or ANALYSIS_PROMPT},
        "min_messages_threshold": analysis.min_messages_threshold,
    }}
    click.echo(json.dumps(plan, indent=2))


def main():
    pm = make_manager()
    collect(pm)
    pm.hook.register_commands(cli=cli)
    cli(prog_name="sovereign-hub")
