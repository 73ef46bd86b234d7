"""``PluginHub``: the hub as a plugin sees it, the ``hub`` argument of every hook and ``pass_hub``.

A narrow, read-mostly view of the running hub: its settings, its destinations, and the stored
reports and deliveries. The store, the dispatcher and the plugin manager stay inside the core
(docs/plugin_hooks.md, "The hub a hook receives"), so they can change without breaking plugins.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # for annotations only: importing them would load SQLAlchemy with ``import hub``
    from .destinations import Destination, HubSettings
    from .lookup import Lookup
    from .tools import ToolCall
    from .records import DeliveryRecord
    from .report import CallReport


class PluginHub:
    """What a plugin may use of the hub. Built by the core; a plugin never makes one."""

    def __init__(self, core: Any):
        self._core = core

    @property
    def settings(self) -> HubSettings:
        """Hub-wide facts: ``public_url`` (and ``report_url(id)``), ``default_region``."""
        return self._core.settings

    @property
    def destinations(self) -> Mapping[str, Destination]:
        """The enabled destinations by name (instances, built on first use in this process)."""
        return dict(self._core.destinations)

    def destination(self, name: str) -> Destination:
        """The enabled destination ``name``; a ``KeyError`` whose message lists the enabled ones."""
        return self._core.destination(name)

    def report(self, report_id: str) -> CallReport | None:
        """One stored report, or None."""
        return self._core.store.get_report(report_id)

    def reports(self, since: datetime | None = None, until: datetime | None = None, *,
                customer: str | None = None, limit: int | None = None) -> list[CallReport]:
        """Stored reports received in [since, until), newest first."""
        from . import operations

        return operations.list_reports(self._core, since=since, until=until, customer=customer,
                                       limit=limit).reports

    def deliveries(self, status: str | None = None, since: datetime | None = None, *,
                   destination: str | None = None, report_id: str | None = None,
                   limit: int | None = None) -> list[DeliveryRecord]:
        """Deliveries (``status``: pending, running, succeeded, dead) updated since ``since``,
        most recently updated first."""
        from . import operations

        return operations.list_deliveries(self._core, status=status, since=since, destination=destination,
                                          report_id=report_id, limit=limit)

    # --- for tools (register_tools) -------------------------------------------------------

    def lookup_caller(self, number: str, timeout: float) -> Lookup:
        """Who the caller ``number`` (E.164) is in the CRM of ``[answers]``, waiting at most
        ``timeout`` seconds: a ``Lookup`` (``status`` found / unknown / timeout / failed / busy,
        ``caller``), from the cache the assistant-request answers share. ``LookupError`` when no
        CRM is configured for lookups."""
        name = self._core.config.answers.crm
        if name is None:
            raise LookupError("no CRM is configured for lookups ([answers.assistant_request] crm or [answers.tools] crm)")
        return self._core.answers.lookups.lookup(self._core.destination(name), number, timeout)

    def recent_calls(self, number: str, limit: int = 5) -> list[CallReport]:
        """The caller's end-of-call reports stored here, most recent call first."""
        return self._core.store.last_calls(number, limit)

    def queue_followup(self, call: ToolCall, title: str, notes: str | None = None) -> dict[str, Any]:
        """Queue a follow-up task (a durable delivery to ``[answers.tools] followup``) for the call
        ``call`` belongs to; once per tool call id. Returns what will happen, for the LLM to say.
        ``LookupError`` when no follow-up destination is configured."""
        return self._core.answers.queue_followup(call.report, call.id, title, notes)
