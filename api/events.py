"""Provider webhooks in: `POST /api/v1/events/gohighlevel/contacts` and
`POST /api/v1/events/halopsa/approvals`. An event is stored (resources/events.py, table
`inbound_events`) before the answer: 202 `{"stored": true, "id": n}` when new, 200
`{"stored": false, "duplicate": true}` when that event is stored already. A sensor takes it up
later and re-reads the provider; the event only says what to look at, and when.

Who may post (any one of):
- an API key with the scope `events` (`Authorization: Bearer wsk_...`), for a runbook or a relay;
- GoHighLevel signed webhooks (marketplace apps): `X-GHL-Signature`, base64 Ed25519 over the raw
  body, the only signature HighLevel sends after 2026-07-01; the legacy `X-WH-Signature`, base64
  RSA PKCS#1 v1.5 SHA-256 over the raw body, while it is still sent. Both verified against
  `GHL_WEBHOOK_PUBLIC_KEY` (default: HighLevel's published keys, resources/settings.py). When
  both headers come, `X-GHL-Signature` is the one checked, as HighLevel advises;
- a shared secret in header `X-Webhook-Secret`: `GHL_WEBHOOK_SECRET` for a HighLevel workflow's
  (Custom) Webhook action, whose custom headers can carry it; `HALO_WEBHOOK_SECRET` for Halo's
  outbound webhook, whose authentication can be a custom header / API key, or Basic auth (then
  the password is the secret; the user name is ignored). Compared in constant time.
A signature header that is present but does not verify is refused; it never falls back to the
other ways. No secret, header value or body is logged or echoed.

Replay: a signed GoHighLevel event carries `timestamp` (and `webhookId`) inside the signed body;
one older than 5 minutes or more than 1 minute ahead of Dagster's clock is refused (401 naming
`timestamp`), so a captured request cannot be replayed once its row is purged. Shared-secret and
API-key calls are not time-boxed: their sender is trusted with the secret, and a duplicate is one
row anyway (the dedup key below), so a repeat is harmless.

Validation (problem+json naming the field): the body is a JSON object (422), sent as
`application/json` (415), at most 256 KiB (413, app.py).
- GoHighLevel: the contact's id as `id` (marketplace ContactCreate/ContactUpdate/ContactDelete)
  or `contact_id` (a workflow's standard data) is required; the location as `locationId` or
  `location.id` must be `GHL_LOCATION_ID` (locally the emulator's location) else 403; a `type`,
  when sent, names a contact event (`Contact...`). Dedup key: `webhookId`, else
  `type:id:timestamp`, else the SHA-256 of the body.
- Halo: at least one of `id`, `timesheet_id`, `agent_id`, `date` (a hint of what was approved;
  the consumer re-reads the timesheets of the open period either way). Halo's default payload is
  not documented where we looked; a custom JSON payload can send these. Dedup key: `event_id`
  when sent, else the SHA-256 of the body, so a delivery retried with the same body is one row.

What consumers can rely on in `payload` (the body exactly as received, never rewritten):
- gohighlevel.contacts: `id` or `contact_id` (string), `locationId` or `location.id`, and, when
  signed, `timestamp` and usually `webhookId`; `type` when a marketplace event.
- halopsa.approvals: one of `id`, `timesheet_id`, `agent_id`, `date`; nothing else is checked.

Sources (read 2026-12):
- HighLevel Webhook Integration Guide, https://marketplace.gohighlevel.com/docs/webhook/WebhookIntegrationGuide
  (event `type`s ContactCreate/ContactUpdate, `X-GHL-Signature` Ed25519 and its public key, legacy
  `X-WH-Signature` deprecated 2026-07-01, as quoted in https://dev.to/flarecanary/highlevel-webhooks-flip-x-wh-signature-x-ghl-signature-on-july-1-2026-three-silent-failure-do2)
- HighLevel Webhook Authentication Guide (mirror: github.com/thinkbold-solutions/ghl-api-v2-docs,
  docs/oauth/WebhookAuthentication.md): `x-wh-signature`, `timestamp` and `webhookId` in the body,
  the RSA public key, "timestamp within e.g. 5 minutes", "reject duplicate webhookId".
- HighLevel workflow Webhook / Custom Webhook actions (custom headers, contact standard data):
  https://periodic-tables.pages.dev/ghl-features/webhooks-and-api
- HaloPSA outbound webhooks: authentication None / Basic / Bearer / API key / certificate, custom
  payloads: https://hhub.wrain.eu.org/redanthrax/halopsa-node/blob/master/docs/webhooks.md and
  https://kb.dtctoday.com/books/halopsa-api-reference/page/automation-endpoints-part-3 (unverified
  against a tenant: how Halo's "API key" mode names its header).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.keys import caller_of
from api.problems import PROBLEM_SCHEMA, Problem
from resources import events
from resources.settings import GHL_PUBLISHED_KEYS, public_keys, setting, sync_env

log = logging.getLogger(__name__)
router = APIRouter(prefix="/events", tags=["events"])

SIGNED_MAX_AGE = timedelta(minutes=5)
SIGNED_MAX_AHEAD = timedelta(minutes=1)  # clocks differ a little; more than this is not a clock
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="workforce-sync"'}
HALO_HINTS = ("id", "timesheet_id", "agent_id", "date")


class Stored(BaseModel):
    stored: Literal[True]
    id: int


class Duplicate(BaseModel):
    stored: Literal[False]
    duplicate: Literal[True]


# A provider's id as `_text` reads it: a string with something in it, or a whole number.
ID_SCHEMA = {"anyOf": [{"type": "string", "pattern": "\\S"}, {"type": "integer"}]}
GHL_EVENT_SCHEMA = {
    "type": "object",
    "description": "a HighLevel contact event as HighLevel sends it (kept exactly as received)",
    "properties": {
        "type": {"type": "string", "pattern": "^Contact", "description": "ContactCreate, ContactUpdate, ContactDelete, ..."},
        "locationId": {}, "id": {}, "contact_id": {}, "location": {},
        "webhookId": {"type": "string"}, "timestamp": {"type": "string", "format": "date-time"},
    },
    # What `_check_ghl` asks for: the contact's id and the location, each in either of its two forms.
    "allOf": [
        {"anyOf": [{"required": ["id"], "properties": {"id": {**ID_SCHEMA, "description": "the contact's id"}}},
                   {"required": ["contact_id"], "properties": {"contact_id": {**ID_SCHEMA, "description": "the contact's id, in a workflow's standard data"}}}]},
        {"anyOf": [{"required": ["locationId"], "properties": {"locationId": ID_SCHEMA}},
                   {"required": ["location"], "properties": {"location": {"type": "object", "required": ["id"], "properties": {"id": ID_SCHEMA}}}}]},
    ],
    "additionalProperties": True,
}
HALO_EVENT_SCHEMA = {
    "type": "object",
    "description": "a Halo webhook's payload naming an approved timesheet (kept exactly as received)",
    "properties": {"id": {}, "timesheet_id": {}, "agent_id": {}, "date": {}, "event_id": {}},
    # What `_check_halo` asks for: at least one of the hints, not empty.
    "anyOf": [{"required": [name], "properties": {name: {"not": {"enum": [None, "", [], {}]}}}} for name in HALO_HINTS],
    "additionalProperties": True,
}


def _responses() -> dict:
    problems = {status: {**PROBLEM_SCHEMA, "description": why} for status, why in (
        (401, "no valid signature, secret or API key; or a signed event outside its time window"),
        (403, "an API key without the scope `events`, or an event of another location"),
        (413, "the body is larger than 256 KiB"), (415, "the body is not application/json"),
        (422, "the body is not a JSON object with the fields the event needs"),
        (503, "the setting the check needs is not set"))}
    return {200: {"model": Duplicate, "description": "stored before: nothing new"}, 202: {"model": Stored, "description": "stored"},
            **problems}


def _openapi(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# --- authentication -------------------------------------------------------------------------

def _secret(name: str) -> str | None:
    # Read here, when a request needs it, never at import (and never shown: see api/problems.py).
    return os.environ.get(name, "").strip() or None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _signature(value: str, header: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Problem(401, "unauthorized", f"the {header} header is not base64") from None


def _ghl_keys() -> list:
    configured = setting("GHL_WEBHOOK_PUBLIC_KEY")
    try:
        return public_keys(configured or GHL_PUBLISHED_KEYS)
    except ValueError:
        raise Problem(503, "misconfigured", "GHL_WEBHOOK_PUBLIC_KEY holds no usable PEM public key") from None


def _verify_ghl(body: bytes, ed25519_signature: str | None, rsa_signature: str | None) -> None:
    keys = _ghl_keys()
    if ed25519_signature is not None:
        header, signature = "X-GHL-Signature", _signature(ed25519_signature, "X-GHL-Signature")
        candidates = [k for k in keys if isinstance(k, ed25519.Ed25519PublicKey)]
        check = lambda key: key.verify(signature, body)  # noqa: E731
    else:
        header, signature = "X-WH-Signature", _signature(rsa_signature, "X-WH-Signature")
        candidates = [k for k in keys if isinstance(k, rsa.RSAPublicKey)]
        check = lambda key: key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())  # noqa: E731
    for key in candidates:  # more than one while HighLevel rotates its key
        try:
            check(key)
            return
        except InvalidSignature:
            continue
    raise Problem(401, "unauthorized", f"the {header} signature does not verify against GHL_WEBHOOK_PUBLIC_KEY", CHALLENGE)


def _api_key(request: Request, authorization: str) -> str:
    caller = caller_of(request.app.state.service.engine, authorization)
    if "events" not in caller.scopes:
        raise Problem(403, "forbidden", f"the key {caller.name!r} lacks the scope 'events'")
    return f"key {caller.name}"


def _shared_secret(given: str, setting_name: str) -> str:
    expected = _secret(setting_name)
    if expected is None:
        raise Problem(401, "unauthorized", f"a shared secret is not accepted here: {setting_name} is not set", CHALLENGE)
    if not _same(given, expected):
        raise Problem(401, "unauthorized", f"the shared secret does not match {setting_name}", CHALLENGE)
    return "secret"


def _basic_password(authorization: str) -> str | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[2]
    except (binascii.Error, ValueError):
        raise Problem(401, "unauthorized", "the Basic credentials are not base64 of user:password", CHALLENGE) from None


# --- the body -------------------------------------------------------------------------------

def _json_object(request: Request, body: bytes) -> tuple[dict, str]:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise Problem(415, "unsupported media type", "send the event as Content-Type: application/json")

    def constant(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise Problem(422, "invalid request", "body: not JSON (UTF-8)") from None
    if not isinstance(value, dict):
        raise Problem(422, "invalid request", "body: must be a JSON object")
    return value, text


def _text(value) -> str | None:
    """A provider's id as text: ids come as strings, some as numbers."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)):
        return str(value).strip() or None
    return None


def _sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _key(candidate: str) -> str:
    return candidate if len(candidate) <= events.MAX_DEDUP_KEY else "sha256:" + hashlib.sha256(candidate.encode()).hexdigest()


def _instant(value) -> datetime | None:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return None


def _check_window(payload: dict) -> None:
    from dagster._time import get_current_datetime

    moment = _instant(payload.get("timestamp"))
    if moment is None:
        raise Problem(401, "unauthorized", "timestamp: a signed event needs its ISO 8601 timestamp", CHALLENGE)
    now = get_current_datetime()
    if moment < now - SIGNED_MAX_AGE or moment > now + SIGNED_MAX_AHEAD:
        raise Problem(401, "unauthorized", "timestamp: the signed event is older than 5 minutes or more than 1 minute ahead; "
                                           "not accepted again", CHALLENGE)


def _expected_location() -> str:
    configured = setting("GHL_LOCATION_ID")
    if configured:
        return configured
    if sync_env() == "local":
        from providers.ghl import LOCAL_LOCATION_ID

        return LOCAL_LOCATION_ID
    raise Problem(503, "misconfigured", "GHL_LOCATION_ID is not set: no location's events can be accepted")


def _ghl_dedup_key(payload: dict, body: bytes) -> str:
    webhook_id, contact = _text(payload.get("webhookId")), _text(payload.get("id")) or _text(payload.get("contact_id"))
    if webhook_id:
        return _key(webhook_id)
    kind, timestamp = _text(payload.get("type")), _text(payload.get("timestamp"))
    if kind and timestamp:
        return _key(f"{kind}:{contact}:{timestamp}")
    return _sha256(body)


def _check_ghl(payload: dict) -> None:
    if not (_text(payload.get("id")) or _text(payload.get("contact_id"))):
        raise Problem(422, "invalid request", "id: the contact's id is required (or contact_id, from a workflow)")
    kind = payload.get("type")
    if kind is not None and not (isinstance(kind, str) and kind.startswith("Contact")):
        raise Problem(422, "invalid request", "type: not a contact event (ContactCreate, ContactUpdate, ContactDelete, ...)")
    location = payload.get("location")
    given = _text(payload.get("locationId")) or (_text(location.get("id")) if isinstance(location, dict) else None)
    if given is None:
        raise Problem(422, "invalid request", "locationId: required (or location.id, from a workflow)")
    if not _same(given, _expected_location()):
        raise Problem(403, "forbidden", "locationId: not the location this installation syncs (GHL_LOCATION_ID)")


def _check_halo(payload: dict) -> None:
    if not any(payload.get(name) not in (None, "", [], {}) for name in HALO_HINTS):
        raise Problem(422, "invalid request", "id, timesheet_id, agent_id, date: at least one is required, "
                                              "to say which timesheet was approved")


def _halo_dedup_key(payload: dict, body: bytes) -> str:
    event_id = _text(payload.get("event_id"))
    return _key(f"event:{event_id}") if event_id else _sha256(body)


def _log_refusal(source: str, refused: Problem) -> None:
    # A run of these after a provider rotates its key or secret is the sign to look for; the
    # detail names fields and settings, never a value (api/problems.py).
    log.warning("event %s refused: %s %s: %s", source, refused.status, refused.title, refused.detail)


async def _store(request: Request, source: str, dedup_key: str, text: str, via: str) -> JSONResponse:
    engine = request.app.state.service.engine
    try:
        new_id = await run_in_threadpool(events.store_raw_event, engine, source, dedup_key, text)
    except sa.exc.DataError:
        # PostgreSQL's JSONB takes less than JSON's grammar does (a \u0000 in a string).
        raise Problem(422, "invalid request", "body: JSON the warehouse cannot store (a \\u0000 in a string?)") from None
    if new_id is None:
        log.info("event %s from %s: a duplicate, not stored again", source, via)
        return JSONResponse({"stored": False, "duplicate": True}, status_code=200)
    log.info("event %s from %s: stored as %s", source, via, new_id)
    return JSONResponse({"stored": True, "id": new_id}, status_code=202)


@router.post("/gohighlevel/contacts", status_code=202, response_model=Stored, responses=_responses(),
             openapi_extra=_openapi(GHL_EVENT_SCHEMA), summary="A HighLevel contact event (webhook), stored for the contacts sync")
async def gohighlevel_contacts(
    request: Request,
    x_ghl_signature: str | None = Header(None, description="Ed25519 signature of the body (base64), from HighLevel"),
    x_wh_signature: str | None = Header(None, description="legacy RSA-SHA256 signature of the body (base64), from HighLevel"),
    x_webhook_secret: str | None = Header(None, description="GHL_WEBHOOK_SECRET, from a workflow's webhook action"),
    authorization: str | None = Header(None, description="Bearer <API key with scope events>"),
):
    try:
        return await _receive_ghl(request, x_ghl_signature, x_wh_signature, x_webhook_secret, authorization)
    except Problem as refused:
        _log_refusal(events.GHL_CONTACTS, refused)
        raise


async def _receive_ghl(request: Request, x_ghl_signature: str | None, x_wh_signature: str | None, x_webhook_secret: str | None,
                       authorization: str | None) -> JSONResponse:
    body = await request.body()
    signed = x_ghl_signature is not None or x_wh_signature is not None
    if signed:
        _verify_ghl(body, x_ghl_signature, x_wh_signature)
        via = "a HighLevel signature"
    elif x_webhook_secret is not None:
        via = _shared_secret(x_webhook_secret, "GHL_WEBHOOK_SECRET")
    elif authorization is not None:
        via = await run_in_threadpool(_api_key, request, authorization)
    else:
        raise Problem(401, "unauthorized", "sign as HighLevel does (X-GHL-Signature), send X-Webhook-Secret, "
                                           "or an API key with scope events as 'Authorization: Bearer <key>'", CHALLENGE)
    payload, text = _json_object(request, body)
    if signed:
        _check_window(payload)
    _check_ghl(payload)
    return await _store(request, events.GHL_CONTACTS, _ghl_dedup_key(payload, body), text, via)


@router.post("/halopsa/approvals", status_code=202, response_model=Stored, responses=_responses(),
             openapi_extra=_openapi(HALO_EVENT_SCHEMA), summary="A Halo timesheet approval (webhook), stored for the Xero push")
async def halopsa_approvals(
    request: Request,
    x_webhook_secret: str | None = Header(None, description="HALO_WEBHOOK_SECRET, from Halo's webhook"),
    authorization: str | None = Header(None, description="Bearer <API key with scope events>, "
                                                         "or Basic with HALO_WEBHOOK_SECRET as the password"),
):
    try:
        return await _receive_halo(request, x_webhook_secret, authorization)
    except Problem as refused:
        _log_refusal(events.HALO_APPROVALS, refused)
        raise


async def _receive_halo(request: Request, x_webhook_secret: str | None, authorization: str | None) -> JSONResponse:
    body = await request.body()
    password = _basic_password(authorization) if authorization is not None else None
    if x_webhook_secret is not None:
        via = _shared_secret(x_webhook_secret, "HALO_WEBHOOK_SECRET")
    elif password is not None:
        via = _shared_secret(password, "HALO_WEBHOOK_SECRET")
    elif authorization is not None:
        via = await run_in_threadpool(_api_key, request, authorization)
    else:
        raise Problem(401, "unauthorized", "send X-Webhook-Secret (or Basic auth with it as password), "
                                           "or an API key with scope events as 'Authorization: Bearer <key>'", CHALLENGE)
    payload, text = _json_object(request, body)
    _check_halo(payload)
    return await _store(request, events.HALO_APPROVALS, _halo_dedup_key(payload, body), text, via)
