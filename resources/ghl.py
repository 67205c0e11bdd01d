"""GoHighLevel (LeadConnector API v2) contacts: the client resource and the record parser.

Lists contacts with `POST /contacts/search` (the documented way; `GET /contacts/` is
deprecated): a `dateUpdated` range filter, ascending `dateUpdated` sort and `searchAfter`
paging, which unlike page numbers has no 10,000-record ceiling.

Unverified in public material, so handled defensively: the `searchAfter` value on each
returned contact (seen in community clients, not in the official spec; when absent we build
`[dateUpdated epoch ms, id]` ourselves) and the range operators besides `gt` (we send
`gte`/`lt` for a half-open window).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from resources.http import BearerAuth, ProviderClient, ProviderError, shared_limiter
from resources.warehouse import text_value

API_VERSION = "2021-07-28"
MAX_PAGE_SIZE = 500

# API field -> warehouse column, for the plain text fields.
TEXT_FIELDS = {
    "locationId": "location_id",
    "firstName": "first_name",
    "lastName": "last_name",
    "name": "name",
    "email": "email",
    "phone": "phone",
    "companyName": "company_name",
    "timezone": "timezone",
    "type": "type",
    "source": "source",
    "assignedTo": "assigned_to",
    "address1": "address1",
    "city": "city",
    "state": "state",
    "country": "country",
    "postalCode": "postal_code",
    "website": "website",
    "dateOfBirth": "date_of_birth",
}
CONTACT_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String,
    **{column: pl.String for column in TEXT_FIELDS.values()},
    "dnd": pl.Boolean,
    "tags": pl.String,
    "custom_fields": pl.String,
    "date_added": pl.Datetime("us"),
    "date_updated": pl.Datetime("us"),
    "content_hash": pl.String,
}


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
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    for position, record in enumerate(records):
        contact_id = record.get("id") if isinstance(record, dict) else None
        label = contact_id if isinstance(contact_id, str) and contact_id else f"{where}item {position}".strip()
        try:
            rows.append(_contact_row(record))
        except (ValueError, TypeError) as error:
            rejects.append({"record_id": label, "reason": str(error), "payload": record})
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
    canonical = json.dumps({k: v for k, v in record.items() if k != "searchAfter"}, sort_keys=True, default=str)
    return {
        "id": contact_id,
        **{column: text_value(record.get(field)) for field, column in TEXT_FIELDS.items()},
        "dnd": bool(record.get("dnd")) if record.get("dnd") is not None else None,
        "tags": json.dumps(record.get("tags") or []),
        "custom_fields": json.dumps(record.get("customFields") or record.get("customField") or []),
        "date_added": date_added,
        "date_updated": date_updated,
        "content_hash": hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest(),
    }


class GoHighLevelClient:
    def __init__(self, http: ProviderClient, location_id: str, page_size: int):
        self.http = http
        self.location_id = location_id
        self.page_size = page_size

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

    @staticmethod
    def _search_after(contact: dict) -> list:
        if isinstance(contact.get("searchAfter"), list):
            return contact["searchAfter"]
        updated = parse_timestamp(contact.get("dateUpdated"))
        if updated is None or not contact.get("id"):
            raise ValueError("GoHighLevel: the last contact of a full page has no searchAfter, dateUpdated or id to page on")
        return [int(updated.replace(tzinfo=UTC).timestamp() * 1000), contact["id"]]


class GoHighLevelResource(dg.ConfigurableResource):
    """GoHighLevel API v2 with a Private Integration Token (scope contacts.readonly)."""

    base_url: str
    token: str
    location_id: str
    page_size: int = MAX_PAGE_SIZE
    # Published limit: 100 requests per 10 s per location.
    requests_per_10s: int = 100
    timeout_s: float = 30.0
    max_attempts: int = 6
    backoff_initial_s: float = 0.5

    @contextlib.contextmanager
    def client(self, log: Callable[[str], None] | None = None) -> Iterator[GoHighLevelClient]:
        if not 1 <= self.page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"GoHighLevel page_size must be 1..{MAX_PAGE_SIZE}, not {self.page_size}")
        http = ProviderClient(
            "gohighlevel",
            self.base_url,
            auth=BearerAuth(self.token),
            limiter=shared_limiter(f"gohighlevel {self.base_url} {self.location_id}", self.requests_per_10s, 10.0),
            secrets=[self.token],
            credential_hint="check GHL_TOKEN (a Private Integration Token with contacts.readonly)",
            headers={"Version": API_VERSION, "Accept": "application/json"},
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            log=log,
        )
        with http:
            yield GoHighLevelClient(http, self.location_id, self.page_size)
