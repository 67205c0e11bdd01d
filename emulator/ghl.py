"""GoHighLevel API v2 contacts, as GoHighLevel's published description says.

Each contact is stored in the shape `POST /contacts/search` answers: the search `Contact` of
`GoHighLevel/highlevel-api-docs`, `apps/contacts.json` (version of 2025-08-26, response schema
`SearchContactSuccessResponseDto`), with absent values left out rather than sent as null (the
description types them as plain strings). `GET /contacts/{id}` answers its own, different
shape (`GetContectByIdSchema`: `name`, `address1`, `timezone`, `website`, ...), derived from the
stored record. Fields a test adds that neither schema names are served by search as stored.
A location's day budget (200,000 requests) is counted and served as
`X-RateLimit-Daily-Remaining`; once spent, every call answers 429.

Serves `POST /contacts/search` (range/eq/exists filters, dateUpdated sort, `searchAfter` and
page paging with the 10,000-record page ceiling, `pageLimit` <= 500) and `GET /contacts/{id}`,
behind a Private Integration Token, the `Version` header and the 100-per-10-s limit with the
`X-RateLimit-*` headers. Searches are served from a sorted index of (dateUpdated, id), so a
page costs a bisect, not a sort of every contact, and each contact's JSON is encoded once and
kept until the contact changes, so a page costs a join, not 500 encodings: at a million
contacts the emulator must stay much faster than the client it is measured against.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import string
from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.server import Emulator, Options, Request, Response

from providers.ghl import LOCAL_LOCATION_ID as LOCATION_ID, LOCAL_TOKEN as TOKEN  # the local resource's credentials
API_VERSION = "2021-07-28"
RATE_LIMIT = (100, 10.0)
DAILY_LIMIT = 200_000
PAGE_CEILING = 10_000

FIRST = ["Anna", "Bram", "Chloe", "Daan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jens", "Kim", "Lars",
         "Mila", "Noah", "Olivia", "Pieter", "Quinn", "Ruby", "Sam", "Tess", "Umar", "Vera", "Wout", "Yara", "Zoë"]
LAST = ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "de Boer", "Bos", "Vos",
        "Peters", "Hendriks", "Dekker", "O'Brien", "García", "Nowak", "Müller", "Nguyen", "Okafor", "Larsen"]
COMPANIES = ["Acme Facilities", "Noordzee Logistics", "Brightline Dental", "Harbor IT", "Kestrel Legal",
             "Polder Bakeries", "Summit Physio", None]
TAGS = ["lead", "customer", "newsletter", "vip", "partner", "churn-risk", "webinar-2026"]
SOURCES = ["website form", "referral", "facebook ad", "import", "phone call"]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_iso(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _error(status: int, message: Any, error: str = "") -> Response:
    body = {"statusCode": status, "message": message}
    if error:
        body["error"] = error
    return Response(status, body)


class GoHighLevel:
    """Contacts of one location, and the controls tests use to change them behind our back.
    Change contacts only through the controls: they keep the index and the encoded JSON current."""

    def __init__(self, emulator: Emulator, *, seed: int, count: int):
        self.emulator = emulator
        self.random = random.Random(f"ghl-{seed}")
        self.token = TOKEN  # tests set a distinctive one to look for leaks
        self.contacts: dict[str, dict[str, Any]] = {}
        # (dateUpdated ms, id) for every stored record, sorted: the search index.
        self.index: list[tuple[int, str]] = []
        # Stored key -> the contact as served in a search (with searchAfter), JSON-encoded.
        self.wire: dict[str, bytes] = {}
        self.daily_used = 0
        self.daily_limit = DAILY_LIMIT  # tests lower it to reach the end of the day's budget
        self._raw_ids = itertools.count(1)
        anchor = emulator.anchor
        for _ in range(count):
            added = anchor - timedelta(days=self.random.uniform(30, 730))
            updated = added + (anchor - added) * self.random.random()
            contact = self._generate(at=updated, dateAdded=iso(added))
            self.contacts[contact["id"]] = contact
        # One sort, not an insort per contact (quadratic at a million contacts).
        self.index = sorted(self._key(c) for c in self.contacts.values())
        emulator.route("gohighlevel", "POST", r"/contacts/search", self.search)
        emulator.route("gohighlevel", "GET", r"/contacts/(?P<id>[^/]+)", self.get)
        emulator.rate_limit("gohighlevel", *RATE_LIMIT, headers=self._limit_headers)

    # -- controls ---------------------------------------------------------------------------
    def new_id(self) -> str:
        return "".join(self.random.choices(string.ascii_letters + string.digits, k=20))

    def add(self, *, at: datetime | None = None, **fields: Any) -> str:
        """Create a contact updated at `at` (default now); fields override the generated ones."""
        at = at or datetime.now(UTC)
        contact = self._generate(at=at, **fields)
        self._store(contact, at)
        return contact["id"]

    def _generate(self, *, at: datetime, **fields: Any) -> dict[str, Any]:
        """A contact in the search answer's shape; fields override the generated ones, and a
        field given as None is left out (as the service leaves out what a contact lacks)."""
        first, last = self.random.choice(FIRST), self.random.choice(LAST)
        contact_id = fields.pop("id", None) or self.new_id()
        company = self.random.choice(COMPANIES)
        dnd = self.random.random() < 0.05
        contact = {
            "id": contact_id,
            "locationId": LOCATION_ID,
            "firstName": first,
            "lastName": last,
            "firstNameLowerCase": first.lower(),
            "lastNameLowerCase": last.lower(),
            "email": f"{first}.{last}.{contact_id[:5]}@example.com".lower().replace(" ", "").replace("'", ""),
            "phone": f"+316{self.random.randrange(10**7, 10**8)}",
            "phoneLabel": "Mobile",
            "companyName": company,
            "businessName": company,
            "dnd": dnd,
            "dndSettings": {"Email": {"status": "active" if dnd else "inactive", "message": "", "code": ""}},
            "type": self.random.choice(["lead", "customer"]),
            "source": self.random.choice(SOURCES),
            "address": f"Keizersgracht {self.random.randrange(1, 700)}",
            "city": "Amsterdam",
            "country": "NL",
            "postalCode": f"10{self.random.randrange(10, 99)} AB",
            "tags": sorted(self.random.sample(TAGS, self.random.randrange(0, 3))),
            "dateAdded": iso(at),
            "customFields": [{"id": "cfSegment", "value": self.random.choice(["smb", "mid", "enterprise"])}],
            "additionalEmails": [],
            "additionalPhones": [],
            "followers": [],
            "opportunities": [],
            "validEmail": True,
        }
        contact.update(fields)
        contact["dateUpdated"] = iso(at)
        return {k: v for k, v in contact.items() if v is not None}

    def update(self, contact_id: str, *, at: datetime | None = None, **fields: Any) -> None:
        """Change fields of a contact; its dateUpdated moves to `at` (default now)."""
        contact = self.contacts[contact_id]
        self._unindex(contact)
        contact.update(fields)
        for name in [k for k, v in fields.items() if v is None]:
            del contact[name]  # absent, as the search answer leaves out what a contact lacks
        self._store(contact, at or datetime.now(UTC))

    def delete(self, contact_id: str) -> None:
        self._unindex(self.contacts.pop(contact_id))
        self.wire.pop(contact_id, None)

    def restore(self, contact: dict[str, Any], *, at: datetime | None = None) -> None:
        """Bring back a deleted contact (as when a merge is undone)."""
        self._store(dict(contact), at or datetime.now(UTC))

    def put_raw(self, record: dict[str, Any], *, at: datetime) -> str:
        """Store a record exactly as given (say, with no id or a broken date) at position `at`."""
        key = record.get("id") or f"~raw{next(self._raw_ids)}"
        self.contacts[key] = record
        self.wire.pop(key, None)
        bisect.insort(self.index, (epoch_ms(at), key))
        record["_key"] = (epoch_ms(at), key)
        return key

    def truth(self) -> dict[str, dict[str, Any]]:
        """The well-formed contacts the provider holds now, by id."""
        return {k: v for k, v in self.contacts.items() if "_key" not in v}

    def ids_updated_between(self, start: datetime, end: datetime) -> set[str]:
        lo = bisect.bisect_left(self.index, (epoch_ms(start), ""))
        hi = bisect.bisect_left(self.index, (epoch_ms(end), ""))
        return {key for _, key in self.index[lo:hi]}

    def _store(self, contact: dict[str, Any], at: datetime) -> None:
        contact["dateUpdated"] = iso(at)
        self.contacts[contact["id"]] = contact
        self.wire.pop(contact["id"], None)
        bisect.insort(self.index, self._key(contact))

    def _unindex(self, contact: dict[str, Any]) -> None:
        key = self._key(contact)
        position = bisect.bisect_left(self.index, key)
        if position < len(self.index) and self.index[position] == key:
            del self.index[position]

    @staticmethod
    def _key(contact: dict[str, Any]) -> tuple[int, str]:
        return contact.get("_key") or (epoch_ms(parse_iso(contact["dateUpdated"])), contact["id"])

    # -- API --------------------------------------------------------------------------------
    def _limit_headers(self, remaining: int) -> dict[str, str]:
        return {
            "X-RateLimit-Max": str(RATE_LIMIT[0]),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Interval-Milliseconds": str(int(RATE_LIMIT[1] * 1000)),
            "X-RateLimit-Limit-Daily": str(self.daily_limit),
            "X-RateLimit-Daily-Remaining": str(max(self.daily_limit - self.daily_used, 0)),
        }

    def _denied(self, request: Request) -> Response | None:
        # The day's budget is counted for every call that reaches the API (the burst limit's
        # 429s are not counted; the provider's exact rule is unpublished).
        if self.emulator.rate_limits:
            if self.daily_used >= self.daily_limit:
                return Response(429, {"statusCode": 429, "message": "Daily rate limit exceeded"}, {"Retry-After": "3600"})
            self.daily_used += 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "Invalid token: access token is invalid", "Unauthorized")
        if not request.headers.get("version"):
            return _error(400, "version header was not found")
        return None

    def get(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        contact = self.contacts.get(request.params["id"])
        if contact is None or "_key" in contact:
            return _error(400, f"Contact with id {request.params['id']} not found")
        return Response(200, {"contact": by_id_shape(contact)})

    def search(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        try:
            body = request.json() or {}
        except ValueError:
            return _error(400, "body is not JSON")
        if body.get("locationId") != LOCATION_ID:
            return _error(403, "The token does not have access to this location.", "Forbidden")
        limit = body.get("pageLimit", 20)
        problems = []
        if not isinstance(limit, int) or not 1 <= limit <= 500:
            problems.append("pageLimit must be an integer between 1 and 500")
        if "page" in body and "searchAfter" in body:
            problems.append("page and searchAfter cannot be used together")
        sort = body.get("sort") or [{"field": "dateUpdated", "direction": "asc"}]
        if len(sort) != 1 or sort[0].get("field") != "dateUpdated" or sort[0].get("direction") not in ("asc", "desc"):
            problems.append("the emulator sorts by dateUpdated only")
        page = body.get("page", 1)
        if not problems and (page - 1) * limit + limit > PAGE_CEILING:
            problems.append(f"page-number paging is limited to {PAGE_CEILING} records; use searchAfter")
        if problems:
            return _error(422, problems, "Unprocessable Entity")
        try:
            lo, hi, rest = self._bounds(body.get("filters") or [])
        except (KeyError, TypeError, ValueError) as error:
            return _error(422, [f"invalid filters: {error}"], "Unprocessable Entity")
        descending = sort[0]["direction"] == "desc"
        after = tuple(body["searchAfter"]) if "searchAfter" in body else None
        if after is not None:
            after = (int(after[0]), str(after[1]))
        skip = (page - 1) * limit if after is None else 0
        if descending:
            end = min(hi, bisect.bisect_left(self.index, after, lo, hi)) if after else hi
            positions = range(end - 1, lo - 1, -1)
        else:
            start = max(lo, bisect.bisect_right(self.index, after, lo, hi)) if after else lo
            positions = range(start, hi)
        matched = (self.index[i][1] for i in positions)
        if rest:
            matched = (k for k in matched if all(_matches(self.contacts[k], f) for f in rest))
        matched = itertools.islice(matched, skip, None)
        chunk = list(itertools.islice(matched, limit))
        total = hi - lo if not rest else sum(all(_matches(self.contacts[k], f) for f in rest) for _, k in self.index[lo:hi])
        contacts = b", ".join(self._wire(k) for k in chunk)
        return Response(200, b'{"contacts": [' + contacts + b'], "total": ' + str(total).encode() + b"}")

    def _bounds(self, filters: list[dict]) -> tuple[int, int, list[dict]]:
        """Narrow the index by the top-level dateUpdated range filters; other filters are returned."""
        lo, hi, rest = 0, len(self.index), []
        for item in filters:
            if item.get("field") == "dateUpdated" and item.get("operator") == "range":
                value = item["value"]
                unknown = set(value) - {"gt", "gte", "lt", "lte"}
                if unknown or not value:
                    raise ValueError(f"range takes gt, gte, lt, lte; got {sorted(value)}")
                for op, bound in value.items():
                    ms = epoch_ms(parse_iso(bound))
                    if op == "gt":
                        lo = max(lo, bisect.bisect_left(self.index, (ms + 1, "")))
                    elif op == "gte":
                        lo = max(lo, bisect.bisect_left(self.index, (ms, "")))
                    elif op == "lt":
                        hi = min(hi, bisect.bisect_left(self.index, (ms, "")))
                    else:
                        hi = min(hi, bisect.bisect_left(self.index, (ms + 1, "")))
            else:
                rest.append(item)
        return lo, max(lo, hi), rest

    def _wire(self, key: str) -> bytes:
        encoded = self.wire.get(key)
        if encoded is None:
            contact = self.contacts[key]
            record = {k: v for k, v in contact.items() if k != "_key"}
            record["searchAfter"] = list(self._key(contact))
            encoded = self.wire[key] = json.dumps(record).encode()
        return encoded


# GetContectByIdSchema's fields that have the same name in the search Contact.
BY_ID_SAME = ("id", "locationId", "firstName", "lastName", "email", "companyName", "phone", "dnd", "dndSettings", "type",
              "source", "assignedTo", "city", "state", "country", "postalCode", "tags", "dateOfBirth", "dateAdded",
              "dateUpdated", "firstNameLowerCase", "lastNameLowerCase", "customFields", "businessId")


def by_id_shape(contact: dict[str, Any]) -> dict[str, Any]:
    """A stored (search-shaped) contact as `GET /contacts/{id}` answers it (GetContectByIdSchema)."""
    record = {k: contact[k] for k in BY_ID_SAME if k in contact}
    name = " ".join(p for p in (contact.get("firstName"), contact.get("lastName")) if p)
    record.update({"name": name, "fullNameLowerCase": name.lower(), "timezone": "Europe/Amsterdam"})
    if "address" in contact:
        record["address1"] = contact["address"]
    if "email" in contact:
        record["emailLowerCase"] = str(contact["email"]).lower()
    return record


def _matches(contact: dict[str, Any], item: dict[str, Any]) -> bool:
    if "group" in item:
        results = [_matches(contact, f) for f in item.get("filters", [])]
        return all(results) if item["group"] == "AND" else any(results)
    value = contact.get(item["field"])
    operator, expected = item["operator"], item.get("value")
    if operator == "eq":
        return value == expected or (isinstance(value, list) and expected in value)
    if operator == "not_eq":
        return not (value == expected or (isinstance(value, list) and expected in value))
    if operator == "contains":
        return expected is not None and str(expected).lower() in str(value or "").lower()
    if operator == "not_contains":
        return expected is None or str(expected).lower() not in str(value or "").lower()
    if operator == "exists":
        return value not in (None, "", [])
    if operator == "not_exists":
        return value in (None, "", [])
    if operator == "range":
        moment = parse_iso(value)
        checks = {"gt": moment.__gt__, "gte": moment.__ge__, "lt": moment.__lt__, "lte": moment.__le__}
        return all(checks[op](parse_iso(bound)) for op, bound in expected.items())
    raise ValueError(f"unknown operator {operator!r}")


def serve(emulator: Emulator, options: Options) -> GoHighLevel:
    """This provider's routes and state on `emulator` (emulator/server.py, from the registry)."""
    return GoHighLevel(emulator, seed=options.seed, count=options.contacts)
