"""``sovereign-hub slack digest``: one message summing up a period, meant for cron."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import click

import hub

from .digest import build_digest, parse_since


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def add_commands(cli: click.Group) -> None:
    @cli.group("slack")
    def slack():
        """Slack alerts: the digest command."""

    @slack.command("digest")
    @hub.pass_hub
    @click.option("--destination", "-d", "name", required=True, help="A configured destination of type slack.")
    @click.option("--since", default="24h", show_default=True, help="Start: 24h, 90m, 7d, 2w or an ISO date/time.")
    @click.option("--until", default=None, help="End (default: now): a span back from now or an ISO date/time.")
    @click.option("--dry-run", is_flag=True, help="Print the request as JSON; post nothing.")
    def digest(the_hub, name, since, until, dry_run):
        """Post one message summing up a period: calls, average sentiment, unresolved calls,
        follow-ups, failed calls and dead deliveries."""
        start = _moment(since, "--since")
        end = _moment(until, "--until") or datetime.now(timezone.utc)
        try:
            destination = the_hub.destination(name)
        except KeyError as exc:  # hub.errors.UnknownDestination: its message lists the configured names
            raise click.ClickException(str(exc.args[0] if exc.args else exc)) from None
        if getattr(destination, "type", None) != "slack" or not hasattr(destination, "post"):
            raise click.ClickException(f"destination {name!r} is of type {destination.type!r}; "
                                       f"the digest needs a destination of type slack")
        reports = the_hub.reports(since=start, until=end)
        dead = [d for d in the_hub.deliveries(status="dead", since=start) if d.updated_at <= end]
        message = build_digest(reports, dead, since=start, until=end, settings=the_hub.settings,
                               sentiment_max=destination.config.get("sentiment_max", 10))
        ctx = destination.context(delivery_id=f"slack-digest-{int(end.timestamp())}", dry_run=dry_run)
        try:
            destination.post(message, ctx)
        except hub.DeliveryError as exc:
            raise click.ClickException(exc.reason) from None
        if dry_run:
            click.echo(json.dumps([r.to_dict() for r in ctx.sent], indent=2, ensure_ascii=False))
        click.echo(f"{'dry run: would post' if dry_run else 'posted'} the digest of {len(reports)} report(s) "
                   f"and {len(dead)} dead deliveries to {destination.where} ({name})", err=dry_run)
