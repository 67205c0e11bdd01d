"""Every schedule of the code location, one module per provider."""

from schedules import employes, ghl, halo, xero

jobs = [*ghl.jobs, *employes.jobs]
schedules = [*ghl.schedules, *halo.schedules, *employes.schedules, *xero.schedules]
