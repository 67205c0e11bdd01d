"""Every sensor of the code location, one module per provider (GoHighLevel's and Employes'
syncs are time-driven and have none)."""

from sensors import halo, xero

jobs = [*halo.jobs, *xero.jobs]
sensors = [*halo.sensors, *xero.sensors]
