"""The morning report: yesterday's `sync_report`, made at 07:00 (SYNC_TIMEZONE) and posted to
ALERT_WEBHOOK_URL (only logged while that is unset)."""

import dagster as dg

from sync_assets.report import sync_report_job

# Targets the last complete day, with the day as run_key, so a repeated tick posts once.
sync_report_morning = dg.build_schedule_from_partitioned_job(
    sync_report_job,
    name="sync_report_morning",
    hour_of_day=7,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

schedules = [sync_report_morning]
