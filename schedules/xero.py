"""Xero schedule: the nightly three-way reconciliation (XERO_RECONCILE_CRON). Pushes are driven
by the approval sensor (sensors/xero.py) and by backfills, not by a schedule."""

import dagster as dg

from resources.settings import setting
from schedules import asset_schedule


def schedules() -> list[dg.ScheduleDefinition]:
    """Built when the code location is: the cron and the time zone are settings."""
    return [asset_schedule("xero_reconcile_nightly", setting("XERO_RECONCILE_CRON"), ("xero_reconciliation",),
                           "Compares Halo, the ledger and Xero over the open period; reports, changes nothing.")]
