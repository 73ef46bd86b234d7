"""The ``hubspot`` destination type: its configuration schema and the class the hub loads."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

from hub import Destination, Mapping, MappingField, Result, Rule, RuleField, Template, TemplateField, credential_key

from .cache import ExpiringCache
from .client import API_VERSIONS, DEFAULT_API_VERSION, DEFAULT_BASE_URL, HubSpotApi
from .flow import HubSpotDelivery
from .lookup import LOOKUP_CACHE_SECONDS, look_up
from .mapping import (DEFAULT_CALL_BODY, DEFAULT_CALL_TITLE, DEFAULT_DEAL_DESCRIPTION, DEFAULT_DEAL_NAME,
                      DEFAULT_TASK_BODY, DEFAULT_TASK_SUBJECT, PRIORITIES, TASK_TYPES)
from .phone import confirmed, contact_search_body
from .properties import PropertyCache

SCOPES = ("crm.objects.contacts.read", "crm.objects.contacts.write", "crm.schemas.contacts.read")
DEAL_SCOPES = ("crm.objects.deals.read", "crm.objects.deals.write")
#: what ``lookup_caller`` (assistant-request answers, the lookup_customer tool) reads besides contacts
LOOKUP_SCOPES = ("crm.objects.companies.read", "crm.objects.deals.read", "crm.objects.owners.read")


class IdField(fields.Field):
    """A HubSpot id written as a number or a string of digits (owner, company, pipeline ids)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
            raise ValidationError("must be a HubSpot id (digits), e.g. 12345678")
        return str(value).strip()


def _template(source: str):
    return lambda: Template(source)


class CallSchema(Schema):
    title = TemplateField(load_default=_template(DEFAULT_CALL_TITLE))
    body = TemplateField(load_default=_template(DEFAULT_CALL_BODY))


class FollowUpSchema(Schema):
    enabled = fields.Boolean(load_default=True)
    when = RuleField(load_default=lambda: Rule("analysis.follow_up_needed"))
    subject = TemplateField(load_default=_template(DEFAULT_TASK_SUBJECT))
    body = TemplateField(load_default=_template(DEFAULT_TASK_BODY))
    due_in_days = fields.Integer(load_default=1, validate=validate.Range(0, 365))
    business_days = fields.Boolean(load_default=False)
    owner_id = IdField(load_default=None)
    priority = MappingField(load_default=lambda: Mapping({"HIGH": "analysis.sentiment <= 2"}))
    default_priority = fields.String(load_default="MEDIUM", validate=validate.OneOf(PRIORITIES))
    type = fields.String(load_default="CALL", validate=validate.OneOf(TASK_TYPES))

    @validates("priority")
    def levels_known(self, value, **kwargs):
        unknown = [level for level in value.rules if level not in PRIORITIES]
        if unknown:
            raise ValidationError(f"unknown priority {', '.join(unknown)} (use {', '.join(PRIORITIES)})")


class DealSchema(Schema):
    when = RuleField(load_default=None)
    pipeline = fields.String(load_default="default", validate=validate.Length(min=1))
    stage = fields.String(load_default=None, validate=validate.Length(min=1))
    name = TemplateField(load_default=_template(DEFAULT_DEAL_NAME))
    description = TemplateField(load_default=_template(DEFAULT_DEAL_DESCRIPTION))
    amount = RuleField(load_default=None)
    close_in_days = fields.Integer(load_default=None, validate=validate.Range(0, 3650))
    owner_id = IdField(load_default=None)

    @validates_schema
    def stage_when_enabled(self, data, **kwargs):
        if data.get("when") is not None and not data.get("stage"):
            raise ValidationError('set the deal stage id for new deals, e.g. stage = "appointmentscheduled"',
                                  "stage")


class HubSpotConfig(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1))
    base_url = fields.Url(load_default=DEFAULT_BASE_URL, schemes={"http", "https"}, require_tld=False)
    api_version = fields.String(load_default=DEFAULT_API_VERSION, validate=validate.OneOf(
        API_VERSIONS, error=f"must be one of {', '.join(API_VERSIONS)} (the date-based versions, or v3 for "
                            f"the numbered paths HubSpot stops supporting in September 2027)"))
    default_region = fields.String(load_default=None, validate=validate.Regexp(r"^[A-Z]{2}$",
                                   error="must be a two-letter region code, e.g. NL"))
    create_contacts = fields.Boolean(load_default=True)
    find_existing = fields.String(load_default="always", validate=validate.OneOf(["always", "after-failure"]))
    contact_id = RuleField(load_default=None)
    owner_id = IdField(load_default=None)
    company_id = RuleField(load_default=None)
    deal_id = RuleField(load_default=None)
    properties = MappingField(load_default=lambda: Mapping({}))
    new_contact_properties = MappingField(load_default=lambda: Mapping({}))
    call = fields.Nested(CallSchema, load_default=lambda: CallSchema().load({}))
    follow_up = fields.Nested(FollowUpSchema, load_default=lambda: FollowUpSchema().load({}))
    deal = fields.Nested(DealSchema, load_default=lambda: DealSchema().load({}))


class HubSpotDestination(Destination):
    """Log each call on the caller's HubSpot contact; update properties; create tasks and deals."""

    type = "hubspot"
    Config = HubSpotConfig
    description = ("Log the call on the caller's HubSpot contact (found by phone, created if new), update "
                   "contact properties, create a follow-up task and a deal when their rules hold")
    default_when = None
    # Private apps (and service keys, which share their limits): 100 requests / 10 s on Free and
    # Starter; the search endpoints: 4 requests / s per token (changelog), never a burst above it.
    rate_limits = {"default": "100/10s", "search": "4/1s"}
    timeout = 20.0
    auth_hint = (f"Check the token (token = {{ env = \"HUBSPOT_TOKEN\" }}): a service key, or the access token "
                 f"of a legacy private app, with the scopes {', '.join(SCOPES)}; with [deal] also "
                 f"{', '.join(DEAL_SCOPES)}; with company_id also crm.objects.companies.read; for caller lookups "
                 f"(assistant-request answers) also {', '.join(LOOKUP_SCOPES)}. A service key: "
                 "HubSpot > Development > Keys > Service keys > your key (add scopes there, or create a key); "
                 "a legacy private app: Development > Legacy apps > your app (Auth tab: its token, Scopes).")

    secret_options = ("token",)

    def __init__(self, name, config, settings=None):
        super().__init__(name, config, settings)
        self.property_cache = PropertyCache()
        self.lookup_cache = ExpiringCache(LOOKUP_CACHE_SECONDS)  # owner names, deal stage labels

    def limiter_key(self) -> str:
        """HubSpot counts limits per token: destinations sharing a token share the buckets."""
        return credential_key(self.config["token"])

    def deliver(self, report, ctx):
        return HubSpotDelivery(self, report, ctx).run()

    def forget(self, number, ctx):
        """GDPR-delete every contact whose number is the caller's (found by the deliveries' own
        phone search, each hit confirmed by its E.164 form). Needs crm.objects.contacts.write."""
        api = HubSpotApi(self, ctx)
        region = self.config["default_region"] or self.settings.default_region
        hits = confirmed(api.search("contacts", contact_search_body(number)), number, region)
        deleted = [str(contact["id"]) for contact in hits if api.gdpr_delete(str(contact["id"]))]
        if not deleted:
            return Result("no HubSpot contact has this number")
        return Result(f"GDPR-deleted {len(deleted)} contact(s): {', '.join(deleted)}")

    def lookup_caller(self, number, ctx):
        """The contact with the caller's number (the delivery's phone search), its primary company,
        owner and open deals; record ids ``contact`` and ``company``. At most six requests
        (module ``lookup``); needs crm.objects.contacts.read and the LOOKUP_SCOPES."""
        return look_up(self, number, ctx)

    def test_connection(self, ctx) -> str:
        """The contact search delivery starts with (one result at most): the token and the
        contacts read scope; a 403 names the scopes the key lacks."""
        found = HubSpotApi(self, ctx).search("contacts", {"filterGroups": [], "properties": ["hs_object_id"],
                                                          "limit": 1})
        return f"token accepted; contacts search answered ({len(found)} of at most 1 shown)"
