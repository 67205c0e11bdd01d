"""Employes (Dutch payroll) employees and their employment history, as `provider-apis.md` describes them.

Serves `GET /companies`, `GET /{companyId}/employees` (page/per_page paging with `pages`),
`GET /{companyId}/employees/{id}` (the current employment embedded) and
`GET /{companyId}/employees/{id}/employments` (salary, hours and contract periods), behind a
bearer token and the published limit of 5 requests per second.

Employes publishes no description of these answers. By default they take the shapes the system
this project replaces met (`artyomx33/teddykids-lms`): the employments wrapped, `{data: [...]}`
("not a direct array", a fix plan in its docs; `employes-simple-sync/index.ts` reads
`employmentsData?.data || employmentsData`), and the employee's own record bare
(`employes-simple-sync/index.ts` reads `first_name` and `employment.salary.hour_wage` off the
answer's top level, while `employes-snapshot-collector/index.ts` unwraps `data` when present).
`employee_wrapped` and `employments_wrapped` switch each to the other shape.
"""

from __future__ import annotations

import calendar
import copy
import math
import random
import time
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from emulator.server import Emulator, Options, Request, Response

from providers.employes import LOCAL_COMPANY_ID as COMPANY_ID, LOCAL_TOKEN as TOKEN  # the local resource's credentials
COMPANY_NAME = "Emulated B.V."
RATE_LIMIT = (5, 1.0)
NONE_DATE = "0001-01-01T00:00:00"
MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 25
HOLIDAY_FACTOR = 12.96  # twelve months plus 8% holiday allowance

FIRST = {
    "male": ["Bram", "Daan", "Finn", "Hugo", "Jens", "Lars", "Noah", "Pieter", "Sem", "Wout", "Thijs", "Ruben"],
    "female": ["Anna", "Chloe", "Emma", "Fleur", "Iris", "Julia", "Lotte", "Mila", "Sanne", "Tess", "Vera", "Yara"],
    "other": ["Kim", "Sam", "Robin", "Quinn", "Alex"],
}
SURNAMES = [("", "Jansen"), ("de", "Vries"), ("van", "Dijk"), ("", "Bakker"), ("", "Visser"), ("van der", "Berg"),
            ("", "Smit"), ("de", "Boer"), ("", "Meijer"), ("van", "Leeuwen"), ("", "Mulder"), ("de", "Groot"),
            ("", "Bos"), ("van den", "Broek"), ("", "Hendriks"), ("", "Dekker")]
ADDRESSES = [("Keizersgracht", "1016", "Amsterdam"), ("Oudegracht", "3511", "Utrecht"), ("Coolsingel", "3012", "Rotterdam"),
             ("Grote Markt", "9711", "Groningen"), ("Stratumseind", "5611", "Eindhoven"), ("Lange Voorhout", "2514", "Den Haag"),
             ("Breestraat", "2311", "Leiden"), ("Vismarkt", "6511", "Nijmegen")]
BANKS = ["ABNA", "INGB", "RABO", "TRIO", "SNSB", "KNAB"]
DEPARTMENTS = ["Service Desk", "Projects", "Field Services", "Finance", "Sales", "Management"]
FUNCTIONS = ["Service Desk Engineer", "Project Engineer", "Field Engineer", "Controller", "Account Manager",
             "Team Lead", "Office Manager"]
HOURS = [40.0, 40.0, 36.0, 36.5, 32.0, 32.0, 24.0]


def stamp(day: date | None) -> str:
    """A day as Employes sends it; None is the `0001-01-01` placeholder."""
    return f"{day.isoformat()}T00:00:00" if day else NONE_DATE


def day_of(value: str) -> date | None:
    return None if value == NONE_DATE else date.fromisoformat(value[:10])


def month_wage(yearly: float) -> float:
    return round(yearly / HOLIDAY_FACTOR, 2)


def hour_wage(yearly: float, hours_per_week: float) -> float:
    return round(month_wage(yearly) * 3 / 13 / hours_per_week, 2)


def days_for(hours_per_week: float) -> float:
    return float(min(5, max(1, math.ceil(hours_per_week / 8 - 0.2))))  # 36 hours: 5 days, 32: 4, 24: 3


def plus_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def iban(rng: random.Random) -> str:
    """A Dutch IBAN with valid check digits (mod 97), at a made-up account number."""
    bban = rng.choice(BANKS) + f"{rng.randrange(10**9):010d}"
    digits = "".join(str(int(c, 36)) for c in bban + "NL00")
    return f"NL{98 - int(digits) % 97:02d}{bban}"


def _salary(start: date, yearly: float, hours_per_week: float) -> dict[str, Any]:
    return {"start_date": stamp(start), "end_date": NONE_DATE, "hour_wage": hour_wage(yearly, hours_per_week),
            "month_wage": month_wage(yearly), "yearly_wage": round(yearly, 2), "is_active": True}


def _hours(start: date, hours_per_week: float, days_per_week: float, employee_type: str) -> dict[str, Any]:
    return {"start_date": stamp(start), "end_date": NONE_DATE, "hours_per_week": hours_per_week,
            "days_per_week": days_per_week, "employee_type": employee_type, "is_active": True}


def _close(period: dict[str, Any], end: date) -> None:
    period["end_date"] = stamp(end)
    period["is_active"] = False


class Employes:
    """One company's employees and their employment histories, and the controls tests use to change them.

    A period (employment, salary, hours) is `is_active` while it has no end date; the employee's
    embedded `employment` is always rebuilt from the latest employment and its latest salary and
    hours periods, so it cannot drift from the history.
    """

    def __init__(self, emulator: Emulator, *, seed: int, count: int):
        self.emulator = emulator
        self.random = random.Random(f"employes-{seed}")
        self.token = TOKEN  # tests set another to check it is sent
        self.today = emulator.anchor.date()
        self._anchor = emulator.anchor.replace(tzinfo=None, microsecond=0)
        self._started = time.monotonic()
        self.people: dict[str, dict[str, Any]] = {}
        self.employee_wrapped = False  # GET /employees/{id}: the bare record; True: {data: record}
        self.employments_wrapped = True  # GET .../employments: {data: [...]}; False: the bare array
        self.history: dict[str, list[dict[str, Any]]] = {}
        for number in range(1001, 1001 + count):
            self._seed_one(number)
        emulator.route("employes", "GET", r"/companies", self.companies)
        emulator.route("employes", "GET", r"/(?P<company>[^/]+)/employees", self.list_employees)
        emulator.route("employes", "GET", r"/(?P<company>[^/]+)/employees/(?P<id>[^/]+)", self.get_employee)
        emulator.route("employes", "GET", r"/(?P<company>[^/]+)/employees/(?P<id>[^/]+)/employments", self.get_employments)
        emulator.rate_limit("employes", *RATE_LIMIT, headers=self._limit_headers)

    # -- seeding --------------------------------------------------------------------------
    def _new_id(self) -> str:
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def _person(self, employee_id: str, number: int) -> dict[str, Any]:
        rng = self.random
        gender = rng.choices(["male", "female", "other"], weights=[48, 48, 4])[0]
        first = rng.choice(FIRST[gender])
        prefix, surname = rng.choice(SURNAMES)
        street, postcode, city = rng.choice(ADDRESSES)
        middle = f"{rng.choice('ABCDEHJKLMPRSTW')}." if rng.random() < 0.3 else ""
        born = self.today - timedelta(days=rng.randrange(18 * 365, 66 * 365))
        mail_name = f"{first}.{prefix}{surname}".lower().replace(" ", "")
        return {
            "id": employee_id,
            "employee_number": str(number),
            "first_name": first,
            "surname": surname,
            "surname_prefix": prefix,
            "initials": f"{first[0]}.{middle}",
            "gender": gender,
            "date_of_birth": stamp(born),
            "email": f"{mail_name}.{number}@example.nl",
            "phone_number": f"+316{rng.randrange(10**7, 10**8)}",
            "status": "active",
            "street": street,
            "housenumber": str(rng.randrange(1, 400)) + rng.choice(["", "", "", "A", "-2"]),
            "zipcode": f"{postcode} {rng.choice('ABCDEGHJKLMNPRSTVWXZ')}{rng.choice('ABCDEGHJKLMNPRSTVWXZ')}",
            "city": city,
            "country_code": "NL",
            "iban": iban(rng),
            "yearly_wage": 0.0,
            "department": rng.choice(DEPARTMENTS) if rng.random() >= 0.2 else None,
            "function": rng.choice(FUNCTIONS) if rng.random() >= 0.2 else None,
            "dt_create": "",
            "dt_update": "",
        }

    def _seed_one(self, number: int) -> None:
        rng, today = self.random, self.today
        employee_id = self._new_id()
        person = self._person(employee_id, number)
        roll = rng.random()
        status = "active" if roll < 0.85 else "pending" if roll < 0.90 else "out of service"
        end = None
        if status == "pending":
            start = today + timedelta(days=rng.randint(1, 30))
        else:
            start = today - timedelta(days=rng.randrange(60, 3650))
            if status == "out of service":
                end = today - timedelta(days=rng.randrange(1, min(180, (today - start).days - 30)))
        employments = []
        if status != "pending" and rng.random() < 0.10:
            previous_end = start - timedelta(days=rng.randrange(30, 400))
            months = rng.choice([6, 12])
            previous_start = plus_months(previous_end + timedelta(days=1), -months)
            employments.append(self._seed_employment(previous_start, previous_end, "temporary", months))
        employments.append(self._seed_employment(start, end))
        person["status"] = status
        person["yearly_wage"] = employments[-1]["salary"][-1]["yearly_wage"]
        created = min(employments[0]["start_date"][:10], today.isoformat())
        created = datetime.fromisoformat(created) - timedelta(days=rng.randrange(3, 45), seconds=rng.randrange(8 * 3600, 18 * 3600))
        changes = [p["start_date"] for e in employments for p in [e, *e["salary"], *e["hours"]]]
        changes += [e["end_date"] for e in employments if e["end_date"] != NONE_DATE]
        changes = [datetime.fromisoformat(c) + timedelta(seconds=rng.randrange(8 * 3600, 18 * 3600))
                   for c in changes if c[:10] <= today.isoformat()]
        changed = max([created, *changes])
        person["dt_create"] = created.strftime("%Y-%m-%dT%H:%M:%S")
        person["dt_update"] = min(changed, self._anchor).strftime("%Y-%m-%dT%H:%M:%S")
        self.people[employee_id] = person
        self.history[employee_id] = employments

    def _seed_employment(self, start: date, end: date | None, employee_type: str | None = None,
                         months: int = 12) -> dict[str, Any]:
        """An employment from `start` to `end` (None: open) with 1-3 salary and 1-2 hours periods up to
        its end or the anchor, and its contract (`months` long when temporary)."""
        rng = self.random
        last = max(start, end or self.today)
        span = (last - start).days
        if employee_type is None:
            weights = [50, 35, 15] if span < 330 else [85, 0, 15]
            employee_type = rng.choices(["permanent", "temporary", "on call"], weights=weights)[0]
        hours_changes = self._change_days(start, span, rng.choices([1, 2], weights=[70, 30])[0])
        salary_changes = self._change_days(start, span, rng.choices([1, 2, 3], weights=[45, 35, 20])[0])
        hours, per_week = [], rng.choice(HOURS)
        for day in hours_changes:
            if hours:
                per_week = rng.choice([h for h in HOURS if h != per_week])
                _close(hours[-1], day - timedelta(days=1))
            hours.append(_hours(day, per_week, days_for(per_week), employee_type))
        salary, yearly = [], float(rng.randrange(300, 860) * 100)
        for day in salary_changes:
            if salary:
                yearly = round(yearly * rng.uniform(1.02, 1.07), 2)
                _close(salary[-1], day - timedelta(days=1))
            in_effect = next(h for h in reversed(hours) if h["start_date"] <= stamp(day))
            salary.append(_salary(day, yearly, in_effect["hours_per_week"]))
        unsigned = start > self.today and rng.random() < 0.3
        contract_end = None
        if employee_type == "temporary":
            contract_end = plus_months(start, months) - timedelta(days=1)
            contract_end = min(contract_end, end) if end else contract_end
        signed_on = min(start - timedelta(days=rng.randrange(5, 40)), self.today)
        contract = {"start_date": stamp(start), "end_date": stamp(contract_end or end),
                    "contract_duration": f"{months} months" if employee_type == "temporary" else "indefinite",
                    "is_signed": not unsigned, "sign_date": NONE_DATE if unsigned else stamp(signed_on)}
        employment = {"id": self._new_id(), "start_date": stamp(start), "end_date": NONE_DATE, "is_active": True,
                      "salary": salary, "hours": hours, "contracts": [contract]}
        if end is not None:
            self._end(employment, end)
        return employment

    def _change_days(self, start: date, span: int, periods: int) -> list[date]:
        """`start` and up to `periods - 1` distinct later days, each at least 30 days after it."""
        if span < 60 or periods == 1:
            return [start]
        offsets = sorted(self.random.sample(range(30, span + 1), min(periods - 1, span - 29)))
        return [start, *(start + timedelta(days=o) for o in offsets)]

    # -- controls ---------------------------------------------------------------------------
    def hire(self, *, start: date, hours_per_week: float = 40.0, yearly_wage: float = 48000.0, **fields: Any) -> str:
        """A new employee starting on `start` (pending if after the anchor) with the next
        employee number; `fields` override the generated top-level fields."""
        with self.emulator.lock:
            employee_id = self._new_id()
            number = max((int(p["employee_number"]) for p in self.people.values()), default=1000) + 1
            person = self._person(employee_id, number)
            person["status"] = "pending" if start > self.today else "active"
            person["yearly_wage"] = round(yearly_wage, 2)
            person["dt_update"] = ""
            self.history[employee_id] = [{
                "id": self._new_id(), "start_date": stamp(start), "end_date": NONE_DATE, "is_active": True,
                "salary": [_salary(start, yearly_wage, hours_per_week)],
                "hours": [_hours(start, hours_per_week, days_for(hours_per_week), "permanent")],
                "contracts": [{"start_date": stamp(start), "end_date": NONE_DATE, "contract_duration": "indefinite",
                               "is_signed": True, "sign_date": stamp(min(start, self.today) - timedelta(days=7))}],
            }]
            self.people[employee_id] = person
            self._touch(employee_id)
            person["dt_create"] = person["dt_update"]
            person.update(fields)
            return employee_id

    def leave(self, employee_id: str, end: date) -> None:
        """The employee leaves on `end`: status out of service, the current employment and its open
        periods end then."""
        with self.emulator.lock:
            self._end(self.history[employee_id][-1], end)
            self.people[employee_id]["status"] = "out of service"
            self._touch(employee_id)

    def remove(self, employee_id: str) -> None:
        """The employee disappears from the API entirely."""
        with self.emulator.lock:
            del self.people[employee_id]
            del self.history[employee_id]

    def set_salary(self, employee_id: str, yearly_wage: float, start: date) -> None:
        """A new salary from `start`: the open salary period closes the day before (periods that
        start on or after `start` are superseded); the hour wage uses the hours in effect then."""
        with self.emulator.lock:
            employment = self.history[employee_id][-1]
            periods = self._supersede(employment["salary"], start)
            in_effect = next((h for h in reversed(employment["hours"]) if h["start_date"] <= stamp(start)), employment["hours"][0])
            periods.append(_salary(start, yearly_wage, in_effect["hours_per_week"]))
            self._within(employment, periods[-1])
            self.people[employee_id]["yearly_wage"] = round(yearly_wage, 2)
            self._touch(employee_id)

    def set_hours(self, employee_id: str, hours_per_week: float, start: date, days_per_week: float | None = None) -> None:
        """New hours from `start`: the open hours period closes the day before. Employee type, and
        days per week unless given, carry over; salaries are left as they are."""
        with self.emulator.lock:
            employment = self.history[employee_id][-1]
            current = employment["hours"][-1]
            days = days_per_week if days_per_week is not None else current["days_per_week"]
            periods = self._supersede(employment["hours"], start)
            periods.append(_hours(start, hours_per_week, days, current["employee_type"]))
            self._within(employment, periods[-1])
            self._touch(employee_id)

    def update(self, employee_id: str, **fields: Any) -> None:
        """Set top-level fields as given (`department=None` clears one)."""
        with self.emulator.lock:
            self.people[employee_id].update(fields)
            self._touch(employee_id)

    def employee(self, employee_id: str) -> dict[str, Any]:
        """The employee as served."""
        with self.emulator.lock:
            return self._served(employee_id)

    def employees(self) -> dict[str, dict[str, Any]]:
        """Every employee the API serves now, by id, as served."""
        with self.emulator.lock:
            return {employee_id: self._served(employee_id) for employee_id in self.people}

    def employments(self, employee_id: str) -> list[dict[str, Any]]:
        """The employee's employments as served, oldest first."""
        with self.emulator.lock:
            return copy.deepcopy(self.history[employee_id])

    def _now(self) -> datetime:
        """The emulated clock: the anchor plus the time since the emulator was built."""
        return self._anchor + timedelta(seconds=int(time.monotonic() - self._started))

    def _touch(self, employee_id: str) -> None:
        person = self.people[employee_id]
        previous = datetime.fromisoformat(person["dt_update"]) if person["dt_update"] else datetime.min
        person["dt_update"] = max(self._now(), previous + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")

    @staticmethod
    def _supersede(periods: list[dict[str, Any]], start: date) -> list[dict[str, Any]]:
        """Drop the periods starting on or after `start`; close the one still running then."""
        periods[:] = [p for p in periods if p["start_date"] < stamp(start)]
        for period in periods:
            if period["end_date"] == NONE_DATE or day_of(period["end_date"]) >= start:
                _close(period, start - timedelta(days=1))
        return periods

    @staticmethod
    def _within(employment: dict[str, Any], period: dict[str, Any]) -> None:
        """A period added to an employment that has ended ends with it."""
        if employment["end_date"] != NONE_DATE:
            _close(period, day_of(employment["end_date"]))

    @staticmethod
    def _end(employment: dict[str, Any], end: date) -> None:
        """End an employment on `end`: it and its open periods (and any running past `end`) end then."""
        employment["end_date"] = stamp(end)
        employment["is_active"] = False
        for period in [*employment["salary"], *employment["hours"], *employment["contracts"]]:
            if period["end_date"] == NONE_DATE or day_of(period["end_date"]) > end:
                period["end_date"] = stamp(end)
            if "is_active" in period:
                period["is_active"] = False

    def _served(self, employee_id: str) -> dict[str, Any]:
        """The employee with the latest employment embedded, built from its latest periods."""
        person = copy.deepcopy(self.people[employee_id])
        employment = self.history[employee_id][-1]
        hours, salary = employment["hours"][-1], employment["salary"][-1]
        person["employment"] = {
            "id": employment["id"],
            "start_date": employment["start_date"],
            "end_date": employment["end_date"],
            "contract": {k: hours[k] for k in ("hours_per_week", "days_per_week", "employee_type")},
            "salary": {k: salary[k] for k in ("start_date", "hour_wage", "month_wage", "yearly_wage")},
        }
        return person

    # -- API --------------------------------------------------------------------------------
    @staticmethod
    def _limit_headers(remaining: int) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(RATE_LIMIT[0]), "X-RateLimit-Remaining": str(remaining)}

    def _denied(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response(401, {"message": "Unauthenticated."})
        if request.params.get("company", COMPANY_ID) != COMPANY_ID:
            return Response(404, {"message": "Company not found"})
        return None

    def companies(self, request: Request) -> Response:
        return self._denied(request) or Response(200, {"data": [{"id": COMPANY_ID, "name": COMPANY_NAME}]})

    def list_employees(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        try:
            page = int(request.query.get("page") or 1)
            per_page = int(request.query.get("per_page") or DEFAULT_PER_PAGE)
        except ValueError:
            return Response(422, {"message": "page and per_page must be whole numbers"})
        if per_page > MAX_PER_PAGE:
            return Response(422, {"message": f"per_page may not be greater than {MAX_PER_PAGE}"})
        if per_page < 1 or page < 1:
            return Response(422, {"message": "page and per_page must be at least 1"})
        ids = sorted(self.people, key=lambda i: int(self.people[i]["employee_number"]))
        chunk = ids[(page - 1) * per_page: page * per_page]
        return Response(200, {"data": [self._served(i) for i in chunk], "pages": max(1, -(-len(ids) // per_page)),
                              "total": len(ids), "page": page, "per_page": per_page})

    def get_employee(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        if request.params["id"] not in self.people:
            return Response(404, {"message": "Employee not found"})
        record = self._served(request.params["id"])
        return Response(200, {"data": record} if self.employee_wrapped else record)

    def get_employments(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        if request.params["id"] not in self.people:
            return Response(404, {"message": "Employee not found"})
        employments = copy.deepcopy(self.history[request.params["id"]])
        return Response(200, {"data": employments} if self.employments_wrapped else employments)


def serve(emulator: Emulator, options: Options) -> Employes:
    """This provider's routes and state on `emulator` (emulator/server.py, from the registry)."""
    return Employes(emulator, seed=options.seed, count=options.employees)
