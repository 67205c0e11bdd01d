"""What every sync reports about the run it is part of."""

import dagster as dg

TRIGGER_TAG = "sync/trigger"


def trigger_of(context: dg.AssetExecutionContext) -> str:
    """Who or what started the run: a schedule, a sensor, a backfill, the CLI, or a person in the UI."""
    tags = context.run.tags
    if "dagster/schedule_name" in tags:
        return f"schedule {tags['dagster/schedule_name']}"
    if "dagster/sensor_name" in tags:
        return f"sensor {tags['dagster/sensor_name']}"
    if "dagster/backfill" in tags:
        return f"backfill {tags['dagster/backfill']}"
    return tags.get(TRIGGER_TAG) or f"manual ({tags.get('user', 'UI')})"
