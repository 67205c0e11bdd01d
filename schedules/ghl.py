"""GoHighLevel schedules: the last complete hour, a few minutes past each hour; the nightly full pass."""

import dagster as dg

from resources.settings import setting
from schedules import asset_schedule
from sync_assets.ghl import ghl_contacts_hourly_job

# run_key is the partition key, so a schedule tick that fires twice never syncs an hour twice.
ghl_contacts_hourly_schedule = dg.build_schedule_from_partitioned_job(
    ghl_contacts_hourly_job,
    name="ghl_contacts_hourly_schedule",
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def schedules() -> list:
    """Built when the code location is: the crons and the time zone are settings."""
    return [ghl_contacts_hourly_schedule, asset_schedule(
        "ghl_contacts_reconciliation_nightly", setting("GHL_RECONCILE_CRON"), ("ghl_contacts_reconciliation",),
        "Full pass over every GoHighLevel contact: missed inserts, drift, deletions (GHL_RECONCILE_CRON).")]
