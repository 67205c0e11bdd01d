"""GoHighLevel schedules: the last complete hour, a few minutes past each hour; the nightly full pass."""

import dagster as dg

from resources.settings import setting
from sync_assets.ghl import ghl_contacts, ghl_contacts_reconciliation

contacts_hourly_job = dg.define_asset_job("ghl_contacts_hourly", selection=[ghl_contacts])

# run_key is the partition key, so a schedule tick that fires twice never syncs an hour twice.
contacts_hourly = dg.build_schedule_from_partitioned_job(
    contacts_hourly_job,
    name="ghl_contacts_hourly_schedule",
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

contacts_reconciliation_nightly = dg.ScheduleDefinition(
    name="ghl_contacts_reconciliation_nightly",
    cron_schedule=setting("GHL_RECONCILE_CRON"),
    execution_timezone=setting("SYNC_TIMEZONE"),
    target=[ghl_contacts_reconciliation],
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Full pass over every GoHighLevel contact: missed inserts, drift, deletions (GHL_RECONCILE_CRON).",
)

jobs = [contacts_hourly_job]
schedules = [contacts_hourly, contacts_reconciliation_nightly]
