"""HaloPSA: the client resource (client-credentials token, agents, timesheets, time entries)
and the parsers from Halo's JSON to warehouse rows.

What real tenants do, and how this module copes (sources in the README's HaloPSA section):
- Halo is a .NET API: an absent number comes out as `0`. `GET /TimesheetEvent` shows `id = 0`
  on every row, and time without a ticket (ticketless work, breaks, leave) carries
  `ticket_id: 0, action_number: 0`; so `0` and empty read as absent for every id (`_id`).
- A time entry is known by its *entry key*, which depends on the entry alone, the same in every
  window, chunk and run (`entry_key`): `#<id>` when the entry has a real id; else
  `t<ticket_id>.<action_number>` for ticket time; else `f<fingerprint>`, a digest of the entry's own
  fields as Halo sent them (FINGERPRINT_FIELDS). Entries so identical that they share a
  fingerprint (same agent, same start, same everything) are told apart as `~2`, `~3`, ... by their
  order among themselves, which every read sees whole: a read always covers whole days, and
  twins share their day. Two *different* records on one `#id` or ticket key in one response are
  a collision: both are held back (rejects) and the run fails its `nothing_lost` check.
- Breaks and leave are TimesheetEvents too (`break_type > 0`, `holiday_id > 0`, `event_type`
  1 = break, charge types named holiday/vacation/break): each entry's kind of time (`time_kind`:
  work, break, leave, other) is stored, and only work is ever pushed to Xero.
- date-only ranges mis-filter, so every range goes out as ISO date-times (the local days of
  SYNC_TIMEZONE asked for, from the first's midnight to the last's 23:59:59, in Halo's clock,
  with `utcoffset`) and what comes back is filtered again here: records outside the range asked
  for are dropped and counted (`outside_range`).
- whether Halo's zone-less times are UTC or the tenant's local time is documented nowhere:
  HALO_TIME_ZONE says in which zone they are wall-clock times (default UTC, unverified; the
  doctor's `halo_clock` check says which reading fits). An entry's `start_at`/`end_at` are
  stored as UTC instants, its `work_date` is the day of its start in SYNC_TIMEZONE; its
  fingerprint is of the times as sent, so neither setting changes an entry's identity.
- the meaning of `approvalstatus` is documented nowhere: HALO_APPROVED_STATUSES says which
  values mean approved (default 1, unverified); the raw value is stored. `approvedby` and
  `approver` may come as numbers or text; a malformed approval is kept and flagged
  (`approval_problem`), never read as "not approved" without a word.
- list endpoints may answer a bare array (seen live) or an object carrying the list and
  `record_count` (seen elsewhere in Halo's API): both are accepted.
"""

import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from resources.http import (ProviderAuthError, ProviderClient, ProviderError, ProviderResource, RefreshingAuth, SharedRateLimiter,
                            shared_limiter)
from resources.records import UNREADABLE, content_hash, text_value
from resources.settings import setting

MAX_INT = 2**31 - 1
# The fields a ticketless entry is known by, as Halo sent them. Any edit of one of them makes it a
# new entry (the old one is deleted, in the warehouse and in Xero): Halo gives such time no other identity.
FINGERPRINT_FIELDS = ("agent_id", "start_sent", "end_sent", "minutes", "event_type", "client_id", "subject", "note")
ID, NATURAL = "id", "ticket+fingerprint"  # the identities a response's entries can be keyed by
TIME_KINDS = ("work", "break", "leave", "other")
BREAK_EVENT_TYPE = 1  # Halo's event_type: 0 work, 1 break (Midtown-Technology-Group/halocli)


def names_setting(name: str) -> frozenset[str]:
    """A setting listing names (comma separated), lower-cased for matching."""
    return frozenset(v.strip().lower() for v in (setting(name) or "").split(",") if v.strip())


def approved_statuses() -> frozenset[int]:
    """HALO_APPROVED_STATUSES as numbers (validated when the code location loads)."""
    return frozenset(int(v) for v in setting("HALO_APPROVED_STATUSES").split(","))


def _records(payload: Any, where: str) -> list[dict]:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        lists = [v for v in payload.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
    raise ProviderError(f"halopsa {where}: expected a list of records, got {got}")


def minutes_of(hours: Any) -> int:
    """Halo's hours (a JSON number) as whole minutes, exactly: 0.1666666667 h is 10 min."""
    if isinstance(hours, bool) or hours is None:
        raise ValueError(f"hours must be a number, not {hours!r}")
    try:
        value = Decimal(str(hours)) * 60
    except InvalidOperation:
        raise ValueError(f"hours must be a number, not {hours!r}") from None
    if not value.is_finite() or value < 0 or value > 60 * 24 * 31:
        raise ValueError(f"hours out of range: {hours!r}")
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _day(value: Any) -> date:
    return datetime.fromisoformat(str(value)).date()


def _moment(value: Any) -> datetime | None:
    sent = _sent(value)
    return sent.replace(tzinfo=None) if sent else None


def _sent(value: Any) -> datetime | None:
    """A date-time as Halo sent it: zone-less (the usual form), or with the offset it carries."""
    if value in (None, "", "0001-01-01T00:00:00"):
        return None
    return datetime.fromisoformat(str(value))


def halo_zones() -> tuple[ZoneInfo, ZoneInfo]:
    """(HALO_TIME_ZONE, SYNC_TIMEZONE): Halo's clock, and the zone of work dates."""
    return ZoneInfo(setting("HALO_TIME_ZONE")), ZoneInfo(setting("SYNC_TIMEZONE"))


def instant_and_day(sent: datetime, zones: tuple[ZoneInfo, ZoneInfo] | None = None) -> tuple[datetime, date]:
    """A time as Halo sent it as the warehouse's UTC instant (naive, as every stored timestamp)
    and its day in SYNC_TIMEZONE. A zone-less time is a wall-clock time in HALO_TIME_ZONE (one
    the zone's clock passes twice, at the end of summer time, is its first); a time with an
    offset is what the offset says."""
    halo, local = zones or halo_zones()
    try:
        moment = (sent if sent.tzinfo else sent.replace(tzinfo=halo)).astimezone(UTC)
        return moment.replace(tzinfo=None), moment.astimezone(local).date()
    except OverflowError:  # a time at the calendar's edge (0001-01-01, 9999-12-31) has no instant in another zone
        raise ValueError(f"time out of range: {sent.isoformat()}") from None


def _int_or_none(value: Any) -> int | None:
    """A whole number as Halo sends it (a JSON number or a numeric string), None when absent."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
        if not -MAX_INT <= number <= MAX_INT:  # the warehouse's integer columns
            raise ValueError
        return number
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"not a whole number: {str(value)[:40]!r}") from None


def _id(value: Any) -> int | None:
    """An id as Halo sends it: `0` and empty are absent (.NET's default for a missing number)."""
    return _int_or_none(value) or None


def agent_row(record: dict) -> dict:
    """One Agent as a `halo_agents` row."""
    if not isinstance(record, dict) or _int_or_none(record.get("id")) is None or isinstance(record.get("id"), str):
        raise ValueError("no integer id")
    row = {
        "id": int(record["id"]),
        "name": text_value(record.get("name")),
        "first_name": text_value(record.get("firstname")),
        "last_name": text_value(record.get("surname")),
        "email": text_value(record.get("email")),
        "initials": text_value(record.get("initials")),
        "team": text_value(record.get("team")),
        "job_title": text_value(record.get("jobtitle")),
        "is_disabled": bool(record.get("isdisabled")),
    }
    row["content_hash"] = content_hash(row)
    return row


def ticket_key(ticket_id: int | None, action_number: int | None) -> str | None:
    return f"t{ticket_id}.{action_number}" if ticket_id and action_number else None


def fingerprint(row: dict) -> str:
    """The digest of an entry's own fields as Halo sent them; the same from a fresh record and a
    stored row (whose `start_sent`/`end_sent` are its stored times where it has no others)."""
    values = [row.get(name, row.get(name.replace("_sent", "_at"))) for name in FINGERPRINT_FIELDS]
    return "f" + hashlib.blake2b(json.dumps(values, default=str).encode(), digest_size=10).hexdigest()


def time_kind(row: dict, break_names: frozenset[str] | None = None, leave_names: frozenset[str] | None = None) -> str:
    """What kind of time an entry is: leave (`holiday_id`, or a charge type named as leave), break
    (`break_type`, event type 1, or a charge or break type named as a break), other (an event type
    that is neither work nor break), else work. Names come from HALO_BREAK_NAMES / HALO_LEAVE_NAMES."""
    breaks = names_setting("HALO_BREAK_NAMES") if break_names is None else break_names
    leave = names_setting("HALO_LEAVE_NAMES") if leave_names is None else leave_names
    charge = (row.get("charge_type_name") or "").strip().lower()
    if row.get("holiday_id") or charge in leave:
        return "leave"
    if row.get("break_type") or row.get("event_type") == BREAK_EVENT_TYPE or charge in breaks \
            or (row.get("break_type_name") or "").strip().lower() in breaks - {""}:
        return "break"
    if row.get("event_type") not in (None, 0):
        return "other"
    return "work"


def entry_row(record: dict, fiscal_year: str) -> dict:
    """One TimesheetEvent as a `halo_time_entries` row with its entry key (`entry_key`: of this
    record alone); raises ValueError naming the problem."""
    if not isinstance(record, dict):
        raise ValueError(f"not an object but {type(record).__name__}")
    try:  # kept as sent, when real: real tenants send 0
        halo_id = _id(record.get("id")) if not isinstance(record.get("id"), str) else None
    except ValueError:
        halo_id = None
    try:
        start, end = _sent(record.get("start_date")), _sent(record.get("end_date"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"unparsable date ({error})") from None
    if start is None:
        raise ValueError("no start_date")
    zones = halo_zones()
    start_at, work_date = instant_and_day(start, zones)
    agent_id = _id(record.get("agent_id"))
    if agent_id is None:
        raise ValueError("no agent_id")
    row = {
        "halo_id": halo_id,
        "fiscal_year": fiscal_year,
        "agent_id": agent_id,
        "work_date": work_date,
        "start_at": start_at,
        "end_at": instant_and_day(end, zones)[0] if end else None,
        "start_sent": start.replace(tzinfo=None),  # for the fingerprint; not stored
        "end_sent": end.replace(tzinfo=None) if end else None,
        "minutes": minutes_of(record.get("timetaken")),
        "hours_raw": str(record.get("timetaken")),
        "ticket_id": _id(record.get("ticket_id")),
        "action_number": _id(record.get("action_number")),
        "client_id": _id(record.get("client_id")),
        "client_name": text_value(record.get("customer")),
        "contract_id": _id(record.get("contract_id")),
        "site_id": _id(record.get("site_id")),
        "event_type": _int_or_none(record.get("event_type")),
        "break_type": _id(record.get("break_type")),
        "break_type_name": text_value(record.get("break_type_name")) or None,
        "holiday_id": _id(record.get("holiday_id")),
        "charge_type_name": text_value(record.get("charge_type_name")) or None,
        "subject": text_value(record.get("subject")),
        "note": text_value(record.get("note")),
        "charge_rate": text_value(record.get("charge_rate")),
    }
    row["time_kind"] = time_kind(row)
    row["ticket_key"] = ticket_key(row["ticket_id"], row["action_number"])
    row["fingerprint"] = fingerprint(row)
    row["entry_key"] = f"#{halo_id}" if halo_id else row["ticket_key"] or row["fingerprint"]
    row["raw"] = json.dumps(record, default=str)
    return row


def key_kind(entry_key: str) -> str:
    """How an entry key was made: `id`, `ticket` or `fingerprint`."""
    return {"#": "id", "t": "ticket"}.get(entry_key[:1], "fingerprint")


@dataclass
class KeyedEntries:
    """One response's entries as rows with their entry keys, and what the keying saw."""

    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # unreadable, or colliding on one key
    identity: str = NATURAL  # ID when every entry had a real id
    kinds: dict[str, int] = field(default_factory=dict)  # entries keyed by id / ticket / fingerprint
    repeated: list[str] = field(default_factory=list)  # fingerprints shared by identical entries (then ~2, ~3, ...)
    collisions: list[str] = field(default_factory=list)  # ids or ticket keys claimed by different records
    sent_twice: int = 0  # records Halo sent twice, identical, in one response (one is kept)

    @property
    def received(self) -> int:
        return len(self.rows) + len(self.rejects) + self.sent_twice


def key_entries(records: list, fiscal_year: str) -> KeyedEntries:
    """Parse a response's TimesheetEvents; each row's key is its own (see the module docstring)."""
    keyed = KeyedEntries()
    parsed = []
    for position, record in enumerate(records):
        try:
            parsed.append((record, entry_row(record, fiscal_year)))
        except UNREADABLE as error:  # what records.parse_each catches; the reject also keeps its agent-day
            keyed.rejects.append(_entry_reject(record, position, str(error)))
    groups = defaultdict(list)
    for record, row in parsed:
        row["content_hash"] = content_hash(row)
        groups[row["entry_key"]].append((record, row))
    for key, group in groups.items():
        if len(group) == 1:
            keyed.rows.append(group[0][1])
        elif key_kind(key) == "fingerprint":
            keyed.repeated.append(key)
            keyed.rows += _twins([row for _, row in group])
        elif len({row["content_hash"] for _, row in group}) == 1:
            keyed.rows.append(group[0][1])
            keyed.sent_twice += len(group) - 1
        else:  # two different records on one id or ticket key: neither is written, the run fails
            keyed.collisions.append(key)
            keyed.rejects += [_entry_reject(record, None, f"{len(group)} different records share the key {key}")
                              for record, _ in group]
    keyed.rows.sort(key=lambda row: (row["start_at"], row["entry_key"]))
    kinds = Counter(key_kind(row["entry_key"]) for row in keyed.rows)
    keyed.kinds = dict(kinds)
    keyed.identity = ID if keyed.rows and set(kinds) == {"id"} else NATURAL
    keyed.repeated.sort()
    keyed.collisions.sort()
    return keyed


def _twins(rows: list[dict]) -> list[dict]:
    """Entries sharing a fingerprint (identical in every field it covers): the first, in content
    order, keeps the key, the others get `~2`, `~3`, ... Twins share their agent and start, so they
    share a day, and every read of that day sees all of them: the same keys every time."""
    ordered = sorted(rows, key=lambda row: row["content_hash"])
    for number, row in enumerate(ordered[1:], start=2):
        row["entry_key"] = f"{row['entry_key']}~{number}"
    return ordered


def _entry_reject(record: Any, position: int | None, reason: str) -> dict:
    return {"record_id": _record_name(record, position), "reason": reason, "payload": record, "agent_day": _agent_day(record)}


def _record_name(record: Any, position: int | None) -> str:
    """How a rejected entry is named in logs: its key fields when readable, else its position."""
    if isinstance(record, dict):
        for name in ("id", "ticket_id"):
            if record.get(name) not in (None, 0, ""):
                return f"{name} {str(record[name])[:40]}" + (f" action {str(record.get('action_number'))[:20]}" if name == "ticket_id" else "")
        if record.get("agent_id") not in (None, 0, "") and record.get("start_date"):
            return f"agent {str(record['agent_id'])[:20]} at {str(record['start_date'])[:40]}"
    return f"entry item {position}" if position is not None else "entry"


def _agent_day(record: Any) -> tuple[int, date] | None:
    """(agent, day) of a record that cannot be read, when that much can be: its stored rows are kept."""
    try:
        return int(record["agent_id"]), instant_and_day(_sent(record["start_date"]))[1]
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):  # int(inf) overflows
        return None


def timesheet_row(record: dict, fiscal_year: str, approved: frozenset[int] | None = None) -> dict:
    """One agent-day Timesheet as a `halo_timesheets` row; raises ValueError naming the problem.
    An approval that cannot be read does not reject the day: the row keeps what could be read
    and says what could not in `approval_problem`."""
    if not isinstance(record, dict) or _int_or_none(record.get("id")) is None or isinstance(record.get("id"), str):
        raise ValueError("no integer id")
    try:
        work_date = _day(record["date"])
        agent_id = _int_or_none(record["agent_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"no usable date or agent_id ({error})") from None
    if agent_id is None:
        raise ValueError("no agent_id")
    approval, problems = record.get("approval") or {}, []
    if not isinstance(approval, dict):
        problems.append(f"approval is not an object but {type(approval).__name__}")
        approval = {}
    status = _field(approval, "approvalstatus", _int_or_none, problems)
    approved_by = approval.get("approvedby")
    by_number = _int_or_none(approved_by) if _is_whole(approved_by) else None
    row = {
        "id": int(record["id"]),
        "fiscal_year": fiscal_year,
        "agent_id": agent_id,
        "work_date": work_date,
        "target_minutes": minutes_of(record.get("target_hours") or 0),
        "actual_minutes": minutes_of(record.get("actual_hours") or 0),
        "approval_status": status,
        "approved": status in (approved if approved is not None else approved_statuses()),
        "approved_by": by_number,
        "approved_by_text": text_value(approved_by) if approved_by not in (None, "") and by_number is None else None,
        "approver": text_value(approval.get("approver")) if not isinstance(approval.get("approver"), int | float) else str(approval["approver"]),
        "submitted_at": _field(approval, "submissiondate", _moment, problems),
        "approval_problem": "; ".join(problems) or None,
    }
    row["content_hash"] = content_hash(row)
    return row


def _field(record: dict, name: str, parse: Callable[[Any], Any], problems: list[str]) -> Any:
    """A field parsed, or None with the problem noted."""
    try:
        return parse(record.get(name))
    except (TypeError, ValueError) as error:
        problems.append(f"{name} {str(record.get(name))[:40]!r} is unreadable ({error})")
        return None


def _is_whole(value: Any) -> bool:
    try:
        return _int_or_none(value) is not None
    except ValueError:
        return False


def range_params(first: date, last: date) -> dict[str, str]:
    """The local days [first, last] (SYNC_TIMEZONE) as Halo is asked for them: ISO date-times from
    the first day's 00:00:00 to the last day's 23:59:59 (Halo's times are whole seconds) read on
    Halo's clock (HALO_TIME_ZONE), never bare dates (a date-only end_date drops its day on real
    tenants), with `utcoffset` in minutes describing Halo's clock as JavaScript's
    getTimezoneOffset() would (UTC+1 is -60; the sign is unverified)."""
    halo, local = halo_zones()
    start = datetime.combine(first, time(), local).astimezone(halo)
    end = (datetime.combine(last + timedelta(days=1), time(), local).astimezone(UTC) - timedelta(seconds=1)).astimezone(halo)
    offset = start.utcoffset() or timedelta()
    return {"start_date": start.replace(tzinfo=None).isoformat(), "end_date": end.replace(tzinfo=None).isoformat(),
            "utcoffset": str(-int(offset.total_seconds() // 60))}


def _moment_of(record: Any, name: str) -> datetime | None:
    try:
        return _moment(record.get(name)) if isinstance(record, dict) else None
    except (TypeError, ValueError):
        return None


def work_date_of(record: Any, zones: tuple[ZoneInfo, ZoneInfo]) -> date | None:
    """The day in SYNC_TIMEZONE a record's start falls on, None when it has none readable."""
    try:
        sent = _sent(record.get("start_date")) if isinstance(record, dict) else None
        return instant_and_day(sent, zones)[1] if sent else None
    except (TypeError, ValueError):
        return None


def date_chunks(first: date, last: date, days: int) -> list[tuple[date, date]]:
    """[first, last] cut into inclusive ranges of at most `days` days."""
    chunks = []
    while first <= last:
        end = min(first + timedelta(days=days - 1), last)
        chunks.append((first, end))
        first = end + timedelta(days=1)
    return chunks


class HaloClient:
    def __init__(self, http: ProviderClient, token_http: ProviderClient, chunk_days: int = 31):
        self.http = http
        self.token_http = token_http
        self.chunk_days = chunk_days
        self.outside_range = 0  # records the server returned outside the range or agents asked for

    def stats(self) -> dict[str, Any]:
        """Run metadata: the requests made, and the tenant's budget left in the current window."""
        api, token = self.http.stats.as_metadata(), self.token_http.stats.as_metadata()
        return {**{k: api[k] + token[k] for k in api}, "rate_limit_remaining": self.http.limiter.remaining()}

    def agents(self) -> list[dict]:
        params = {"includeenabled": "true", "includedisabled": "true", "includeapiagents": "false"}
        return _records(self.http.request_json("GET", "/api/Agent", params=params), "GET /api/Agent")

    def agent_ids(self) -> list[int]:
        return sorted(int(a["id"]) for a in self.agents())

    def period(self, first: date, last: date, agent_ids: list[int] | None = None) -> Iterator[tuple[date, date, list, list]]:
        """Every agent's time entries and timesheets of the days [first, last], a chunk of
        `chunk_days` days at a time: (chunk start, chunk end, entries, timesheets). Two requests
        a chunk, after one for the agents unless their ids are given."""
        agent_ids = self.agent_ids() if agent_ids is None else agent_ids
        for start, end in date_chunks(first, last, self.chunk_days):
            yield start, end, self.time_entries(start, end), self.timesheets(start, end, agent_ids)

    def time_entries(self, start: date, end: date) -> list[dict]:
        """TimesheetEvents whose start falls on a local day in [start, end], every agent's. One
        request: Halo ignores `count`/`page` and answers everything in range. Records whose start
        is outside the range are dropped and counted; unreadable ones are kept for the parser to name."""
        records = _records(self.http.request_json("GET", "/api/TimesheetEvent", params=range_params(start, end)),
                           "GET /api/TimesheetEvent")
        zones = halo_zones()
        return self._keep(records, lambda r: (day := work_date_of(r, zones)) is None or start <= day <= end)

    def timesheets(self, start: date, end: date, agent_ids: list[int]) -> list[dict]:
        """Per-agent, per-day timesheets with their approval, for days in [start, end] and these
        agents. The swagger documents no parameters for /Timesheet: the range and agents are
        sent (as other clients do) and enforced here whatever the server does with them."""
        params = {**range_params(start, end), "agents": ",".join(map(str, agent_ids))}
        records = _records(self.http.request_json("GET", "/api/Timesheet", params=params), "GET /api/Timesheet")
        agents = set(agent_ids)

        def inside(record: Any) -> bool:
            day = _moment_of(record, "date")
            agent = record.get("agent_id") if isinstance(record, dict) else None
            return (day is None or start <= day.date() <= end) and (not isinstance(agent, int) or agent in agents)

        return self._keep(records, inside)

    def _keep(self, records: list, inside: Callable[[Any], bool]) -> list:
        kept = [r for r in records if inside(r)]
        self.outside_range += len(records) - len(kept)
        return kept


# Tokens kept between the clients of one process, by application (HaloPSAResource.client(keep_token=True)).
_KEPT_TOKENS: dict[tuple, RefreshingAuth] = {}


class HaloPSAResource(ProviderResource):
    """HaloPSA API with an application's client credentials (client_credentials grant, scope all)."""

    base_url: str
    auth_url: str
    client_id: str
    client_secret: str
    tenant: str | None = None
    # Halo's hosted limit as its own 429 states it: 300 requests per rolling 5-minute window, per
    # tenant, token requests included (README, "Halo's rate limit").
    rate_limit: int = 300
    rate_window_s: float = 300.0
    chunk_days: int = 31
    timeout_s: float = 60.0

    @contextlib.contextmanager
    def client(self, engine: sa.Engine | None = None, log: Callable[[str], None] | None = None, keep_token: bool = False,
               max_wait_s: float | None = None) -> Iterator[HaloClient]:
        """A client for one run or tick. `engine` (the warehouse's) holds the tenant's request log,
        shared by every process that talks to the tenant; without one (a unit test of the client)
        the limit is kept in this process only. `keep_token`: reuse the token of this process's
        earlier clients of the same application until it expires (a sensor ticking every few
        seconds would otherwise spend a token request per tick). `max_wait_s`: fail a request
        rather than wait longer than this for the budget (a sensor tick must not block)."""
        account = f"halopsa {self.base_url}"
        limiter = (SharedRateLimiter(engine, account, self.rate_limit, self.rate_window_s, max_wait_s=max_wait_s) if engine is not None
                   else shared_limiter(account, self.rate_limit, self.rate_window_s))
        # A 429 names no wait (Halo sends no Retry-After) and other integrations spend the same
        # budget: only a whole window is sure to have room again.
        common = dict(limiter=limiter, secrets=[self.client_secret], log=log, window_s=self.rate_window_s)
        token_http = self.provider_client(
            "halopsa", self.auth_url, auth=httpx.Auth(),
            credential_hint="check HALO_CLIENT_ID and HALO_CLIENT_SECRET (and HALO_AUTH_URL, HALO_TENANT)", **common
        )

        def fetch() -> tuple[str, float | None]:
            return self._fetch_token(token_http)

        if keep_token:
            auth = _KEPT_TOKENS.setdefault(self._application(), RefreshingAuth(fetch)).fetching_with(fetch)
        else:
            auth = RefreshingAuth(fetch)
        http = self.provider_client(
            "halopsa", self.base_url, auth=auth,
            credential_hint="the token was refused right after it was issued; check the API application's permissions",
            headers={"Accept": "application/json"}, **common,
        )
        with token_http, http:
            yield HaloClient(http, token_http, self.chunk_days)

    def _application(self) -> tuple:
        return self.base_url, self.auth_url, self.tenant, self.client_id, hashlib.sha256(self.client_secret.encode()).hexdigest()

    def _fetch_token(self, token_http: ProviderClient) -> tuple[str, float | None]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret, "scope": "all"}
        params = {"tenant": self.tenant} if self.tenant else None
        try:
            payload = token_http.request_json("POST", "/token", params=params, data=form)
        except ProviderError as error:
            if "HTTP 400" in str(error):  # OAuth servers answer bad client credentials with 400 invalid_client too
                raise ProviderAuthError(f"{error}. Check HALO_CLIENT_ID and HALO_CLIENT_SECRET") from None
            raise
        if not isinstance(payload, dict) or not payload.get("access_token"):
            raise ProviderAuthError("halopsa POST /token: the answer has no access_token")
        lifetime = payload.get("expires_in")
        return payload["access_token"], float(lifetime) if isinstance(lifetime, int | float) else None
