"""Every schedule of the code location, one module per provider, and the morning report."""

import dagster as dg

from resources.organisations import asset_key
from resources.settings import setting


def asset_schedule(name: str, cron: str, assets: tuple[str, ...], description: str) -> dg.ScheduleDefinition:
    """A running schedule of `assets` (by name, in this organisation) on `cron`, in SYNC_TIMEZONE, read when called."""
    return dg.ScheduleDefinition(name=name, cron_schedule=cron, execution_timezone=setting("SYNC_TIMEZONE"),
                                 target=dg.AssetSelection.assets(*map(asset_key, assets)), default_status=dg.DefaultScheduleStatus.RUNNING,
                                 description=description)
