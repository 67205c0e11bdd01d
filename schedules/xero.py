"""Xero schedule: the nightly three-way reconciliation (XERO_RECONCILE_CRON). Pushes are driven
by the approval sensor (sensors/xero.py) and by backfills, not by a schedule."""

import dagster as dg

from resources.settings import setting


def schedules() -> list[dg.ScheduleDefinition]:
    """Built when the code location is: the cron and the time zone are settings."""
    return [dg.ScheduleDefinition(
        name="xero_reconcile_nightly",
        cron_schedule=setting("XERO_RECONCILE_CRON"),
        execution_timezone=setting("SYNC_TIMEZONE"),
        target=dg.AssetSelection.assets("xero_reconciliation"),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Compares Halo, the ledger and Xero over the open period; reports, changes nothing.",
    )]
