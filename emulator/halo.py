"""HaloPSA agents, timesheets and time entries, as `provider-apis.md` describes them.

Serves the client-credentials token endpoint (`POST /auth/token`, form body, optional `tenant`),
`GET /api/authinfo`, and behind a bearer token `GET /api/Agent`, `GET /api/Timesheet` (one
timesheet per agent-day, with its approval and that day's entries) and `GET /api/TimesheetEvent`
(time entries by start date), all answering bare JSON arrays. The seeded data is a little over
a year of weekday entries for every enabled agent, ending the day before the anchor; hours go
out as Halo sends them, a float (10 minutes is 0.1666666667). Entries are indexed by day and
agent, so a date-range query touches only the days it asks for.

Halo's hosted limit is applied to the tenant as Halo states it (`KelvinTegelaar/PowerShellWarrantyReports`
issue 51, `homotechsual/HaloAPI` issue 31): at most `RATE_LIMIT` (300) requests, token requests
included, in any rolling `RATE_WINDOW_S` (300 s, on `time.monotonic`); more are answered 429 with
Halo's own text, "Rate Limit Reached - 300 Requests per rolling 5 minute window", and no
`Retry-After` (refused requests are not counted). Tests change it with
`emulator.halo.set_rate_limit(calls, window_s)` (`set_rate_limit(None)` switches it off);
`Emulator(rate_limits=False)` switches it off with the other providers' limits. Faults can still
inject 429s of any shape.

By default it behaves as public evidence says real tenants do (`Midtown-Technology-Group/halocli`,
`src/halocli/resources.py`, the `/TimesheetEvent` resource, probed live on 2026-10-01):
- every TimesheetEvent is served with `id: 0` (the real event id is never surfaced);
- `count`/`page` are ignored: each call answers everything in range, as a bare array;
- a date-only `end_date` is read as midnight at the start of that day, so that whole day is
  silently dropped (ISO date-times filter as asked);
- about one entry in twenty is time without a ticket; ticket time carries a unique
  (`ticket_id`, `action_number`). As a .NET API does, absent numbers come out as `0`: time
  without a ticket carries `ticket_id: 0, action_number: 0`, breaks and leave `client_id: 0` too;
- breaks and leave are TimesheetEvents as real tenants record them (`Panic3n/time-calculator-app`):
  on about one agent-day in three a lunch break (`event_type` 1, `break_type` 2, `break_type_name`
  "Lunch break", charge type "Break"), and about one agent-day in forty a day of leave instead of
  work (`holiday_id` > 0, charge type "Holiday"); `GET /api/Holiday` lists the absences (agent
  absences with `agent_id` > 0, public holidays with `agent_id` 0);
- `GET /api/Timesheet` ignores the agent filter (the swagger documents no query parameters for
  it) and answers every agent's timesheets in range.
Whether a real tenant's zone-less times are UTC or its local time is documented nowhere: the
tenant keeps its entries as wall-clock times in `tenant_zone` (default UTC) and serves them as
UTC instants (`serves_utc`, the default) or as its local wall clock; range bounds are read in
the clock it serves (`set_clock`). In the default (UTC) the seeded data is the same either way.
`HaloPSA(ideal=True)` (`Emulator(halo_ideal=True)`, `python -m emulator --halo-ideal`) serves the
ideal API instead: real ids (and null where there is none), date-only ranges meaning whole days,
agent filters honoured. Either way `entries()` is the truth, by the emulator's own entry ids, and
`kind(entry_id)` says whether an entry is work, a break or leave.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
import random
import secrets
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from emulator.server import Emulator, Options, Request, Response

from providers.halo import LOCAL_CLIENT_ID as CLIENT_ID, LOCAL_CLIENT_SECRET as CLIENT_SECRET  # the local resource's credentials
TOKEN_TTL_S = 3600
# approvalstatus: 1 approved, 0 not approved (pending), 2 rejected. Halo's swagger gives an int
# 0/1/2 without saying which is which: this meaning is unverified.
APPROVED = 1
PENDING = 0
HISTORY_DAYS = 400
APPROVED_BEFORE_DAYS = 7  # days older than this before the anchor are seeded as approved
DAY_START_MIN = 8 * 60 + 30  # seeded entries run back to back from 08:30
ADDED_START_MIN = 17 * 60  # entries added by tests start at 17:00
MAX_RANGE_DAYS = 366
NO_TICKET_SHARE = 0.05
TARGET_HOURS = 8.0
RATE_LIMIT, RATE_WINDOW_S = 300, 300.0  # Halo's hosted limit: 300 requests per rolling 5 minutes
BREAK_HOURS = 0.5
BREAK_EVERY = 3  # one agent-day in BREAK_EVERY logs a lunch break
LEAVE_EVERY = 40  # one agent-day in LEAVE_EVERY is a day of leave
LUNCH_AFTER = 2  # the lunch break follows the day's second entry
PUBLIC_HOLIDAYS = ((1, 1, "New Year's Day"), (12, 25, "Christmas Day"), (12, 26, "Boxing Day"))

FIRST = ["Anna", "Bram", "Chloe", "Daan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jens", "Kim", "Lars",
         "Mila", "Noah", "Olivia", "Pieter", "Quinn", "Ruby", "Sam", "Tess", "Umar", "Vera", "Wout", "Yara", "Zoë"]
LAST = ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "de Boer", "Bos", "Vos",
        "Peters", "Hendriks", "Dekker", "O'Brien", "García", "Nowak", "Müller", "Nguyen", "Okafor", "Larsen"]
TEAMS = [("Service Desk", "Service Desk Engineer"), ("Projects", "Project Engineer"),
         ("Field Services", "Field Engineer"), ("Management", "Team Lead")]
# (client_id, name, charge rate per hour, contract id or None)
CLIENTS = [(1, "Internal", 0.0, None), (12, "Acme Facilities", 95.0, 5012), (13, "Noordzee Logistics", 110.0, 5013),
           (14, "Brightline Dental", 85.0, None), (15, "Harbor IT", 120.0, 5015), (16, "Kestrel Legal", 135.0, None),
           (17, "Polder Bakeries", 75.0, 5017), (18, "Summit Physio", 90.0, None)]
SUBJECTS = ["Password reset", "Printer offline", "Mailbox migration", "Firewall change", "New starter setup",
            "VPN not connecting", "Backup failure", "Laptop replacement", "Patch window", "Teams calls dropping",
            "Internal meeting", "Documentation"]
QUARTERS = [15, 30, 45, 60, 60, 75, 90, 90, 105, 120, 120, 135, 150, 165, 180]
ODD_MINUTES = [10, 20, 40, 50, 70, 80, 100, 110, 130]  # hours that are not short decimals
DAY_BUDGET_MIN = 9 * 60  # n entries in a day take at most this / n minutes each (mostly over a third of that)


# The numbers Halo sends as 0 when an entry has none.
ZERO_FILLED = ("ticket_id", "action_number", "client_id", "site_id", "contract_id", "holiday_id", "break_type")


def hours(minutes: int) -> float:
    return round(minutes / 60, 10)


def stamp(day: date, minute_of_day: int) -> str:
    """Halo's zone-less ISO datetime; minutes past 24:00 roll into the next day."""
    if minute_of_day >= 24 * 60:
        day, minute_of_day = day + timedelta(days=minute_of_day // (24 * 60)), minute_of_day % (24 * 60)
    return f"{day.isoformat()}T{minute_of_day // 60:02d}:{minute_of_day % 60:02d}:00"


def _error(status: int, message: str) -> Response:
    return Response(status, {"message": message})


class _BadRequest(Exception):
    pass


class HaloPSA:
    """Agents, timesheets and entries of one Halo tenant, and the controls tests use to change them."""

    def __init__(self, emulator: Emulator, *, seed: int, agents: int, ideal: bool = False):
        self.emulator = emulator
        self.ideal = ideal  # serve the ideal API (real ids, exact filters) instead of a real tenant's
        # Days whose entries TimesheetEvent leaves out while their timesheets still count them:
        # a tenant that mis-filters, for the tests of what the sync notices.
        self.hidden_days: set[date] = set()
        # How far past the end asked for TimesheetEvent answers reach (a tenant that mis-reads ranges).
        self.overreach = timedelta()
        self.entry_agent_filter = True  # False: TimesheetEvent ignores the agent filter too (a tenant seen nowhere yet)
        self.tenant_zone = "UTC"  # the zone of the wall-clock times the tenant keeps (entries(), the days)
        self.serves_utc = True  # serve times (and read range bounds) as UTC; False: as the tenant's wall clock
        self.random = random.Random(f"halo-{seed}")
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.token_ttl_s = TOKEN_TTL_S
        self.tokens: dict[str, float] = {}  # access token -> time.monotonic() it expires at
        self._started = time.monotonic()
        self.agents: dict[int, dict[str, Any]] = {}
        self._entries: dict[int, dict[str, Any]] = {}  # id -> TimesheetEvent as served
        self._minutes: dict[int, int] = {}  # id -> whole minutes, the truth behind `timetaken`
        self._by_day: dict[date, dict[int, list[int]]] = {}  # day -> agent id -> entry ids
        self._sheets: dict[tuple[int, date], dict[str, Any]] = {}  # (agent id, day) -> timesheet, no events
        self._holidays: dict[int, dict[str, Any]] = {}  # id -> absence, as /api/Holiday serves it
        self._holiday_ids = itertools.count(1)
        self._entry_ids = itertools.count(1)
        self._sheet_ids = itertools.count(1)
        self._approval_ids = itertools.count(1)
        self._actions: dict[int, int] = {}  # ticket id -> its last action number
        for _ in range(agents):
            self.add_agent()
        for agent_id in (agents - 1, agents):
            if agent_id in self.agents:
                self.agents[agent_id]["isdisabled"] = True
        self._seed(emulator.anchor.date())
        self.set_rate_limit(RATE_LIMIT, RATE_WINDOW_S)
        emulator.route("halopsa", "POST", r"/auth/token", self.token)
        emulator.route("halopsa", "GET", r"/api/authinfo", self.authinfo)
        emulator.route("halopsa", "GET", r"/api/Agent", self.list_agents)
        emulator.route("halopsa", "GET", r"/api/Timesheet", self.list_timesheets)
        emulator.route("halopsa", "GET", r"/api/TimesheetEvent", self.list_entries)
        emulator.route("halopsa", "GET", r"/api/Holiday", self.list_holidays)

    def _seed(self, anchor: date, entries_per_day: int | None = None, days_off: frozenset[date] = frozenset()) -> None:
        rng = self.random
        enabled = [a for a in sorted(self.agents) if not self.agents[a]["isdisabled"]]
        approved_before = anchor - timedelta(days=APPROVED_BEFORE_DAYS)
        approver = self._agent_name(1)
        # entry count -> (durations in quarters, odd durations) that keep the day within budget
        lengths = {n: ([m for m in QUARTERS if DAY_BUDGET_MIN // (3 * n) <= m <= DAY_BUDGET_MIN // n],
                       [m for m in ODD_MINUTES if m <= DAY_BUDGET_MIN // n]) for n in range(3, 7)}
        day = anchor - timedelta(days=HISTORY_DAYS)
        while day < anchor:
            if day.weekday() < 5 and day not in days_off:
                iso_day = day.isoformat()
                by_agent = self._by_day[day] = {}
                for agent_id in enabled:
                    sheet = self._new_sheet(agent_id, day)
                    if day < approved_before:
                        sheet["approval"].update(approvalstatus=APPROVED, approvedby=1, approver=approver,
                                                 submissiondate=f"{(day + timedelta(days=1)).isoformat()}T09:00:00")
                    ids = by_agent[agent_id] = []
                    if (agent_id * 7 + day.toordinal()) % LEAVE_EVERY == 0:
                        ids.append(self._seed_leave(agent_id, day))
                        continue
                    start = DAY_START_MIN
                    count = entries_per_day or rng.randint(3, 6)
                    quarters, odd = lengths[count]
                    lunch = (agent_id + day.toordinal()) % BREAK_EVERY == 0
                    for number in range(count):
                        if lunch and number == LUNCH_AFTER:
                            ids.append(self._seed_break(agent_id, day, start))
                            start += int(BREAK_HOURS * 60)
                        minutes = rng.choice(odd) if rng.random() < 0.1 else rng.choice(quarters)
                        entry_id = next(self._entry_ids)
                        self._entries[entry_id] = self._new_entry(entry_id, agent_id, day, start, minutes, iso_day)
                        self._minutes[entry_id] = minutes
                        ids.append(entry_id)
                        start += minutes
            day += timedelta(days=1)

    def _seed_break(self, agent_id: int, day: date, start: int) -> int:
        """A lunch break as tenants log it: a ticketless event of type 1 with its break type."""
        minutes = int(BREAK_HOURS * 60)
        return self._put(self._new_event(agent_id, day, start, minutes, event_type=1, break_type=2, break_type_name="Lunch break",
                                         charge_type_name="Break", subject="Lunch break"), minutes)

    def _seed_leave(self, agent_id: int, day: date) -> int:
        """A day of leave: an event carrying the absence's `holiday_id`, and the absence itself."""
        minutes = int(TARGET_HOURS * 60)
        holiday_id = next(self._holiday_ids)
        self._holidays[holiday_id] = {"id": holiday_id, "agent_id": agent_id, "name": "Annual leave", "holiday_type": 1,
                                      "start_date": f"{day.isoformat()}T{DAY_START_MIN // 60:02d}:{DAY_START_MIN % 60:02d}:00",
                                      "end_date": stamp(day, DAY_START_MIN + minutes), "duration": TARGET_HOURS}
        return self._put(self._new_event(agent_id, day, DAY_START_MIN, minutes, holiday_id=holiday_id, charge_type_name="Holiday",
                                         subject="Annual leave"), minutes)

    def _put(self, entry: dict[str, Any], minutes: int) -> int:
        self._entries[entry["id"]] = entry
        self._minutes[entry["id"]] = minutes
        return entry["id"]

    def _new_event(self, agent_id: int, day: date, start: int, minutes: int, **fields: Any) -> dict[str, Any]:
        """A ticketless event (break or leave): no client, no ticket, no charge."""
        return {**self._blank_event(next(self._entry_ids), agent_id, day, start, minutes), **fields}

    def _blank_event(self, entry_id: int, agent_id: int, day: date, start: int, minutes: int) -> dict[str, Any]:
        return {"id": entry_id, "event_type": 0, "subject": "", "start_date": stamp(day, start), "end_date": stamp(day, start + minutes),
                "timetaken": hours(minutes), "agent_id": agent_id, "ticket_id": None, "action_number": None, "note": "",
                "customer": None, "client_id": None, "site_id": None, "charge_rate": 0.0, "contract_id": None,
                "holiday_id": None, "break_type": None, "break_type_name": None, "charge_type_name": None,
                "traveltime": 0, "mileage": 0}

    # -- building records ----------------------------------------------------------------------
    def _agent_name(self, agent_id: int) -> str:
        agent = self.agents.get(agent_id)
        return agent["name"] if agent else f"Agent {agent_id}"

    def _new_entry(self, entry_id: int, agent_id: int, day: date, start: int, minutes: int, iso_day: str | None = None) -> dict[str, Any]:
        rng = self.random
        client_id, customer, rate, contract = rng.choice(CLIENTS)
        subject = rng.choice(SUBJECTS)
        iso_day = iso_day or day.isoformat()
        # About 1 in 20 entries is time without a ticket (halocli's live probe: 10 of 1,567 rows).
        ticket = rng.randrange(10_000, 20_000) if rng.random() >= NO_TICKET_SHARE else None
        return {
            "id": entry_id,
            "event_type": 0,
            "subject": subject,
            "start_date": f"{iso_day}T{start // 60:02d}:{start % 60:02d}:00",
            "end_date": stamp(day, start + minutes),
            "timetaken": hours(minutes),
            "agent_id": agent_id,
            "ticket_id": ticket,
            "action_number": self._next_action(ticket) if ticket is not None else None,
            "note": f"{subject}: worked on it",
            "customer": customer,
            "client_id": client_id,
            "site_id": client_id * 10 + 1,
            "charge_rate": rate,
            "contract_id": contract if contract is not None and rng.random() < 0.8 else None,
            "holiday_id": None,
            "break_type": None,
            "break_type_name": None,
            "charge_type_name": "Remote Support" if ticket is not None else "Internal",
            "traveltime": 0,
            "mileage": 0,
        }

    def _next_action(self, ticket: int) -> int:
        self._actions[ticket] = self._actions.get(ticket, 0) + 1
        return self._actions[ticket]

    def _served(self, entry: dict[str, Any]) -> dict[str, Any]:
        """An entry as the API shows it, its times on the clock it serves: a real tenant's API view
        says `id: 0` on every row, and `0` for every number it does not have (a .NET default),
        ticket and client among them."""
        served = {**entry, **{k: self._served_time(entry[k]) for k in ("start_date", "end_date") if entry.get(k)}}
        if self.ideal:
            return served
        return {**served, "id": 0, **{name: 0 for name in ZERO_FILLED if entry.get(name) is None}}

    def _served_time(self, wall_clock: str) -> str:
        """The tenant's wall-clock time on the clock it serves."""
        if not self.serves_utc:
            return wall_clock
        moment = datetime.fromisoformat(wall_clock).replace(tzinfo=ZoneInfo(self.tenant_zone)).astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S")

    def _tenant_time(self, moment: datetime) -> datetime:
        """A range bound (naive: on the clock served) as the tenant's wall-clock time."""
        if moment.tzinfo is None and not self.serves_utc:
            return moment
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return aware.astimezone(ZoneInfo(self.tenant_zone)).replace(tzinfo=None)

    def _new_sheet(self, agent_id: int, day: date) -> dict[str, Any]:
        sheet_id = next(self._sheet_ids)
        iso_day = day.isoformat()
        sheet = {
            "id": sheet_id,
            "agent_id": agent_id,
            "agent_name": self._agent_name(agent_id),
            "date": f"{iso_day}T00:00:00",
            "start_time": f"{iso_day}T08:30:00",
            "end_time": f"{iso_day}T17:00:00",
            "target_hours": TARGET_HOURS,
            "break_hours": BREAK_HOURS,
            "approval": {"id": next(self._approval_ids), "tsid": sheet_id, "unum": agent_id, "approvalstatus": PENDING,
                         "approvedby": None, "submissiondate": None, "approver": None, "message": ""},
        }
        self._sheets[(agent_id, day)] = sheet
        return sheet

    def _sheet(self, agent_id: int, day: date) -> dict[str, Any]:
        return self._sheets.get((agent_id, day)) or self._new_sheet(agent_id, day)

    def _ids_of(self, agent_id: int, day: date) -> list[int]:
        return self._by_day.get(day, {}).get(agent_id, [])

    def _render_sheet(self, sheet: dict[str, Any], day: date) -> dict[str, Any]:
        ids = self._ids_of(sheet["agent_id"], day)
        events = [self._served(self._entries[i]) for i in ids]
        total = sum(self._minutes[i] for i in ids)
        chargeable = sum(self._minutes[i] for i in ids if self._entries[i].get("charge_rate"))
        times = {k: self._served_time(sheet[k]) for k in ("start_time", "end_time")}
        return {**sheet, **times, "actual_hours": hours(total), "chargeable_hours": hours(chargeable), "work_hours": hours(total),
                "events": events, "approval": dict(sheet["approval"])}

    def _index(self, entry_id: int) -> None:
        entry = self._entries[entry_id]
        day = date.fromisoformat(entry["start_date"][:10])
        self._by_day.setdefault(day, {}).setdefault(entry["agent_id"], []).append(entry_id)
        self._sheet(entry["agent_id"], day)

    def _unindex(self, entry_id: int) -> None:
        entry = self._entries[entry_id]
        day = date.fromisoformat(entry["start_date"][:10])
        ids = self._by_day.get(day, {}).get(entry["agent_id"], [])
        if entry_id in ids:
            ids.remove(entry_id)

    # -- controls ---------------------------------------------------------------------------
    def add_agent(self, **fields: Any) -> int:
        """A new enabled agent with the next id; fields override the generated ones."""
        with self.emulator.lock:
            rng = self.random
            agent_id = fields.pop("id", None) or max(self.agents, default=0) + 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            team, title = rng.choice(TEAMS)
            first, last = fields.get("firstname", first), fields.get("surname", last)
            email_name = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
            agent = {
                "id": agent_id,
                "name": f"{first} {last}",
                "firstname": first,
                "surname": last,
                "email": f"{email_name}.{agent_id}@example.com",
                "initials": f"{first[0]}{last.split()[-1][0].upper()}",
                "isdisabled": False,
                "team": team,
                "jobtitle": title,
                "costprice": float(rng.randrange(30, 70)),
                "use": "agent",
            }
            agent.update(fields)
            self.agents[agent_id] = agent
            return agent_id

    def disable_agent(self, agent_id: int) -> None:
        with self.emulator.lock:
            self.agents[agent_id]["isdisabled"] = True

    def add_entry(self, agent_id: int, day: date, minutes: int, **fields: Any) -> int:
        """A new entry of `minutes` starting 17:00 on `day`; its timesheet is created (pending) if missing."""
        with self.emulator.lock:
            if agent_id not in self.agents:
                raise KeyError(f"no agent {agent_id}")
            entry_id = next(self._entry_ids)
            entry = self._new_entry(entry_id, agent_id, day, ADDED_START_MIN, minutes)
            entry.update(fields)
            self._entries[entry_id] = entry
            self._minutes[entry_id] = minutes
            self._index(entry_id)
            return entry_id

    def edit_entry(self, entry_id: int, *, minutes: int | None = None, day: date | None = None, **fields: Any) -> None:
        """Change an entry: its length, its day (same time of day, so it moves to that day's
        timesheet, created pending if missing), or any fields, which are set as given."""
        with self.emulator.lock:
            entry = self._entries[entry_id]
            self._unindex(entry_id)
            entry.update(fields)
            start = datetime.fromisoformat(entry["start_date"])
            if day is not None:
                start = datetime.combine(day, start.time())
                entry["start_date"] = start.strftime("%Y-%m-%dT%H:%M:%S")
            if minutes is not None:
                self._minutes[entry_id] = minutes
                entry["timetaken"] = hours(minutes)
            if minutes is not None or day is not None:
                entry["end_date"] = (start + timedelta(minutes=self._minutes[entry_id])).strftime("%Y-%m-%dT%H:%M:%S")
            self._index(entry_id)

    def delete_entry(self, entry_id: int) -> None:
        with self.emulator.lock:
            self._unindex(entry_id)
            del self._entries[entry_id]
            del self._minutes[entry_id]

    def approve(self, agent_id: int, day: date, approver_id: int = 1) -> None:
        with self.emulator.lock:
            self._sheet(agent_id, day)["approval"].update(
                approvalstatus=APPROVED, approvedby=approver_id, approver=self._agent_name(approver_id), submissiondate=self._now_iso())

    def _now_iso(self) -> str:
        """The emulated clock, in UTC: the anchor plus the time since the emulator was built. Not the
        machine's clock, so an approval made now is newer than the seeded ones whatever the anchor."""
        now = self.emulator.anchor.astimezone(UTC) + timedelta(seconds=time.monotonic() - self._started)
        return now.strftime("%Y-%m-%dT%H:%M:%S")

    def set_approval(self, agent_id: int, day: date, **fields: Any) -> None:
        """Set approval fields as given, malformed or not (a text `approvedby`, an odd status)."""
        with self.emulator.lock:
            self._sheet(agent_id, day)["approval"].update(fields)

    def unapprove(self, agent_id: int, day: date) -> None:
        with self.emulator.lock:
            self._sheet(agent_id, day)["approval"].update(approvalstatus=PENDING, approvedby=None, approver=None)

    def reseed(self, *, entries_per_day: int, days_off: Collection[date] = ()) -> None:
        """Replace every entry and timesheet with `entries_per_day` (3..6) entries per enabled agent
        and weekday, none on `days_off`: a data set of known size, for benchmarks."""
        if not 3 <= entries_per_day <= 6:
            raise ValueError("entries_per_day must be 3..6: a seeded day fits nine hours")
        with self.emulator.lock:
            self._entries.clear()
            self._minutes.clear()
            self._by_day.clear()
            self._sheets.clear()
            self._seed(self.emulator.anchor.date(), entries_per_day, frozenset(days_off))

    def set_rate_limit(self, calls: int | None, window_s: float = RATE_WINDOW_S) -> None:
        """At most `calls` requests of the tenant in any rolling `window_s` seconds, the count
        starting afresh; None: no limit (as `Emulator(rate_limits=False)` for every provider)."""
        if calls is None:
            self.emulator.no_rate_limit("halopsa")
        else:
            self.emulator.rate_limit("halopsa", calls, window_s, refusal=_rate_limit_reached)

    def set_clock(self, tenant_zone: str | None = None, serves_utc: bool | None = None) -> None:
        """The tenant's zone (its entries' wall-clock times stay as they are, now read in that zone)
        and whether it serves UTC instants or its wall clock."""
        with self.emulator.lock:
            if tenant_zone is not None:
                ZoneInfo(tenant_zone)  # a typo fails here, not in a request
                self.tenant_zone = tenant_zone
            if serves_utc is not None:
                self.serves_utc = serves_utc

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (as when Halo expires or revokes them)."""
        with self.emulator.lock:
            self.tokens.clear()

    def entries(self) -> dict[int, dict[str, Any]]:
        """The truth: the entries Halo holds now, by the emulator's own entry id (which is also
        the served `id` when ideal; a real tenant serves 0)."""
        with self.emulator.lock:
            return {entry_id: dict(entry) for entry_id, entry in self._entries.items()}

    def served_entries(self) -> dict[int, dict[str, Any]]:
        """The entries as the API serves them now (id 0 unless ideal), by the emulator's entry id."""
        with self.emulator.lock:
            return {entry_id: self._served(entry) for entry_id, entry in self._entries.items()}

    def timesheets(self) -> dict[tuple[int, date], dict[str, Any]]:
        """Every timesheet, by (agent id, day), as served (events and hours included)."""
        with self.emulator.lock:
            return {key: self._render_sheet(sheet, key[1]) for key, sheet in self._sheets.items()}

    def kind(self, entry_id: int) -> str:
        """The truth about an entry's kind of time: work, break or leave."""
        with self.emulator.lock:
            entry = self._entries[entry_id]
        return "leave" if entry.get("holiday_id") else "break" if entry.get("break_type") or entry.get("event_type") == 1 else "work"

    def minutes(self, entry_id: int) -> int:
        with self.emulator.lock:
            return self._minutes[entry_id]

    # -- API --------------------------------------------------------------------------------
    def token(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        # `tenant` may come in the query string or the form; one tenant here, so its value is ignored.
        if form.get("grant_type") != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return Response(401, {"error": "invalid_client"})
        now = time.monotonic()
        self.tokens = {t: expiry for t, expiry in self.tokens.items() if expiry > now}
        access_token = secrets.token_urlsafe(32)
        self.tokens[access_token] = now + self.token_ttl_s
        return Response(200, {"access_token": access_token, "token_type": "Bearer", "expires_in": self.token_ttl_s, "scope": "all"})

    def authinfo(self, request: Request) -> Response:
        return Response(200, {"auth_url": f"{self.emulator.url}/auth"})

    def _denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        expiry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= time.monotonic():
            return Response(401, {"error": "invalid_token", "error_description": "The access token is invalid or has expired"},
                            {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def list_agents(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        enabled = _flag(request.query.get("includeenabled"), True)
        disabled = _flag(request.query.get("includedisabled"), False)
        agents = [dict(a) for _, a in sorted(self.agents.items())
                  if (disabled if a["isdisabled"] else enabled)]
        return Response(200, agents)

    def list_timesheets(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        try:
            start, end = map(self._tenant_time, _date_range(request.query, self.ideal))
            agents = _agent_filter(request.query) if self.ideal else None  # undocumented: a real tenant may ignore it
        except _BadRequest as error:
            return _error(400, str(error))
        sheets = []
        day = start.date() if start.time() == datetime.min.time() else start.date() + timedelta(days=1)
        while datetime.combine(day, datetime.min.time()) <= end:
            for agent_id in sorted(agents if agents is not None else self.agents):
                sheet = self._sheets.get((agent_id, day))
                if sheet is not None:
                    sheets.append(self._render_sheet(sheet, day))
            day += timedelta(days=1)
        return Response(200, sheets)

    def list_entries(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied:
            return denied
        try:
            start, end = map(self._tenant_time, _date_range(request.query, self.ideal))
            end += self.overreach
            agents = _agent_filter(request.query) if self.entry_agent_filter else None
        except _BadRequest as error:
            return _error(400, str(error))
        found = []
        day = start.date()
        while day <= end.date():  # `count` and `page` are ignored: everything in range, every time
            for agent_id, ids in (self._by_day.get(day, {}) if day not in self.hidden_days else {}).items():
                if agents is None or agent_id in agents:
                    found.extend(i for i in ids if start <= datetime.fromisoformat(self._entries[i]["start_date"]) <= end)
            day += timedelta(days=1)
        found.sort(key=lambda i: (self._entries[i]["start_date"], i))
        return Response(200, [self._served(self._entries[i]) for i in found])


    def list_holidays(self, request: Request) -> Response:
        """Absences overlapping the range: agents' leave and, with `agent_id` 0, public holidays."""
        denied = self._denied(request)
        if denied:
            return denied
        try:
            start, end = _date_range(request.query, self.ideal)
        except _BadRequest as error:
            return _error(400, str(error))
        found = [dict(h) for h in self._holidays.values()
                 if datetime.fromisoformat(h["start_date"]) <= end and datetime.fromisoformat(h["end_date"]) >= start]
        for year in range(start.year, end.year + 1):
            for month, day_of_month, name in PUBLIC_HOLIDAYS:
                day = datetime(year, month, day_of_month)
                if start.date() <= day.date() <= end.date():
                    found.append({"id": 0, "agent_id": 0, "name": name, "holiday_type": 0, "start_date": day.isoformat(),
                                  "end_date": stamp(day.date(), 24 * 60 - 1), "duration": TARGET_HOURS})
        return Response(200, sorted(found, key=lambda h: (h["start_date"], h["agent_id"])))


def _rate_limit_reached(window) -> Response:
    """Halo's answer over its limit: its own text, and no Retry-After (as quoted in the issues
    the module docstring names; served as a JSON string, the body of a .NET API's error)."""
    minutes = f"{window.period / 60:g} minute" if window.period % 60 == 0 else f"{window.period:g} second"
    return Response(429, f"Rate Limit Reached - {window.limit} Requests per rolling {minutes} window")


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("true", "1")


def _date_range(query: dict[str, str], ideal: bool) -> tuple[datetime, datetime]:
    """[start_date, end_date] as moments, both inclusive. A date-only value is midnight at the
    start of that day, so a date-only end drops its whole day, as on a real tenant; ideal, a
    date-only end means the end of that day. A bound with an offset keeps it; zone-less bounds are
    on the clock the tenant serves. `utcoffset` is accepted and ignored."""
    moments = []
    for name in ("start_date", "end_date"):
        value = (query.get(name) or "").strip()
        if not value:
            raise _BadRequest(f"{name} is required")
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _BadRequest(f"{name} is not a date: {value!r}") from None
        if ideal and name == "end_date" and len(value) == 10:
            moment += timedelta(days=1, microseconds=-1)
        moments.append(moment)
    start, end = moments
    if (end.replace(tzinfo=None) - start.replace(tzinfo=None)).days + 1 > MAX_RANGE_DAYS:
        raise _BadRequest("date range too large")
    return start, end


def _agent_filter(query: dict[str, str]) -> set[int] | None:
    """The agent ids of `agents` (comma separated) and `agent_id` together; None when neither is given."""
    raw = [part for name in ("agents", "agent_id") for part in (query.get(name) or "").split(",")]
    raw = [part.strip() for part in raw if part.strip()]
    if not raw:
        return None
    try:
        return {int(part) for part in raw}
    except ValueError:
        raise _BadRequest("agents must be agent ids separated by commas") from None


def serve(emulator: Emulator, options: Options) -> HaloPSA:
    """This provider's routes and state on `emulator` (emulator/server.py, from the registry)."""
    return HaloPSA(emulator, seed=options.seed, agents=options.agents, ideal=options.halo_ideal)
