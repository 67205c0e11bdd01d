"""Every sensor of the code location: one module per provider (GoHighLevel's and Employes'
syncs are time-driven and have none), and `alerts` (failed runs and red health lights to
ALERT_WEBHOOK_URL)."""

from sensors import alerts, halo, xero

jobs = [*halo.jobs, *xero.jobs, *alerts.jobs]
sensors = [*halo.sensors, *xero.sensors, *alerts.sensors]
