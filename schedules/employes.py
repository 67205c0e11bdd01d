"""Employes schedule: snapshot, employment history and changes, nightly (EMPLOYES_SYNC_CRON)."""

import dagster as dg

from resources.settings import setting
from sync_assets.employes import employes_nightly_job


def employes_nightly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Today's snapshot, then each employee's employment history, then the changes."""
    day = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


def schedules() -> list[dg.ScheduleDefinition]:
    """Built when the code location is: the cron and the time zone are settings."""
    return [dg.schedule(
        name="employes_nightly",
        cron_schedule=setting("EMPLOYES_SYNC_CRON"),
        execution_timezone=setting("SYNC_TIMEZONE"),
        target=employes_nightly_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )(employes_nightly)]
