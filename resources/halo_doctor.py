"""The doctor's HaloPSA checks (see resources/doctor.py): how this tenant's time entries are
keyed, zoned and filtered, and the approval values its timesheets carry."""

from __future__ import annotations

import collections
import functools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from resources.doctor import PASS, WARN, Checks, Finding, run_provider
from resources.halo import approved_statuses, key_entries, range_params
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
            _check_zone(checks, entries)
            _check_day_filter(checks, client, entries, zone)
            _check_agent_filter(checks, client, entries, first, today)
        everyone = ",".join(str(a.get("id")) for a in agents)  # as the sync asks: Timesheet documents no filter
        sheets = _list(client, "/api/Timesheet", {**range_params(today - timedelta(days=HALO_WINDOW_DAYS[-1]), today),
                                                  "agents": everyone})
        _check_approvals(checks, sheets, approved)

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
    """Which key the sync gives these entries (resources/halo.py, `key_entries`)."""
    keyed = key_entries(entries, "")
    kinds = ", ".join(f"{count} by {kind}" for kind, count in sorted(keyed.kinds.items()))
    if keyed.identity == "id" and not keyed.repeated:
        checks.add("entry_identity", PASS, f"ids non-zero and unique on {len(entries)} entries: the sync keys entries on id")
    else:
        ids = [e.get("id") for e in entries]
        checks.add("entry_identity", WARN,
                   f"ids unusable on {len(ids)} entries ({sum(1 for i in ids if not i)} zero, {len(ids) - len(set(ids))} repeated)"
                   + (f"; {len(keyed.repeated)} keys repeat even so" if keyed.repeated else ""),
                   f"the sync keys them {kinds}: (ticket_id, action_number) for ticket time, a fingerprint of the "
                   "entry's own fields for time without a ticket (README, HaloPSA)")


def _check_zone(checks: Checks, entries: list[dict]) -> None:
    """The sync reads start and end as wall-clock times in SYNC_TIMEZONE, as it sends its ranges."""
    zone_name = setting("SYNC_TIMEZONE") or "UTC"
    starts = [s for s in map(_start, entries) if s]
    zoned = [s for s in starts if s.tzinfo is not None]
    other = [s for s in zoned if s.utcoffset() != ZoneInfo(zone_name).utcoffset(s.replace(tzinfo=None))]
    if other:
        checks.add("date_time_zone", WARN, f"{len(other)} of {len(starts)} start dates carry an offset other than "
                   f"SYNC_TIMEZONE's ({zone_name}), e.g. {other[0].isoformat()}",
                   "set SYNC_TIMEZONE to the tenant's zone: the sync takes times as wall-clock times there")
    elif zoned and len(zoned) < len(starts):
        checks.add("date_time_zone", WARN, f"{len(zoned)} of {len(starts)} start dates carry a zone, the rest do not",
                   "mixed forms: compare a few entries' times in Halo with the warehouse")
    else:
        checks.add("date_time_zone", PASS, f"{len(starts)} start dates carry {'the offset of ' + zone_name if zoned else 'no zone'}: "
                   f"read as wall-clock times in SYNC_TIMEZONE ({zone_name})")


def _check_day_filter(checks: Checks, client, entries: list[dict], zone: ZoneInfo) -> None:
    """A one-day date-time range returns nothing outside it; a date-only range is compared too."""
    starts = [s for s in map(_start, entries) if s]
    day = max(starts).astimezone(zone).date() if max(starts).tzinfo else max(starts).date()
    rows = _list(client, "/api/TimesheetEvent", range_params(day, day))
    outside = [r for r in rows if (s := _start(r)) is None or (s.astimezone(zone).date() if s.tzinfo else s.date()) != day]
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
