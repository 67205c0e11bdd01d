"""The new-fiscal-year sensor: adds the fiscal year the calendar has entered (and any from
FISCAL_YEAR_FIRST) as partitions, and syncs each fiscal year it has not seen before once,
including years added by hand in the UI. On a new installation the syncs wait for the first sync
of agent_mappings (sensors/first_sync.py), so the timesheets come after their mappings."""

import json

import dagster as dg

from sensors.first_sync import first_sync_done
from sync_assets.fiscal_years import FISCAL_YEARS, FiscalCalendar, MalformedKey, year_of
from sync_assets.runs import BACKGROUND, today
from sync_assets.halo import agent_mappings, halo_timesheets_job


def _cursor(text: str | None) -> set[str]:
    return set(json.loads(text)["synced"]) if text else set()


@dg.sensor(
    name="halo_new_fiscal_year",
    target=halo_timesheets_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def halo_new_fiscal_year(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Adds and syncs new fiscal years (calendar, FISCAL_YEAR_FIRST, or the UI's add-partition)."""
    calendar = FiscalCalendar.from_settings()
    existing = context.instance.get_dynamic_partitions(FISCAL_YEARS.name)
    to_add = [key for key in calendar.wanted_keys(today()) if key not in existing]
    # The cursor is the set of fiscal years already requested: data seen, not a clock.
    requested = _cursor(context.cursor)
    malformed, new = [], []
    for key in [*existing, *to_add]:
        try:
            year_of(key)
        except MalformedKey as error:
            malformed.append(str(error))
            continue
        if key not in requested:
            new.append(key)
    for problem in malformed:
        context.log.error(f"{problem}; not synced. Delete the partition in the UI and add the right key.")
    if new and not first_sync_done(context.instance, agent_mappings.key):
        # A new installation: the timesheets come after the agent mappings (dependency order);
        # the first_sync sensor syncs those, and this sensor syncs the years on a later tick.
        context.log.info(f"{', '.join(new)}: waiting for the first sync of agent_mappings")
        new = []
    if not (new or to_add):
        return dg.SkipReason("; ".join(malformed) if malformed else "no new fiscal year")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"new-fiscal-year-{key}", partition_key=key, tags=BACKGROUND)  # a year: behind the hourly syncs
            for key in new
        ],
        dynamic_partitions_requests=[FISCAL_YEARS.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps({"synced": sorted(requested | set(new))}),
    )


sensors = [halo_new_fiscal_year]
