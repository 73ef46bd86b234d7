"""A call report turned into Salesforce record bodies (no HTTP here).

Field lengths follow the Task/Lead/Opportunity object reference: Subject 255,
Description 32,000, CallObject 255, LastName 80, Company 255, Opportunity Name 120.
"""
from __future__ import annotations

from datetime import date
from typing import Any

from hub import Rule, due_date

CALL_TYPES = {"inbound": "Inbound", "outbound": "Outbound"}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(template, report, report_url: str, limit: int) -> str:
    return clip(template.render(report, report_url=report_url), limit)


def call_date(report) -> str:
    return report.occurred_at.date().isoformat()


def first_matching(table, report, default: str) -> str:
    """``{value: rule}``: the first value whose rule holds (operators list them in priority order)."""
    if table:
        for value, rule in table.rules.items():
            if rule.matches(report):
                return value
    return default


def mapped(mapping, report) -> dict[str, Any]:
    return mapping.evaluate(report) if mapping else {}


def call_task(report, config: dict[str, Any], *, who_id: str | None, what_id: str | None,
              report_url: str) -> dict[str, Any]:
    """The completed Call task (without the External ID field: that goes in the upsert URL)."""
    body: dict[str, Any] = {
        "Subject": render(config["subject"], report, report_url, 255),
        "Description": render(config["description"], report, report_url, 32000),
        "TaskSubtype": "Call",
        "Status": "Completed",
        "ActivityDate": call_date(report),
        "CallObject": clip(report.call.id, 255),
    }
    if report.call.direction in CALL_TYPES:
        body["CallType"] = CALL_TYPES[report.call.direction]
    if report.duration_seconds is not None:
        body["CallDurationInSeconds"] = int(report.duration_seconds)
    if who_id:
        body["WhoId"] = who_id
    if what_id:
        body["WhatId"] = what_id
    if config["owner_id"]:
        body["OwnerId"] = config["owner_id"]
    body.update(mapped(config["task_fields"], report))
    return body


def new_person(report, config: dict[str, Any], sobject: str, report_url: str) -> dict[str, Any]:
    """A Lead (LastName, Company required) or Contact (LastName required) for an unknown caller."""
    body: dict[str, Any] = {"LastName": render(config["last_name"], report, report_url, 80) or "Unknown caller",
                            "Phone": report.customer.number}
    if sobject == "Lead":
        body["Company"] = render(config["company"], report, report_url, 255) or "Unknown"
    if config["owner_id"]:
        body["OwnerId"] = config["owner_id"]
    body.update(mapped(config["new_record_fields"], report))
    return body


def follow_up_task(report, section: dict[str, Any], *, who_id: str | None, what_id: str | None,
                   fallback_owner: str | None, report_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Subject": render(section["subject"], report, report_url, 255),
        "Description": render(section["description"], report, report_url, 32000),
        "TaskSubtype": "Task",
        "Status": section["status"],
        "Priority": first_matching(section["priority"], report, section["default_priority"]),
        "ActivityDate": due_date(report.occurred_at, section["due_in_days"],
                                 business_days=section["business_days"]).isoformat(),
    }
    if who_id:
        body["WhoId"] = who_id
    if what_id:
        body["WhatId"] = what_id
    owner = section["owner_id"] or fallback_owner
    if owner:
        body["OwnerId"] = owner
    body.update(mapped(section["fields_"], report))
    return body


def opportunity(report, section: dict[str, Any], *, account_id: str, fallback_owner: str | None,
                report_url: str, today: date | None = None) -> dict[str, Any]:
    start = today or report.occurred_at.date()
    body: dict[str, Any] = {
        "Name": render(section["name"], report, report_url, 120) or "Call opportunity",
        "AccountId": account_id,
        "StageName": section["stage"],
        "CloseDate": due_date(start, section["close_in_days"]).isoformat(),
    }
    owner = section["owner_id"] or fallback_owner
    if owner:
        body["OwnerId"] = owner
    body.update(mapped(section["fields_"], report))
    return body


def contact_role(section: dict[str, Any], *, contact_id: str, opportunity_ref: str) -> dict[str, Any]:
    body: dict[str, Any] = {"OpportunityId": opportunity_ref, "ContactId": contact_id, "IsPrimary": True}
    if section["contact_role"]:
        body["Role"] = section["contact_role"]
    return body


def rule_value(rule: Rule | None, report) -> str | None:
    if rule is None:
        return None
    value = rule.search(report)
    return str(value) if value not in (None, "") else None
