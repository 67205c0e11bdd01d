"""Pipedrive schedule: the persons, nightly (PIPEDRIVE_SYNC_CRON)."""

import dagster as dg

from resources.settings import setting


def schedules() -> list[dg.ScheduleDefinition]:
    return [dg.ScheduleDefinition(name="pipedrive_nightly", cron_schedule=setting("PIPEDRIVE_SYNC_CRON"),
                                  execution_timezone=setting("SYNC_TIMEZONE"), target=dg.AssetSelection.assets("pipedrive_persons"),
                                  default_status=dg.DefaultScheduleStatus.RUNNING, description="Every Pipedrive person, nightly.")]
