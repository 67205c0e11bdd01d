"""Every schedule of the code location, one module per provider."""

from schedules import employes, ghl, halo, report, xero

jobs = [*report.jobs]
schedules = [*ghl.schedules, *halo.schedules, *employes.schedules, *xero.schedules, *report.schedules]
