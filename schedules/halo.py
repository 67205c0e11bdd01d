"""HaloPSA schedules: agents and mappings, then the current fiscal year's timesheets, hourly."""

import dagster as dg

from resources.settings import setting
from sensors.halo import halo_timesheets_job
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar
from sync_assets.halo import agent_mappings, halo_agents

halo_reference_hourly = dg.ScheduleDefinition(
    name="halo_agents_hourly",
    cron_schedule="10 * * * *",
    execution_timezone=setting("SYNC_TIMEZONE"),
    target=[halo_agents, agent_mappings],
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="HaloPSA agents and the agent mapping file, hourly.",
)


@dg.schedule(
    name="halo_timesheets_hourly",
    cron_schedule="15 * * * *",
    execution_timezone=setting("SYNC_TIMEZONE"),
    target=halo_timesheets_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def halo_timesheets_hourly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """The fiscal year containing today, every hour."""
    key = FiscalCalendar.from_settings().key_for(context.scheduled_execution_time.date())
    if key not in context.instance.get_dynamic_partitions(FISCAL_YEARS.name):
        return dg.SkipReason(f"{key} is not a partition yet; the sensor halo_new_fiscal_year adds and syncs it")
    return dg.RunRequest(
        run_key=f"{key}@{context.scheduled_execution_time.isoformat()}",
        partition_key=key,
    )


schedules = [halo_reference_hourly, halo_timesheets_hourly]
