"""The doctor's HaloPSA checks (see resources/doctor.py): how this tenant's time entries are
keyed, zoned and filtered, which clock its times are on, and the approval values its timesheets carry."""

from __future__ import annotations

import collections
import functools
import statistics
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from resources.doctor import FAIL, PASS, WARN, Checks, Finding, run_provider
from resources.halo import (
    approved_statuses,
    halo_zones,
    instant_and_day,
    key_entries,
    range_params,
    work_date_of,
)
from resources.settings import setting

HALO_WINDOW_DAYS = (7, 31)  # look for recent time entries here, widening once if none


def check_halopsa(resources: dict, production: bool, now: datetime) -> list[Finding]:
    resource, approved = resources["halopsa"], approved_statuses()

    def body(checks: Checks, client) -> None:
        agents = client.agents()
        checks.add("credentials", PASS, f"token accepted; {len(agents)} agents listed")
        zone = ZoneInfo(setting("SYNC_TIMEZONE") or "UTC")
        today = now.astimezone(zone).date()
        entries, first = [], today
        for days in HALO_WINDOW_DAYS:
            first = today - timedelta(days=days)
            entries = _list(client, "/api/TimesheetEvent", range_params(first, today))
            if entries:
                break
        if not entries:
            checks.add("time_entries", WARN, f"no time entries in the last {HALO_WINDOW_DAYS[-1]} days; identity and filters not tried",
                       "run the doctor again once the tenant has recent time entries")
        else:
            _check_identity(checks, entries)
            _check_time_kinds(checks, entries)
            _check_zone(checks, entries)
            _check_day_filter(checks, client, entries)
            _check_agent_filter(checks, client, entries, first, today)
        everyone = ",".join(str(a.get("id")) for a in agents)  # as the sync asks: Timesheet documents no filter
        sheets = _list(client, "/api/Timesheet", {**range_params(today - timedelta(days=HALO_WINDOW_DAYS[-1]), today),
                                                  "agents": everyone})
        _check_approvals(checks, sheets, approved)
        _check_halo_clock(checks, sheets)

    # The warehouse holds the tenant's request log, shared with the runs and the sensor.
    open_client = functools.partial(resource.client, resources["warehouse"].engine)
    return run_provider("halopsa", "HALO_BASE_URL", resource.base_url, production, open_client, body)


def _list(client, path: str, params: dict) -> list[dict]:
    body = client.http.request_json("GET", path, params=params)
    if isinstance(body, dict):  # some Halo lists come wrapped with record_count
        body = next((v for v in body.values() if isinstance(v, list)), [])
    return [r for r in body or [] if isinstance(r, dict)]


def _start(entry: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(str(entry.get("start_date")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _check_identity(checks: Checks, entries: list[dict]) -> None:
    """Which key the sync gives these entries (resources/halo.py, `entry_row`), and whether any
    key would be claimed by two different entries (the sync's runs would fail on them)."""
    keyed = key_entries(entries, "")
    kinds = ", ".join(f"{count} by {kind}" for kind, count in sorted(keyed.kinds.items())) or "none"
    zero = sum(1 for e in entries if e.get("ticket_id") in (0, "0") and e.get("action_number") in (0, "0"))
    zero_ids = sum(1 for e in entries if e.get("id") in (0, "0"))
    seen = (f"{len(entries)} entries keyed {kinds}; {zero_ids} with id 0, {zero} without a ticket sent as "
            f"ticket_id 0 / action_number 0 (read as no ticket)")
    if keyed.collisions:
        checks.add("entry_identity", FAIL, f"{seen}; {len(keyed.collisions)} keys carried by different entries, "
                   f"e.g. {', '.join(keyed.collisions[:5])}",
                   "the sync holds such entries back and its runs fail (check nothing_lost) until Halo's ids or ticket "
                   "actions tell them apart: compare those entries in Halo")
    elif keyed.repeated:
        checks.add("entry_identity", WARN, f"{seen}; {len(keyed.repeated)} entries identical in every field to another",
                   "kept apart as ~2, ~3 by their order among themselves; confirm in Halo they are really logged twice")
    else:
        checks.add("entry_identity", PASS, f"{seen}; every key is the entry's own")


def _check_time_kinds(checks: Checks, entries: list[dict]) -> None:
    """Breaks, leave and other time among the entries: stored with their kind, never billed."""
    keyed = key_entries(entries, "")
    kinds = collections.Counter(row["time_kind"] for row in keyed.rows)
    names = sorted({row["charge_type_name"] or "" for row in keyed.rows if row["time_kind"] == "work"} - {""})
    seen = ", ".join(f"{kinds[k]} {k}" for k in ("work", "break", "leave", "other"))
    action = (f"work charge types seen: {', '.join(names[:12]) or 'none'}; a break or leave type among them belongs in "
              "HALO_BREAK_NAMES or HALO_LEAVE_NAMES, or it is billed")
    if kinds["other"]:
        checks.add("time_kinds", WARN, f"{seen}: {kinds['other']} entries of an event type that is neither work (0) nor break (1)",
                   "such time is stored and never pushed to Xero; " + action)
    else:
        checks.add("time_kinds", PASS, f"{seen} (breaks and leave are never pushed to Xero)", action)


def _check_zone(checks: Checks, entries: list[dict]) -> None:
    """A start with an offset is read as it says; a zone-less one as a wall-clock time in HALO_TIME_ZONE."""
    zone_name = setting("HALO_TIME_ZONE")
    starts = [s for s in map(_start, entries) if s]
    zoned = [s for s in starts if s.tzinfo is not None]
    if zoned and len(zoned) < len(starts):
        checks.add("date_time_zone", WARN, f"{len(zoned)} of {len(starts)} start dates carry a zone, the rest do not",
                   f"mixed forms: the zone-less ones are read in HALO_TIME_ZONE ({zone_name}); compare a few entries' "
                   "times in Halo with the warehouse")
    elif zoned:
        checks.add("date_time_zone", PASS, f"{len(starts)} start dates carry an offset (e.g. {zoned[0].isoformat()}): read as they say")
    else:
        checks.add("date_time_zone", PASS, f"{len(starts)} start dates carry no zone: read as wall-clock times in "
                   f"HALO_TIME_ZONE ({zone_name}), see halo_clock")


def _check_day_filter(checks: Checks, client, entries: list[dict]) -> None:
    """A one-day date-time range returns nothing outside it; a date-only range is compared too."""
    zones = halo_zones()
    day = max((d for d in (work_date_of(e, zones) for e in entries) if d), default=None)
    if day is None:
        checks.add("day_filter", WARN, "no entry has a readable start_date; the day filter was not tried")
        return
    rows = _list(client, "/api/TimesheetEvent", range_params(day, day))
    outside = [r for r in rows if work_date_of(r, zones) != day]
    checks.pass_or_warn("day_filter", not outside,
                        f"a one-day date-time range for {day} returned {len(rows)} entries, none outside it",
                        f"a one-day date-time range for {day} returned {len(outside)} of {len(rows)} entries outside it",
                        "the sync drops them and counts them as outside_range")
    bare = _list(client, "/api/TimesheetEvent", {"start_date": day.isoformat(), "end_date": day.isoformat()})
    checks.pass_or_warn("date_only_filter", len(bare) == len(rows) - len(outside),
                        f"a date-only range for {day} agrees with the date-time range",
                        f"a date-only range for {day} returned {len(bare)} entries, the date-time range {len(rows) - len(outside)}",
                        "date-only ranges mis-filter on this tenant; the sync always sends date-times")


def _check_agent_filter(checks: Checks, client, entries: list[dict], first, last) -> None:
    """Ask each list for one agent's records and count other agents' (the sync filters on its side anyway)."""
    by_agent = collections.Counter(e.get("agent_id") for e in entries)
    if len(by_agent) < 2:
        checks.add("agent_filter", WARN, "entries of only one agent in range; the agent filter was not tried")
        return
    agent = by_agent.most_common()[-1][0]
    ignored = []
    for path in ("/api/TimesheetEvent", "/api/Timesheet"):
        rows = _list(client, path, {**range_params(first, last), "agents": str(agent)})
        others = sum(1 for r in rows if r.get("agent_id") != agent)
        if others:
            ignored.append(f"{path} answered {others} of {len(rows)} records of other agents")
    checks.pass_or_warn("agent_filter", not ignored,
                        f"asked for agent {agent} only: TimesheetEvent and Timesheet answered theirs alone",
                        f"asked for agent {agent} only: {'; '.join(ignored)}",
                        "the agent filter is not honoured there; the sync drops other agents' records and counts them as outside_range")


def _check_approvals(checks: Checks, sheets: list[dict], approved: frozenset[int]) -> None:
    statuses = collections.Counter()
    malformed = 0
    for sheet in sheets:
        approval = sheet.get("approval")
        value = approval.get("approvalstatus") if isinstance(approval, dict) else None
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            statuses[value] += 1
        else:
            malformed += 1
    seen = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())) or "none"
    unknown = sorted(set(statuses) - {0, 1, 2})
    wanted = ",".join(map(str, sorted(approved)))
    if malformed or unknown:
        checks.add("approval_status", WARN,
                   f"approvalstatus values seen {seen}" + (f"; unknown values {unknown}" if unknown else "")
                   + (f"; {malformed} not a whole number" if malformed else ""),
                   f"find out in Halo what the unknown values mean; HALO_APPROVED_STATUSES ({wanted}) decides what is pushed")
    elif statuses and not approved & set(statuses):
        checks.add("approval_status", WARN, f"approvalstatus values seen {seen}; none is in HALO_APPROVED_STATUSES ({wanted})",
                   "nothing would be pushed to Xero: approve a timesheet in Halo and see which value it gets")
    else:
        checks.add("approval_status", PASS if statuses else WARN, f"approvalstatus values seen {seen}; approved = {wanted}",
                   "" if statuses else "no timesheet approvals in the last 31 days to compare with")


def _check_halo_clock(checks: Checks, sheets: list[dict]) -> None:
    """Which reading of Halo's zone-less times fits the tenant: a timesheet is one agent's day, so
    under the right reading its events start on that day (in SYNC_TIMEZONE) and the agents' days
    look like working hours. FAIL when HALO_TIME_ZONE puts events on another day and another
    reading does not: the push would look for their approval on the wrong day. The Date header is
    no help here: it tells the server's clock, not the zone of the times it serves."""
    configured, local = setting("HALO_TIME_ZONE"), setting("SYNC_TIMEZONE")
    readings = list(dict.fromkeys([configured, "UTC", local]))
    events = list(_events(sheets))
    if not events:
        checks.add("halo_clock", WARN, "no timesheet of the last 31 days carries events with a readable start; the clock was not tried",
                   f"compare an entry's start in Halo's UI with its start_at in the warehouse (UTC, read in HALO_TIME_ZONE={configured})")
        return
    off = {zone: sum(_day_under(zone, local, sent) != day for day, _, sent, _ in events) for zone in readings}
    seen = "; ".join(f"read as {zone}: {off[zone]} of {len(events)} events off their timesheet's day, days run "
                     f"{_working_hours(events, zone, local)} in {local}" for zone in readings)
    fits = [zone for zone in readings if not off[zone]]
    if off[configured] and fits:
        checks.add("halo_clock", FAIL, seen, f"set HALO_TIME_ZONE={fits[0]}: read as {configured}, entries would be shifted "
                   "(wrong work dates, and Xero's dateUtc hours off)")
    elif off[configured]:
        checks.add("halo_clock", WARN, seen, "every reading puts events on another day than their timesheet: is SYNC_TIMEZONE the "
                   "tenant's zone? compare an entry's times in Halo's UI with the hours above")
    elif fits != [configured]:
        checks.add("halo_clock", WARN, f"the evidence cannot tell: {seen}",
                   f"compare an entry's times in Halo's UI with the hours above and set HALO_TIME_ZONE to the reading "
                   f"that shows them (now {configured})")
    else:
        checks.add("halo_clock", PASS, f"HALO_TIME_ZONE={configured} fits: {seen}")


def _events(sheets: list[dict]):
    """(timesheet day, agent, start as sent, end as sent or None) of every event the timesheets carry."""
    for sheet in sheets:
        try:
            day = datetime.fromisoformat(str(sheet.get("date"))).date()
        except ValueError:
            continue
        for event in sheet.get("events") or []:
            start, end = (_sent(event, name) for name in ("start_date", "end_date")) if isinstance(event, dict) else (None, None)
            if start:
                yield day, sheet.get("agent_id"), start, end


def _sent(record: dict, name: str) -> datetime | None:
    """A time as sent, or None when unreadable or at the calendar's edge (no instant in every zone)."""
    try:
        sent = datetime.fromisoformat(str(record.get(name)))
    except ValueError:
        return None
    return sent if date(1, 1, 2) <= sent.date() <= date(9999, 12, 30) else None


def _day_under(zone: str, local: str, sent: datetime) -> date:
    return instant_and_day(sent, (ZoneInfo(zone), ZoneInfo(local)))[1]


def _working_hours(events: list[tuple], zone: str, local: str) -> str:
    """The agents' typical day under a reading, in SYNC_TIMEZONE: the median first start and last end of a timesheet's events."""
    zones, days = (ZoneInfo(zone), ZoneInfo(local)), collections.defaultdict(list)
    for day, agent, start, end in events:
        days[(agent, day)].append((start, end or start))
    firsts, lasts = [], []
    for times in days.values():
        firsts.append(min(_local_clock(s, zones) for s, _ in times))
        lasts.append(max(_local_clock(e, zones) for _, e in times))
    return f"{_clock(statistics.median_low(firsts))}-{_clock(statistics.median_low(lasts))}"


def _local_clock(sent: datetime, zones: tuple[ZoneInfo, ZoneInfo]) -> int:
    """Minutes past midnight in SYNC_TIMEZONE of a time as sent, read in the first zone."""
    moment = instant_and_day(sent, zones)[0].replace(tzinfo=UTC).astimezone(zones[1])
    return moment.hour * 60 + moment.minute


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
