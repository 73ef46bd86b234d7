"""OAuth: both flows field by field, the per-destination token cache, refresh, login failures."""
import threading
import time
from urllib.parse import parse_qs

import jwt
import requests
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hub import Permanent, Retryable
from hub.testing import deliver, make_destination

from hub_salesforce import auth

LOGIN = "https://acme.my.salesforce.com"
INSTANCE = "https://acme.my.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
DATA = f"{INSTANCE}/services/data/v67.0"
CC = {"login_url": LOGIN, "client_id": "3MVG9-consumer-key", "client_secret": "consumer-s3cret"}


@pytest.fixture(scope="module")
def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


def form(request):
    return {k: v[0] for k, v in parse_qs(request.body).items()}


def token_ok(rsps, token="tok-1", instance=INSTANCE):
    rsps.post(TOKEN_URL, json={"access_token": token, "instance_url": instance, "token_type": "Bearer",
                               "id": f"{LOGIN}/id/00D/005", "issued_at": "1764300000000", "signature": "x"})


def search_ok(rsps, **kwargs):
    rsps.get(f"{DATA}/search/", json={"searchRecords": []}, **kwargs)


def composite_ok(rsps):
    rsps.post(f"{DATA}/composite", json={"compositeResponse": [
        {"referenceId": "newWho", "httpStatusCode": 201, "httpHeaders": {}, "body": {"id": "00Q000000000001AAA"}},
        {"referenceId": "callTask", "httpStatusCode": 201, "httpHeaders": {}, "body": {"id": "00T000000000001AAA"}},
    ]})


def test_client_credentials_posts_the_documented_form_to_my_domain(sample_report):
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        token_ok(rsps)
        search_ok(rsps)
        composite_ok(rsps)
        _, ctx = deliver(destination, sample_report)
        login = rsps.calls[0].request
    assert login.url == TOKEN_URL
    assert login.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form(login) == {"grant_type": "client_credentials", "client_id": "3MVG9-consumer-key",
                           "client_secret": "consumer-s3cret"}
    # the delivery log never shows the secret
    assert ctx.sent[0].body == {"grant_type": "client_credentials", "client_id": "3MVG9-consumer-key",
                                "client_secret": "[secret]"}
    assert all("consumer-s3cret" not in repr(r.to_dict()) for r in ctx.sent)


def test_jwt_bearer_flow_signs_the_documented_claims(sample_report, rsa_key):
    pem, public = rsa_key
    destination = make_destination("salesforce", {
        "auth": "jwt", "login_url": "https://login.salesforce.com", "client_id": "3MVG9-consumer-key",
        "username": "integration@acme.example", "private_key": pem})
    with responses.RequestsMock() as rsps:
        rsps.post("https://login.salesforce.com/services/oauth2/token",
                  json={"access_token": "jwt-tok", "instance_url": INSTANCE, "token_type": "Bearer"})
        search_ok(rsps)
        composite_ok(rsps)
        before = int(time.time())
        _, ctx = deliver(destination, sample_report)
        login = rsps.calls[0].request
        assert rsps.calls[1].request.headers["Authorization"] == "Bearer jwt-tok"
    fields = form(login)
    assert fields["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert set(fields) == {"grant_type", "assertion"}
    assert jwt.get_unverified_header(fields["assertion"])["alg"] == "RS256"
    claims = jwt.decode(fields["assertion"], public, algorithms=["RS256"], audience="https://login.salesforce.com")
    assert claims["iss"] == "3MVG9-consumer-key"
    assert claims["sub"] == "integration@acme.example"
    assert claims["aud"] == "https://login.salesforce.com"
    assert before + 170 <= claims["exp"] <= int(time.time()) + 180
    assert ctx.sent[0].body["assertion"] == "[secret]"


def test_jwt_audience_is_configurable_for_sandboxes(rsa_key):
    pem, public = rsa_key
    destination = make_destination("salesforce", {
        "auth": "jwt", "login_url": "https://acme--uat.sandbox.my.salesforce.com", "client_id": "ck",
        "username": "u@acme.example.uat", "private_key": pem, "audience": "https://test.salesforce.com"})
    fields = auth.token_form(destination.config, now=1_700_000_000)
    claims = jwt.decode(fields["assertion"], public, algorithms=["RS256"], audience="https://test.salesforce.com",
                        options={"verify_exp": False})
    assert claims == {"iss": "ck", "sub": "u@acme.example.uat", "aud": "https://test.salesforce.com",
                      "exp": 1_700_000_180}
    assert destination.tokens.token_url == "https://acme--uat.sandbox.my.salesforce.com/services/oauth2/token"


@pytest.mark.parametrize("login_url, audience", [
    ("https://acme--uat.sandbox.my.salesforce.com", "https://test.salesforce.com"),
    ("https://test.salesforce.com", "https://test.salesforce.com"),
    ("https://acme.my.salesforce.com", "https://login.salesforce.com"),
    ("https://login.salesforce.com", "https://login.salesforce.com"),
])
def test_jwt_audience_defaults_to_the_kind_of_org_of_the_login_url(rsa_key, login_url, audience):
    pem, public = rsa_key
    destination = make_destination("salesforce", {
        "auth": "jwt", "login_url": login_url, "client_id": "ck", "username": "u@acme.example", "private_key": pem})
    fields = auth.token_form(destination.config, now=1_700_000_000)
    claims = jwt.decode(fields["assertion"], public, algorithms=["RS256"], audience=audience,
                        options={"verify_exp": False})
    assert claims["aud"] == audience


def test_token_and_instance_url_are_cached_per_destination(sample_report):
    first = make_destination("salesforce", CC, name="sf_a")
    second = make_destination("salesforce", CC, name="sf_b")
    with responses.RequestsMock() as rsps:
        token_ok(rsps)
        search_ok(rsps)
        composite_ok(rsps)
        deliver(first, sample_report)
        deliver(first, sample_report)
        deliver(second, sample_report)
        logins = [c for c in rsps.calls if c.request.url == TOKEN_URL]
    assert len(logins) == 2  # one per destination instance, not one per delivery


def test_the_access_token_is_redacted_once_obtained(sample_report):
    from hub import redact

    token = "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nt1u44zU31IbYNNJguseu"
    with responses.RequestsMock() as rsps:
        token_ok(rsps, token=token)
        search_ok(rsps)
        composite_ok(rsps)
        deliver(make_destination("salesforce", CC), sample_report)
    assert redact(f"Authorization: Bearer {token}") == "Authorization: Bearer [secret]"


def test_instance_url_from_the_token_answer_is_used_unless_configured(sample_report):
    other = "https://acme.my.salesforce.com:8443"
    with responses.RequestsMock() as rsps:
        token_ok(rsps, instance=other)
        rsps.get(f"{other}/services/data/v67.0/search/", json={"searchRecords": []})
        rsps.post(f"{other}/services/data/v67.0/composite", json={"compositeResponse": []})
        _, ctx = deliver(make_destination("salesforce", CC), sample_report)
    assert [r.url.split("?")[0] for r in ctx.sent[1:]] == [f"{other}/services/data/v67.0/search/",
                                                          f"{other}/services/data/v67.0/composite"]
    local = "http://127.0.0.1:8999"
    with responses.RequestsMock() as rsps:
        token_ok(rsps, instance=other)
        rsps.get(f"{local}/services/data/v61.0/search/", json={"searchRecords": []})
        rsps.post(f"{local}/services/data/v61.0/composite", json={"compositeResponse": []})
        _, ctx = deliver(make_destination("salesforce", {**CC, "instance_url": local, "api_version": "v61.0"}),
                         sample_report)
    assert ctx.sent[0].url == TOKEN_URL
    assert [r.url.split("?")[0] for r in ctx.sent[1:]] == [f"{local}/services/data/v61.0/search/",
                                                          f"{local}/services/data/v61.0/composite"]


def test_concurrent_workers_share_one_login():
    destination = make_destination("salesforce", CC)
    calls = []
    gate = threading.Event()

    class SlowCtx:
        dry_run = False
        sent = []

        def send(self, method, url, **kwargs):
            calls.append(url)
            gate.wait(1)
            r = requests.Response()
            r.status_code = 200
            r._content = b'{"access_token": "tok", "instance_url": "https://acme.my.salesforce.com"}'
            return r

    tokens = []
    threads = [threading.Thread(target=lambda: tokens.append(destination.tokens.get(SlowCtx()))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(t) for t in tokens}) == 1 and tokens[0].access_token == "tok"


def test_expired_token_is_replaced(sample_report, monkeypatch):
    destination = make_destination("salesforce", {**CC, "token_lifetime_seconds": 60})
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    with responses.RequestsMock() as rsps:
        token_ok(rsps)
        search_ok(rsps)
        composite_ok(rsps)
        deliver(destination, sample_report)
        clock[0] += 59
        deliver(destination, sample_report)
        clock[0] += 2
        deliver(destination, sample_report)
        logins = [c for c in rsps.calls if c.request.url == TOKEN_URL]
    assert len(logins) == 2


def test_invalid_session_gets_a_new_token_and_repeats_the_request_once(sample_report):
    destination = make_destination("salesforce", CC)
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"access_token": "old", "instance_url": INSTANCE})
        rsps.post(TOKEN_URL, json={"access_token": "new", "instance_url": INSTANCE})
        rsps.get(f"{DATA}/search/", status=401,
                 json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        search_ok(rsps)
        composite_ok(rsps)
        result, ctx = deliver(destination, sample_report)
        searches = [c.request for c in rsps.calls if "/search/" in c.request.url]
    assert [s.headers["Authorization"] for s in searches] == ["Bearer old", "Bearer new"]
    assert ctx.state["call_task_id"] == "00T000000000001AAA"
    assert destination.tokens._token.access_token == "new"


def test_a_fresh_token_refused_again_is_permanent(sample_report):
    destination = make_destination("salesforce", CC, name="sf_crm")
    with responses.RequestsMock() as rsps:
        token_ok(rsps)
        rsps.get(f"{DATA}/search/", status=401,
                 json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
        with pytest.raises(Permanent) as info:
            deliver(destination, sample_report)
        assert len([c for c in rsps.calls if c.request.url == TOKEN_URL]) == 2
    assert "'sf_crm'" in str(info.value) and "'api'" in str(info.value)
    assert destination.tokens._token is None


@pytest.mark.parametrize("error, description, fix", [
    ("invalid_client", "invalid client credentials", "Client Credentials Flow"),
    ("invalid_client_id", "client identifier invalid", "consumer key"),
    ("invalid_grant", "user hasn't approved this consumer", "pre-authorized"),
    ("invalid_grant", "audience is invalid", "audience"),
    ("invalid_request", "request not supported on this domain", "My Domain"),
])
def test_login_refusals_are_permanent_and_name_the_fix(sample_report, error, description, fix):
    destination = make_destination("salesforce", CC, name="sf_crm")
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, status=400, json={"error": error, "error_description": description})
        with pytest.raises(Permanent) as info:
            deliver(destination, sample_report)
    message = str(info.value)
    assert "'sf_crm'" in message and error in message and fix in message
    assert "consumer-s3cret" not in message


@pytest.mark.parametrize("options, wait", [({}, None), ({"server_error_retry_seconds": 60}, 60)])
def test_login_server_errors_retry_on_the_schedule(sample_report, options, wait):
    destination = make_destination("salesforce", {**CC, **options})
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, status=503, body="maintenance")
        with pytest.raises(Retryable) as info:
            deliver(destination, sample_report)
    assert info.value.retry_after == wait


def test_login_answer_without_token_is_permanent(sample_report):
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, json={"instance_url": INSTANCE})
        with pytest.raises(Permanent, match="without an access_token"):
            deliver(make_destination("salesforce", CC), sample_report)


@pytest.mark.parametrize("options, key, words", [
    ({"login_url": LOGIN, "client_id": "ck"}, "client_secret", "consumer secret"),
    ({"auth": "jwt", "login_url": LOGIN, "client_id": "ck", "private_key": "x"}, "username", "username"),
    ({"auth": "jwt", "login_url": LOGIN, "client_id": "ck", "username": "u"}, "private_key", "file"),
    ({"auth": "jwt", "login_url": LOGIN, "client_id": "ck", "username": "u", "private_key": "not a key"},
     "private_key", "PEM"),
    ({**CC, "auth": "password"}, "auth", "Must be one of"),
    ({**CC, "api_version": "latest"}, "api_version", "67.0"),
    ({**CC, "login_url": "acme"}, "login_url", "URL"),
    ({**CC, "login_url": "https://login.salesforce.com"}, "login_url", "My Domain"),
    ({**CC, "call_id_field": "Sovereign Call Id"}, "call_id_field", "External ID"),
    ({**CC, "owner_id": "bob"}, "owner_id", "User Id"),
    ({**CC, "search_objects": ["Account"]}, "search_objects", "Must be one of"),
    ({**CC, "follow_up": {"due_in_days": 2}}, "follow_up.when", "required"),
    ({**CC, "subject": "{{ broken"}, "subject", "template"),
])
def test_bad_options_are_rejected_with_the_key_named(options, key, words):
    with pytest.raises(Exception) as info:
        make_destination("salesforce", options)
    message = str(info.value)
    assert f"destinations.salesforce.{key}" in message and words in message, message


def test_invalidate_keeps_a_token_another_thread_already_renewed():
    destination = make_destination("salesforce", CC)
    old = auth.Token("old", INSTANCE, time.monotonic() + 60)
    new = auth.Token("new", INSTANCE, time.monotonic() + 60)
    destination.tokens._token = new
    destination.tokens.invalidate(old)
    assert destination.tokens._token is new
    destination.tokens.invalidate(new)
    assert destination.tokens._token is None
