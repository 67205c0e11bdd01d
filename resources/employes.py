"""Employes (Dutch payroll): the client resource and the parsers from its JSON to warehouse rows.

Employes publishes no machine-readable description. The best public record is the code of the
system this project replaces, which ran against the real API (`artyomx33/teddykids-lms`,
`supabase/functions/employes-snapshot-collector/index.ts`, `employes-history-collector/index.ts`):
it lists `GET /{company}/employees?page&per_page` (`{data, pages, total}`) for the ids only, takes
each employee's record from `GET /{company}/employees/{id}` (unwrapping `data` when present), and
reads `GET /{company}/employees/{id}/employments` as `{data: [...]}` or a bare array. We do the same.

The parsers are tolerant: fields may be missing, `0001-01-01T00:00:00` means "no date", and
`department` / `function` may be a string or an object with a `name`. Personal data the features
do not need (IBAN, birth date, address, phone, e-mail, gender, citizen service number) is never
copied out of the API response, not even into the kept record (`kept_record`).
"""

import contextlib
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from resources.employes_tables import employee_fields
from resources.http import BearerAuth, ProviderClient, ProviderError, ProviderResource, shared_limiter
from resources.records import content_hash, text_value

MAX_PER_PAGE = 100
LIST_READS = 3
NO_DATE_PREFIX = "0001-01-01"
CENT = Decimal("0.01")

# The fields a snapshot keeps, and the ones whose changes are detected and historised: the
# table's employee columns, in their order (the content hash lists them in this order).
TRACKED = tuple(column.name for column in employee_fields())
# Digits before the point each amount column holds: a record with more is rejected (and its
# previous row kept), not left to fail the whole snapshot when written.
WHOLE_DIGITS = {c.name: c.type.precision - c.type.scale for c in employee_fields() if isinstance(c.type, sa.Numeric)}


# Fields of an employee record that are never stored, wherever they appear in it (the kept
# record is the record as sent without these). Unknown fields are kept: a new personal field
# Employes adds would be kept too until it is named here.
PERSONAL_FIELDS = frozenset({
    "iban", "bic", "date_of_birth", "birth_date", "birthdate", "gender", "email", "private_email", "phone_number",
    "phone", "mobile", "mobile_number", "street", "housenumber", "housenumber_addition", "house_number", "zipcode",
    "postal_code", "city", "address", "bsn", "citizen_service_number", "social_security_number", "nationality",
    "emergency_contact", "id_document", "passport",
})


def kept_record(record: Any) -> Any:
    """The employee's record as sent, without the personal fields the project never stores."""
    if isinstance(record, dict):
        return {k: kept_record(v) for k, v in record.items() if k not in PERSONAL_FIELDS}
    if isinstance(record, list):
        return [kept_record(v) for v in record]
    return record


def employes_date(value: Any) -> date | None:
    """A date as Employes sends it (`YYYY-MM-DDTHH:MM:SS`); `0001-01-01T00:00:00` is none."""
    if value in (None, "") or str(value).startswith(NO_DATE_PREFIX):
        return None
    return datetime.fromisoformat(str(value)).date()


def amount(value: Any) -> Decimal | None:
    """Money or hours as an exact two-decimal number."""
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a number: {value!r}")
    try:
        return number.quantize(CENT)
    except InvalidOperation:  # more digits than decimal's context holds (28): no column takes it
        raise ValueError(f"too large: {value!r}") from None


def _object(parent: dict, field: str) -> dict:
    """A nested object, or {} when absent; anything else is a reject, not a crash."""
    value = parent.get(field)
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{field} is not an object but {type(value).__name__}")
    return value


def _name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("name")
    return str(value) if value not in (None, "") else None


def snapshot_row(record: dict, snapshot_date: date) -> dict:
    """One employee as a row of that day's snapshot; raises ValueError naming the problem."""
    if not isinstance(record, dict) or not record.get("id") or len(str(record["id"])) > 64:
        raise ValueError("no id (at most 64 characters)")
    employment = _object(record, "employment")
    contract, salary = _object(employment, "contract"), _object(employment, "salary")
    try:
        row = {
            "snapshot_date": snapshot_date,
            "employee_id": str(record["id"]),
            "employee_number": _name(record.get("employee_number")),
            "first_name": text_value(record.get("first_name")),
            "surname_prefix": text_value(record.get("surname_prefix") or None),
            "surname": text_value(record.get("surname")),
            "status": text_value(record.get("status")),
            "department": _name(record.get("department")),
            "role": _name(record.get("function") or record.get("job_title")),
            "employment_start": employes_date(employment.get("start_date")),
            "employment_end": employes_date(employment.get("end_date")),
            "hours_per_week": amount(contract.get("hours_per_week")),
            "days_per_week": amount(contract.get("days_per_week")),
            "employee_type": text_value(contract.get("employee_type")),
            "hour_wage": amount(salary.get("hour_wage")),
            "month_wage": amount(salary.get("month_wage")),
            "yearly_wage": amount(salary.get("yearly_wage") if salary.get("yearly_wage") is not None else record.get("yearly_wage")),
        }
    except (TypeError, ValueError) as error:
        raise ValueError(f"unreadable field ({error})") from None
    for field, digits in WHOLE_DIGITS.items():
        if row[field] is not None and row[field].adjusted() >= digits:
            raise ValueError(f"{field} {row[field]} does not fit the column ({digits} digits before the point)")
    row["content_hash"] = content_hash([row[f] for f in TRACKED])
    return row


def _periods(item: dict, field: str) -> list[dict]:
    value = item.get(field) or []
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise ValueError(f"{field} is not a list of periods")
    return value


def _period(item: dict, employment_id: str, employee_id: str, **fields: Any) -> dict:
    return {
        "employment_id": employment_id,
        "employee_id": employee_id,
        "start_date": employes_date(item.get("start_date")),
        "end_date": employes_date(item.get("end_date")),
        "is_active": bool(item.get("is_active")),
        **fields,
    }


def employment_rows(employee_id: str, items: list[dict]) -> dict[str, list[dict]]:
    """An employee's employments, normalized: one row per employment and per salary, hours and
    contract period. Raises ValueError naming the problem."""
    rows: dict[str, list[dict]] = {"employments": [], "salary": [], "hours": [], "contracts": []}
    for item in items:
        if not isinstance(item, dict) or not item.get("id") or len(str(item["id"])) > 64:
            raise ValueError("an employment without an id (at most 64 characters)")
        employment_id = str(item["id"])
        try:
            rows["employments"].append(_period(item, employment_id, employee_id))
            rows["salary"] += [
                _period(p, employment_id, employee_id, hour_wage=amount(p.get("hour_wage")),
                        month_wage=amount(p.get("month_wage")), yearly_wage=amount(p.get("yearly_wage")))
                for p in _periods(item, "salary")
            ]
            rows["hours"] += [
                _period(p, employment_id, employee_id, hours_per_week=amount(p.get("hours_per_week")),
                        days_per_week=amount(p.get("days_per_week")), employee_type=text_value(p.get("employee_type")))
                for p in _periods(item, "hours")
            ]
            rows["contracts"] += [
                _period(p, employment_id, employee_id, contract_duration=_name(p.get("contract_duration")),
                        is_signed=bool(p.get("is_signed")), sign_date=employes_date(p.get("sign_date")))
                for p in _periods(item, "contracts")
            ]
        except (TypeError, ValueError) as error:
            raise ValueError(f"employment {employment_id}: unreadable period ({error})") from None
    for kind, periods in rows.items():
        if kind != "employments" and any(p["start_date"] is None for p in periods):
            raise ValueError(f"a {kind} period without a start_date")
        # The period tables' amounts are the snapshot's columns (same names, same precision): an
        # amount they cannot hold fails the answer, not the whole history's write.
        for period in periods:
            for field, digits in WHOLE_DIGITS.items():
                if period.get(field) is not None and period[field].adjusted() >= digits:
                    raise ValueError(f"a {kind} period's {field} {period[field]} does not fit the column "
                                     f"({digits} digits before the point)")
    return rows


class EmployesClient:
    def __init__(self, http: ProviderClient, company_id: str, per_page: int):
        self.http = http
        self.company_id = company_id
        self.per_page = per_page

    def stats(self) -> dict[str, Any]:
        return self.http.stats.as_metadata()

    def employees(self) -> Iterator[list[dict]]:
        """Pages of every employee of the company, from one read of the list during which it did
        not change. Page numbers shift when an employee is added or removed between two pages, so
        a later page repeats or skips someone. A read whose answers gave different totals, or
        that saw an id twice, is done again."""
        for _ in range(LIST_READS):
            pages, shapes = self._read_list()
            ids = [str(r["id"]) for page in pages for r in page if isinstance(r, dict) and r.get("id")]
            if len(shapes) == 1 and len(ids) == len(set(ids)):
                yield from pages
                return
        raise ProviderError(f"employes GET /{{company}}/employees: the list changed while it was read, {LIST_READS} times in a row")

    def _read_list(self) -> tuple[list[list[dict]], set[tuple]]:
        """Every page, and the (total, pages) each answer gave."""
        found, shapes, page = [], set(), 1
        while True:
            body = self.http.request_json("GET", f"/{self.company_id}/employees", params={"page": page, "per_page": self.per_page})
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise ProviderError(f"employes GET /{{company}}/employees page {page}: no 'data' list in the answer")
            pages = body.get("pages")
            shapes.add((body.get("total"), pages))
            if data:
                found.append(data)
            if not data or (isinstance(pages, int) and page >= pages) or (pages is None and len(data) < self.per_page):
                return found, shapes
            page += 1

    def employee(self, employee_id: str) -> dict | None:
        """The employee's own record (`{data: {...}}` or the bare object), or None when Employes no
        longer has them (404: removed since the list was read)."""
        body = self.http.request_json_or_none("GET", f"/{self.company_id}/employees/{employee_id}")
        if body is None:
            return None
        record = body.get("data") if isinstance(body, dict) and isinstance(body.get("data"), dict) else body
        if not isinstance(record, dict):
            raise ProviderError(f"employes GET employee {employee_id}: the answer is not an employee record")
        return record

    def employments(self, employee_id: str) -> list[dict]:
        """The employee's employments, sent as `{data: [...]}` or as a bare array."""
        body = self.http.request_json("GET", f"/{self.company_id}/employees/{employee_id}/employments")
        data = body.get("data") if isinstance(body, dict) else body
        if not isinstance(data, list):
            got = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise ProviderError(f"employes GET employments of {employee_id}: neither a 'data' list nor a list (got {got})")
        return data


class EmployesResource(ProviderResource):
    """Employes API v4 with the company's API token (a JWT, valid for a year)."""

    base_url: str
    token: str
    company_id: str
    per_page: int = MAX_PER_PAGE
    # Published limit: 5 requests per second.
    requests_per_second: int = 5

    @contextlib.contextmanager
    def client(self, log: Callable[[str], None] | None = None) -> Iterator[EmployesClient]:
        http = self.provider_client(
            "employes",
            self.base_url,
            auth=BearerAuth(self.token),
            limiter=shared_limiter(f"employes {self.base_url} {self.company_id}", self.requests_per_second, 1.0),
            secrets=[self.token],
            log=log,
            credential_hint="check EMPLOYES_TOKEN (tokens are valid for one year) and EMPLOYES_COMPANY_ID",
            headers={"Accept": "application/json"},
        )
        with http:
            yield EmployesClient(http, self.company_id, min(self.per_page, MAX_PER_PAGE))

