"""The ``salesforce`` destination: each call logged as a completed Call task on the caller's
Contact or Lead, with an optional follow-up task and Opportunity.

One attempt, in order:
1. No task id in the state: with ``call_id_field``, look the call task up by that External
   ID; without it, by ``CallObject``, but only after an attempt whose Composite was sent
   and whose answer did not arrive. Found means that Composite was committed (see 4) and
   only its ids were lost: nothing is written again.
2. Who called: ``who_id`` from the report if configured; else the Contact or Lead the call's
   assistant-request answer named (``assistant.metadata``, ``hub.report.crm_metadata``), checked
   and read by Id; else SOSL over the phone fields of ``search_objects``, confirmed by E.164
   comparison (``matching``). A Contact given by
   ``who_id`` has its ``AccountId`` read when an Opportunity is due.
3. Not found: a new Lead or Contact (``create``), or none.
4. One Composite request with ``allOrNone``: the new Lead/Contact, the call task (upserted
   by ``call_id_field`` when set), the follow-up task and the Opportunity with its contact
   role, linked by ``@{reference.id}``. Either all of them exist afterwards or none does,
   so a failed attempt leaves nothing half-made and the created ids enter ``ctx.state``
   together, the moment Salesforce returns them.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlsplit

from hub import Destination, Permanent, Result, mask_phone

from . import mapping
from .auth import TokenCache
from .client import SalesforceClient
from .config import SALESFORCE_ID, SalesforceConfig
from .lookup import look_up
from .matching import build_sosl, choose, confirmed, soql_string

ID_PREFIXES = {"003": "Contact", "00Q": "Lead"}
#: the record kinds an answer's ``assistant.metadata`` names (``crm_<kind>_id``), by key prefix
ANSWER_PREFIXES = {"contact": "003", "lead": "00Q", "account": "001"}
#: the sent mark (``ctx.mark_sent``) of a Composite without ``call_id_field`` (its answer may be lost)
COMPOSITE = "composite"
log = logging.getLogger(__name__)


class SalesforceDestination(Destination):
    type = "salesforce"
    Config = SalesforceConfig
    description = "log each call as a completed Call task on the matching Salesforce Contact or Lead"
    rate_limits = {"default": "20/2s", "search": "5/1s"}
    timeout = 30.0
    auth_hint = ("Check client_id/client_secret (or username/private_key for the JWT flow) and that the "
                 "integration user has API Enabled and access to Task, Contact and Lead.")

    #: redacted everywhere even when written literally in the TOML
    secret_options = ("client_secret", "private_key")

    def __init__(self, name, config, settings=None):
        super().__init__(name, config, settings)
        self.tokens = TokenCache(self)

    def limiter_key(self) -> str:
        """Salesforce counts API requests per org: destinations on one org share their buckets."""
        url = self.config["instance_url"] or self.config["login_url"]
        return (urlsplit(url).netloc or url).lower()

    def lookup_caller(self, number, ctx):
        """The Contact or Lead with the caller's number (the delivery's SOSL search), its owner, its
        Account (Contact) or Company (Lead) and a Contact's Account's open opportunities: one request
        for a Lead, two for a Contact with an Account (module ``lookup``)."""
        return look_up(self, number, ctx)

    def test_connection(self, ctx) -> str:
        """Log in as delivery does, then describe Task: the user may create the Call tasks."""
        client = SalesforceClient(self, self.tokens, ctx)
        described = client.request("GET", "sobjects/Task/describe/", what="the Task description").json()
        if not described.get("createable"):
            raise Permanent(f"destination {self.name!r}: the integration user may not create Tasks; grant it "
                            f"Create on Task (its profile or a permission set)")
        return f"logged in to {client.token.instance_url}; the user may create Tasks"

    def forget(self, number, ctx) -> Result:
        """Delete the caller at Salesforce: the Contacts and Leads the deliveries would match for
        ``number`` (the same SOSL search, each hit confirmed by its E.164 form), and first the Call
        tasks the hub logged on them (``TaskSubtype = 'Call'`` with a ``CallObject``). Each record
        with ``DELETE .../sobjects/<type>/<id>``; Salesforce keeps deleted records in its Recycle
        Bin for 15 days before it purges them (README). A record deleted already counts as gone,
        so a retry after a partial attempt finishes the rest. Needs Delete on Task, Contact, Lead."""
        client = SalesforceClient(self, self.tokens, ctx)
        objects = self.config["search_objects"]
        people = [record for record, _ in confirmed(client.search(build_sosl(number, objects)), number, objects,
                                                    self.settings.default_region)]
        if not people:
            return Result("no Salesforce Contact or Lead has this number")
        ids = ", ".join(soql_string(person["Id"]) for person in people)
        tasks = client.query(f"SELECT Id FROM Task WHERE WhoId IN ({ids}) AND TaskSubtype = 'Call' "
                             f"AND CallObject != null", what="the caller's call tasks")
        deleted = [self._delete(client, "Task", task["Id"]) for task in tasks]
        deleted += [self._delete(client, person["attributes"]["type"], person["Id"]) for person in people]
        counts = ", ".join(f"{sum(1 for kind, _ in deleted if kind == sobject)} {sobject}(s)"
                           for sobject in ("Contact", "Lead", "Task"))
        return Result(f"deleted {counts}: {', '.join(record_id for _, record_id in deleted)}")

    @staticmethod
    def _delete(client: SalesforceClient, sobject: str, record_id: str) -> tuple[str, str]:
        """DELETE .../sobjects/<sobject>/<id>: 204 deleted, 404 gone already (both are done)."""
        client.request("DELETE", f"sobjects/{sobject}/{quote(record_id, safe='')}", ok=(204,), allow=(404,),
                       what=f"the delete of {sobject} {record_id}")
        return sobject, record_id

    def deliver(self, report, ctx) -> Result:
        client = SalesforceClient(self, self.tokens, ctx)
        state = ctx.state
        report_url = self.settings.report_url(report.id)
        notes: list[str] = []

        if not state.get("call_task_id"):
            found = self._already_logged(report, ctx, client)
            if found:
                existing, how = found
                ctx.clear_sent(COMPOSITE)
                state["call_task_id"] = existing["Id"]
                who_id = existing.get("WhoId")
                if who_id:
                    state["who"] = {"id": who_id, "sobject": ID_PREFIXES.get(who_id[:3]), "how": "found on the task"}
                state["recovered"] = True
                return self._result(state, [f"call task already in Salesforce (found by {how}); "
                                            "nothing written again"])

        who = state.get("who")
        if who is None:  # not found before: ask again, the search index may have caught up
            who = self._find_who(report, client) or self._earlier_who(ctx)
            if who is not None:
                state["who"] = who
        if who is not None and self._needs_account(report, state, who):
            record = client.get_record("Contact", who["id"], ["AccountId"],
                                       dry_run_response={"Id": who["id"], "AccountId": "dry-run-account"})
            who = state["who"] = {**who, "account_id": record.get("AccountId")}

        subrequests = self._pending(report, state, who, report_url, notes)
        if subrequests:
            if not self.config["call_id_field"]:
                # the answer may be lost after Salesforce committed: the next attempt looks the task up first
                ctx.mark_sent(COMPOSITE)
            results = client.composite(subrequests, what="the call log")
            self._remember(results, state)
            ctx.clear_sent(COMPOSITE)
        return self._result(state, notes)

    # --- steps ----------------------------------------------------------------------

    def _already_logged(self, report, ctx, client: SalesforceClient) -> tuple[dict, str] | None:
        """The call task an earlier attempt committed without its ids reaching the state, if any.

        With ``call_id_field``: looked up by that External ID on every attempt without a task
        id (even a lost state cannot duplicate). Without it: by ``CallObject`` (the call id),
        only after an attempt whose Composite may have been committed without its answer.
        """
        field = self.config["call_id_field"]
        if field:
            existing = client.get_by_external_id("Task", field, report.call.id, ["Id", "WhoId"])
            return (existing, field) if existing else None
        if not ctx.was_sent(COMPOSITE):
            return None
        records = client.query(f"SELECT Id, WhoId FROM Task WHERE CallObject = {soql_string(report.call.id)} "
                               "AND TaskSubtype = 'Call' ORDER BY CreatedDate LIMIT 1",
                               what="the call task look-up by CallObject")
        return (records[0], "CallObject") if records and records[0].get("Id") else None

    def _needs_account(self, report, state: dict, who: dict) -> bool:
        """A Contact given by ``who_id`` has no known Account yet; an Opportunity needs it."""
        section = self.config["opportunity"]
        return bool(section and who.get("sobject") == "Contact" and "account_id" not in who
                    and not who.get("created") and not state.get("opportunity_id")
                    and section["when"].matches(report))

    def _find_who(self, report, client: SalesforceClient) -> dict[str, Any] | None:
        explicit = mapping.rule_value(self.config["who_id"], report)
        if explicit:
            sobject = ID_PREFIXES.get(explicit[:3])
            if not SALESFORCE_ID.match(explicit) or sobject is None:
                raise Permanent(f"destination {self.name!r}: who_id ({self.config['who_id'].expression}) gave "
                                f"{explicit!r}, which is not a Contact (003...) or Lead (00Q...) Id. Fix the "
                                f"expression or what the assistant puts in the report.")
            return {"id": explicit, "sobject": sobject, "how": "given by who_id"}
        answered = self._answered_who(report, client)
        if answered is not None:
            return answered
        number = report.customer.number
        if not number:
            return None
        objects = self.config["search_objects"]
        records = client.search(build_sosl(number, objects))
        match = choose(records, number, objects, self.settings.default_region)
        if match is None:
            return None
        return {"id": match.id, "sobject": match.sobject, "account_id": match.account_id,
                "how": match.describe()}

    def _answered_who(self, report, client: SalesforceClient) -> dict[str, Any] | None:
        """The Contact or Lead the call's assistant-request answer looked up (its ids in
        ``assistant.metadata`` for this destination), read by Id; None to search by phone.

        The ids come from the platform: unless each is a 15/18-character Id of its kind (003...
        Contact, 00Q... Lead, 001... Account), none is sent (logged without their values). A record
        deleted since, or a Lead converted since, falls back to the search (which finds the
        Contact a conversion made)."""
        ids = report.crm_record_ids(self.name)
        kind = "contact" if "contact" in ids else "lead" if "lead" in ids else None
        if kind is None:
            return None
        bad = [k for k, prefix in ANSWER_PREFIXES.items()
               if k in ids and not (SALESFORCE_ID.match(ids[k]) and ids[k].startswith(prefix))]
        if bad:
            log.warning("destination %r, report %s: assistant.metadata %s not Salesforce Ids of the right kind "
                        "(values not shown); searching by phone instead", self.name, report.id,
                        ", ".join(f"crm_{k}_id" for k in bad))
            return None
        record_id = ids[kind]
        if kind == "contact":
            soql = f"SELECT Id, AccountId FROM Contact WHERE Id = {soql_string(record_id)}"
            fake = [{"Id": record_id, "AccountId": ids.get("account")}]
        else:
            soql = f"SELECT Id, IsConverted FROM Lead WHERE Id = {soql_string(record_id)}"
            fake = [{"Id": record_id, "IsConverted": False}]
        records = client.query(soql, what=f"the {kind} the answer named", dry_run_records=fake)
        if not records or records[0].get("IsConverted"):
            log.info("destination %r, report %s: the %s the answer named is gone or converted; searching by phone",
                     self.name, report.id, kind)
            return None
        who = {"id": record_id, "sobject": kind.capitalize(),
               "how": "named by the assistant-request answer"}
        if kind == "contact":
            who["account_id"] = records[0].get("AccountId")
        return who

    @staticmethod
    def _earlier_who(ctx) -> dict[str, Any] | None:
        """The Contact or Lead this caller's previous call found or created (``ordering =
        "customer"``): SOSL's index may not show a record created seconds ago."""
        earlier = ctx.earlier_state.get("who") or {}
        if not earlier.get("id"):
            return None
        return {"id": earlier["id"], "sobject": earlier.get("sobject"), "account_id": earlier.get("account_id"),
                "how": "this caller's previous call"}

    def _pending(self, report, state: dict, who: dict | None, report_url: str, notes: list[str]) -> list[dict]:
        """The subrequests for every record this delivery still has to create."""
        config = self.config
        subrequests: list[dict[str, Any]] = []
        who_ref = who["id"] if who else None
        if who is None:
            if not report.customer.number:
                notes.append("no caller number (web call): the task is not linked to a person")
            elif config["create"] == "none":
                notes.append(f"no Contact or Lead has {mask_phone(report.customer.number)}; create = \"none\"")
            else:
                sobject = config["create"].capitalize()
                subrequests.append({"method": "POST", "url": f"sobjects/{sobject}", "referenceId": "newWho",
                                    "body": mapping.new_person(report, config, sobject, report_url)})
                who_ref = "@{newWho.id}"
        what_id = mapping.rule_value(config["what_id"], report)
        if what_id and not SALESFORCE_ID.match(what_id):
            raise Permanent(f"destination {self.name!r}: what_id ({config['what_id'].expression}) gave "
                            f"{what_id[:60]!r}, which is not a Salesforce Id (15 or 18 letters and digits). Fix "
                            f"the expression or what the assistant puts in the report.")

        if not state.get("call_task_id"):
            body = mapping.call_task(report, config, who_id=who_ref, what_id=what_id, report_url=report_url)
            if config["call_id_field"]:
                url = f"sobjects/Task/{config['call_id_field']}/{quote(report.call.id, safe='')}"
                subrequests.append({"method": "PATCH", "url": url, "referenceId": "callTask", "body": body})
            else:
                subrequests.append({"method": "POST", "url": "sobjects/Task", "referenceId": "callTask",
                                    "body": body})

        follow_up = config["follow_up"]
        if follow_up and not state.get("follow_up_task_id") and follow_up["when"].matches(report):
            subrequests.append({"method": "POST", "url": "sobjects/Task", "referenceId": "followUp",
                                "body": mapping.follow_up_task(report, follow_up, who_id=who_ref, what_id=what_id,
                                                               fallback_owner=config["owner_id"],
                                                               report_url=report_url)})

        section = config["opportunity"]
        if section and not state.get("opportunity_id") and section["when"].matches(report):
            account_id = (who or {}).get("account_id")
            if not account_id:
                notes.append("no opportunity: the caller is not a Contact with an Account")
            else:
                subrequests.append({"method": "POST", "url": "sobjects/Opportunity", "referenceId": "opportunity",
                                    "body": mapping.opportunity(report, section, account_id=account_id,
                                                                fallback_owner=config["owner_id"],
                                                                report_url=report_url)})
                subrequests.append({"method": "POST", "url": "sobjects/OpportunityContactRole",
                                    "referenceId": "contactRole",
                                    "body": mapping.contact_role(section, contact_id=who["id"],
                                                                 opportunity_ref="@{opportunity.id}")})
        return subrequests

    def _remember(self, results: dict[str, dict], state: dict) -> None:
        def created(ref: str) -> str | None:
            body = (results.get(ref) or {}).get("body")
            return body.get("id") if isinstance(body, dict) else None

        if "newWho" in results:
            sobject = self.config["create"].capitalize()
            state["who"] = {"id": created("newWho"), "sobject": sobject, "how": f"created {sobject}",
                            "created": True}
        for ref, key in (("callTask", "call_task_id"), ("followUp", "follow_up_task_id"),
                         ("opportunity", "opportunity_id"), ("contactRole", "contact_role_id")):
            if ref in results:
                state[key] = created(ref)

    def _result(self, state: dict, notes: list[str]) -> Result:
        who = state.get("who")
        parts = [f"call task {state.get('call_task_id')}"]
        if who and who.get("id"):
            parts[0] += f" on {who.get('sobject') or 'record'} {who['id']} ({who.get('how')})"
        if state.get("follow_up_task_id"):
            parts.append(f"follow-up task {state['follow_up_task_id']}")
        if state.get("opportunity_id"):
            parts.append(f"opportunity {state['opportunity_id']}")
        message = "; ".join(parts + notes)
        data = {k: state.get(k) for k in ("call_task_id", "follow_up_task_id", "opportunity_id", "contact_role_id")
                if state.get(k)}
        if who:
            data["who"] = who
        return Result(message, data)
