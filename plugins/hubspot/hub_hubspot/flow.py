"""One delivery to HubSpot: contact, properties, call, task, deal, each exactly once.

``ctx.state`` is the delivery's memory, saved after every attempt:

* ``contact_id``, ``call_id``, ``task_id``, ``deal_id``: written the moment HubSpot returns
  them, so a retry resumes at the step that failed.
* the hub's sent mark for ``<kind>`` (``ctx.mark_sent(kind)``): the time a create was sent,
  set just before sending. A retry that finds it (the request may have reached HubSpot with its answer lost)
  searches for the record before creating it again; as HubSpot's search shows a new
  record only after a delay, a retry sooner than ``SEARCH_LAG`` after the create that
  finds nothing waits (Retryable) instead of creating a second record.
* ``answer_company_id``: the primary company named by the call's assistant-request answer
  (``assistant.metadata``, see ``hub.report.crm_metadata``), once HubSpot confirmed it.
* ``pass`` / ``done``: which steps finished in the current pass. A pass ends with
  ``completed = true``; delivering a completed report again (a replay) starts a new pass
  in which every record already created is updated (PATCH), never created twice.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from hub import Result, Retryable, mask_phone

from .client import HubSpotApi, association, is_record_id, record_id
from .mapping import call_properties, deal_properties, epoch_ms, task_due, task_properties
from .phone import confirmed, contact_search_body
from .properties import prepare

# Kept as they are on a replay: someone in HubSpot may have moved them on since.
KEEP_ON_UPDATE = {"tasks": {"hs_task_status"}, "deals": {"pipeline", "dealstage"}}
# Seconds a record HubSpot just created may stay invisible to search (documented: "a few seconds").
SEARCH_LAG = 30.0
# A deal made for a report is created after the report was received; this much clock skew is allowed.
DEAL_CLOCK_MARGIN = timedelta(seconds=60)
now = time.time  # the clock for pending creates (tests replace it)
log = logging.getLogger(__name__)


class HubSpotDelivery:
    def __init__(self, destination, report, ctx):
        self.dest = destination
        self.config = destination.config
        self.report = report
        self.ctx = ctx
        self.state = ctx.state
        self.api = HubSpotApi(destination, ctx)
        self.report_url = destination.settings.report_url(report.id)
        self.region = self.config["default_region"] or destination.settings.default_region
        self.done_phrases: list[str] = []
        self.problems: list[str] = []
        self._property_definitions: dict[str, dict] | None = None

    # --- pass bookkeeping -------------------------------------------------------------

    def _start_pass(self) -> None:
        if self.state.get("completed"):
            self.state["pass"] = self.state.get("pass", 1) + 1
            self.state["completed"] = False
        self.state.setdefault("pass", 1)
        self.state.setdefault("done", {})

    def _done(self, step: str) -> bool:
        return self.state["done"].get(step) == self.state["pass"]

    def _mark(self, step: str) -> None:
        self.state["done"][step] = self.state["pass"]

    # --- the flow ---------------------------------------------------------------------

    def run(self) -> Result:
        self._start_pass()
        contact_id = self.contact()
        if contact_id is False:
            self.state["completed"] = True
            masked = mask_phone(self.report.customer.number)
            return Result(f"skipped: no HubSpot contact has {masked} and create_contacts = false",
                          {"skipped": "no_contact"})
        self.contact_properties(contact_id)
        self.call(contact_id)
        follow_up, deal = self.config["follow_up"], self.config["deal"]
        if deal["when"] is not None and deal["when"].matches(self.report):
            self.deal(contact_id)  # before the task, so the task is linked to the new deal
        if follow_up["enabled"] and follow_up["when"].matches(self.report):
            self.task(contact_id)
        self.state["completed"] = True
        message = "; ".join(self.done_phrases)
        if self.problems:
            message += f"; {len(self.problems)} value(s) not sent: " + " | ".join(self.problems)
        data = {k: self.state.get(k) for k in ("contact_id", "call_id", "task_id", "deal_id")}
        data["problems"] = self.problems
        return Result(message, data)

    # --- contact ----------------------------------------------------------------------

    def contact(self):
        """The contact id, None for a call without a number, False to skip the report."""
        state = self.state
        if "contact_id" in state:
            if state["contact_id"]:
                self.done_phrases.append(f"contact {state['contact_id']} ({state.get('contact_source')})")
            return state["contact_id"]
        rule = self.config["contact_id"]
        given = rule.search(self.report) if rule is not None else None
        number = self.report.customer.number
        if given not in (None, ""):
            return self._remember_contact(record_id("contact_id", given), "from the report")
        answered = self._answered_contact()
        if answered:
            return self._remember_contact(answered, "named by the assistant-request answer")
        if not number:
            state["contact_id"], state["contact_source"] = None, "none: no caller number"
            self.done_phrases.append("no contact (the call has no caller number)")
            return None
        results = self.api.search("contacts", contact_search_body(number))
        hits = confirmed(results, number, self.region)
        if hits:
            self.ctx.clear_sent("contact")  # our lost create (or another's), found: use it
            chosen = str(hits[0]["id"])
            if len(hits) > 1:
                state["contact_note"] = (f"{len(hits)} contacts have this number; logged on contact {chosen}, "
                                         f"the most recently updated.")
            return self._remember_contact(chosen, "found by phone")
        if results:
            self.done_phrases.append(f"{len(results)} search hit(s) not the same number, ignored")
        earlier = self.ctx.earlier_state.get("contact_id")
        if earlier:  # this caller's previous call found or created it; search may not show it yet
            return self._remember_contact(str(earlier), "this caller's previous call")
        if not self.config["create_contacts"]:
            return False
        self._wait_for_search("contact")
        properties = {"phone": number}
        properties.update(self._mapped_properties("new_contact_properties"))
        properties.update(self._mapped_properties())
        contact_id = self._create("contact", "contacts", properties)
        self._mark("contact_properties")  # created with them
        return self._remember_contact(contact_id, "created")

    def _answered_contact(self) -> str | None:
        """The contact the call's assistant-request answer looked up (its id in ``assistant.metadata``
        for this destination), once a read by id shows HubSpot still has it; None to search by phone.

        The id comes from the platform: one that is not digits is never sent (logged without its
        value); one HubSpot answers 404 for (deleted since) falls back to the search. Its company
        is kept only while it is still the contact's primary company."""
        ids = self.report.crm_record_ids(self.dest.name)
        if not ids:
            return None
        contact_id = ids.get("contact")
        if not is_record_id(contact_id):
            log.warning("destination %r, report %s: assistant.metadata crm_contact_id is not a HubSpot record id "
                        "(digits only; %d characters, not shown); searching by phone instead",
                        self.dest.name, self.report.id, len(str(contact_id or "")))
            self.done_phrases.append("the answer's contact id is not a HubSpot id, ignored")
            return None
        found = self.api.read("contacts", contact_id, ["associatedcompanyid"])
        if found is None:
            self.done_phrases.append(f"contact {contact_id} named by the answer no longer exists, searched by phone")
            return None
        company_id = ids.get("company")
        if is_record_id(company_id) and (found.get("properties") or {}).get("associatedcompanyid") == company_id:
            self.state["answer_company_id"] = company_id
        return contact_id

    def _remember_contact(self, contact_id: str, source: str) -> str:
        self.state["contact_id"], self.state["contact_source"] = contact_id, source
        self.done_phrases.append(f"contact {contact_id} ({source})")
        return contact_id

    def _mapped_properties(self, key: str = "properties") -> dict[str, str]:
        mapping = self.config[key]
        values = mapping.evaluate(self.report) if mapping else {}
        if not values:
            return {}
        accepted, problems = prepare(values, self._definitions())
        self.problems.extend(problems)
        return accepted

    def _definitions(self) -> dict[str, dict]:
        if self._property_definitions is None:
            if self.ctx.dry_run:  # show the request; assume text properties (a dry run learns nothing)
                names = [*self.config["new_contact_properties"].rules, *self.config["properties"].rules]
                fake = [{"name": name, "type": "string", "fieldType": "text"} for name in names]
                found = {d["name"]: d for d in self.api.property_definitions("contacts", fake)}
            else:
                found = self.dest.property_cache.get(lambda: self.api.property_definitions("contacts", []))
            self._property_definitions = found
        return self._property_definitions

    def contact_properties(self, contact_id) -> None:
        if not contact_id or self._done("contact_properties"):
            return
        accepted = self._mapped_properties()
        if accepted:
            self.api.update("contacts", contact_id, accepted)
            self.done_phrases.append(f"contact properties updated ({', '.join(accepted)})")
        self._mark("contact_properties")

    # --- call, task, deal -------------------------------------------------------------

    def _company_deal(self, kind: str) -> list[dict]:
        links = []
        for key, to_type in (("company_id", "companies"), ("deal_id", "deals")):
            rule = self.config[key]
            value = rule.search(self.report) if rule is not None else None
            if value in (None, "") and key == "company_id":
                value = self.state.get("answer_company_id")
            if value not in (None, "") and (kind, to_type) != ("deals", "deals"):
                links.append(association(kind, to_type, record_id(key, value)))
        return links

    def call(self, contact_id) -> None:
        props = call_properties(self.report, self.config["call"], report_url=self.report_url,
                                owner_id=self.config["owner_id"], note=self.state.get("contact_note"))
        lookup = [{"propertyName": "hs_timestamp", "operator": "EQ", "value": epoch_ms(self.report.occurred_at)}]
        lookup.append({"propertyName": "associations.contact", "operator": "EQ", "value": str(contact_id)}
                      if contact_id else {"propertyName": "hs_call_title", "operator": "EQ",
                                          "value": props["hs_call_title"]})
        self._record("call", "calls", contact_id, props, lookup, self._company_deal("calls"))

    def task(self, contact_id) -> None:
        follow_up = self.config["follow_up"]
        owner = follow_up["owner_id"] or self.config["owner_id"]
        props = task_properties(self.report, follow_up, report_url=self.report_url, owner_id=owner)
        lookup = [{"propertyName": "hs_timestamp", "operator": "EQ",
                   "value": epoch_ms(task_due(self.report, follow_up))},
                  {"propertyName": "hs_task_subject", "operator": "EQ", "value": props["hs_task_subject"]}]
        if contact_id:
            lookup.append({"propertyName": "associations.contact", "operator": "EQ", "value": str(contact_id)})
        links = self._company_deal("tasks")
        if self.state.get("deal_id"):
            links.append(association("tasks", "deals", self.state["deal_id"]))
        self._record("task", "tasks", contact_id, props, lookup, links)

    def deal(self, contact_id) -> None:
        deal = self.config["deal"]
        props, problems = deal_properties(self.report, deal, report_url=self.report_url,
                                          owner_id=deal["owner_id"] or self.config["owner_id"])
        self.problems.extend(problems)
        # The name alone may repeat across reports of one caller: only a deal created after this
        # report arrived can be this report's deal.
        lookup = [{"propertyName": "dealname", "operator": "EQ", "value": props["dealname"]},
                  {"propertyName": "pipeline", "operator": "EQ", "value": props["pipeline"]},
                  {"propertyName": "createdate", "operator": "GTE",
                   "value": epoch_ms(self.report.received_at - DEAL_CLOCK_MARGIN)}]
        if contact_id:
            lookup.append({"propertyName": "associations.contact", "operator": "EQ", "value": str(contact_id)})
        self._record("deal", "deals", contact_id, props, lookup, self._company_deal("deals"))

    def _record(self, kind: str, object_type: str, contact_id, props: dict, lookup: list, links: list) -> None:
        """Create the record once; on a replay update it; on a retry skip what is done."""
        key = f"{kind}_id"
        if self._done(kind):
            self.done_phrases.append(f"{kind} {self.state[key]} (done before)")
            return
        if self.state.get(key):
            self._update(kind, object_type, props)
            self._mark(kind)
            return
        pending = self.ctx.was_sent(kind)
        if pending or self._look_first():
            found = self.api.search(object_type, {"filterGroups": [{"filters": lookup}],
                                                  "properties": ["hs_object_id"], "limit": 1})
            if found:
                self.state[key] = str(found[0]["id"])
                self.ctx.clear_sent(kind)
                if pending:  # our own create of a moment ago, answer lost: it holds these values
                    self.done_phrases.append(f"{kind} {self.state[key]} (found, created by an earlier attempt)")
                else:  # delivered before without this state (a replay): bring it up to date
                    self._update(kind, object_type, props)
                    self.done_phrases[-1] += " (found by search)"
                self._mark(kind)
                return
            self._wait_for_search(kind)
        if contact_id:
            links = [association(object_type, "contacts", contact_id), *links]
        self.state[key] = self._create(kind, object_type, props, links)
        self._mark(kind)
        self.done_phrases.append(f"{kind} {self.state[key]} created")

    def _create(self, kind: str, object_type: str, props: dict, links: list | None = None) -> str:
        """POST the record, marking the create as pending while its answer is outstanding."""
        self.ctx.mark_sent(kind, at=now())
        try:
            record_id = self.api.create(object_type, props, links)
        except Retryable as exc:
            if exc.http_status == 429:  # refused by the rate limiter: certainly not created
                self.ctx.clear_sent(kind)
            raise
        self.ctx.clear_sent(kind)
        return record_id

    def _update(self, kind: str, object_type: str, props: dict) -> None:
        keep = KEEP_ON_UPDATE.get(object_type, set())
        self.api.update(object_type, self.state[f"{kind}_id"], {k: v for k, v in props.items() if k not in keep})
        self.done_phrases.append(f"{kind} {self.state[f'{kind}_id']} updated")

    def _wait_for_search(self, kind: str) -> None:
        """A create whose answer was lost moments ago may not be searchable yet: wait, don't create."""
        sent_at = self.ctx.sent_at(kind)
        if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) or self.ctx.dry_run:
            return
        age = max(0.0, now() - sent_at)
        if age < SEARCH_LAG:
            wait = SEARCH_LAG - age
            raise Retryable(f"destination {self.dest.name!r}: the {kind} create sent {age:.0f}s ago got no answer "
                            f"and HubSpot search does not show the {kind} yet (new records appear after a delay); "
                            f"searching again in {wait:.0f}s before creating it, so it is not created twice",
                            retry_after=wait)

    def _look_first(self) -> bool:
        """Search before creating? Not for a contact created in this delivery: it has no records yet."""
        return self.config["find_existing"] == "always" and self.state.get("contact_source") != "created"
