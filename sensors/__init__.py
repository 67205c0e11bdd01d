"""Every sensor of the code location: one module per provider (GoHighLevel's and Employes'
syncs are time-driven and have none), and `alerts` (failed runs and red health lights to
ALERT_WEBHOOK_URL), and `first_sync` (every asset once on a new installation)."""

from sensors import alerts, first_sync, halo, xero

jobs = [*halo.jobs, *alerts.jobs, *first_sync.jobs]
sensors = [*halo.sensors, *xero.sensors, *alerts.sensors, *first_sync.sensors]
