"""The ``[destinations.<name>]`` keys of a ``type = "salesforce"`` destination.

Everything an operator can get wrong is checked here, when the configuration loads,
so a bad private key or a misspelt object name stops start-up with the key named
instead of failing deliveries later.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from hub import MappingField, RuleField, Template, TemplateField
from marshmallow import Schema, ValidationError, fields, validate, validates, validates_schema

DEFAULT_API_VERSION = "67.0"

DEFAULT_SUBJECT = "{{ 'Inbound' if call.direction == 'inbound' else 'Outbound' if call.direction == 'outbound' " \
                  "else 'Web' }} call{% if analysis and analysis.intent %}: {{ analysis.intent }}{% endif %}"
DEFAULT_DESCRIPTION = """{{ summary or '' }}
{% if analysis %}

Analysis:
{% for key, value in analysis | dictsort %}
- {{ key }}: {{ value }}
{% endfor %}
{% endif %}
{% if recording_url %}

Recording: {{ recording_url }}
{% endif %}

Call {{ call.id }}, {{ duration_seconds | duration }}, {{ occurred_at | datetime }}
Report: {{ report_url }}"""
DEFAULT_LAST_NAME = "{{ customer.name or ('Caller ' ~ (customer.number | phone)) }}"
DEFAULT_COMPANY = "Unknown (phone caller)"
DEFAULT_FOLLOW_UP_SUBJECT = "Follow up: {{ analysis.intent if analysis and analysis.intent else 'call' }}" \
                            "{% if customer.number %} with {{ customer.number | phone }}{% endif %}"
DEFAULT_FOLLOW_UP_DESCRIPTION = "{{ summary or '' }}\n\nReport: {{ report_url }}"
DEFAULT_OPPORTUNITY_NAME = "{{ (customer.number | phone) or customer.name or 'Caller' }} - call " \
                           "{{ occurred_at | datetime('%Y-%m-%d') }}"

GENERIC_LOGIN_HOSTS = {"login.salesforce.com", "test.salesforce.com"}
SALESFORCE_ID = re.compile(r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$")
API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
VERSION = re.compile(r"^v?(\d{2,3}\.\d)$")


def _url(required: bool = False, **kwargs):
    return fields.Url(required=required, schemes={"http", "https"}, require_tld=False, **kwargs)


class FollowUpConfig(Schema):
    """``[destinations.x.follow_up]``: an open task for a person, when ``when`` holds."""

    when = RuleField(required=True)
    subject = TemplateField(load_default=Template(DEFAULT_FOLLOW_UP_SUBJECT))
    description = TemplateField(load_default=Template(DEFAULT_FOLLOW_UP_DESCRIPTION))
    due_in_days = fields.Integer(load_default=1, validate=validate.Range(min=0, max=365))
    business_days = fields.Boolean(load_default=True)
    status = fields.String(load_default="Not Started")
    #: ``{ High = "analysis.sentiment <= 3" }``: the first value whose rule holds; else ``default_priority``
    priority = MappingField(load_default=None)
    default_priority = fields.String(load_default="Normal")
    owner_id = fields.String(load_default=None)
    fields_ = MappingField(data_key="fields", load_default=None)


class OpportunityConfig(Schema):
    """``[destinations.x.opportunity]``: an Opportunity on the matched contact's account."""

    when = RuleField(required=True)
    name = TemplateField(load_default=Template(DEFAULT_OPPORTUNITY_NAME))
    stage = fields.String(load_default="Prospecting")
    close_in_days = fields.Integer(load_default=30, validate=validate.Range(min=0, max=3650))
    contact_role = fields.String(load_default=None)
    owner_id = fields.String(load_default=None)
    fields_ = MappingField(data_key="fields", load_default=None)


class SalesforceConfig(Schema):
    # --- authentication -------------------------------------------------------------
    auth = fields.String(load_default="client_credentials",
                         validate=validate.OneOf(["client_credentials", "jwt"]))
    login_url = _url(required=True)
    client_id = fields.String(required=True, validate=validate.Length(min=1))
    client_secret = fields.String(load_default=None)
    username = fields.String(load_default=None)
    private_key = fields.String(load_default=None)
    #: None: https://test.salesforce.com for a sandbox login_url, else https://login.salesforce.com
    audience = fields.String(load_default=None)
    instance_url = _url(load_default=None)
    api_version = fields.String(load_default=DEFAULT_API_VERSION)
    token_lifetime_seconds = fields.Integer(load_default=3600, validate=validate.Range(min=60))
    # --- this destination's retry floors: waits at least this long, [dispatch] retry_delays when longer
    server_error_retry_seconds = fields.Float(load_default=0, validate=validate.Range(min=0))
    request_limit_retry_seconds = fields.Float(load_default=3600, validate=validate.Range(min=0))
    # --- who called -----------------------------------------------------------------
    search_objects = fields.List(fields.String(validate=validate.OneOf(["Contact", "Lead"])),
                                 load_default=lambda: ["Contact", "Lead"], validate=validate.Length(min=1))
    who_id = RuleField(load_default=None)
    create = fields.String(load_default="lead", validate=validate.OneOf(["lead", "contact", "none"]))
    last_name = TemplateField(load_default=Template(DEFAULT_LAST_NAME))
    company = TemplateField(load_default=Template(DEFAULT_COMPANY))
    new_record_fields = MappingField(load_default=None)
    # --- the call task --------------------------------------------------------------
    subject = TemplateField(load_default=Template(DEFAULT_SUBJECT))
    description = TemplateField(load_default=Template(DEFAULT_DESCRIPTION))
    what_id = RuleField(load_default=None)
    owner_id = fields.String(load_default=None)
    call_id_field = fields.String(load_default=None)
    task_fields = MappingField(load_default=None)
    # --- optional records -----------------------------------------------------------
    follow_up = fields.Nested(FollowUpConfig, load_default=None)
    opportunity = fields.Nested(OpportunityConfig, load_default=None)

    @validates("api_version")
    def _version(self, value, **kwargs):
        if not VERSION.match(value):
            raise ValidationError('must look like "67.0" (the REST API version, with or without a leading v)')

    @validates("call_id_field")
    def _external_id_field(self, value, **kwargs):
        if value is not None and not API_NAME.match(value):
            raise ValidationError("must be the API name of an External ID field on Task, e.g. Sovereign_Call_Id__c")

    @validates("owner_id")
    def _owner(self, value, **kwargs):
        if value is not None and not SALESFORCE_ID.match(value):
            raise ValidationError("must be a 15- or 18-character Salesforce User Id (005...)")

    @validates_schema
    def _credentials(self, data, **kwargs):
        problems: dict[str, str] = {}
        if data.get("auth") == "jwt":
            if not data.get("username"):
                problems["username"] = "the JWT bearer flow needs the Salesforce username of the integration user"
            key = data.get("private_key")
            if not key:
                problems["private_key"] = 'the JWT bearer flow needs a private key: private_key = { file = "salesforce.key" }'
            else:
                problem = _private_key_problem(key)
                if problem:
                    problems["private_key"] = problem
        else:
            if not data.get("client_secret"):
                problems["client_secret"] = ("the client credentials flow needs the consumer secret: "
                                             'client_secret = { env = "SALESFORCE_CLIENT_SECRET" }')
            host = urlsplit(data.get("login_url") or "").hostname or ""
            if host in GENERIC_LOGIN_HOSTS:
                problems["login_url"] = ("the client credentials flow only works on the org's My Domain URL, "
                                         "e.g. https://acme.my.salesforce.com (Setup > My Domain)")
        for section in ("follow_up", "opportunity"):
            owner = (data.get(section) or {}).get("owner_id")
            if owner is not None and not SALESFORCE_ID.match(owner):
                problems[f"{section}.owner_id"] = "must be a 15- or 18-character Salesforce User Id (005...)"
        if problems:
            raise ValidationError(problems)


def _private_key_problem(pem: str) -> str | None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return f"not an unencrypted PEM private key ({str(exc).splitlines()[0][:120]})"
    return None


def jwt_audience(config: dict) -> str:
    """The JWT ``aud``: configured, or the one Salesforce expects for the login URL's kind of org."""
    if config.get("audience"):
        return config["audience"]
    host = (urlsplit(config.get("login_url") or "").hostname or "").lower()
    sandbox = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com")
    return "https://test.salesforce.com" if sandbox else "https://login.salesforce.com"


def normalized_version(value: str) -> str:
    """``"67.0"`` or ``"v67.0"`` -> ``"v67.0"``."""
    return "v" + VERSION.match(value).group(1)
