"""The doctor's GoHighLevel checks (see resources/doctor.py): the token and location, and the
contacts search the hourly sync pages through."""

from __future__ import annotations

from datetime import datetime, timedelta

from resources.doctor import FAIL, PASS, WARN, Checks, Finding, Limits, first_answer, run_provider

GHL_LIMITS = Limits(("X-RateLimit-Remaining", "X-RateLimit-Daily-Remaining"), "X-RateLimit-Daily-Remaining", 200_000)
# SearchContactSuccessResponseDto's Contact (GoHighLevel/highlevel-api-docs, apps/contacts.json, 2025-08-26).
GHL_SEARCH_FIELDS = (
    "id", "phoneLabel", "country", "address", "source", "type", "locationId", "dnd", "state", "businessName",
    "customFields", "tags", "dateAdded", "additionalEmails", "phone", "companyName", "additionalPhones",
    "dateUpdated", "city", "dateOfBirth", "firstName", "lastName", "firstNameLowerCase", "lastNameLowerCase",
    "email", "assignedTo", "followers", "validEmail", "dndSettings", "opportunities", "postalCode", "businessId",
    "searchAfter",
)


def check_gohighlevel(resources: dict, production: bool, now: datetime) -> list[Finding]:
    resource = resources["gohighlevel"]

    def body(checks: Checks, client) -> None:
        since = now - timedelta(days=3650)
        search = lambda after: client.http.request_json("POST", "/contacts/search", json={  # noqa: E731
            "locationId": resource.location_id, "pageLimit": 2,
            "filters": [{"field": "dateUpdated", "operator": "range",
                         "value": {"gte": since.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "lt": now.strftime("%Y-%m-%dT%H:%M:%S.000Z")}}],
            "sort": [{"field": "dateUpdated", "direction": "asc"}], **({"searchAfter": after} if after else {})})
        first = first_answer(checks, lambda: search(None), "location", "search in location GHL_LOCATION_ID",
                             "check GHL_LOCATION_ID and that the token belongs to that sub-account (scope contacts.readonly)",
                             "token accepted for the location (contacts search)")
        contacts = first.get("contacts") if isinstance(first, dict) else None
        if not isinstance(contacts, list):
            raise checks.stop("search_shape", FAIL, f"answer has no 'contacts' list (keys {sorted(first) if isinstance(first, dict) else type(first).__name__})",
                              "the contacts sync cannot read this answer; report it with the provider's API version")
        total = first.get("total")
        checks.add("total", PASS if isinstance(total, int) else WARN,
                   f"total = {total}" if isinstance(total, int) else "no 'total' in the answer",
                   "" if isinstance(total, int) else "the hourly sync then reads until an empty page (one request more)")
        _check_paging(checks, contacts, search)
        _check_fields(checks, contacts)

    return run_provider("gohighlevel", "GHL_BASE_URL", resource.base_url, production, resource.client, body, GHL_LIMITS)


def _check_paging(checks: Checks, first: list[dict], search) -> None:
    """Two pages of two: ascending dateUpdated, and the second starting after the first."""
    if len(first) < 2:
        checks.add("search_paging", WARN, f"only {len(first)} contact(s); paging not tried", "run the doctor again once the location has contacts")
        return
    after = first[-1].get("searchAfter")
    built = after is None
    if built:  # the sync builds [dateUpdated ms, id] itself when the contact carries none
        stamp = datetime.fromisoformat(str(first[-1]["dateUpdated"]).replace("Z", "+00:00"))
        after = [int(stamp.timestamp() * 1000), first[-1]["id"]]
    second = (search(after) or {}).get("contacts") or []
    page = first + second
    ids = [c.get("id") for c in page]
    stamps = [str(c.get("dateUpdated")) for c in page]
    if len(set(ids)) < len(ids):
        checks.add("search_paging", FAIL, "the second page repeats contacts of the first",
                   "searchAfter paging does not work for this account: report it; the sync would loop")
    elif stamps != sorted(stamps):
        checks.add("search_paging", FAIL, "dateUpdated is not ascending across two pages",
                   "the incremental sync relies on the ascending sort: report it")
    else:
        checks.add("search_paging", PASS, "two pages, no overlap, ascending dateUpdated"
                   + (" (searchAfter built by the client: contacts carry none)" if built else ", searchAfter on each contact"))


def _check_fields(checks: Checks, contacts: list[dict]) -> None:
    """Which of the documented search fields arrived, and which undocumented ones."""
    arrived = {name for contact in contacts for name in contact}
    documented = [name for name in GHL_SEARCH_FIELDS if name in arrived]
    extra = sorted(arrived - set(GHL_SEARCH_FIELDS))
    checks.add("search_fields", PASS if contacts else WARN,
               f"{len(documented)} of {len(GHL_SEARCH_FIELDS)} documented fields arrived"
               + (f"; undocumented: {', '.join(extra)}" if extra else "") if contacts else "no contacts to look at",
               "" if contacts else "run the doctor again once the location has contacts")
