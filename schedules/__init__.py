"""Every schedule of the code location, one module per provider."""

from schedules import ghl, halo

jobs = [*ghl.jobs]
schedules = [*ghl.schedules, *halo.schedules]
