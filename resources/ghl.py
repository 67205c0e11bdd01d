"""GoHighLevel (LeadConnector API v2) contacts: the client resource and the record parser.

Lists contacts with `POST /contacts/search` (the documented way; `GET /contacts/` is
deprecated): a `dateUpdated` range filter, ascending `dateUpdated` sort and `searchAfter`
paging, which unlike page numbers has no 10,000-record ceiling.

Unverified in public material, so handled defensively: the `searchAfter` value on each
returned contact (seen in community clients, not in the official spec; when absent we build
`[dateUpdated epoch ms, id]` ourselves) and the range operators besides `gt` (we send
`gte`/`lt` for a half-open window).

The day's budget (200,000 requests per location) is read from `X-RateLimit-Daily-Remaining` on
every answer; before asking for another page the client stops with `DailyBudgetSpent` once the
remainder is down to `daily_reserve`, and a 429 with the remainder at 0 stops it too (its
Retry-After runs to the end of GoHighLevel's day, which no run should wait out).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import polars as pl

from resources.ghl_tables import ghl_contacts
from resources.http import BearerAuth, ProviderClient, ProviderError, ProviderResource, RequestRejected, shared_limiter
from resources.records import content_hash, parse_each, text_value
from resources.tables import frame_schema

API_VERSION = "2021-07-28"
MAX_PAGE_SIZE = 500

# The search answer's Contact (GoHighLevel/highlevel-api-docs, apps/contacts.json of 2025-08-26,
# SearchContactSuccessResponseDto) -> warehouse column, for the plain text fields. `name`,
# `address1`, `timezone` and `website` are fields of GET /contacts/{id}, which search does not send.
TEXT_FIELDS = {
    "locationId": "location_id",
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "phone": "phone",
    "phoneLabel": "phone_label",
    "companyName": "company_name",
    "businessName": "business_name",
    "businessId": "business_id",
    "type": "type",
    "source": "source",
    "assignedTo": "assigned_to",
    "address": "address",
    "city": "city",
    "state": "state",
    "country": "country",
    "postalCode": "postal_code",
    "dateOfBirth": "date_of_birth",
}
# `GET /contacts/{id}` answers another shape than search (GetContectByIdSchema): these are its
# fields with the search Contact's names (`address1` is search's `address`); its own others
# (`name`, `fullNameLowerCase`, `emailLowerCase`, `timezone`, `website`, ...) search never sends.
# Fields search sends and it does not (`phoneLabel`, `additionalEmails`, `followers`, ...) it cannot tell.
BY_ID_AS_SEARCH = {**{f: f for f in (
    "id", "locationId", "firstName", "lastName", "email", "companyName", "phone", "dnd", "dndSettings", "type", "source",
    "assignedTo", "city", "state", "country", "postalCode", "tags", "dateOfBirth", "dateAdded", "dateUpdated",
    "firstNameLowerCase", "lastNameLowerCase", "customFields", "businessId")}, "address1": "address"}
# List and object fields, kept as JSON text.
JSON_FIELDS = {
    "additionalEmails": "additional_emails",
    "additionalPhones": "additional_phones",
    "followers": "followers",
    "tags": "tags",
    "dndSettings": "dnd_settings",
}
# The frame the parser makes: the table's columns it fills, typed as the table is.
CONTACT_SCHEMA = frame_schema(ghl_contacts, "id", *TEXT_FIELDS.values(), *JSON_FIELDS.values(), "dnd", "valid_email",
                              "custom_fields", "date_added", "date_updated", "raw", "content_hash")


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 string (or epoch milliseconds) as naive UTC; None when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_contacts(records: list[dict[str, Any]], where: str = "") -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Provider records -> a frame of warehouse rows, plus the rejects (no id, unparsable dates)."""
    rows, rejects = parse_each(records, _contact_row, where)
    return pl.DataFrame(rows, schema=CONTACT_SCHEMA, orient="row"), rejects


def _contact_row(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise TypeError(f"not an object: {type(record).__name__}")
    contact_id = record.get("id")
    if not isinstance(contact_id, str) or not contact_id.strip() or len(contact_id) > 64:
        raise ValueError("no id (a string of at most 64 characters)")
    try:
        date_updated = parse_timestamp(record.get("dateUpdated"))
        date_added = parse_timestamp(record.get("dateAdded"))
    except (ValueError, TypeError, OverflowError, OSError) as error:
        raise ValueError(f"unparsable date ({error})") from None
    if date_updated is None:
        raise ValueError("no dateUpdated")
    # The hash covers the whole record, so a change to any field (mapped or not) is an update;
    # searchAfter is a paging cursor derived from dateUpdated and id, not content.
    return {
        "id": contact_id,
        **{column: text_value(record.get(field)) for field, column in TEXT_FIELDS.items()},
        **{column: _json_or_none(record.get(field)) for field, column in JSON_FIELDS.items()},
        "dnd": _flag(record.get("dnd")),
        "valid_email": _flag(record.get("validEmail")),
        "custom_fields": json.dumps(record.get("customFields") or record.get("customField") or []),
        "date_added": date_added,
        "date_updated": date_updated,
        "raw": json.dumps(record, default=str),
        "content_hash": content_hash({k: v for k, v in record.items() if k != "searchAfter"}),
    }


def search_shaped(by_id: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """A `GET /contacts/{id}` answer in the shape the warehouse keeps (search's, which the hourly
    and nightly syncs write): its fields renamed, and the fields it does not carry taken from the
    stored version (`raw`). So an unchanged contact hashes as the syncs hash it (and is
    `unchanged`, not rewritten back and forth), and a field only search sends is not blanked
    until the next hourly sync reads it; a field it carries but left out was cleared (GoHighLevel
    leaves absent values out)."""
    record = {k: v for k, v in (stored or {}).items() if k not in BY_ID_AS_SEARCH.values() and k != "searchAfter"}
    record.update({BY_ID_AS_SEARCH[k]: v for k, v in by_id.items() if k in BY_ID_AS_SEARCH})
    return record


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


class DailyBudgetSpent(ProviderError):
    """The location's day budget is used up (or down to the reserve): stop, go on after it resets."""

    retry_helps = False  # not before GoHighLevel's day ends


class DailyBudget:
    """What GoHighLevel's X-RateLimit-Daily-Remaining last said, and the reserve we leave."""

    def __init__(self, reserve: int):
        self.reserve = reserve
        self.remaining: int | None = None

    def read(self, response: httpx.Response) -> None:
        value = response.headers.get("X-RateLimit-Daily-Remaining", "")
        if value.strip().isdigit():
            self.remaining = int(value)
        if response.status_code == 429 and self.remaining == 0:
            raise DailyBudgetSpent(f"gohighlevel {response.request.method} {response.request.url.path}: "
                                   "the location's daily request limit is used up")

    def check(self) -> None:
        """Raise before a request that would eat into the reserve."""
        if self.remaining is not None and self.remaining <= self.reserve:
            raise DailyBudgetSpent(f"gohighlevel: the location's daily request budget is down to {self.remaining} "
                                   f"(reserve {self.reserve})")


class GoHighLevelClient:
    def __init__(self, http: ProviderClient, location_id: str, page_size: int, budget: DailyBudget | None = None):
        self.http = http
        self.location_id = location_id
        self.page_size = page_size
        self.budget = budget or DailyBudget(0)

    def stats(self) -> dict[str, Any]:
        """Run metadata: the requests made and the day's budget left after them."""
        return {**self.http.stats.as_metadata(), "daily_limit_remaining": self.budget.remaining}

    def search_contacts(self, updated_from: datetime | None = None, updated_before: datetime | None = None, *,
                        trust_total: bool = False) -> Iterator[list[dict]]:
        """Yield pages of contacts whose dateUpdated is in [updated_from, updated_before), oldest first.

        Paging ends at a short page. With `trust_total` it also ends once the distinct contacts read
        reach the response's `total`, sparing the empty page after an exactly full one; a total
        that shifts during paging (a deletion, say) could end it early, so only the hourly sync,
        whose misses the nightly full pass catches, trusts it."""
        body: dict[str, Any] = {
            "locationId": self.location_id,
            "pageLimit": self.page_size,
            "sort": [{"field": "dateUpdated", "direction": "asc"}],
        }
        bounds = {}
        if updated_from is not None:
            bounds["gte"] = iso_z(updated_from)
        if updated_before is not None:
            bounds["lt"] = iso_z(updated_before)
        if bounds:
            body["filters"] = [{"field": "dateUpdated", "operator": "range", "value": bounds}]
        seen: set = set()
        while True:
            self.budget.check()
            page = self.http.request_json("POST", "/contacts/search", json=body)
            contacts = page.get("contacts") if isinstance(page, dict) else None
            if not isinstance(contacts, list):
                got = sorted(page) if isinstance(page, dict) else type(page).__name__
                raise ProviderError(f"gohighlevel POST /contacts/search: response has no 'contacts' list (got {got})")
            if contacts:
                yield contacts
            if len(contacts) < self.page_size:
                return
            if trust_total:
                seen.update(c.get("id") for c in contacts if isinstance(c, dict))
                if isinstance(page.get("total"), int) and len(seen) >= page["total"]:
                    return
            body["searchAfter"] = self._search_after(contacts[-1])

    def contact(self, contact_id: str) -> dict | None:
        """One contact as `GET /contacts/{id}` answers it (its own shape: see `search_shaped`), read
        straight from the contact store, so a change shows at once (search's index lags by a few
        seconds); None when GoHighLevel has no such contact (it answers 400 "not found"; 404 too)."""
        self.budget.check()
        try:
            answer = self.http.request_json("GET", f"/contacts/{quote(contact_id, safe='')}")
        except RequestRejected as error:
            if error.status == 404 or (error.status == 400 and "not found" in error.detail.lower()):
                return None
            raise
        contact = answer.get("contact") if isinstance(answer, dict) else None
        if not isinstance(contact, dict):
            got = sorted(answer) if isinstance(answer, dict) else type(answer).__name__
            raise ProviderError(f"gohighlevel GET /contacts/{{id}}: response has no 'contact' object (got {got})")
        return contact

    @staticmethod
    def _search_after(contact: dict) -> list:
        if isinstance(contact.get("searchAfter"), list):
            return contact["searchAfter"]
        updated = parse_timestamp(contact.get("dateUpdated"))
        if updated is None or not contact.get("id"):
            raise ValueError("GoHighLevel: the last contact of a full page has no searchAfter, dateUpdated or id to page on")
        return [int(updated.replace(tzinfo=UTC).timestamp() * 1000), contact["id"]]


class GoHighLevelResource(ProviderResource):
    """GoHighLevel API v2 with a Private Integration Token (scope contacts.readonly)."""

    base_url: str
    token: str
    location_id: str
    page_size: int = MAX_PAGE_SIZE
    # Published limit: 100 requests per 10 s per location.
    requests_per_10s: int = 100
    backoff_initial_s: float = 0.5
    # Calls of the location's 200,000 a day left for others (the UI, other apps on the same
    # location): a sync stops before it eats into them.
    daily_reserve: int = 1000

    @contextlib.contextmanager
    def client(self, log: Callable[[str], None] | None = None) -> Iterator[GoHighLevelClient]:
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"GoHighLevel page_size must be 1..{MAX_PAGE_SIZE}, not {self.page_size}")
        budget = DailyBudget(self.daily_reserve)
        http = self.provider_client(
            "gohighlevel",
            self.base_url,
            auth=BearerAuth(self.token),
            limiter=shared_limiter(f"gohighlevel {self.base_url} {self.location_id}", self.requests_per_10s, 10.0),
            secrets=[self.token],
            log=log,
            credential_hint="check GHL_TOKEN (a Private Integration Token with contacts.readonly)",
            headers={"Version": API_VERSION, "Accept": "application/json"},
            on_response=budget.read,
        )
        with http:
            yield GoHighLevelClient(http, self.location_id, self.page_size, budget)
