"""The Hub: configuration, plugins, store and dispatcher wired together.

The web layer, the CLI and the worker each build one; it knows nothing of HTTP requests.
Plugins get it in hooks (``report_received(report, hub)``) and in commands (``pass_hub``).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from . import logs
from .answers import Answers
from .config import ConfigProblems, DestinationConfig, HubConfig, load_config
from .destinations import Destination
from .dispatch import Dispatcher, RetryPolicy
from .errors import UnknownDestination
from .normalize import Normalizer
from .plugin_hub import PluginHub
from .plugins import collect, make_manager, notify
from .report import CallReport
from .redaction import mask_phone
from .schema import require_current
from .store import Accepted, Delivery, Store, utcnow, without
from .tools import collect_tools

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ingested:
    """What the receiver answers: accepted (new), duplicate, or ignored (no destination wants it)."""

    status: str
    report_id: str
    deliveries: list[tuple[str, str]]
    #: the report as normalized from this request (a duplicate's too: the same event again)
    report: CallReport | None = None


class UnusablePayload(Exception):
    """A payload that passed its source's schema but that the source could not normalize."""

    def __init__(self, source: str, cause: Exception):
        super().__init__(f"The {source} source could not read this payload ({type(cause).__name__}); "
                         f"a field has a type or shape the source does not expect.")
        self.source = source
        self.cause = cause


class Hub:
    def __init__(self, config: HubConfig, pm=None, registry=None, *, schema_wait_seconds: float = 0.0):
        """Refuses (``SchemaError``) a store whose schema is not this release's; one that is behind
        is waited for up to ``schema_wait_seconds`` (a ``db upgrade`` under way)."""
        self.config = config
        self.pm = pm or make_manager()
        self.registry = registry or collect(self.pm)
        self.settings = config.settings
        require_current(config.store.url, wait_seconds=schema_wait_seconds)
        self.store = Store(config.store.url, sqlite_synchronous=config.store.sqlite_synchronous)
        self.normalizer = Normalizer(config.phone.default_region, config.analysis.schema)
        self.sources = self.registry.sources
        for name, settings in config.sources.items():
            self.sources[name].configure(settings)
        self._destinations: dict[str, Destination] | None = None
        # backend = "celery": new deliveries are sent to the Celery workers after the commit
        self.enqueuer = _celery_enqueuer(config, self.store) if config.dispatch.backend == "celery" else None
        self.dispatcher = Dispatcher(
            self.store, _LazyDestinations(self),
            RetryPolicy(config.dispatch.retry_delays, config.max_attempts, config.dispatch.jitter),
            lease_seconds=config.dispatch.lease_seconds, poll_interval=config.dispatch.poll_interval,
            on_finished=self._delivery_finished, on_due=self.enqueuer,
            max_in_flight={d.name: d.max_in_flight for d in config.enabled_destinations()})
        self.answers = Answers(self, collect_tools(self.pm))
        self.plugin_hub = PluginHub(self)  # what hooks and plugins' commands get: the public surface
        for warning in config.warnings:
            logs.event(log, "config.warning", logging.WARNING, message=warning)

    @classmethod
    def from_path(cls, path: str | None, *, data: dict | None = None, wait_for_schema: bool = False) -> "Hub":
        """``wait_for_schema``: wait ``[store] schema_wait_seconds`` for a schema that is behind."""
        pm = make_manager()
        registry = collect(pm)
        config = load_config(path, registry, data=data)
        wait = config.store.schema_wait_seconds if wait_for_schema else 0.0
        return cls(config, pm, registry, schema_wait_seconds=wait)

    # --- destinations ----------------------------------------------------------------

    @property
    def destinations(self) -> dict[str, Destination]:
        """Instances of every enabled destination, built on first use (per process)."""
        if self._destinations is None:
            self._destinations = {d.name: d.cls(d.name, d.options, self.settings)
                                  for d in self.config.enabled_destinations()}
        return self._destinations

    def destination(self, name: str) -> Destination:
        """The configured destination ``name``; ``UnknownDestination`` (a KeyError) lists the others."""
        try:
            return self.destinations[name]
        except KeyError:
            known = ", ".join(sorted(self.destinations)) or "none"
            raise UnknownDestination(f"no enabled destination named {name!r} (configured: {known})") from None

    def route(self, report: CallReport) -> list[DestinationConfig]:
        """The enabled destinations that want this report: its event listed, its rule true."""
        return [d for d in self.config.enabled_destinations()
                if report.event in d.events and (d.when is None or d.when.matches(report))]

    # --- the ack path ------------------------------------------------------------------

    def ingest(self, source_name: str, payload: dict, raw: dict, *, received_at: datetime | None = None) -> Ingested:
        """Normalize a validated payload, store it with its deliveries in one transaction."""
        source = self.sources[source_name]
        try:
            report = source.normalize(payload, raw=raw, report_id=str(uuid.uuid4()),
                                      received_at=received_at or utcnow(), normalizer=self.normalizer)
        except Exception as exc:  # noqa: BLE001 - a source's bug on odd input is the sender's 422, not a 500
            raise UnusablePayload(source_name, exc) from exc
        targets = self.route(report)
        # [privacy]: what is not kept goes at once when no delivery needs it, else when the last ends
        stored = report if targets else without(report, self.config.privacy.not_kept)
        accepted: Accepted = self.store.insert_report(
            stored, [d.name for d in targets], event_key=source.event_key_of(payload),
            ordered=[d.name for d in targets if d.ordering == "customer"])
        if accepted.duplicate:
            status = "duplicate"
        elif not targets and report.event != "end-of-call-report":
            status = "ignored"
        else:
            status = "accepted"
        logs.event(log, f"report.{status}", report_id=accepted.report_id, source=source_name,
                   event_type=report.event, call_id=report.call.id, customer=mask_phone(report.customer.number),
                   deliveries=[name for name, _ in accepted.deliveries])
        if not accepted.duplicate:
            notify(self.pm, "report_received", {"report_id": accepted.report_id}, report=report, hub=self.plugin_hub)
            if targets:
                self.dispatcher.wake(list(accepted.delivery_ids))
        return Ingested(status, accepted.report_id, accepted.deliveries, report)

    def _delivery_finished(self, delivery: Delivery, report: CallReport) -> None:
        if self.config.privacy.not_kept:
            self.store.drop_unkept(report.id, self.config.privacy.not_kept)
        notify(self.pm, "delivery_finished", {"delivery_id": delivery.id, "report_id": report.id},
               delivery=delivery.record(), report=report, hub=self.plugin_hub)

    def close(self) -> None:
        self.answers.close()
        for destination in (self._destinations or {}).values():
            destination.close()
        if self.enqueuer is not None:
            self.enqueuer.close()
        self.dispatcher.close()
        self.store.close()


def _celery_enqueuer(config: HubConfig, store: Store):
    try:
        from .celery_app import Enqueuer
    except ImportError as exc:
        raise ConfigProblems([f'dispatch.backend: "celery" needs the celery package ({exc}); '
                              f'pip install "sovereign-hub[celery]"'], config.path) from None
    return Enqueuer(config.dispatch, store)


class _LazyDestinations:
    """Lets the dispatcher look destinations up without building them before they are needed."""

    def __init__(self, hub: Hub):
        self._hub = hub

    def get(self, name: str, default=None):
        return self._hub.destinations.get(name, default)
