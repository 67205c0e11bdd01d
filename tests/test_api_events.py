"""POST /api/v1/events/...: provider webhooks stored before the answer (api/events.py,
resources/events.py). The application over a real Service and a real warehouse (SQLite; the
concurrent delivery on PostgreSQL); GoHighLevel's signatures made with key pairs generated here and
configured through GHL_WEBHOOK_PUBLIC_KEY, as an operator would; Dagster's clock frozen."""

from __future__ import annotations

import base64
import json
import logging
import threading
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from dagster._time import get_current_datetime
from dagster._core.test_utils import freeze_time
from fastapi.testclient import TestClient

from api import keys
from api.app import MAX_BODY_BYTES, Service, create_app
from providers.ghl import LOCAL_LOCATION_ID
from resources import events
from resources.tables import inbound_events

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
GHL_SECRET, HALO_SECRET = "ghl-shared-DISTINCTIVE-3f9a", "halo-shared-DISTINCTIVE-77c1"
GHL_PATH, HALO_PATH = "/api/v1/events/gohighlevel/contacts", "/api/v1/events/halopsa/approvals"


def pem(private_key) -> str:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def configured(monkeypatch, ed_key, rsa_key):
    # One line with literal \n, as an environment variable holds a PEM.
    monkeypatch.setenv("GHL_WEBHOOK_PUBLIC_KEY", (pem(ed_key) + pem(rsa_key)).replace("\n", "\\n"))
    monkeypatch.setenv("GHL_WEBHOOK_SECRET", GHL_SECRET)
    monkeypatch.setenv("HALO_WEBHOOK_SECRET", HALO_SECRET)
    monkeypatch.setenv("SYNC_ENV", "local")
    monkeypatch.delenv("GHL_LOCATION_ID", raising=False)


def make_client(url: str) -> tuple[TestClient, sa.Engine]:
    service = Service(instance=dg.DagsterInstance.ephemeral(), webserver_url="http://127.0.0.1:3000", warehouse_url=url,
                      warehouse_schema=None)
    return TestClient(create_app(service), raise_server_exceptions=True), service.engine


@pytest.fixture
def api(configured, sqlite_warehouse_url):
    with freeze_time(NOW):
        client, engine = make_client(sqlite_warehouse_url)
        yield client, engine


def rows(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(inbound_events).order_by(inbound_events.c.id)))


def contact_event(**changes) -> dict:
    event = {"type": "ContactUpdate", "locationId": LOCAL_LOCATION_ID, "id": "cont_0001", "firstName": "Anna",
             "webhookId": "wh_5b1c0d", "timestamp": (NOW - timedelta(seconds=20)).isoformat().replace("+00:00", "Z")}
    return {**event, **changes}


def body_of(event: dict) -> bytes:
    # Spacing and key order as a provider might send them: what is stored must be these bytes.
    return json.dumps(event, indent=1).encode()


def signed(key, body: bytes) -> dict:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return {"X-GHL-Signature": base64.b64encode(key.sign(body)).decode()}
    return {"X-WH-Signature": base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()}


JSON = {"Content-Type": "application/json"}


def post(client, path, body: bytes, headers: dict):
    return client.post(path, content=body, headers={**JSON, **headers})


def assert_problem(response, status: int, *words: str):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and all(word in problem["detail"] for word in words), problem


# --- GoHighLevel ---------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["ed25519", "rsa"])
def test_a_signed_contact_event_is_stored_as_received_and_a_replay_is_a_duplicate(api, ed_key, rsa_key, which):
    client, engine = api
    body = body_of(contact_event())
    headers = signed(ed_key if which == "ed25519" else rsa_key, body)

    first = post(client, GHL_PATH, body, headers)
    again = post(client, GHL_PATH, body, headers)

    assert first.status_code == 202 and first.json() == {"stored": True, "id": rows(engine)[0].id}
    assert again.status_code == 200 and again.json() == {"stored": False, "duplicate": True}
    [row] = rows(engine)
    assert (row.source, row.dedup_key, row.handled_at) == (events.GHL_CONTACTS, "wh_5b1c0d", None)
    assert row.payload == json.loads(body)
    with engine.connect() as conn:  # the body's own text, not a re-encoding
        assert conn.execute(sa.text("SELECT payload FROM inbound_events")).scalar_one() == body.decode()
    assert row.received_at == NOW.replace(tzinfo=None)


def test_without_a_webhook_id_the_type_id_and_timestamp_deduplicate(api, ed_key):
    client, engine = api
    event = {k: v for k, v in contact_event().items() if k != "webhookId"}
    for body in (body_of(event), json.dumps(event).encode()):  # the same event, spaced differently
        post(client, GHL_PATH, body, signed(ed_key, body))

    assert [r.dedup_key for r in rows(engine)] == [f"ContactUpdate:cont_0001:{event['timestamp']}"]


@pytest.mark.parametrize("forgery", ["other key", "body changed", "not base64", "rsa header, ed25519 signature"])
def test_a_forged_signature_is_refused_and_nothing_is_stored(api, ed_key, forgery):
    client, engine = api
    body = body_of(contact_event())
    headers = {"other key": lambda: signed(ed25519.Ed25519PrivateKey.generate(), body),
               "body changed": lambda: signed(ed_key, body.replace(b"Anna", b"Eve!")),
               "not base64": lambda: {"X-GHL-Signature": "%%%not-base64%%%"},
               "rsa header, ed25519 signature": lambda: {"X-WH-Signature": signed(ed_key, body)["X-GHL-Signature"]}}[forgery]()

    response = post(client, GHL_PATH, body, headers)

    assert_problem(response, 401)
    assert rows(engine) == []


def test_a_signature_that_fails_does_not_fall_back_to_a_valid_secret(api):
    client, engine = api
    body = body_of(contact_event())
    response = post(client, GHL_PATH, body, {"X-GHL-Signature": base64.b64encode(b"x" * 64).decode(), "X-Webhook-Secret": GHL_SECRET})

    assert_problem(response, 401, "X-GHL-Signature")
    assert rows(engine) == []


@pytest.mark.parametrize("offset, stored", [(timedelta(minutes=-5, seconds=-1), False), (timedelta(minutes=-4, seconds=-59), True),
                                            (timedelta(seconds=59), True), (timedelta(minutes=1, seconds=1), False)])
def test_a_signed_event_counts_only_within_five_minutes_back_and_one_ahead(api, ed_key, offset, stored):
    client, engine = api
    body = body_of(contact_event(timestamp=(get_current_datetime() + offset).isoformat()))

    response = post(client, GHL_PATH, body, signed(ed_key, body))

    if stored:
        assert response.status_code == 202
    else:
        assert_problem(response, 401, "timestamp")
    assert len(rows(engine)) == int(stored)


def test_a_signed_event_without_a_timestamp_is_refused(api, ed_key):
    client, engine = api
    body = body_of({k: v for k, v in contact_event().items() if k != "timestamp"})

    assert_problem(post(client, GHL_PATH, body, signed(ed_key, body)), 401, "timestamp")
    assert rows(engine) == []


def test_a_workflow_webhook_with_the_shared_secret_is_stored_without_a_time_window(api):
    client, engine = api
    # A workflow's standard data: contact_id and location.id, no timestamp, no signature.
    event = {"contact_id": "cont_0002", "first_name": "Bo", "location": {"id": LOCAL_LOCATION_ID, "name": "Emulator"}}
    body = body_of(event)

    first = post(client, GHL_PATH, body, {"X-Webhook-Secret": GHL_SECRET})
    again = post(client, GHL_PATH, body, {"X-Webhook-Secret": GHL_SECRET})

    assert (first.status_code, again.status_code) == (202, 200)
    [row] = rows(engine)
    assert row.dedup_key.startswith("sha256:") and row.payload == event


@pytest.mark.parametrize("secret", ["wrong", HALO_SECRET, GHL_SECRET + "x"])
def test_a_wrong_shared_secret_is_refused(api, secret):
    client, engine = api
    assert_problem(post(client, GHL_PATH, body_of(contact_event()), {"X-Webhook-Secret": secret}), 401, "GHL_WEBHOOK_SECRET")
    assert rows(engine) == []


def test_a_shared_secret_is_refused_while_its_setting_is_unset(api, monkeypatch):
    client, engine = api
    monkeypatch.delenv("GHL_WEBHOOK_SECRET")
    assert_problem(post(client, GHL_PATH, body_of(contact_event()), {"X-Webhook-Secret": ""}), 401, "GHL_WEBHOOK_SECRET is not set")
    assert rows(engine) == []


def test_an_event_of_another_location_is_refused(api, ed_key, monkeypatch):
    client, engine = api
    body = body_of(contact_event())
    monkeypatch.setenv("GHL_LOCATION_ID", "locProduction01")  # set: the emulator's location is no longer ours

    assert_problem(post(client, GHL_PATH, body, signed(ed_key, body)), 403, "locationId")
    other = body_of(contact_event(locationId="locSomeoneElse"))
    monkeypatch.delenv("GHL_LOCATION_ID")
    assert_problem(post(client, GHL_PATH, other, signed(ed_key, other)), 403, "locationId")
    assert rows(engine) == []


@pytest.mark.parametrize("event, field", [({"locationId": None}, "locationId"), ({"id": None}, "id"), ({"id": ""}, "id"),
                                          ({"type": "OpportunityCreate"}, "type")])
def test_a_contact_event_without_what_it_needs_is_refused_naming_the_field(api, ed_key, event, field):
    client, engine = api
    body = body_of({k: v for k, v in contact_event(**event).items() if v is not None})

    assert_problem(post(client, GHL_PATH, body, signed(ed_key, body)), 422, f"{field}:")
    assert rows(engine) == []


DEEP = b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # 200 KB, under the body limit, past Python's recursion limit


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b'{"id": NaN}', b"\xff\xfe{}", DEEP],
                         ids=["broken", "array", "string", "NaN", "not UTF-8", "deep"])
def test_a_body_that_is_not_a_json_object_is_refused(api, body):
    client, engine = api
    assert_problem(post(client, GHL_PATH, body, {"X-Webhook-Secret": GHL_SECRET}), 422, "body")
    assert_problem(post(client, HALO_PATH, body, {"X-Webhook-Secret": HALO_SECRET}), 422, "body")
    assert rows(engine) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_sent_as_json_is_refused(api, content_type):
    client, engine = api
    headers = {"X-Webhook-Secret": HALO_SECRET} | ({"Content-Type": content_type} if content_type else {})
    response = client.post(HALO_PATH, content=json.dumps({"id": 7}).encode(), headers=headers)

    assert_problem(response, 415, "application/json")
    assert rows(engine) == []


def test_an_oversized_body_is_refused(api):
    client, engine = api
    body = json.dumps({"id": 7, "padding": "x" * MAX_BODY_BYTES}).encode()

    assert_problem(post(client, HALO_PATH, body, {"X-Webhook-Secret": HALO_SECRET}), 413)
    assert rows(engine) == []


def test_nothing_is_stored_without_any_credentials(api):
    client, engine = api
    assert_problem(post(client, GHL_PATH, body_of(contact_event()), {}), 401, "X-GHL-Signature")
    assert_problem(post(client, HALO_PATH, b'{"id": 1}', {}), 401, "X-Webhook-Secret")
    assert rows(engine) == []


# --- API keys ------------------------------------------------------------------------------

def test_an_api_key_needs_the_events_scope(api):
    client, engine = api
    with_scope, without = keys.create(engine, "relay", ["events"]), keys.create(engine, "dashboard", ["read", "trigger"])
    body = b'{"timesheet_id": 4411, "agent_id": 12, "date": "2026-11-19"}'

    assert_problem(post(client, HALO_PATH, body, {"Authorization": f"Bearer {without}"}), 403, "events")
    assert_problem(post(client, GHL_PATH, body_of(contact_event()), {"Authorization": f"Bearer {without}"}), 403, "events")
    assert_problem(post(client, HALO_PATH, body, {"Authorization": "Bearer wsk_000000000000.nope"}), 401)
    assert rows(engine) == []

    halo = post(client, HALO_PATH, body, {"Authorization": f"Bearer {with_scope}"})
    # An API key's event is not time-boxed: an old timestamp is stored (deduplicated as ever).
    ghl = post(client, GHL_PATH, body_of(contact_event(timestamp="2026-01-01T00:00:00Z")), {"Authorization": f"Bearer {with_scope}"})
    assert (halo.status_code, ghl.status_code) == (202, 202)
    assert [r.source for r in rows(engine)] == [events.HALO_APPROVALS, events.GHL_CONTACTS]


# --- Halo ----------------------------------------------------------------------------------

def test_a_halo_approval_is_stored_once_by_its_event_id_else_by_its_body(api):
    client, engine = api
    by_id = [b'{"event_id": "ev-1", "timesheet_id": 4411}', b'{"event_id": "ev-1", "timesheet_id": 4411, "retry": 1}']
    plain = b'{"agent_id": 12, "date": "2026-11-19"}'
    answers = [post(client, HALO_PATH, body, {"X-Webhook-Secret": HALO_SECRET}).status_code for body in [*by_id, plain, plain]]

    assert answers == [202, 200, 202, 200]
    assert [r.dedup_key[:7] for r in rows(engine)] == ["event:e", "sha256:"]


def test_halo_may_authenticate_with_basic_auth_whose_password_is_the_secret(api):
    client, engine = api
    good = base64.b64encode(f"halo:{HALO_SECRET}".encode()).decode()
    bad = base64.b64encode(b"halo:guess").decode()

    assert_problem(post(client, HALO_PATH, b'{"id": 9}', {"Authorization": f"Basic {bad}"}), 401, "HALO_WEBHOOK_SECRET")
    assert post(client, HALO_PATH, b'{"id": 9}', {"Authorization": f"Basic {good}"}).status_code == 202
    assert len(rows(engine)) == 1


@pytest.mark.parametrize("body", [b"{}", b'{"status": "approved"}', b'{"id": null, "date": ""}'])
def test_a_halo_event_must_say_which_timesheet(api, body):
    client, engine = api
    assert_problem(post(client, HALO_PATH, body, {"X-Webhook-Secret": HALO_SECRET}), 422, "timesheet_id")
    assert rows(engine) == []


# --- secrets -------------------------------------------------------------------------------

def test_no_secret_appears_in_any_answer_or_log(api, ed_key, caplog):
    client, engine = api
    relay = keys.create(engine, "relay", ["events"])
    caplog.set_level(logging.DEBUG)
    body = body_of(contact_event())
    answers = [post(client, GHL_PATH, body, {"X-Webhook-Secret": GHL_SECRET}),
               post(client, GHL_PATH, body, {"X-Webhook-Secret": HALO_SECRET}),
               post(client, HALO_PATH, b'{"id": 1}', {"X-Webhook-Secret": GHL_SECRET}),
               post(client, HALO_PATH, b'{"id": 1}', {"X-Webhook-Secret": HALO_SECRET}),
               post(client, HALO_PATH, b'{"id": 2}', {"Authorization": f"Bearer {relay}"}),
               post(client, HALO_PATH, b'{"id": 3}', {"Authorization": f"Bearer {relay[:-2]}xx"}),
               post(client, GHL_PATH, body, signed(ed_key, body))]

    assert sorted(a.status_code for a in answers) == [200, 202, 202, 202, 401, 401, 401]
    shown = "\n".join([*(a.text + str(a.headers) for a in answers), caplog.text])
    for secret in (GHL_SECRET, HALO_SECRET, relay, relay.partition(".")[2]):
        assert secret not in shown
    assert "stored as" in caplog.text and "refused: 401" in caplog.text


# --- the shared functions, and PostgreSQL ----------------------------------------------------

def test_pending_is_oldest_first_and_mark_handled_keeps_the_first_mark(configured, sqlite_warehouse_url):
    _, engine = make_client(sqlite_warehouse_url)
    with freeze_time(NOW):
        assert events.store_event(engine, events.HALO_APPROVALS, "b", {"id": 2})
    with freeze_time(NOW - timedelta(minutes=1)):
        assert events.store_event(engine, events.HALO_APPROVALS, "a", {"id": 1})
    assert not events.store_event(engine, events.HALO_APPROVALS, "a", {"id": 1})
    assert events.store_event(engine, events.GHL_CONTACTS, "a", {"id": "c"})

    waiting = events.pending(engine, events.HALO_APPROVALS)
    assert [r.payload for r in waiting] == [{"id": 1}, {"id": 2}]
    events.mark_handled(engine, [waiting[0].id], by="run-1")
    events.mark_handled(engine, [waiting[0].id, waiting[1].id], by="run-2")
    assert events.pending(engine, events.HALO_APPROVALS) == []
    assert [r.handled_by for r in rows(engine)] == ["run-2", "run-1", None]
    assert [r.payload for r in events.pending(engine, events.GHL_CONTACTS, limit=1)] == [{"id": "c"}]


def test_two_identical_events_at_once_on_postgresql_are_one_row(configured, postgres_warehouse_url, ed_key):
    with freeze_time(NOW):
        client, engine = make_client(postgres_warehouse_url)
        body = body_of(contact_event())
        headers = signed(ed_key, body)
        barrier, answers = threading.Barrier(8), []

        def deliver():
            barrier.wait()
            answers.append(post(client, GHL_PATH, body, headers).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert sorted(answers) == [200] * 7 + [202]
        [row] = rows(engine)
        assert row.payload == json.loads(body)


def test_json_that_postgresql_cannot_hold_is_refused_not_a_server_error(configured, postgres_warehouse_url):
    with freeze_time(NOW):
        client, engine = make_client(postgres_warehouse_url)
        response = post(client, HALO_PATH, b'{"id": 5, "note": "nul \\u0000 here"}', {"X-Webhook-Secret": HALO_SECRET})

    assert_problem(response, 422, "body")
    assert rows(engine) == []


def test_unset_the_public_key_setting_means_highlevels_published_keys(api, ed_key, monkeypatch):
    from resources.settings import GHL_PUBLISHED_KEYS, public_keys

    client, engine = api
    monkeypatch.delenv("GHL_WEBHOOK_PUBLIC_KEY")
    published = public_keys(GHL_PUBLISHED_KEYS)
    body = body_of(contact_event())

    assert [type(k).__name__ for k in published] == ["Ed25519PublicKey", "RSAPublicKey"] and published[1].key_size == 4096
    assert_problem(post(client, GHL_PATH, body, signed(ed_key, body)), 401, "X-GHL-Signature")  # ours is not HighLevel's key
    assert rows(engine) == []


def test_in_production_without_a_location_no_contact_event_is_accepted(api, monkeypatch):
    client, engine = api
    monkeypatch.setenv("SYNC_ENV", "production")

    assert_problem(post(client, GHL_PATH, body_of(contact_event()), {"X-Webhook-Secret": GHL_SECRET}), 503, "GHL_LOCATION_ID")
    monkeypatch.setenv("GHL_LOCATION_ID", LOCAL_LOCATION_ID)
    assert post(client, GHL_PATH, body_of(contact_event()), {"X-Webhook-Secret": GHL_SECRET}).status_code == 202
    assert len(rows(engine)) == 1
