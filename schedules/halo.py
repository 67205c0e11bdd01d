"""HaloPSA schedules: agents and mappings hourly; the open period's timesheets hourly, and the
whole current fiscal year nightly.

Why the hourly sync reads only the open period (the last HALO_OPEN_PERIOD_DAYS days and today,
32 days by default) and not the current month: what changes in Halo is recent time, entered late,
corrected, deleted or approved in the weeks after the work, and by default the open period is
the stretch the approval sensor pushes to Xero and the reconciliation compares
(XERO_OPEN_PERIOD_DAYS, 31 too); a calendar month
would drop last month's last days on the 1st, just while managers approve them. The sync of a
date range makes the warehouse equal to Halo for those days only (deletions included), so an
edit or deletion of an older entry, and every other deletion in the year, waits for the nightly
sync of the whole year (HALO_YEAR_SYNC_CRON). Both run the one asset `halo_timesheets`; the
schedules pass its date range as run config.
"""

import os
from datetime import date, datetime, timedelta

import dagster as dg

from resources.organisations import asset_key
from resources.settings import setting
from schedules import asset_schedule
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar
from sync_assets.halo import halo_timesheets_job


def range_request(key: str, start: date, end: date, moment: datetime) -> dg.RunRequest:
    """A sync of the days start..end of fiscal year `key`; the key dedupes a tick that fires twice."""
    return dg.RunRequest(
        run_key=f"{key}:{start}..{end}@{moment.isoformat()}",
        partition_key=key,
        run_config={"ops": {asset_key("halo_timesheets").to_python_identifier(): {"config": {"start": start.isoformat(), "end": end.isoformat()}}}},
    )


def open_days(context: dg.ScheduleEvaluationContext, last: date) -> tuple[date, date]:
    """The open period ending on `last`: the HALO_OPEN_PERIOD_DAYS days before it and `last`.
    Before HALO_OPEN_PERIOD_DAYS existed XERO_OPEN_PERIOD_DAYS set it: while only that one is
    set it is still read, and the tick's log says so."""
    days = setting("HALO_OPEN_PERIOD_DAYS")
    if not os.environ.get("HALO_OPEN_PERIOD_DAYS", "").strip() and os.environ.get("XERO_OPEN_PERIOD_DAYS", "").strip():
        days = setting("XERO_OPEN_PERIOD_DAYS")
        context.log.warning(f"Deprecated: the hourly Halo sync covers XERO_OPEN_PERIOD_DAYS ({days}) days because "
                            "HALO_OPEN_PERIOD_DAYS is not set; set HALO_OPEN_PERIOD_DAYS, its own setting.")
    return last - timedelta(days=int(days)), last


def _not_yet(key: str) -> dg.SkipReason:
    return dg.SkipReason(f"{key} is not a partition yet; the sensor halo_new_fiscal_year adds and syncs it")


def halo_timesheets_hourly(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """The open period (the last HALO_OPEN_PERIOD_DAYS days and today), every hour: one run per
    fiscal year it reaches into, so early in a year the old year's last weeks are synced too."""
    moment = context.scheduled_execution_time
    calendar, existing = FiscalCalendar.from_settings(), context.instance.get_dynamic_partitions(FISCAL_YEARS.name)
    first, last = open_days(context, moment.date())
    if calendar.key_for(last) not in existing:
        return _not_yet(calendar.key_for(last))
    requests, day = [], first
    while day <= last:
        key = calendar.key_for(day)
        year_last = calendar.range_for(key)[1]
        if key in existing:
            requests.append(range_request(key, day, min(last, year_last), moment))
        day = year_last + timedelta(days=1)
    return requests


def halo_timesheets_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """The whole fiscal year containing today, every night: older edits, and deletions anywhere
    in the year, which only a sync of the days they lie in applies."""
    moment = context.scheduled_execution_time
    calendar = FiscalCalendar.from_settings()
    key = calendar.key_for(moment.date())
    if key not in context.instance.get_dynamic_partitions(FISCAL_YEARS.name):
        return _not_yet(key)
    return range_request(key, *calendar.range_for(key), moment)


def schedules() -> list[dg.ScheduleDefinition]:
    """Built when the code location is: the nightly cron and the time zone are settings."""
    timezone, running = setting("SYNC_TIMEZONE"), dg.DefaultScheduleStatus.RUNNING
    return [
        asset_schedule("halo_agents_hourly", "10 * * * *", ("halo_agents", "agent_mappings"),
                       "HaloPSA agents and the agent mapping file, hourly."),
        dg.schedule(name="halo_timesheets_hourly", cron_schedule="15 * * * *", execution_timezone=timezone,
                    target=halo_timesheets_job, default_status=running)(halo_timesheets_hourly),
        dg.schedule(name="halo_timesheets_nightly", cron_schedule=setting("HALO_YEAR_SYNC_CRON"), execution_timezone=timezone,
                    target=halo_timesheets_job, default_status=running)(halo_timesheets_nightly),
    ]
