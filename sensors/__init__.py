"""Every sensor of the code location, one module per provider (GoHighLevel's syncs are
time-driven and have none)."""

from sensors import halo

jobs = [*halo.jobs]
sensors = [*halo.sensors]
